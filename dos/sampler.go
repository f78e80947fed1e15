package dos

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// SampleBytes is how much of each sampled packet is copied.
const SampleBytes = 128

// sampleSize is sizeof(struct pkt_sample) in xdp_dos.c.
const sampleSize = 8 + 4*8 + SampleBytes

// Sample is one sampled packet: its first bytes and what the program did.
type Sample struct {
	// Mono is the CLOCK_MONOTONIC time the packet was seen.
	Mono    time.Duration
	Ifindex uint32
	// Len is the packet's length; Data its first SampleBytes at most.
	Len     uint32
	Tenant  uint32 // counter index, 0: none
	Dropped bool
	Reason  string // one of Reasons
	// Signature is the signature index that decided, or -1.
	Signature int32
	Data      []byte
}

// DecodeSample parses a ring-buffer record.
func DecodeSample(b []byte) (Sample, error) {
	if len(b) < sampleSize {
		return Sample{}, fmt.Errorf("sample of %d bytes, want %d", len(b), sampleSize)
	}
	le := binary.LittleEndian
	s := Sample{
		Mono:      time.Duration(le.Uint64(b[0:])),
		Ifindex:   le.Uint32(b[8:]),
		Len:       le.Uint32(b[12:]),
		Tenant:    le.Uint32(b[20:]),
		Dropped:   le.Uint32(b[24:]) == xdpDropAction,
		Signature: int32(le.Uint32(b[32:])),
	}
	if r := le.Uint32(b[28:]); int(r) < len(Reasons) {
		s.Reason = Reasons[r]
	}
	capLen := min(int(le.Uint32(b[16:])), SampleBytes)
	s.Data = append([]byte(nil), b[40:40+capLen]...)
	return s, nil
}

const xdpDropAction = 1

// SampleReader reads sampled packets from the ring buffer.
type SampleReader struct{ r *ringbuf.Reader }

// Samples opens the sample ring buffer. Close the reader to unblock Read.
func (d *Datapath) Samples() (*SampleReader, error) { return openSamples(d.objs.NfhSamples) }

func openSamples(m *ebpf.Map) (*SampleReader, error) {
	r, err := ringbuf.NewReader(m)
	if err != nil {
		return nil, fmt.Errorf("open sample ring buffer: %w", err)
	}
	return &SampleReader{r: r}, nil
}

// ErrClosed is returned by Read after Close.
var ErrClosed = ringbuf.ErrClosed

// Read blocks until a sample arrives or the reader is closed.
func (s *SampleReader) Read() (Sample, error) {
	rec, err := s.r.Read()
	if err != nil {
		if errors.Is(err, ringbuf.ErrClosed) {
			return Sample{}, ErrClosed
		}
		return Sample{}, fmt.Errorf("read sample: %w", err)
	}
	return DecodeSample(rec.RawSample)
}

// SetDeadline makes Read return os.ErrDeadlineExceeded after t.
func (s *SampleReader) SetDeadline(t time.Time) { s.r.SetDeadline(t) }

// Close stops the reader.
func (s *SampleReader) Close() error { return s.r.Close() }
