package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tcplens/tcplens/lab"
)

func newLabCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Reproduce connection problems on this kernel, in throw-away network namespaces",
		Long: `lab builds isolated network namespaces, drives real traffic through them,
shows what tcplens sees, applies the fix and measures the difference. It never
changes the host: every sysctl and firewall rule lives inside the scenario's
own namespaces, which are removed at the end (also on Ctrl-C). Needs root.`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the scenarios",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			for _, s := range lab.Scenarios() {
				fmt.Fprintf(tw, "%s\t%s\n", s.Name, s.Summary)
			}
			return tw.Flush()
		},
	})
	var keep bool
	run := &cobra.Command{
		Use:   "run NAME",
		Short: "Run one scenario and narrate it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sc, err := lab.Find(args[0])
			if err != nil {
				return usageError(err)
			}
			if g.netns != "" {
				return usageError(fmt.Errorf("lab creates its own namespaces; --netns does not apply"))
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("lab needs root to create network namespaces")
			}
			narration := cmd.OutOrStdout()
			if g.json {
				narration = cmd.ErrOrStderr()
			}
			res, err := lab.Execute(cmd.Context(), sc, lab.Options{Out: narration, Keep: keep})
			if err != nil {
				return err
			}
			if g.json {
				return lab.WriteJSON(cmd.OutOrStdout(), res)
			}
			return nil
		},
	}
	run.Flags().BoolVar(&keep, "keep", false, "keep the namespaces for exploring and print how to inspect them")
	cmd.AddCommand(run)
	return cmd
}
