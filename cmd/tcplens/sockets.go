package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tcplens/tcplens/internal/filter"
	"github.com/tcplens/tcplens/internal/netns"
	"github.com/tcplens/tcplens/internal/procs"
	"github.com/tcplens/tcplens/internal/render"
	"github.com/tcplens/tcplens/internal/sockdiag"
)

func newSocketsCmd(g *globals) *cobra.Command {
	var spec filter.Spec
	var cols render.SocketColumns
	cmd := &cobra.Command{
		Use:   "sockets",
		Short: "List TCP sockets, like ss -tan",
		Long: `List TCP sockets (IPv4 and IPv6, every state) straight from the kernel.

Filters combine with AND; repeated values of one filter combine with OR.
States use kernel names (TIME_WAIT) or ss names (time-wait), plus the groups
all, connected, synchronized, bucket and big.`,
		Example: `  tcplens sockets --state time-wait --dport 5432 -o
  tcplens sockets --state close-wait -p
  tcplens sockets --dst 10.0.0.0/8 -i --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := filter.Parse(spec)
			if err != nil {
				return usageError(err)
			}
			ctx := cmd.Context()
			var table *procs.Table
			if cols.Procs || f.NeedsProcs() {
				if table, err = procs.Scan(ctx, "/proc"); err != nil {
					return fmt.Errorf("find socket owners: %w", err)
				}
			}
			var d *sockdiag.Dumper
			if err := netns.Run(g.netns, func() (err error) {
				d, err = sockdiag.Open()
				return err
			}); err != nil {
				return err
			}
			defer d.Close()

			var w render.SocketWriter
			if g.json {
				w = render.NewSocketJSON(cmd.OutOrStdout(), cols)
			} else {
				w = render.NewSocketTable(cmd.OutOrStdout(), cols)
			}
			req := sockdiag.Request{States: f.Mask(), Info: cols.Info || g.json}
			_, err = d.Dump(ctx, req, func(s *sockdiag.Socket) error {
				owners := table.Owners(s.Inode) // nil without a table
				if !f.Match(s, owners) {
					return nil
				}
				return w.Write(s, owners)
			})
			if ferr := w.Flush(); err == nil {
				err = ferr
			}
			if err != nil {
				return fmt.Errorf("list sockets: %w", err)
			}
			if note := table.UnreadableNote(); note != "" && !g.json {
				fmt.Fprintln(cmd.ErrOrStderr(), "note: "+note)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&spec.States, "state", nil, "only these states (repeatable, comma-separated)")
	fl.StringSliceVar(&spec.Src, "src", nil, "local address or CIDR")
	fl.StringSliceVar(&spec.Dst, "dst", nil, "remote address or CIDR")
	fl.StringSliceVar(&spec.Sport, "sport", nil, "local port or range (1000-2000)")
	fl.StringSliceVar(&spec.Dport, "dport", nil, "remote port or range")
	fl.StringVar(&spec.Process, "process", "", "owning process: a pid or a command name")
	fl.BoolVarP(&cols.Timers, "timers", "o", false, "show timers (retransmit, keepalive, timewait, ...)")
	fl.BoolVarP(&cols.Info, "info", "i", false, "show tcp_info: RTT, RTO, cwnd, retransmits, idle time, bytes")
	fl.BoolVarP(&cols.Procs, "processes", "p", false, "show owning processes")
	return cmd
}
