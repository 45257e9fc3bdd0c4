// Package render formats sockets, summaries and findings for people (tables
// that fit 80 columns where they can) and for programs (JSON with snake_case
// names). It only formats values it is given; it never reads the kernel.
package render
