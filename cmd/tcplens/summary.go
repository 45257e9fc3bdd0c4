package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tcplens/tcplens/internal/analyze"
	"github.com/tcplens/tcplens/internal/render"
	"github.com/tcplens/tcplens/internal/snapshot"
)

func newSummaryCmd(g *globals) *cobra.Command {
	var top int
	cmd := &cobra.Command{
		Use:   "summary",
		Short: "Counts per state, top destinations, listeners, processes and the ephemeral port budget",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if top < 0 {
				return usageError(fmt.Errorf("--top %d: must be 0 (no limit) or more", top))
			}
			snap, err := snapshot.Take(cmd.Context(), snapshot.Options{Netns: g.netns, Procs: true})
			if err != nil {
				return err
			}
			sum := analyze.Summarize(snap, top)
			if g.json {
				return render.JSON(cmd.OutOrStdout(), sum)
			}
			return render.Summary(cmd.OutOrStdout(), &sum)
		},
	}
	cmd.Flags().IntVar(&top, "top", 10, "rows per list (0 = all)")
	return cmd
}
