package top

// histLen is how many samples the sparklines remember: a minute at the
// default interval.
const histLen = 60

// history is a ring of per-state counts.
type history struct {
	buf  [histLen][16]int
	head int // next write
	n    int
}

func (h *history) push(c [16]int) {
	h.buf[h.head] = c
	h.head = (h.head + 1) % histLen
	h.n = min(h.n+1, histLen)
}

// series returns the last up to max values of one state, oldest first.
func (h *history) series(state, max int) []int {
	n := min(h.n, max)
	out := make([]int, n)
	for i := range n {
		out[i] = h.buf[(h.head-n+i+histLen)%histLen][state]
	}
	return out
}

var sparkRunes = []rune("▁▂▃▄▅▆▇█")

// sparkline scales values from 0 to their maximum; all zero is a flat
// bottom line.
func sparkline(vals []int) string {
	peak := 0
	for _, v := range vals {
		peak = max(peak, v)
	}
	out := make([]rune, len(vals))
	for i, v := range vals {
		idx := 0
		if peak > 0 && v > 0 {
			idx = max(1, (v*(len(sparkRunes)-1)+peak-1)/peak) // any non-zero value shows above zero
		}
		out[i] = sparkRunes[idx]
	}
	return string(out)
}
