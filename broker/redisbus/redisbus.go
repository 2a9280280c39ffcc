// Package redisbus implements broker.Bus on Redis Streams (Redis 7.0 or
// later).
//
// # Key layout
//
// Every key of a topic "ns/name" carries the hash tag {ns/name}, so a topic
// lives in one Redis Cluster slot and multi-key pipelines stay on one node:
//
//	signalbox:{ns/name}:log               the log: a stream, one entry per payload
//	                                      (field "e"); a group is a consumer group
//	signalbox:{ns/name}:attempts:<group>  hash: entry id → recorded attempts
//	signalbox:{ns/name}:dlq:<group>       the group's dead letters: a stream with
//	                                      fields e, dest, code, reason, attempts, time
//	signalbox:{ns/name}:deleted-groups    set of groups removed by DeleteGroup and
//	                                      not subscribed to since
//
// # Publishing
//
// Concurrent Publish calls are committed together: they queue, and a few
// writer goroutines send everything queued in one pipeline per round trip.
// A Publish with several payloads is wrapped in MULTI/EXEC so that its
// entries stay contiguous even when other processes append to the same log.
//
// # Retention
//
// Redis 7.0 cannot trim by acknowledgement, so a trimmer per topic computes
// the oldest entry some group still needs (each group's oldest pending entry,
// or the entry after its last-delivered one) and trims below it with XTRIM
// MINID. It runs every Config.TrimInterval, and only when something was
// published or acknowledged since, or while the topic is full. When the log
// still holds Config.MaxLen entries after trimming, Publish returns
// broker.ErrBackpressure until acknowledgements free room. A log without
// groups keeps its newest MaxLen entries: nobody needs them, but a group
// recreated after Redis lost its data reads them from the start.
//
// # Recovery
//
// When Redis comes back empty (a restart without persistence, FLUSHALL), the
// groups are gone and Fetch gets NOGROUP. Fetch then recreates the group from
// the start of the log (everything in it is newer than the loss) and goes on.
// A group removed with DeleteGroup while a consumer still runs is recorded in
// deleted-groups and not recreated: Fetch returns an error instead, so a
// removed trigger cannot come back and pin retention. Redis must run with
// maxmemory-policy noeviction, or it may evict logs and records alike.
package redisbus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/signalbox-dev/signalbox/broker"
)

var _ broker.Bus = (*Bus)(nil)

// Defaults that New applies to zero Config fields.
const (
	DefaultMaxLen              = 1_000_000
	DefaultDeadLetterRetention = 14 * 24 * time.Hour
	DefaultWriters             = 2
	DefaultMaxBatch            = 1024
	DefaultTrimInterval        = 500 * time.Millisecond
)

// DefaultLease is the lease Subscribe uses when broker.SubscribeConfig.Lease
// is zero.
const DefaultLease = 30 * time.Second

// Stream field names. Short, since the log stores one entry per event.
const (
	fieldPayload     = "e"
	fieldDestination = "dest"
	fieldCode        = "code"
	fieldReason      = "reason"
	fieldAttempts    = "attempts"
	fieldTime        = "time"
)

// Config configures a Bus. The zero value of every field but URL is usable.
type Config struct {
	// URL locates Redis: redis://[user:password@]host:port[/db] or rediss://
	// for TLS, with go-redis's query options (dial_timeout, pool_size, ...).
	// Required.
	//
	// TODO(redis-topology): accept Sentinel and Cluster URLs; the key layout
	// is already cluster-safe, but publishing pipelines mix topics and would
	// have to be split by slot.
	URL string

	// MaxLen is each topic's retention limit, in log entries. Entries every
	// group acknowledged are trimmed; when the unacknowledged ones alone reach
	// MaxLen, Publish returns broker.ErrBackpressure. The trimmer checks every
	// TrimInterval, so a burst may overshoot the limit by what arrives in
	// that time; nothing is ever dropped. Zero means DefaultMaxLen
	// (1,000,000).
	MaxLen int64

	// DeadLetterRetention is how long dead letters are kept. Zero means
	// DefaultDeadLetterRetention (14 days).
	DeadLetterRetention time.Duration

	// Logger receives lifecycle events at Info, problems at Warn and
	// per-message events at Debug. Payloads are never logged. Nil discards.
	Logger *slog.Logger

	// Writers is how many publish pipelines may be in flight at once. Zero
	// means DefaultWriters (2).
	Writers int

	// MaxBatch is the most payloads one publish pipeline carries; a single
	// Publish larger than that is still sent whole. Zero means
	// DefaultMaxBatch (1024).
	MaxBatch int

	// TrimInterval is how often each topic's trimmer looks for entries to
	// trim, and so roughly how long Publish keeps returning
	// broker.ErrBackpressure after room was freed. Zero means
	// DefaultTrimInterval (500ms).
	TrimInterval time.Duration
}

// validate checks cfg and returns it with defaults applied, and the parsed URL.
func (cfg Config) validate() (Config, *redis.Options, error) {
	if cfg.URL == "" {
		return cfg, nil, errors.New("redisbus: Config.URL: required")
	}
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		// go-redis errors may quote the URL; name the field, not the secret.
		return cfg, nil, errors.New("redisbus: Config.URL: not a valid redis:// or rediss:// URL")
	}
	switch {
	case cfg.MaxLen < 0:
		return cfg, nil, fmt.Errorf("redisbus: Config.MaxLen: must not be negative, got %d", cfg.MaxLen)
	case cfg.DeadLetterRetention < 0:
		return cfg, nil, fmt.Errorf("redisbus: Config.DeadLetterRetention: must not be negative, got %v",
			cfg.DeadLetterRetention)
	case cfg.Writers < 0:
		return cfg, nil, fmt.Errorf("redisbus: Config.Writers: must not be negative, got %d", cfg.Writers)
	case cfg.MaxBatch < 0:
		return cfg, nil, fmt.Errorf("redisbus: Config.MaxBatch: must not be negative, got %d", cfg.MaxBatch)
	case cfg.TrimInterval < 0:
		return cfg, nil, fmt.Errorf("redisbus: Config.TrimInterval: must not be negative, got %v", cfg.TrimInterval)
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
	if cfg.Writers == 0 {
		cfg.Writers = DefaultWriters
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.TrimInterval == 0 {
		cfg.TrimInterval = DefaultTrimInterval
	}
	return cfg, opts, nil
}

// Bus is a broker.Bus on Redis Streams. It is safe for concurrent use. After
// Close every method returns broker.ErrClosed.
type Bus struct {
	cfg    Config
	log    *slog.Logger
	addr   string
	client *redis.Client

	// ctx is cancelled by Close; writers and trimmers stop on it.
	ctx    context.Context
	cancel context.CancelFunc
	closed atomic.Bool
	wg     sync.WaitGroup

	topicsMu sync.Mutex // serialises topic creation against Close
	topics   sync.Map   // topic name → *topic

	subsMu sync.Mutex
	subs   map[*subscription]struct{}

	queueMu     sync.Mutex
	queue       []*pubReq
	queueClosed bool
	kick        chan struct{} // a writer should look at the queue

	stats struct {
		published       atomic.Uint64
		batches         atomic.Uint64
		backpressured   atomic.Uint64
		groupsRecreated atomic.Uint64
	}
}

// New connects to Redis, checks that it answers PING and runs Redis 7.0 or
// later, and starts the publish writers. It returns an error when the config
// is invalid or Redis cannot be reached before ctx is done.
func New(ctx context.Context, cfg Config) (*Bus, error) {
	cfg, opts, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	client := redis.NewClient(opts)
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redisbus: ping %s: %w", opts.Addr, err)
	}
	if err := checkVersion(ctx, client); err != nil {
		_ = client.Close()
		return nil, err
	}

	b := &Bus{
		cfg:    cfg,
		log:    cfg.Logger,
		addr:   opts.Addr,
		client: client,
		subs:   make(map[*subscription]struct{}),
		kick:   make(chan struct{}, 1),
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	for range cfg.Writers {
		b.wg.Add(1)
		go b.writer()
	}
	b.log.Info("redis bus ready", "addr", b.addr, "max_len", cfg.MaxLen, "writers", cfg.Writers)
	return b, nil
}

// checkVersion refuses servers older than 7.0, whose XAUTOCLAIM does not
// report deleted entries. A server that hides INFO is given the benefit of
// the doubt.
func checkVersion(ctx context.Context, client *redis.Client) error {
	info, err := client.Info(ctx, "server").Result()
	if err != nil {
		return nil
	}
	for line := range strings.Lines(info) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:")
		if !ok {
			continue
		}
		major, _, _ := strings.Cut(v, ".")
		if n, err := strconv.Atoi(major); err == nil && n < 7 {
			return fmt.Errorf("redisbus: redis %s is too old, 7.0 or later is required", v)
		}
		return nil
	}
	return nil
}

// Stats counts what a Bus has done since New. All counters only grow.
type Stats struct {
	// Published is the number of payloads stored by Publish.
	Published uint64
	// Batches is the number of publish pipelines sent to Redis.
	Batches uint64
	// Backpressured is the number of Publish calls refused with
	// broker.ErrBackpressure.
	Backpressured uint64
	// GroupsRecreated is the number of groups recreated after Redis lost them.
	GroupsRecreated uint64
}

// Stats returns the bus's counters. It is cheap and safe to call at any time,
// also after Close.
func (b *Bus) Stats() Stats {
	return Stats{
		Published:       b.stats.published.Load(),
		Batches:         b.stats.batches.Load(),
		Backpressured:   b.stats.backpressured.Load(),
		GroupsRecreated: b.stats.groupsRecreated.Load(),
	}
}

// topic is the per-topic state shared by publishers, subscriptions and the
// trimmer.
type topic struct {
	name       string
	logKey     string
	deletedKey string
	// logKeyArg is logKey already converted to an interface, so building an
	// XADD does not allocate for it.
	logKeyArg any

	// full is set by the trimmer while unacknowledged entries fill MaxLen.
	full atomic.Bool
	// dirty is set when entries were added or acknowledged since the last
	// trim.
	dirty atomic.Bool
}

func keyPrefix(topic string) string { return "signalbox:{" + topic + "}:" }

func logKey(topic string) string { return keyPrefix(topic) + "log" }

func deletedKey(topic string) string { return keyPrefix(topic) + "deleted-groups" }

func attemptsKey(topic, group string) string { return keyPrefix(topic) + "attempts:" + group }

func dlqKey(topic, group string) string { return keyPrefix(topic) + "dlq:" + group }

// validateTopic refuses names that would break the hash tag: a brace would end
// or nest the {topic} tag and scatter the topic's keys over slots.
func validateTopic(name string) error {
	if name == "" {
		return errors.New("redisbus: topic name is empty")
	}
	if strings.ContainsAny(name, "{}") {
		return fmt.Errorf("redisbus: topic %q: must not contain braces", name)
	}
	return nil
}

func validateGroup(name string) error {
	if name == "" {
		return errors.New("redisbus: group name is empty")
	}
	return nil
}

// topic returns the state of the named topic, creating it and starting its
// trimmer on first use.
func (b *Bus) topic(name string) (*topic, error) {
	if v, ok := b.topics.Load(name); ok {
		return v.(*topic), nil
	}
	if err := validateTopic(name); err != nil {
		return nil, err
	}

	b.topicsMu.Lock()
	defer b.topicsMu.Unlock()
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	if v, ok := b.topics.Load(name); ok {
		return v.(*topic), nil
	}
	t := &topic{name: name, logKey: logKey(name), deletedKey: deletedKey(name)}
	t.logKeyArg = t.logKey
	b.topics.Store(name, t)
	b.wg.Add(1)
	go b.trimLoop(t)
	return t, nil
}

// DeleteGroup destroys the group and its recorded attempts. Its dead letters
// stay. Deleting a missing group, or a group of a missing topic, is not an
// error.
func (b *Bus) DeleteGroup(ctx context.Context, topicName, group string) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if err := validateTopic(topicName); err != nil {
		return err
	}
	if err := validateGroup(group); err != nil {
		return err
	}

	// Marking the group deleted in the same transaction means a consumer that
	// sees NOGROUP also sees the mark, and does not recreate the group.
	pipe := b.client.TxPipeline()
	mark := pipe.SAdd(ctx, deletedKey(topicName), group)
	destroy := pipe.XGroupDestroy(ctx, logKey(topicName), group)
	forget := pipe.Del(ctx, attemptsKey(topicName, group))
	_, _ = pipe.Exec(ctx)
	for _, err := range []error{mark.Err(), destroy.Err(), forget.Err()} {
		if err != nil && !isNoSuchKey(err) {
			return fmt.Errorf("redisbus: delete group %q of %q: %w", group, topicName, err)
		}
	}

	// The group no longer holds back retention: let the trimmer look.
	if v, ok := b.topics.Load(topicName); ok {
		v.(*topic).dirty.Store(true)
	}
	b.log.Info("deleted consumer group", "broker", topicName, "group", group)
	return nil
}

// DeadLetter appends dl to the group's dead-letter stream, and trims entries
// older than Config.DeadLetterRetention from it. A zero dl.Time is recorded as
// the current time. dl.ID is ignored.
func (b *Bus) DeadLetter(ctx context.Context, topicName, group string, dl broker.DeadLetter) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if err := validateTopic(topicName); err != nil {
		return err
	}
	if err := validateGroup(group); err != nil {
		return err
	}

	now := time.Now()
	if dl.Time.IsZero() {
		dl.Time = now
	}
	// Stream ids start with the server's clock in milliseconds, so a MINID
	// from ours trims by age (clock skew only shifts the 14 days a little).
	minID := strconv.FormatInt(now.Add(-b.cfg.DeadLetterRetention).UnixMilli(), 10)
	err := b.client.XAdd(ctx, &redis.XAddArgs{
		Stream: dlqKey(topicName, group),
		MinID:  minID,
		Approx: true,
		Values: []any{
			fieldPayload, dl.Payload,
			fieldDestination, dl.Destination,
			fieldCode, dl.Code,
			fieldReason, dl.Reason,
			fieldAttempts, dl.Attempts,
			fieldTime, dl.Time.UTC().Format(time.RFC3339Nano),
		},
	}).Err()
	if err != nil {
		return fmt.Errorf("redisbus: dead-letter to %q of %q: %w", group, topicName, err)
	}
	return nil
}

// DeadLetters returns up to limit dead letters of the group, oldest first,
// after the one whose ID is after ("" for the start). limit must be positive.
func (b *Bus) DeadLetters(
	ctx context.Context, topicName, group, after string, limit int,
) ([]broker.DeadLetter, error) {
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	if err := validateTopic(topicName); err != nil {
		return nil, err
	}
	if err := validateGroup(group); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("redisbus: dead letters: limit must be positive, got %d", limit)
	}

	start := "-"
	if after != "" {
		start = "(" + after
	}
	entries, err := b.client.XRangeN(ctx, dlqKey(topicName, group), start, "+", int64(limit)).Result()
	if err != nil {
		return nil, fmt.Errorf("redisbus: list dead letters of %q of %q: %w", group, topicName, err)
	}
	out := make([]broker.DeadLetter, 0, len(entries))
	for _, e := range entries {
		dl, err := parseDeadLetter(e)
		if err != nil {
			return nil, fmt.Errorf("redisbus: dead letter %s of %q of %q: %w", e.ID, group, topicName, err)
		}
		out = append(out, dl)
	}
	return out, nil
}

func parseDeadLetter(e redis.XMessage) (broker.DeadLetter, error) {
	str := func(field string) string {
		s, _ := e.Values[field].(string)
		return s
	}
	dl := broker.DeadLetter{
		ID:          e.ID,
		Payload:     []byte(str(fieldPayload)),
		Destination: str(fieldDestination),
		Reason:      str(fieldReason),
	}
	var err error
	if dl.Code, err = strconv.Atoi(str(fieldCode)); err != nil {
		return dl, fmt.Errorf("field %s: %w", fieldCode, err)
	}
	if dl.Attempts, err = strconv.Atoi(str(fieldAttempts)); err != nil {
		return dl, fmt.Errorf("field %s: %w", fieldAttempts, err)
	}
	if dl.Time, err = time.Parse(time.RFC3339Nano, str(fieldTime)); err != nil {
		return dl, fmt.Errorf("field %s: %w", fieldTime, err)
	}
	return dl, nil
}

// Ping reports whether Redis answers PING.
func (b *Bus) Ping(ctx context.Context) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if err := b.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisbus: ping %s: %w", b.addr, err)
	}
	return nil
}

// Close fails queued publishes with broker.ErrClosed, waits for the
// pipelines in flight, stops the trimmers, closes subscriptions that are
// still open and releases the connections. Calling it again returns
// broker.ErrClosed.
func (b *Bus) Close() error {
	// Marking closed under topicsMu means no topic, and so no trimmer, is
	// created once wg is waited for.
	b.topicsMu.Lock()
	if b.closed.Load() {
		b.topicsMu.Unlock()
		return broker.ErrClosed
	}
	b.closed.Store(true)
	b.topicsMu.Unlock()

	b.subsMu.Lock()
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.subsMu.Unlock()
	if len(subs) > 0 {
		b.log.Warn("closing bus with open subscriptions", "count", len(subs))
	}
	for _, s := range subs {
		_ = s.Close()
	}

	b.queueMu.Lock()
	b.queueClosed = true
	queued := b.queue
	b.queue = nil
	b.queueMu.Unlock()
	for _, r := range queued {
		if r.state.CompareAndSwap(reqQueued, reqTaken) {
			r.done <- broker.ErrClosed
		}
	}

	b.cancel()
	b.wg.Wait()
	err := b.client.Close()
	b.log.Info("redis bus closed", "addr", b.addr)
	if err != nil {
		return fmt.Errorf("redisbus: close: %w", err)
	}
	return nil
}

// Redis error replies the bus reacts to. go-redis returns them as plain
// errors whose text starts with the error code.
func isNoGroup(err error) bool   { return redisErrorCode(err) == "NOGROUP" }
func isBusyGroup(err error) bool { return redisErrorCode(err) == "BUSYGROUP" }

// isNoSuchKey reports the error XINFO and XGROUP give for a missing stream.
func isNoSuchKey(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	return strings.HasPrefix(msg, "ERR no such key") || strings.Contains(msg, "requires the key to exist")
}

func redisErrorCode(err error) string {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return ""
	}
	code, _, _ := strings.Cut(rerr.Error(), " ")
	return code
}
