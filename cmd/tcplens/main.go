// Command tcplens shows every TCP connection on a Linux host, explains what
// is wrong with them and why, and says how to fix it.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line and returns the exit code, so tests can
// drive the CLI without a subprocess.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	code := exitCodeOf(err)
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(stderr, "tcplens: %s\n", oneLine(msg))
	}
	return code
}
