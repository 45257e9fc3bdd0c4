package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/charmbracelet/x/term"
	"github.com/spf13/cobra"

	"github.com/tcplens/tcplens/internal/top"
	"github.com/tcplens/tcplens/internal/watch"
)

// minTopInterval keeps top from dumping back to back for nothing: the
// screen cannot be read faster, and `tcplens record` is for finer sampling.
const minTopInterval = 100 * time.Millisecond

func newTopCmd(g *globals) *cobra.Command {
	var (
		interval time.Duration
		idle     idleFlags
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Live view: states with sparklines, port budgets, churn, CLOSE_WAIT, retransmits and findings",
		Long: `top samples the namespace every --interval and shows the state counts with
a sparkline of the last 60 samples, the destinations using the most ephemeral
ports, connection churn, CLOSE_WAIT sockets by process, connections that are
retransmitting and doctor's current findings.

Keys: tab moves between panels, s changes the sort column of the focused
panel, / filters every panel (text, an address or CIDR such as 10.0.0.0/8,
pid:123; terms combine), esc clears the filter, p pauses, q or ctrl-c quits.

top needs a terminal. For scripts use tcplens summary --json or
tcplens doctor --json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.json {
				return usageError(errors.New("top is interactive and has no --json: use `tcplens summary --json` or `tcplens doctor --json`"))
			}
			if interval < minTopInterval {
				return usageError(fmt.Errorf("--interval %s: must be at least %s", interval, minTopInterval))
			}
			idleTimeout, err := idle.resolve(cmd.Flags())
			if err != nil {
				return usageError(err)
			}
			out, ok := cmd.OutOrStdout().(*os.File)
			if !ok || !term.IsTerminal(out.Fd()) {
				return usageError(errors.New("top needs a terminal on stdout; for a one-shot text view use `tcplens summary` (or `tcplens doctor`)"))
			}
			w, err := watch.New(watch.Options{Netns: g.netns, Interval: interval, IdleTimeout: idleTimeout, Procs: true, Churn: true})
			if err != nil {
				return usageError(err)
			}
			defer w.Close() // the destroy-event listener
			return top.Run(cmd.Context(), w, cmd.InOrStdin(), out)
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "time between samples")
	idle.add(cmd.Flags())
	return cmd
}
