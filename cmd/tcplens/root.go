package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/tcplens/tcplens/internal/netns"
)

// globals are the flags every command accepts.
type globals struct {
	netns string
	json  bool
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "tcplens",
		Short: "See every TCP connection on this host, what is wrong with them, and how to fix it",
		Long: `tcplens reads the kernel's socket tables through netlink (like ss), the TCP
counters and sysctls, and explains connection problems: TIME_WAIT storms and
ephemeral port exhaustion, CLOSE_WAIT leaks, stuck FIN_WAIT2, idle
connections dropped by load balancers, retransmission hangs and listen queue
overflows.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			err := checkNetns(g.netns)
			if err != nil && cmd.Name() == "doctor" {
				return &exitError{doctorFailed, err}
			}
			return err
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	root.PersistentFlags().StringVar(&g.netns, "netns", "", "inspect another network namespace: a name from /run/netns or a path like /proc/PID/ns/net")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "write JSON (snake_case fields) instead of a table")
	root.AddCommand(
		newVersionCmd(g),
		newSocketsCmd(g),
		newSummaryCmd(g),
		newDoctorCmd(g),
		newLabCmd(g),
		newServeCmd(g),
		newTopCmd(g),
		newRecordCmd(g), newHistoryCmd(g), newReportCmd(g),
	)
	return root
}

func checkNetns(ns string) error {
	path, err := netns.Resolve(ns)
	if err != nil {
		return usageError(fmt.Errorf("--netns: %w", err))
	}
	if path == "" {
		return nil
	}
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return usageError(fmt.Errorf("--netns %s: no such network namespace (%s)", ns, path))
		}
		return usageError(fmt.Errorf("--netns %s: %w", ns, err))
	}
	return nil
}
