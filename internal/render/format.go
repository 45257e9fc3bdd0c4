package render

import (
	"strconv"
	"time"

	"github.com/tcplens/tcplens/internal/sockdiag"
)

// Duration formats d the way a person reads a timer: 340ms, 1.4s, 42s, 3m12s.
func Duration(d time.Duration) string {
	return string(appendDuration(nil, d))
}

func appendDuration(b []byte, d time.Duration) []byte {
	switch {
	case d < time.Second:
		return append(strconv.AppendInt(b, d.Milliseconds(), 10), "ms"...)
	case d < 10*time.Second:
		return append(strconv.AppendFloat(b, d.Seconds(), 'f', 1, 64), 's')
	case d < time.Minute:
		return append(strconv.AppendInt(b, int64(d/time.Second), 10), 's')
	case d < time.Hour:
		b = append(strconv.AppendInt(b, int64(d/time.Minute), 10), 'm')
		return append(strconv.AppendInt(b, int64(d%time.Minute/time.Second), 10), 's')
	default:
		b = append(strconv.AppendInt(b, int64(d/time.Hour), 10), 'h')
		return append(strconv.AppendInt(b, int64(d%time.Hour/time.Minute), 10), 'm')
	}
}

// Timer formats a socket's timer: "retransmit 1.4s #3", "keepalive 9.7s",
// "timewait 42s", or "" when no timer runs.
func Timer(s *sockdiag.Socket) string { return string(appendTimer(nil, s)) }

func appendTimer(b []byte, s *sockdiag.Socket) []byte {
	if s.Timer == sockdiag.TimerOff {
		return b
	}
	b = append(b, s.Timer.String()...)
	b = append(b, ' ')
	b = appendDuration(b, s.TimerExpires)
	if s.Retrans > 0 && (s.Timer == sockdiag.TimerRetransmit || s.Timer == sockdiag.TimerKeepalive || s.Timer == sockdiag.TimerZeroWindow) {
		b = append(b, " #"...)
		b = strconv.AppendUint(b, uint64(s.Retrans), 10)
	}
	return b
}

// Percent formats a 0..1 fraction as "47.3%".
func Percent(f float64) string { return strconv.FormatFloat(f*100, 'f', 1, 64) + "%" }
