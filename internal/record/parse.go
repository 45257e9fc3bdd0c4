package record

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseTime reads a --since/--until value: an RFC 3339 time
// ("2026-11-22T03:04:05Z", fractions and offsets allowed), "now", or a
// duration before now ("10m", "1h30m", "90s", "2d"; days are 24 h).
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("empty time: want RFC 3339 (2026-11-22T03:04:05Z), now, or a duration ago (10m, 2h, 1d)")
	}
	if s == "now" {
		return now, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := parseAgo(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-11-22T03:04:05Z), now, or a duration ago (10m, 2h, 1d)", s)
	}
	return now.Add(-d), nil
}

// parseAgo accepts Go durations plus a leading whole-day part ("2d",
// "1d12h"); the result must be positive.
func parseAgo(s string) (time.Duration, error) {
	var days int64
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n < 0 || n > math.MaxInt64/int64(24*time.Hour) {
			return 0, errors.New("bad day count")
		}
		days, s = n, s[i+1:]
	}
	var d time.Duration
	if s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, err
		}
		if d < 0 {
			return 0, errors.New("negative")
		}
	}
	total := time.Duration(days) * 24 * time.Hour
	if d > math.MaxInt64-total {
		return 0, errors.New("too long")
	}
	total += d
	if total <= 0 {
		return 0, errors.New("not positive")
	}
	return total, nil
}

// ParseSize reads a byte size: a number of bytes, or a number with a unit
// B, K/KiB, M/MiB, G/GiB, T/TiB (powers of 1024) or KB, MB, GB, TB (powers
// of 1000). "256MiB", "1.5G", "500MB", "1048576".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	}[unit]
	if mult == 0 || num == "" {
		return 0, fmt.Errorf("size %q: want bytes or a number with a unit (256MiB, 1G, 500MB)", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) {
		return 0, fmt.Errorf("size %q: want bytes or a number with a unit (256MiB, 1G, 500MB)", s)
	}
	v := f * mult
	if v >= math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	if v < 1 {
		return 0, fmt.Errorf("size %q: must be at least 1 byte", s)
	}
	return int64(v), nil
}
