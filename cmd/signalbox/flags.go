package main

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// bindEnv makes every flag of cmd that was not given on the command line take
// its value from SIGNALBOX_<FLAG> (dashes become underscores), so each flag
// can also be set from the environment. With names, only those flags do.
func bindEnv(cmd *cobra.Command, names ...string) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || !envBound(f.Name, names) {
			return
		}
		name := envName(f.Name)
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if sv, isSlice := f.Value.(pflag.SliceValue); isSlice {
			err = sv.Replace(strings.Split(v, ","))
		} else {
			err = f.Value.Set(v)
		}
		if err != nil {
			err = fmt.Errorf("environment %s: %w", name, err)
		}
	})
	return err
}

func envName(flag string) string {
	return "SIGNALBOX_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// annotateEnv appends "(env NAME)" to the usage of the flags bindEnv binds
// with the same names, so --help shows them.
func annotateEnv(cmd *cobra.Command, names ...string) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if envBound(f.Name, names) {
			f.Usage += " (env " + envName(f.Name) + ")"
		}
	})
}

func envBound(flag string, names []string) bool {
	return flag != "help" && (len(names) == 0 || slices.Contains(names, flag))
}
