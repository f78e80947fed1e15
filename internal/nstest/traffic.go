package nstest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// ResponderPorts are the ports StartResponder serves: TCP 22 and 80, UDP
// 53 and 123, on IPv4 and IPv6.
var ResponderPorts = struct{ TCP, UDP []int }{TCP: []int{22, 80}, UDP: []int{53, 123}}

const responderPy = `
import socket, threading
def sock(fam, kind):
    s = socket.socket(fam, kind)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return s
def tcp(fam, addr, p):
    s = sock(fam, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, p)); s.listen(64)
    while True:
        c, _ = s.accept(); c.sendall(b"ok"); c.close()
def udp(fam, addr, p):
    s = sock(fam, socket.SOCK_DGRAM); s.bind((addr, p))
    while True:
        d, a = s.recvfrom(2048); s.sendto(b"ok", a)
for p in (22, 80):
    for fam, a in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        threading.Thread(target=tcp, args=(fam, a, p), daemon=True).start()
for p in (53, 123):
    for fam, a in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        threading.Thread(target=udp, args=(fam, a, p), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
`

const probePy = `
import socket, sys
proto, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(0.7)
try:
    if proto == "tcp":
        s.connect((addr, port)); ok = s.recv(2) == b"ok"
    else:
        s.sendto(b"hi", (addr, port)); ok = s.recvfrom(16)[0] == b"ok"
except OSError:
    ok = False
sys.exit(0 if ok else 1)
`

func script(t testing.TB, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// StartResponder serves ResponderPorts inside ns until the test ends.
func StartResponder(t testing.TB, ns *NS) {
	t.Helper()
	RequireTool(t, "python3")
	cmd := exec.Command("nsenter", "--net="+ns.Path(), "--", "python3", script(t, "responder.py", responderPy))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start responder: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("responder did not start: %q", line)
	}
}

// Reach reports whether a TCP connect, a UDP exchange or (proto "icmp") a
// ping from ns to addr:port succeeds within about a second.
func Reach(t testing.TB, from *NS, proto, addr string, port int) bool {
	t.Helper()
	if proto == "icmp" {
		_, err := from.Exec(t, "ping", "-c1", "-W1", addr)
		return err == nil
	}
	_, err := from.Exec(t, "python3", script(t, "probe.py", probePy), proto, addr, fmt.Sprint(port))
	return err == nil
}

const sendPy = `
import socket, sys, binascii
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
payload = binascii.unhexlify(sys.argv[4])
src = sys.argv[5] if len(sys.argv) > 5 else ""
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
if src:
    s.bind((src, 0))
for _ in range(n):
    s.sendto(payload, (addr, port))
`

// SendUDP sends n UDP datagrams with payload from ns to addr:port (from
// src when not empty), as fast as a socket loop goes, without waiting for
// answers.
func SendUDP(t testing.TB, from *NS, src, addr string, port, n int, payload []byte) {
	t.Helper()
	args := []string{"python3", script(t, "send.py", sendPy), addr, fmt.Sprint(port), fmt.Sprint(n), fmt.Sprintf("%x", payload)}
	if src != "" {
		args = append(args, src)
	}
	from.MustExec(t, args...)
}

const floodPy = `
import socket, sys, time, random
addr, port, pps, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
payload = bytes.fromhex(sys.argv[5])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
start = time.monotonic(); sent = 0
while True:
    now = time.monotonic() - start
    if now >= secs:
        break
    due = int(now * pps)
    while sent < due:
        try:
            random.choice(socks).sendto(payload, (addr, port))
        except OSError:
            pass
        sent += 1
    time.sleep(0.001)
print(sent, flush=True)
`

// Flood is a running UDP flood.
type Flood struct {
	cmd *exec.Cmd
	out bytes.Buffer
}

// StartFlood sends UDP to addr:port from ns at pps packets per second for
// the given time, from 64 sockets (64 source ports), in the background.
func StartFlood(t testing.TB, from *NS, addr string, port, pps int, d time.Duration, payload []byte) *Flood {
	t.Helper()
	f := &Flood{cmd: exec.Command("nsenter", "--net="+from.Path(), "--", "python3", script(t, "flood.py", floodPy),
		addr, fmt.Sprint(port), fmt.Sprint(pps), fmt.Sprint(d.Seconds()), fmt.Sprintf("%x", payload))}
	f.cmd.Stdout = &f.out
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("start flood: %v", err)
	}
	t.Cleanup(func() { f.cmd.Process.Kill(); f.cmd.Wait() })
	return f
}

// Wait waits for the flood to end and returns how many packets it sent
// (the sender may fall behind the rate on a busy machine).
func (f *Flood) Wait() int {
	f.cmd.Wait()
	var n int
	fmt.Sscan(f.out.String(), &n)
	return n
}
