package config

import "github.com/signalbox-dev/signalbox/functions/transform"

// compileTransform compiles a transform as the dispatcher will, so that a
// configuration that validates also runs. Errors locate the problem in the
// program (line and column) when the compiler knows it.
func compileTransform(t *Transform) error {
	_, err := transform.Compile(t.Spec(), transform.Limits{})
	return err
}

// Spec returns the transform in the form functions/transform compiles.
func (t *Transform) Spec() transform.Spec { return transform.Spec{JQ: t.JQ, Lua: t.Lua} }
