// Package report turns a recording (internal/record) into one
// self-contained HTML page for an incident ticket: inline CSS, SVG charts
// drawn here in Go, no script and no external resource, so it opens
// offline and shows the same thing everywhere. It reads only the
// recording, never the kernel.
package report
