package churn

import (
	"bytes"
	"fmt"
	"strconv"
)

// netlinkDrops finds the socket with inode ino in the text of
// /proc/net/netlink and returns its Drops column: the number of messages
// the kernel could not queue to it (sk_drops, raised by netlink_overrun).
// Columns are located by the header, so added columns do not break it.
func netlinkDrops(b []byte, ino uint64) (uint64, error) {
	header, rest, _ := bytes.Cut(b, []byte{'\n'})
	cols := bytes.Fields(header)
	dropsCol, inodeCol := -1, -1
	for i, c := range cols {
		switch string(c) {
		case "Drops":
			dropsCol = i
		case "Inode":
			inodeCol = i
		}
	}
	if dropsCol < 0 || inodeCol < 0 {
		return 0, fmt.Errorf("/proc/net/netlink: no Drops or Inode column in header %q", header)
	}
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte{'\n'})
		f := bytes.Fields(line)
		if len(f) <= max(dropsCol, inodeCol) {
			continue
		}
		if n, err := strconv.ParseUint(string(f[inodeCol]), 10, 64); err != nil || n != ino {
			continue
		}
		d, err := strconv.ParseUint(string(f[dropsCol]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/net/netlink: drops %q: %w", f[dropsCol], err)
		}
		return d, nil
	}
	return 0, fmt.Errorf("/proc/net/netlink: socket inode %d not listed", ino)
}
