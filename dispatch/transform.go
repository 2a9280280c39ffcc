package dispatch

import (
	"context"
	"fmt"

	"github.com/signalbox-dev/signalbox/config"
	"github.com/signalbox-dev/signalbox/functions/transform"
)

// transformer is a compiled Sensor trigger transform: it turns the input
// object (JSON, keyed by dependency name) into the data of zero or more
// outgoing events. *transform.Transform is one.
type transformer interface {
	Apply(ctx context.Context, input []byte) ([][]byte, error)
}

var _ transformer = (*transform.Transform)(nil)

// compileTransform compiles a trigger's transform once per configuration,
// with the default limits (time, output size, and for Lua instructions and
// memory).
func compileTransform(t *config.Transform) (transformer, error) {
	tr, err := transform.Compile(t.Spec(), transform.Limits{})
	if err != nil {
		return nil, fmt.Errorf("transform: %w", err)
	}
	return tr, nil
}
