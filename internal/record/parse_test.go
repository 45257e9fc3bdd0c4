package record

import (
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"now":                         now,
		"10m":                         now.Add(-10 * time.Minute),
		"1h30m":                       now.Add(-90 * time.Minute),
		"2d":                          now.Add(-48 * time.Hour),
		"1d12h":                       now.Add(-36 * time.Hour),
		"2026-11-22T02:04:05Z":        time.Date(2026, 11, 22, 2, 4, 5, 0, time.UTC),
		"2026-11-22T03:04:05.5+01:00": time.Date(2026, 11, 22, 2, 4, 5, 5e8, time.UTC),
	} {
		got, err := ParseTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "-10m", "0s", "10", "d", "1d-5m", "2026-11-22", "99999999999999999999d", "2562047h48m"} {
		if got, err := ParseTime(in, now); err == nil {
			t.Errorf("ParseTime(%q) = %v, want an error", in, got)
		}
	}
}

func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"now", "10m", "2d", "1d12h", "2026-11-22T02:04:05Z", "2026-11-22T03:04:05.123456789+01:00", "", "-1s", "9223372036854775807ns", "106751d"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTime(s, now)
		if err != nil {
			if !got.IsZero() {
				t.Fatalf("error with a time: %v", got)
			}
			return
		}
		// Relative forms point into the past; absolute ones round-trip.
		if abs, e := time.Parse(time.RFC3339Nano, s); e == nil {
			if !abs.Equal(got) {
				t.Fatalf("%q: %v != %v", s, got, abs)
			}
		} else if got.After(now) {
			t.Fatalf("%q: relative time %v after now", s, got)
		}
	})
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1048576": 1 << 20, "256MiB": 256 << 20, "256M": 256 << 20, "1G": 1 << 30, "1.5GiB": 3 << 29,
		"500MB": 500e6, "64k": 64 << 10, "10 B": 10, "2tib": 2 << 40,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1M", "1.2.3M", "1X", "0", "0.1", "9999999999T", "NaN", "1e3"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"256MiB", "1G", "500MB", "1048576", "1.5gib", "", ".", "99999999999999999999", "0.5k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 1 {
			t.Fatalf("%q: %d accepted", s, n)
		}
	})
}
