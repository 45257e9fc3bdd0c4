package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/tcplens/tcplens/internal/report"
)

func newReportCmd(g *globals) *cobra.Command {
	var (
		out string
		win recordingFlags
		opt report.Options
	)
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Write a recording as one self-contained HTML file (charts, findings, captured snapshots) for an incident ticket",
		Example: `  tcplens report -o incident.html --since 1h
  tcplens report --db /tmp/demo.db -o demo.html`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			now := time.Now()
			w, err := win.parse(now)
			if err != nil {
				return err
			}
			if out == "" {
				return usageError(errors.New("-o FILE is required (use -o - for stdout)"))
			}
			if opt.MaxRows < 1 {
				return usageError(fmt.Errorf("--max-rows %d: must be at least 1", opt.MaxRows))
			}
			ctx := cmd.Context()
			rd, err := win.open(ctx)
			if err != nil {
				return err
			}
			defer rd.Close()
			opt.Window, opt.Now = w, now
			rep, err := report.Build(ctx, rd, opt)
			if err != nil {
				return err
			}
			if out == "-" {
				return rep.Write(cmd.OutOrStdout())
			}
			// Write to a temporary file and rename, so a failure never
			// leaves half a report under the requested name.
			tmp, err := os.CreateTemp(filepath.Dir(out), ".tcplens-report-*")
			if err != nil {
				return fmt.Errorf("write report: %w", err)
			}
			defer os.Remove(tmp.Name())
			if err := rep.Write(tmp); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return fmt.Errorf("write report: %w", err)
			}
			if err := os.Chmod(tmp.Name(), 0o644); err != nil {
				return fmt.Errorf("write report: %w", err)
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return fmt.Errorf("write report: %w", err)
			}
			if !g.json {
				fmt.Fprintf(cmd.ErrOrStderr(), "tcplens report: %d samples, %d findings, %d captures -> %s\n", rep.Samples, len(rep.Findings), len(rep.Captures), out)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&out, "output", "o", "", "HTML file to write (- for stdout)")
	win.add(cmd)
	fl.IntVar(&opt.MaxRows, "max-rows", 50, "sockets listed in full per captured snapshot (all are counted in the grouped table)")
	return cmd
}
