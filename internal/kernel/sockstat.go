package kernel

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
)

// Sockstat holds the TCP line of /proc/net/sockstat and the TCP6 line of
// /proc/net/sockstat6: totals the kernel keeps per network namespace, so
// reading them costs microseconds whatever the size of the socket table.
type Sockstat struct {
	InUse  int // TCP sockets in the hash tables (IPv4 + IPv6), TIME_WAIT excluded
	Orphan int // sockets no process holds any more (FIN_WAIT*, LAST_ACK, CLOSING)
	TW     int // TIME_WAIT sockets (both families)
	Alloc  int // allocated TCP sockets, including those being set up or torn down
}

// ReadSockstat reads the calling thread's network namespace (call it inside
// netns.Run for another one).
func ReadSockstat() (Sockstat, error) {
	var s Sockstat
	for _, path := range []string{"/proc/thread-self/net/sockstat", "/proc/thread-self/net/sockstat6"} {
		f, err := os.Open(path)
		if err != nil {
			if os.IsNotExist(err) && path != "/proc/thread-self/net/sockstat" {
				continue // no IPv6
			}
			return s, fmt.Errorf("read %s: %w", path, err)
		}
		err = ParseSockstat(f, &s)
		f.Close()
		if err != nil {
			return s, fmt.Errorf("read %s: %w", path, err)
		}
	}
	return s, nil
}

// ParseSockstat adds the "TCP:" and "TCP6:" lines of a sockstat file to s:
// "TCP: inuse 3 orphan 0 tw 10 alloc 5 mem 1" and "TCP6: inuse 2". Other
// lines are skipped; a TCP line with a malformed pair is an error.
func ParseSockstat(r io.Reader, s *Sockstat) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 || (string(f[0]) != "TCP:" && string(f[0]) != "TCP6:") {
			continue
		}
		if len(f)%2 != 1 {
			return fmt.Errorf("%s line: odd number of fields", f[0])
		}
		for i := 1; i+1 < len(f); i += 2 {
			v, err := strconv.Atoi(string(f[i+1]))
			if err != nil || v < 0 {
				return fmt.Errorf("%s %s: bad value %q", f[0], f[i], f[i+1])
			}
			var dst *int
			switch string(f[i]) {
			case "inuse":
				dst = &s.InUse
			case "orphan":
				dst = &s.Orphan
			case "tw":
				dst = &s.TW
			case "alloc":
				dst = &s.Alloc
			default:
				continue
			}
			if *dst > math.MaxInt-v {
				return fmt.Errorf("%s %s: overflow", f[0], f[i])
			}
			*dst += v
		}
	}
	return sc.Err()
}
