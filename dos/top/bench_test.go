package top

import (
	"testing"
	"time"
)

// BenchmarkSummarize: one frame of nsctl dos top as nsd computes it per
// request, from 2 s of samples of an 18k pps flood plus 1k pps of other
// traffic at 1 in 64 (593 samples; flood()), and at 1 in 8 (8x the
// samples). At one request per second, ns/op over 1e9 is the share of a
// core a viewer costs nsd.
func BenchmarkSummarize(b *testing.B) {
	base := flood()
	for _, c := range []struct {
		name string
		x    int
	}{{"1in64", 1}, {"1in8", 8}} {
		var ss []Sample
		for i := 0; i < c.x; i++ {
			for _, s := range base {
				s.Rate /= uint32(c.x)
				s.At = s.At.Add(time.Duration(i) * time.Microsecond)
				ss = append(ss, s)
			}
		}
		b.Run(c.name, func(b *testing.B) {
			o := Options{Window: 2 * time.Second, Filter: Filter{Proto: -1}}
			for b.Loop() {
				Summarize("edge1", ss, t0, o)
			}
			b.ReportMetric(float64(len(ss)), "samples")
		})
	}
}

// BenchmarkRecorder: what the sample reader pays per sample unwatched
// (Watching, an atomic load) against watched (Watching and Add).
func BenchmarkRecorder(b *testing.B) {
	s := flood()[0]
	b.Run("unwatched", func(b *testing.B) {
		r := NewRecorder()
		for b.Loop() {
			if r.Watching(t0) {
				r.Add(s)
			}
		}
	})
	b.Run("watched", func(b *testing.B) {
		r := NewRecorder()
		r.Watch(t0)
		for b.Loop() {
			if r.Watching(t0) {
				r.Add(s)
			}
		}
	})
}
