package top

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Render lays a frame out for a terminal of width × height cells: a
// header, the tables (two columns from 160 cells on) and the candidate
// signatures with their commands. Lines wider than width are cut with
// "…"; height bounds the number of lines (rows per table shrink first).
// width or height 0: no limit (nsctl dos top --once), every row and
// every command whole.
func Render(s Summary, width, height int) []string {
	head := []string{
		fmt.Sprintf("nfhost dos top  %s  %s  window %.0fs  %d samples", strings.Join(s.Hosts, ","), s.At.Format("15:04:05"), s.WindowSeconds, s.Samples),
		fmt.Sprintf("total %s  %s   dropped in XDP %s (%.0f%%)%s", Rate(s.PPS, "pps"), Rate(s.BPS, "bps"), Rate(s.DroppedPPS, "pps"), pct(s.DroppedPPS, s.PPS), filterText(s.Filter)),
	}
	head = append(head, s.Notes...)
	// In the order they give way when the terminal is short.
	tables := []struct {
		title string
		es    []Entry
	}{
		{"DESTINATION", s.Destinations}, {"SOURCE BLOCK", s.Sources}, {"PROTOCOL", s.Protocols},
		{"DST PORT / TYPE", s.DstPorts}, {"IP LENGTH", s.Lengths}, {"TTL", s.TTLs},
		{"PAYLOAD[0:4]", s.Payloads}, {"TCP FLAGS", s.TCPFlags}, {"SRC PORT", s.SrcPorts}, {"XDP VERDICT", s.Reasons},
	}
	var cand []string
	cand = append(cand, "")
	if len(s.Candidates) == 0 {
		cand = append(cand, "CANDIDATE SIGNATURES: none (no destination with traffic that shares header values)")
	} else {
		cand = append(cand, "CANDIDATE SIGNATURES (copy a command to add one):")
		for _, c := range s.Candidates {
			cand = append(cand, fmt.Sprintf("  %s %s  %s  %s, %.0f%% already dropped", c.Tenant, c.Victim, Rate(c.PPS, "pps"), c.Action, 100*c.Dropped),
				"  "+c.Command)
		}
	}

	compact := width > 0 && width < 120
	tw := fullWidth
	if compact {
		tw = compactWidth
	}
	cols := 1
	if width > 0 {
		cols = max(1, (width+2)/(tw+2))
	}
	// Rows per table: as many as fit, from 10 down to 3; below that
	// tables give way, the last first.
	rows, n := 10, len(tables)
	if height > 0 {
		for rows > 3 && len(head)+tableLines(n, rows, cols)+len(cand) > height {
			rows--
		}
		for n > 1 && len(head)+tableLines(n, rows, cols)+len(cand) > height {
			n--
		}
	}
	blocks := make([][]string, n)
	for i, t := range tables[:n] {
		blocks[i] = renderTable(t.title, t.es, rows, compact, width > 0)
	}
	lines := append([]string(nil), head...)
	for i := 0; i < len(blocks); i += cols {
		row := blocks[i:min(i+cols, len(blocks))]
		depth := 0
		for _, b := range row {
			depth = max(depth, len(b))
		}
		for j := 0; j < depth; j++ {
			var l strings.Builder
			for k, b := range row {
				cell := ""
				if j < len(b) {
					cell = b[j]
				}
				if k < len(row)-1 {
					cell = pad(cell, tw) + "  "
				}
				l.WriteString(cell)
			}
			lines = append(lines, strings.TrimRight(l.String(), " "))
		}
	}
	lines = append(lines, cand...)
	if width > 0 {
		for i, l := range lines {
			lines[i] = cut(l, width)
		}
	}
	if height > 0 && len(lines) > height {
		lines = lines[:height]
	}
	return lines
}

// tableLines is how many lines n tables of rows rows take: a blank line,
// a title and the rows each, side by side in cols columns.
func tableLines(n, rows, cols int) int { return (n + cols - 1) / cols * (rows + 2) }

// Table widths: full (key, pps, bps, share, drop) and compact (no bps,
// narrower key) for terminals under 120 cells.
const (
	fullWidth    = 59
	compactWidth = 39
)

func renderTable(title string, es []Entry, rows int, compact, cutKeys bool) []string {
	hdr, keyW := fmt.Sprintf("%-24s %10s %10s %6s %5s", title, "PPS", "BPS", "SHARE", "DROP"), 24
	if compact {
		hdr, keyW = fmt.Sprintf("%-18s %8s %6s %4s", title, "PPS", "SHARE", "DROP"), 18
	}
	lines := []string{"", hdr}
	for i := 0; i < rows && i < len(es); i++ {
		e := es[i]
		k := e.Key
		if e.Tenant != "" {
			k += " " + e.Tenant
		}
		if cutKeys {
			k = cut(k, keyW)
		}
		if compact {
			lines = append(lines, fmt.Sprintf("%-18s %8s %5.1f%% %3.0f%%", k, Rate(e.PPS, ""), 100*e.Share, 100*e.Dropped))
			continue
		}
		lines = append(lines, fmt.Sprintf("%-24s %10s %10s %5.1f%% %4.0f%%", k, Rate(e.PPS, ""), Rate(e.BPS, ""), 100*e.Share, 100*e.Dropped))
	}
	if len(es) == 0 {
		lines = append(lines, "(none)")
	}
	return lines
}

func filterText(f Filter) string {
	var parts []string
	if f.Tenant != "" {
		parts = append(parts, "tenant "+f.Tenant)
	}
	if f.Dst.IsValid() {
		parts = append(parts, "dst "+f.Dst.String())
	}
	if f.Proto >= 0 {
		parts = append(parts, "proto "+ProtoName(uint8(f.Proto)))
	}
	if len(parts) == 0 {
		return ""
	}
	return "   filter: " + strings.Join(parts, ", ")
}

func pct(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * a / b
}

// Rate writes a rate with an SI prefix ("18.0k", "1.2M").
func Rate(v float64, unit string) string {
	sfx := []string{"", "k", "M", "G", "T"}
	i := 0
	for v >= 1000 && i < len(sfx)-1 {
		v /= 1000
		i++
	}
	s := fmt.Sprintf("%.1f%s", v, sfx[i])
	if i == 0 {
		s = fmt.Sprintf("%.0f", v)
	}
	if unit != "" {
		s += " " + unit
	}
	return s
}

func cut(s string, w int) string {
	if utf8.RuneCountInString(s) <= w {
		return s
	}
	r := []rune(s)
	return string(r[:w-1]) + "…"
}

func pad(s string, w int) string {
	if n := utf8.RuneCountInString(s); n < w {
		return s + strings.Repeat(" ", w-n)
	}
	return cut(s, w)
}
