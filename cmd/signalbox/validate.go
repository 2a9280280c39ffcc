package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/signalbox-dev/signalbox/config"
)

// newValidateCmd checks configuration files without running anything.
func newValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate PATH...",
		Short: "Check config files or directories; print one line per problem (file:line: object: field: message)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			snap, err := config.Load(args...)
			if err != nil {
				var list interface{ Unwrap() []error }
				n := 1
				if errors.As(err, &list) {
					n = len(list.Unwrap())
					for _, e := range list.Unwrap() {
						fmt.Fprintln(cmd.OutOrStdout(), e)
					}
				} else {
					fmt.Fprintln(cmd.OutOrStdout(), err)
				}
				return &exitError{code: 1, err: fmt.Errorf("%d problem(s) found", n)}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d broker(s), %d trigger(s), %d sensor(s), %d event source(s)\n",
				len(snap.Brokers), len(snap.Triggers), len(snap.Sensors), len(snap.EventSources))
			return nil
		},
	}
}
