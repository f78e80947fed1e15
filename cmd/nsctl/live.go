package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/internal/cliutil"
)

// frameFunc draws one frame for a terminal of width × height cells (0: no
// limit) and returns its lines.
type frameFunc func(ctx context.Context, width, height int) ([]string, error)

// screen is the terminal a live view draws on; tests give their own.
type screen struct {
	out  io.Writer
	keys <-chan byte                // key presses; nil: none
	size func() (width, height int) // current size
	wake <-chan os.Signal           // resize (SIGWINCH)
	done func()                     // restores the terminal
}

// live redraws frame every interval on the terminal (like top): in place
// on the alternate screen, at once on a resize, until q, ^C or ctx ends.
// When stdout is no terminal it prints frames one after another,
// unlimited in width, separated by a blank line (like top -b).
func live(ctx context.Context, stdin io.Reader, stdout io.Writer, interval time.Duration, frame frameFunc) error {
	sc, ok := openTerminal(stdin, stdout)
	if !ok {
		return batch(ctx, stdout, interval, frame)
	}
	defer sc.done()
	return sc.run(ctx, interval, frame)
}

// batch prints frames until ctx ends.
func batch(ctx context.Context, out io.Writer, interval time.Duration, frame frameFunc) error {
	for first := true; ; first = false {
		lines, err := frame(ctx, 0, 0)
		if ctx.Err() != nil {
			return nil
		}
		if !first {
			fmt.Fprintln(out)
		}
		if err != nil {
			fmt.Fprintf(out, "error: %v\n", err)
		} else {
			fmt.Fprintln(out, strings.Join(lines, "\n"))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// run is the redraw loop. A frame is fetched in the background so that
// q and resizes are answered while a slow edge is asked.
func (sc *screen) run(ctx context.Context, interval time.Duration, frame frameFunc) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		lines []string
		err   error
	}
	results := make(chan result, 4)
	fetching := false
	fetch := func() {
		if fetching {
			return
		}
		fetching = true
		w, h := sc.size()
		go func() {
			l, err := frame(ctx, w, h)
			results <- result{l, err}
		}()
	}
	var last result
	drawn := false
	draw := func() {
		w, h := sc.size()
		lines := last.lines
		if !drawn {
			lines = []string{"nsctl: waiting for the first frame ..."}
		}
		if last.err != nil {
			lines = append([]string{"error: " + last.err.Error()}, lines...)
		}
		lines = append(lines, "", "q: quit")
		if len(lines) > h {
			lines = lines[:h]
		}
		var b bytes.Buffer
		b.WriteString("\x1b[H")
		for i, l := range lines {
			if r := []rune(l); len(r) > w {
				l = string(r[:w])
			}
			b.WriteString(l)
			b.WriteString("\x1b[K")
			if i < len(lines)-1 {
				b.WriteString("\r\n")
			}
		}
		b.WriteString("\x1b[J")
		sc.out.Write(b.Bytes())
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	fetch()
	draw()
	for {
		select {
		case <-ctx.Done():
			return nil
		case k, ok := <-sc.keys:
			if !ok || k == 'q' || k == 'Q' || k == 3 {
				return nil
			}
		case <-sc.wake:
			draw()
			fetching = false // the frame in flight has the old size
			fetch()
		case r := <-results:
			fetching = false
			if r.err != nil {
				last.err = r.err
			} else {
				last, drawn = r, true
			}
			draw()
		case <-tick.C:
			fetch()
		}
	}
}

// openTerminal puts a terminal on stdin/stdout into a mode for a live view
// (no echo, no line buffering, alternate screen, hidden cursor); ok is
// false when stdout is not a terminal.
func openTerminal(stdin io.Reader, stdout io.Writer) (*screen, bool) {
	out, ok := stdout.(*os.File)
	if !ok {
		return nil, false
	}
	if _, err := unix.IoctlGetWinsize(int(out.Fd()), unix.TIOCGWINSZ); err != nil {
		return nil, false
	}
	size := func() (int, int) {
		ws, err := unix.IoctlGetWinsize(int(out.Fd()), unix.TIOCGWINSZ)
		if err != nil || ws.Col == 0 || ws.Row == 0 {
			return 80, 24
		}
		return int(ws.Col), int(ws.Row)
	}
	wake := make(chan os.Signal, 1)
	signal.Notify(wake, unix.SIGWINCH)
	restore := func() {}
	var keys chan byte
	if in, ok := stdin.(*os.File); ok {
		if old, err := unix.IoctlGetTermios(int(in.Fd()), unix.TCGETS); err == nil {
			raw := *old
			raw.Lflag &^= unix.ICANON | unix.ECHO // ISIG stays: ^C still interrupts
			raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
			if unix.IoctlSetTermios(int(in.Fd()), unix.TCSETS, &raw) == nil {
				restore = func() { unix.IoctlSetTermios(int(in.Fd()), unix.TCSETS, old) }
			}
			keys = make(chan byte, 8)
			go func() {
				b := make([]byte, 16)
				for {
					n, err := in.Read(b)
					for _, k := range b[:n] {
						keys <- k
					}
					if err != nil {
						close(keys)
						return
					}
				}
			}()
		}
	}
	io.WriteString(out, "\x1b[?1049h\x1b[?25l")
	return &screen{out: out, keys: keys, size: size, wake: wake, done: func() {
		io.WriteString(out, "\x1b[?25h\x1b[?1049l")
		restore()
		signal.Stop(wake)
	}}, true
}

// watchFlags is --watch of a table command (status, tunnels).
type watchFlags struct {
	watch    bool
	interval time.Duration
}

func (w *watchFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVarP(&w.watch, "watch", "w", false, "refresh in place every --interval, like top (q quits)")
	cmd.Flags().DurationVar(&w.interval, "interval", 2*time.Second, "--watch: refresh interval")
}

// run prints the table once, or with --watch as a live view titled title.
func (w *watchFlags) run(c *ctl, title string, print func(io.Writer) error) error {
	if !w.watch {
		return print(c.Stdout)
	}
	if w.interval < 100*time.Millisecond {
		return cliutil.Usagef("--interval: at least 100ms, got %v", w.interval)
	}
	return live(c.Ctx, c.Stdin, c.Stdout, w.interval, func(ctx context.Context, _, _ int) ([]string, error) {
		var b bytes.Buffer
		err := print(&b)
		head := fmt.Sprintf("%s   %s   every %v", title, time.Now().Format("15:04:05"), w.interval)
		return append([]string{head, ""}, strings.Split(strings.TrimRight(b.String(), "\n"), "\n")...), err
	})
}
