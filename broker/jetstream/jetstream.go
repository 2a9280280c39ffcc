// Package jetstream implements broker.Bus on NATS JetStream: by default on a
// server embedded in the process, storing its files under a data directory,
// or on an external JetStream server or cluster reached by URL.
//
// # Layout
//
// Each topic has a log stream, a state stream, once something is
// dead-lettered a dead-letter stream, and once the StateStore is used a kv
// stream; each group is a durable pull consumer
// on the log. Topic, group and consumer names are escaped into JetStream
// names (see token): "default/orders" is stream "signalbox_log_default_2forders"
// and group "trigger.orders" is consumer "trigger_2eorders". Message IDs are
// log stream sequences in decimal.
//
// # Retention and backpressure
//
// A log stream uses interest retention, DiscardNew and MaxMsgs = MaxLen. The
// server then removes a message as soon as every group has acknowledged it
// (or the groups that had not were deleted), never removes one that a group
// has not acknowledged, and refuses to store a message once MaxLen
// unacknowledged ones are stored; Publish reports that as
// broker.ErrBackpressure. The limit is exact and enforced by the server for
// every publisher, so no trimmer runs in the bus.
//
// Interest retention does not store a message published while the topic has
// no group. That is the contract, not a loss: a group sees only messages
// published after it was created. Limits retention with MaxMsgs would drop
// unacknowledged messages, and work-queue retention allows only one consumer
// per subject, so neither fits.
//
// # Groups, leases and restarts
//
// A group is created at the end of the log (DeliverPolicy new), with explicit
// acknowledgements, the subscription's lease as ack wait, no delivery limit
// (the dispatcher counts attempts) and no limit on unacknowledged messages
// (MaxLen bounds them). The server redelivers a message whose lease expired;
// Renew sends an in-progress notice, which restarts the lease. The ack wait is
// the group's, not the consumer's: subscribing with another lease changes it
// for every consumer of the group.
//
// JetStream does not track which client holds a delivered message, so a
// consumer that restarts with the same name cannot simply ask for its pending
// messages. Instead, each consumer keeps a record of the messages it holds in
// the state stream (rewritten after each Fetch and Renew and on Close), and
// Subscribe hands the messages in the previous record back to the group with
// a nak, which makes them available at once. The next Fetch of the restarted
// consumer usually gets them, in log order, marked redelivered; unlike Redis,
// another consumer of the group fetching at that moment may get some of them
// first. Only messages whose lease has clearly not run out are handed back,
// so a message already given to another consumer is never taken from it.
// After a crash the record is as of the last Fetch or the last Renew that
// rewrote it (at most every quarter lease): a message whose recorded lease
// has run out by the restart comes back after its actual lease instead.
//
// A Fetch is one pull request that waits up to its wait for a first message
// and then returns at once with what is available. A Fetch that ends early
// (its context is done, or Close) stops the server from delivering more to
// it and hands back at once whatever was already on its way. Recorded
// attempts live in the state stream, one record per message, removed on Ack
// and by DeleteGroup.
//
// # Durability
//
// Publish returns once the server has stored every payload. The embedded
// server writes each message to its file before acknowledging it, so a
// stored message survives a crash of the process; it reaches the disk itself
// at the next fsync, every Config.SyncInterval (1s by default), unless
// Config.SyncAlways is set. Acknowledgements and renewals are sent without
// waiting for the server, and Subscription.Close waits until the server has
// processed the acknowledgements: one lost in a crash means a redelivery,
// none is lost in a clean shutdown.
package jetstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/signalbox-dev/signalbox/broker"
)

var _ broker.Bus = (*Bus)(nil)

// Defaults that New applies to zero Config fields.
const (
	DefaultMaxLen              = 1_000_000
	DefaultDeadLetterRetention = 14 * 24 * time.Hour
	DefaultSyncInterval        = time.Second
)

// DefaultLease is the lease Subscribe uses when broker.SubscribeConfig.Lease
// is zero.
const DefaultLease = 30 * time.Second

// embeddedMaxPayload is the largest message the embedded server accepts. The
// ingress refuses requests over 1 MiB by default, and an encoded event is a
// little larger than its request.
const embeddedMaxPayload = 8 << 20

// Config configures a Bus. With URL empty the bus runs an embedded server and
// DataDir is required; otherwise every field but URL is optional.
type Config struct {
	// URL locates an external JetStream server or cluster:
	// nats://[user:password@]host:port, or tls:// for TLS, or several such
	// URLs separated by commas. Empty means an embedded server.
	URL string

	// DataDir is the directory the embedded server keeps its files in; they
	// go to its "jetstream" subdirectory, next to a lock file that keeps a
	// second process off the same data. Required when URL is empty; ignored
	// otherwise.
	DataDir string

	// Listen, for the embedded server, is a host:port on which it also
	// accepts NATS clients, for example other signalbox replicas or the nats
	// CLI; port 0 picks a free port (see ListenURL). The listener has no
	// authentication, so bind it to a trusted network. Empty means no network
	// listener at all: the bus talks to its server in memory. Must be empty
	// when URL is set.
	Listen string

	// SyncAlways makes the embedded server fsync every write before it
	// acknowledges it: a stored message then survives a power loss too, at a
	// large cost in publish throughput. When false, a stored message survives
	// a crash of the process at once and a power loss after the next fsync,
	// SyncInterval later at most. Must be false when URL is set; an external
	// server has its own setting.
	SyncAlways bool

	// SyncInterval is how often the embedded server fsyncs its files when
	// SyncAlways is false: the most recent writes a power loss can take. Zero
	// means DefaultSyncInterval (1s); the server's own default would be two
	// minutes. Must be zero when URL is set.
	SyncInterval time.Duration

	// MaxLen is each topic's retention limit, in messages that some group has
	// not acknowledged yet. Publish returns broker.ErrBackpressure while the
	// topic holds that many. Zero means DefaultMaxLen (1,000,000).
	MaxLen int64

	// DeadLetterRetention is how long dead letters are kept. Zero means
	// DefaultDeadLetterRetention (14 days).
	DeadLetterRetention time.Duration

	// Logger receives lifecycle events at Info, problems at Warn and
	// per-message events at Debug; the embedded server's own log goes to it
	// at Debug, and its warnings and errors at Warn and Error. Payloads are
	// never logged. Nil discards.
	Logger *slog.Logger
}

// validate checks cfg and returns it with defaults applied.
func (cfg Config) validate() (Config, error) {
	if cfg.URL != "" {
		if err := validateURL(cfg.URL); err != nil {
			return cfg, err
		}
		switch {
		case cfg.Listen != "":
			return cfg, errors.New("jetstream: Config.Listen: only for the embedded server, but URL is set")
		case cfg.SyncAlways:
			return cfg, errors.New("jetstream: Config.SyncAlways: only for the embedded server, but URL is set")
		case cfg.SyncInterval != 0:
			return cfg, errors.New("jetstream: Config.SyncInterval: only for the embedded server, but URL is set")
		}
	} else {
		if cfg.DataDir == "" {
			return cfg, errors.New("jetstream: Config.DataDir: required for the embedded server")
		}
		if cfg.Listen != "" {
			if _, _, err := splitListen(cfg.Listen); err != nil {
				return cfg, err
			}
		}
	}
	switch {
	case cfg.SyncInterval < 0:
		return cfg, fmt.Errorf("jetstream: Config.SyncInterval: must not be negative, got %v", cfg.SyncInterval)
	case cfg.MaxLen < 0:
		return cfg, fmt.Errorf("jetstream: Config.MaxLen: must not be negative, got %d", cfg.MaxLen)
	case cfg.DeadLetterRetention < 0:
		return cfg, fmt.Errorf("jetstream: Config.DeadLetterRetention: must not be negative, got %v",
			cfg.DeadLetterRetention)
	}

	if cfg.URL == "" && cfg.SyncInterval == 0 {
		cfg.SyncInterval = DefaultSyncInterval
	}
	if cfg.MaxLen == 0 {
		cfg.MaxLen = DefaultMaxLen
	}
	if cfg.DeadLetterRetention == 0 {
		cfg.DeadLetterRetention = DefaultDeadLetterRetention
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return cfg, nil
}

// validateURL accepts one or more comma-separated nats:// or tls:// URLs.
// Its errors never quote the URL, which may carry a password.
func validateURL(raw string) error {
	for part := range strings.SplitSeq(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" {
			return errors.New("jetstream: Config.URL: want nats://host:port or tls://host:port, " +
				"optionally several separated by commas")
		}
	}
	return nil
}

// redactURL returns raw without user information, for logs.
func redactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, part := range parts {
		if u, err := url.Parse(strings.TrimSpace(part)); err == nil {
			u.User = nil
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// splitListen parses Config.Listen. Port 0 becomes the server's "any free
// port".
func splitListen(listen string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("jetstream: Config.Listen: want host:port, got %q", listen)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("jetstream: Config.Listen: bad port in %q", listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// Bus is a broker.Bus on JetStream. It is safe for concurrent use. After
// Close every method returns broker.ErrClosed.
type Bus struct {
	cfg  Config
	log  *slog.Logger
	desc string

	srv    *server.Server // the embedded server; nil for an external one
	unlock func()         // releases the data directory
	nc     *nats.Conn
	js     natsjs.JetStream

	closed atomic.Bool
	// mu guards the fields below and orders Close against operations that
	// register themselves.
	mu       sync.RWMutex
	inflight sync.WaitGroup // Publish calls in progress
	subs     map[*subscription]struct{}
	topics   map[string]*topic
}

// New starts the embedded server, or connects to Config.URL, and checks that
// JetStream answers. It returns an error when the config is invalid, the data
// directory is in use by another process, or the server cannot be started or
// reached before ctx is done.
func New(ctx context.Context, cfg Config) (*Bus, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	b := &Bus{
		cfg:    cfg,
		log:    cfg.Logger,
		subs:   make(map[*subscription]struct{}),
		topics: make(map[string]*topic),
	}

	if cfg.URL == "" {
		err = b.startEmbedded(ctx)
	} else {
		err = b.connectExternal()
	}
	if err != nil {
		b.shutdown()
		return nil, err
	}

	if b.js, err = natsjs.New(b.nc); err != nil {
		b.shutdown()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		b.shutdown()
		return nil, fmt.Errorf("jetstream: JetStream does not answer (is it enabled on the server?): %w", err)
	}
	b.log.Info("jetstream bus ready", "bus", b.desc, "max_len", cfg.MaxLen)
	return b, nil
}

// connectExternal connects to Config.URL. The client reconnects forever
// after it once connected; publishes in flight during a disconnection fail.
func (b *Bus) connectExternal() error {
	nc, err := nats.Connect(b.cfg.URL, append(b.connOptions(), nats.MaxReconnects(-1))...)
	if err != nil {
		return fmt.Errorf("jetstream: connect to %s: %w", redactURL(b.cfg.URL), err)
	}
	b.nc = nc
	b.desc = "JetStream at " + redactURL(nc.ConnectedUrlRedacted())
	return nil
}

// connOptions are the client options shared by both modes.
func (b *Bus) connOptions() []nats.Option {
	return []nats.Option{
		nats.Name("signalbox"),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil && !b.closed.Load() {
				b.log.Warn("disconnected from NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			b.log.Warn("NATS client error", "err", err)
		}),
	}
}

// Describe returns a one-line description of the bus for the startup log,
// such as "embedded JetStream, data in data/jetstream, fsync every 1s" or
// "JetStream at nats://host:4222". It never contains a password.
func (b *Bus) Describe() string { return b.desc }

// ListenURL returns the nats:// URL on which the embedded server accepts
// clients, or "" when it has no listener or the bus uses an external server.
func (b *Bus) ListenURL() string {
	if b.srv == nil || b.cfg.Listen == "" {
		return ""
	}
	return b.srv.ClientURL()
}

// topic is the per-topic state: names, the lazily created streams, and the
// lock that keeps one Publish call's payloads together in the log.
type topic struct {
	name string
	names

	// pubMu is held while one Publish call hands its payloads to the
	// connection, so that concurrent calls do not interleave in the log.
	pubMu sync.Mutex

	// ready is set once the log and state streams exist; Publish checks it
	// without taking mu.
	ready atomic.Bool

	mu    sync.Mutex // guards the fields below
	state natsjs.Stream
	dead  natsjs.Stream
	kv    natsjs.Stream // StateStore entries; created on first use
}

// topic returns the state of the named topic, without talking to the server.
func (b *Bus) topic(name string) (*topic, error) {
	if name == "" {
		return nil, errors.New("jetstream: topic name is empty")
	}
	b.mu.RLock()
	t, ok := b.topics[name]
	b.mu.RUnlock()
	if ok {
		return t, nil
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.topics[name]; ok {
		return t, nil
	}
	t = &topic{name: name, names: topicNames(name)}
	b.topics[name] = t
	return t, nil
}

// ready creates or updates the topic's log and state streams, once per bus;
// a failure is retried by the next call. Every replica of the gateway must
// use the same Config.MaxLen, or each start rewrites the limit.
//
// TODO(jetstream-replicas): streams get one replica, also on an external
// cluster; a Config.Replicas would let a cluster survive the loss of a node.
func (b *Bus) ready(ctx context.Context, t *topic) error {
	if t.ready.Load() {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ready.Load() {
		return nil
	}

	_, err := b.js.CreateOrUpdateStream(ctx, natsjs.StreamConfig{
		Name:        t.logStream,
		Description: "signalbox log of " + t.name,
		Subjects:    []string{t.logSubject},
		Retention:   natsjs.InterestPolicy,
		Discard:     natsjs.DiscardNew,
		MaxMsgs:     b.cfg.MaxLen,
		Storage:     natsjs.FileStorage,
		Replicas:    1,
	})
	if err != nil {
		return fmt.Errorf("jetstream: create log stream of %q: %w", t.name, err)
	}
	state, err := b.js.CreateOrUpdateStream(ctx, natsjs.StreamConfig{
		Name:              t.stateStream,
		Description:       "signalbox attempts and held messages of " + t.name,
		Subjects:          []string{t.statePrefix + ">"},
		Retention:         natsjs.LimitsPolicy,
		MaxMsgsPerSubject: 1,
		Storage:           natsjs.FileStorage,
		Replicas:          1,
		AllowDirect:       true,
	})
	if err != nil {
		return fmt.Errorf("jetstream: create state stream of %q: %w", t.name, err)
	}
	t.state = state
	t.ready.Store(true)
	return nil
}

// stateStream returns the topic's state stream, or nil when it does not
// exist, without creating it.
func (b *Bus) stateStream(ctx context.Context, t *topic) (natsjs.Stream, error) {
	t.mu.Lock()
	state := t.state
	t.mu.Unlock()
	if state != nil {
		return state, nil
	}
	state, err := b.js.Stream(ctx, t.stateStream)
	if errors.Is(err, natsjs.ErrStreamNotFound) {
		return nil, nil
	}
	return state, err
}

// DeleteGroup deletes the group's consumer, its recorded attempts and the
// held records of its consumers. With interest retention the server then
// drops the messages only this group still needed. Dead letters stay.
// Deleting a missing group, or a group of a topic never used, is not an
// error. A subscription of the group still open gets an error from its next
// Fetch.
func (b *Bus) DeleteGroup(ctx context.Context, topicName, group string) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if group == "" {
		return errors.New("jetstream: group name is empty")
	}
	t, err := b.topic(topicName)
	if err != nil {
		return err
	}

	groupTok := token(group)
	err = b.js.DeleteConsumer(ctx, t.logStream, groupTok)
	if err != nil && !errors.Is(err, natsjs.ErrConsumerNotFound) && !errors.Is(err, natsjs.ErrStreamNotFound) {
		return b.fail(fmt.Errorf("jetstream: delete group %q of %q: %w", group, topicName, err))
	}
	state, err := b.stateStream(ctx, t)
	if err == nil && state != nil {
		err = state.Purge(ctx, natsjs.WithPurgeSubject(t.groupStateFilter(groupTok)))
	}
	if err != nil {
		return b.fail(fmt.Errorf("jetstream: forget attempts of group %q of %q: %w", group, topicName, err))
	}
	b.log.Info("deleted consumer group", "broker", topicName, "group", group)
	return nil
}

// Ping reports whether the server answers JetStream requests. It fails at
// once while the client is disconnected.
func (b *Bus) Ping(ctx context.Context) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if !b.nc.IsConnected() {
		return fmt.Errorf("jetstream: ping: not connected (%s)", b.nc.Status())
	}
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return b.fail(fmt.Errorf("jetstream: ping: %w", err))
	}
	return nil
}

// fail returns broker.ErrClosed instead of err when the bus was closed while
// the call ran, so that callers see why.
func (b *Bus) fail(err error) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	return err
}

// Close closes the subscriptions that are still open, waits for Publish
// calls in progress, closes the connection and, for the embedded server,
// shuts it down so that its files are consistent for the next start.
// Calling it again returns broker.ErrClosed.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed.Load() {
		b.mu.Unlock()
		return broker.ErrClosed
	}
	b.closed.Store(true)
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()

	if len(subs) > 0 {
		b.log.Warn("closing bus with open subscriptions", "count", len(subs))
	}
	for _, s := range subs {
		_ = s.Close()
	}
	b.inflight.Wait()
	b.shutdown()
	b.log.Info("jetstream bus closed", "bus", b.desc)
	return nil
}

// shutdown releases the connection, the embedded server and the data
// directory, whichever exist.
func (b *Bus) shutdown() {
	if b.nc != nil {
		if b.nc.IsConnected() {
			// Flush sends acknowledgements still buffered in the client.
			_ = b.nc.FlushTimeout(5 * time.Second)
		}
		b.nc.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
	if b.unlock != nil {
		b.unlock()
	}
}

// storeDir is where the embedded server keeps its streams.
func storeDir(dataDir string) string { return filepath.Join(dataDir, server.JetStreamStoreDir) }
