package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ErrDataDirLocked is returned by New when another bus, in this process or
// another, uses the same Config.DataDir.
var ErrDataDirLocked = errors.New("jetstream: data directory is in use by another bus")

// lockFile is the file in Config.DataDir whose lock marks the directory as in
// use; two servers writing one store would corrupt it.
const lockFile = "jetstream.lock"

// startEmbedded locks the data directory, starts the embedded server with
// JetStream and connects to it in memory.
func (b *Bus) startEmbedded(ctx context.Context) error {
	cfg := b.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("jetstream: Config.DataDir: %w", err)
	}
	unlock, err := lockDir(filepath.Join(cfg.DataDir, lockFile))
	if err != nil {
		return err
	}
	b.unlock = unlock

	opts := &server.Options{
		ServerName: "signalbox",
		JetStream:  true,
		StoreDir:   cfg.DataDir, // the server adds its "jetstream" subdirectory
		// The server must not take over SIGINT and SIGTERM: the process
		// shuts down in its own order and closes the bus last.
		NoSigs:       true,
		MaxPayload:   embeddedMaxPayload,
		SyncAlways:   cfg.SyncAlways,
		SyncInterval: cfg.SyncInterval,
		DontListen:   cfg.Listen == "",
		Debug:        b.log.Enabled(ctx, slog.LevelDebug),
	}
	if cfg.Listen != "" {
		opts.Host, opts.Port, _ = splitListen(cfg.Listen) // validated by Config.validate
	}

	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("jetstream: embedded server: %w", err)
	}
	logger := &serverLog{log: b.log.With("component", "nats-server")}
	srv.SetLoggerV2(logger, opts.Debug, false, false)
	b.srv = srv

	srv.Start()
	if err := waitReady(ctx, srv); err != nil {
		return err
	}
	if !srv.JetStreamEnabled() {
		if msg := logger.fatal(); msg != "" {
			return fmt.Errorf("jetstream: embedded server: %s", msg)
		}
		return errors.New("jetstream: embedded server started without JetStream")
	}

	// The bus itself always talks to its server in memory, listener or not.
	nc, err := nats.Connect(srv.ClientURL(), append(b.connOptions(), nats.InProcessServer(srv))...)
	if err != nil {
		return fmt.Errorf("jetstream: connect to the embedded server: %w", err)
	}
	b.nc = nc
	b.desc = b.describeEmbedded()
	return nil
}

// waitReady waits until the server accepts clients and has recovered its
// streams, or ctx is done.
func waitReady(ctx context.Context, srv *server.Server) error {
	for !srv.ReadyForConnections(100 * time.Millisecond) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("jetstream: embedded server not ready: %w", err)
		}
	}
	return nil
}

func (b *Bus) describeEmbedded() string {
	d := "embedded JetStream, data in " + storeDir(b.cfg.DataDir)
	if b.cfg.SyncAlways {
		d += ", fsync on every write"
	} else {
		d += ", fsync every " + b.cfg.SyncInterval.String()
	}
	if b.cfg.Listen != "" {
		d += ", listening on " + b.srv.ClientURL()
	}
	return d
}

// serverLog routes the embedded server's log to slog. Its notices are
// mostly start-up chatter and go to Debug; the bus logs its own lifecycle
// at Info.
type serverLog struct {
	log *slog.Logger

	mu       sync.Mutex
	fatalMsg string // the last fatal error, which the server logs and survives
}

func (l *serverLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLog) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLog) Tracef(string, ...any)           {}

// Fatalf records the message; the server's own logger would exit the
// process here, which is not the server's decision to make in ours.
func (l *serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	l.mu.Lock()
	l.fatalMsg = msg
	l.mu.Unlock()
}

func (l *serverLog) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatalMsg
}
