package main

import (
	"context"
	"fmt"
	"log/slog"
)

// redisLogger sends go-redis's internal messages (dial retries while Redis is
// down, pool events) to slog at debug: the bus reports the failures that
// matter through its own errors, so these would only repeat them.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client", "msg", fmt.Sprintf(format, v...))
}
