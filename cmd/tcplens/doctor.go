package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcplens/tcplens/internal/doctor"
	"github.com/tcplens/tcplens/internal/render"
)

// doctorFailed is doctor's exit code when it could not run.
const doctorFailed = 3

func newDoctorCmd(g *globals) *cobra.Command {
	var (
		opt  doctor.Options
		idle idleFlags
		only []string
		skip []string
	)
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Find what is wrong with this host's TCP connections, and how to fix it",
		Long: `doctor takes two snapshots --interval apart, so counters become rates and
sockets can be followed, and runs every rule over them. Each finding has the
numbers that prove it, why the kernel behaves that way, and what to change.

Exit codes: 0 nothing at warning or above, 1 a warning, 2 a critical
finding, 3 doctor could not run.`,
		Example: `  tcplens doctor
  tcplens doctor --lb aws-alb --json
  tcplens doctor --netns /proc/1234/ns/net --only close-wait-leak`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Every failure is exit code 3, whatever its cause.
			report, err := func() (*doctor.Report, error) {
				if opt.Interval < 0 {
					return nil, fmt.Errorf("--interval %s: must be 0 (one snapshot) or more", opt.Interval)
				}
				var err error
				if opt.IdleTimeout, err = idle.resolve(cmd.Flags()); err != nil {
					return nil, err
				}
				opt.Netns, opt.Only, opt.Skip = g.netns, only, skip
				report, err := doctor.Run(cmd.Context(), opt) // checks --only and --skip first
				if err != nil {
					return nil, err
				}
				if g.json {
					return report, render.JSON(cmd.OutOrStdout(), report)
				}
				return report, render.Findings(cmd.OutOrStdout(), report)
			}()
			if err != nil {
				return &exitError{doctorFailed, err}
			}
			if code := report.ExitCode(); code != 0 {
				return &exitError{code, errSilent}
			}
			return nil
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{doctorFailed, err} })
	fl := cmd.Flags()
	fl.DurationVar(&opt.Interval, "interval", time.Second, "time between the two snapshots (0 = one snapshot)")
	idle.add(fl)
	fl.StringSliceVar(&only, "only", nil, "run only these rule ids")
	fl.StringSliceVar(&skip, "skip", nil, "skip these rule ids")
	return cmd
}
