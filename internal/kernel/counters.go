package kernel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// Counters holds every field of /proc/net/netstat and /proc/net/snmp, keyed
// "Section.Field", e.g. "TcpExt.ListenOverflows", "Tcp.RetransSegs",
// "Tcp.AttemptFails", "IpExt.InOctets".
//
// Values are int64 because a few snmp fields are signed (Tcp.MaxConn is -1).
// Unsigned kernel counters above math.MaxInt64 wrap to negative values, which
// keeps Delta correct modulo 2^64.
type Counters map[string]int64

// Counter files, relative to the calling thread's network namespace.
const (
	netstatPath = "/proc/thread-self/net/netstat"
	snmpPath    = "/proc/thread-self/net/snmp"
)

// maxCounterLine bounds one line; the TcpExt header is a few KiB today.
const maxCounterLine = 1 << 20

// ReadCounters reads /proc/thread-self/net/netstat and
// /proc/thread-self/net/snmp of the calling thread's network namespace. Call
// it inside netns.Run to read another namespace.
func ReadCounters() (Counters, error) {
	c := make(Counters, 512)
	for _, path := range []string{netstatPath, snmpPath} {
		if err := readCounterFile(path, c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func readCounterFile(path string, c Counters) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	if err := ParseCounters(f, c); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// ParseCounters parses the netstat/snmp format into c: pairs of lines
// "Section: Name1 Name2 ..." followed by "Section: v1 v2 ...". Blank lines
// are ignored. It returns an error for a line without "Section:", a header
// without its values line, a values line without its header, a section name
// that differs between the two lines, differing field counts and values
// that are not integers. On error c may hold the sections parsed so far.
func ParseCounters(r io.Reader, c Counters) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxCounterLine)
	var (
		lineNo     int
		header     []byte // copy of the pending header line, nil if none
		headerLine int
	)
	for sc.Scan() {
		lineNo++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if header == nil {
			sec, names, err := splitSection(line)
			if err != nil {
				return fmt.Errorf("line %d: %w", lineNo, err)
			}
			if len(names) > 0 && isNumber(names[0]) {
				return fmt.Errorf("line %d: values for section %q without a header line", lineNo, sec)
			}
			header = append([]byte(nil), line...)
			headerLine = lineNo
			continue
		}
		if err := parsePair(header, line, c); err != nil {
			return fmt.Errorf("lines %d-%d: %w", headerLine, lineNo, err)
		}
		header = nil
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("line %d: longer than %d bytes", lineNo+1, maxCounterLine)
		}
		return err
	}
	if header != nil {
		sec, _, _ := splitSection(header)
		return fmt.Errorf("line %d: header of section %q has no values line", headerLine, sec)
	}
	return nil
}

// parsePair stores one header/values pair.
func parsePair(header, values []byte, c Counters) error {
	sec, names, err := splitSection(header)
	if err != nil {
		return err
	}
	vsec, vals, err := splitSection(values)
	if err != nil {
		return err
	}
	if !bytes.Equal(sec, vsec) {
		return fmt.Errorf("header of section %q followed by section %q", sec, vsec)
	}
	if len(names) != len(vals) {
		return fmt.Errorf("section %q: %d names but %d values", sec, len(names), len(vals))
	}
	prefix := string(sec) + "."
	for i, name := range names {
		v, err := parseCounterValue(vals[i])
		if err != nil {
			return fmt.Errorf("section %q field %q: %w", sec, name, err)
		}
		c[prefix+string(name)] = v
	}
	return nil
}

// splitSection splits "Section: a b c" into the section and its fields.
func splitSection(line []byte) (sec []byte, fields [][]byte, err error) {
	sec, rest, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		return nil, nil, fmt.Errorf("no section name in %q", truncate(line))
	}
	sec = bytes.TrimSpace(sec)
	if len(sec) == 0 || bytes.ContainsAny(sec, " \t") {
		return nil, nil, fmt.Errorf("bad section name in %q", truncate(line))
	}
	return sec, bytes.Fields(rest), nil
}

func parseCounterValue(b []byte) (int64, error) {
	s := string(b)
	v, err := strconv.ParseInt(s, 10, 64)
	if err == nil {
		return v, nil
	}
	// Unsigned 64-bit counters beyond MaxInt64: keep them modulo 2^64.
	if u, uerr := strconv.ParseUint(s, 10, 64); uerr == nil {
		return int64(u), nil
	}
	return 0, fmt.Errorf("value %q is not an integer", truncate(b))
}

// isNumber reports whether b looks like a value rather than a field name;
// field names never start with a digit or a sign.
func isNumber(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	ch := b[0]
	return ch == '-' || ch == '+' || (ch >= '0' && ch <= '9')
}

func truncate(b []byte) string {
	const limit = 64
	if len(b) > limit {
		return string(b[:limit]) + "..."
	}
	return string(b)
}

// Delta returns c[k]-prev[k] for every key in c; keys missing from prev give
// c[k]. Keys only in prev are dropped.
func (c Counters) Delta(prev Counters) Counters {
	d := make(Counters, len(c))
	for k, v := range c {
		d[k] = v - prev[k]
	}
	return d
}

// Get returns the counter key, or 0 when it is missing (older kernel, or a
// section such as IcmpMsg that the kernel prints only once non-empty).
func (c Counters) Get(key string) int64 { return c[key] }
