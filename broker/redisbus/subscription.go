package redisbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/signalbox-dev/signalbox/broker"
)

// Subscribe creates the group at the end of the topic's log unless it exists,
// and returns a consumer of it. cfg.Consumer is required; a zero cfg.Lease
// means DefaultLease. Each subscription has its own connection for blocking
// reads, so waiting consumers never hold the connections publishing needs.
func (b *Bus) Subscribe(
	ctx context.Context, topicName, group string, cfg broker.SubscribeConfig,
) (broker.Subscription, error) {
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	if err := validateGroup(group); err != nil {
		return nil, err
	}
	if cfg.Consumer == "" {
		return nil, errors.New("redisbus: SubscribeConfig.Consumer: required")
	}
	if cfg.Lease < 0 {
		return nil, fmt.Errorf("redisbus: SubscribeConfig.Lease: must not be negative, got %v", cfg.Lease)
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	t, err := b.topic(topicName)
	if err != nil {
		return nil, err
	}

	pipe := b.client.TxPipeline()
	create := pipe.XGroupCreateMkStream(ctx, t.logKey, group, "$")
	undelete := pipe.SRem(ctx, t.deletedKey, group)
	_, _ = pipe.Exec(ctx)
	if err := create.Err(); err != nil && !isBusyGroup(err) {
		return nil, fmt.Errorf("redisbus: create group %q of %q: %w", group, topicName, err)
	}
	if err := undelete.Err(); err != nil {
		return nil, fmt.Errorf("redisbus: create group %q of %q: %w", group, topicName, err)
	}

	s := &subscription{
		bus:           b,
		topic:         t,
		group:         group,
		consumer:      cfg.Consumer,
		attemptsKey:   attemptsKey(topicName, group),
		lease:         cfg.Lease,
		sem:           make(chan struct{}, 1),
		pendingCursor: "0",
		claimCursor:   "0-0",
	}
	s.closeCtx, s.closeNow = context.WithCancel(context.Background())
	if s.reader, err = b.newReader(s); err != nil {
		return nil, err
	}

	b.subsMu.Lock()
	if b.closed.Load() { // Close has already taken its list of subscriptions
		b.subsMu.Unlock()
		_ = s.reader.Close()
		return nil, broker.ErrClosed
	}
	b.subs[s] = struct{}{}
	b.subsMu.Unlock()

	b.log.Info("subscribed", "broker", topicName, "group", group, "consumer", cfg.Consumer, "lease", cfg.Lease)
	return s, nil
}

// newReader returns a one-connection client for s's blocking reads. Its
// dialer remembers the connection so that abortRead can close it: go-redis
// does not interrupt a blocked read when its context ends.
func (b *Bus) newReader(s *subscription) (*redis.Client, error) {
	opts, err := redis.ParseURL(b.cfg.URL)
	if err != nil {
		return nil, errors.New("redisbus: Config.URL: not a valid redis:// or rediss:// URL")
	}
	opts.PoolSize = 1
	opts.MinIdleConns = 0
	opts.MaxRetries = -1   // the caller of Fetch retries, with backoff
	opts.DialerRetries = 1 // and a down Redis should be reported at once
	opts.PipelinePoolSize = -1
	dial := redis.NewDialer(opts)
	opts.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		s.connMu.Lock()
		s.conn = c
		abort := s.abortPending
		s.connMu.Unlock()
		if abort {
			_ = c.Close()
		}
		return c, nil
	}
	return redis.NewClient(opts), nil
}

// subscription is one consumer of a group.
type subscription struct {
	bus         *Bus
	topic       *topic
	group       string
	consumer    string
	attemptsKey string
	lease       time.Duration

	reader       *redis.Client
	connMu       sync.Mutex
	conn         net.Conn // the reader's current connection
	abortPending bool     // the read in progress must end

	closed   atomic.Bool
	closeCtx context.Context // done once Close is called
	closeNow context.CancelFunc

	// sem serialises Fetch, and Close takes it for good. The fields below are
	// owned by its holder.
	sem           chan struct{}
	pendingDone   bool      // this consumer's own pending entries were read
	pendingCursor string    // where the scan of own pending entries resumes
	claimCursor   string    // where the XAUTOCLAIM scan resumes; "0-0" = start
	nextClaim     time.Time // when the next XAUTOCLAIM scan is due
	recovered     bool      // the group was recreated during this Fetch
}

// usable returns broker.ErrClosed once the subscription or its bus is closed.
func (s *subscription) usable() error {
	if s.closed.Load() || s.bus.closed.Load() {
		return broker.ErrClosed
	}
	return nil
}

// Fetch returns up to max messages, preferring this consumer's own pending
// messages (after a restart), then messages whose lease expired at any
// consumer, including this one, then new messages; it blocks up to wait for
// new ones. Redelivered messages carry the attempts recorded by SetAttempts.
// Entries deleted or trimmed while pending are acknowledged and skipped. It
// returns ctx.Err() when ctx ends and broker.ErrClosed when the subscription
// closes while it waits. Concurrent calls run one at a time.
func (s *subscription) Fetch(ctx context.Context, count int, wait time.Duration) ([]broker.Message, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	if count <= 0 {
		return nil, fmt.Errorf("redisbus: fetch: max must be positive, got %d", count)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// fctx ends when ctx does or when the subscription closes.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closeCtx, cancel)
	defer stop()

	select {
	case s.sem <- struct{}{}:
	case <-fctx.Done():
		return nil, s.interrupted(ctx)
	}
	defer func() { <-s.sem }()

	s.recovered = false
	msgs, err := s.fetch(fctx, count, max(wait, 0))
	if err != nil && fctx.Err() != nil {
		return nil, s.interrupted(ctx)
	}
	return msgs, err
}

// interrupted tells why a Fetch stopped early.
func (s *subscription) interrupted(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return broker.ErrClosed
}

func (s *subscription) fetch(ctx context.Context, count int, wait time.Duration) ([]broker.Message, error) {
	deadline := time.Now().Add(wait)
	for {
		if !s.pendingDone {
			msgs, err := s.readOwnPending(ctx, count)
			if err != nil || len(msgs) > 0 {
				return msgs, err
			}
		}

		if now := time.Now(); !now.Before(s.nextClaim) {
			msgs, err := s.claim(ctx, count, now)
			if err != nil || len(msgs) > 0 {
				return msgs, err
			}
		}

		// Wake up for the next claim scan even while waiting for new entries.
		block := min(time.Until(deadline), time.Until(s.nextClaim))
		msgs, err := s.readNew(ctx, count, block)
		if err != nil || len(msgs) > 0 {
			return msgs, err
		}
		if !time.Now().Before(deadline) {
			return []broker.Message{}, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// readOwnPending returns entries this consumer held before the subscription
// started, skipping those deleted meanwhile. Once none are left it marks the
// scan done.
func (s *subscription) readOwnPending(ctx context.Context, count int) ([]broker.Message, error) {
	for !s.pendingDone {
		res, err := s.bus.client.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group:    s.group,
			Consumer: s.consumer,
			Streams:  []string{s.topic.logKey, s.pendingCursor},
			Count:    int64(count),
			Block:    -1,
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			if isNoGroup(err) {
				return nil, s.recover(ctx)
			}
			return nil, fmt.Errorf("redisbus: read pending of %q of %q: %w", s.group, s.topic.name, err)
		}

		var entries []redis.XMessage
		if len(res) > 0 {
			entries = res[0].Messages
		}
		if len(entries) == 0 {
			s.pendingDone, s.pendingCursor = true, "0"
			return nil, nil
		}
		s.pendingCursor = entries[len(entries)-1].ID
		if live := s.dropDeleted(ctx, entries); len(live) > 0 {
			return s.messages(ctx, live, true)
		}
	}
	return nil, nil
}

// claim takes entries idle longer than the lease from any consumer of the
// group. A scan of the group's pending list may take several calls; a new
// scan starts a quarter lease after the last one ended.
func (s *subscription) claim(ctx context.Context, count int, now time.Time) ([]broker.Message, error) {
	entries, next, deleted, err := s.bus.client.XAutoClaimWithDeleted(ctx, &redis.XAutoClaimArgs{
		Stream:   s.topic.logKey,
		Group:    s.group,
		Consumer: s.consumer,
		MinIdle:  s.lease,
		Start:    s.claimCursor,
		Count:    int64(count),
	}).Result()
	if err != nil {
		if isNoGroup(err) {
			return nil, s.recover(ctx)
		}
		return nil, fmt.Errorf("redisbus: claim in %q of %q: %w", s.group, s.topic.name, err)
	}

	if next == "" || next == "0-0" {
		s.claimCursor = "0-0"
		s.nextClaim = now.Add(max(s.lease/4, 10*time.Millisecond))
	} else {
		s.claimCursor = next
	}
	if len(deleted) > 0 {
		// Redis 7 has already dropped them from the pending list.
		s.forget(ctx, deleted)
	}
	if live := s.dropDeleted(ctx, entries); len(live) > 0 {
		return s.messages(ctx, live, true)
	}
	return nil, nil
}

// readNew reads entries never delivered to the group, blocking up to block
// (not at all when block <= 0).
func (s *subscription) readNew(
	ctx context.Context, count int, block time.Duration,
) ([]broker.Message, error) {
	args := &redis.XReadGroupArgs{
		Group:    s.group,
		Consumer: s.consumer,
		Streams:  []string{s.topic.logKey, ">"},
		Count:    int64(count),
		Block:    -1,
	}
	var res []redis.XStream
	var err error
	if block <= 0 {
		res, err = s.bus.client.XReadGroup(ctx, args).Result()
	} else {
		// BLOCK 0 would wait forever: never round down to it.
		args.Block = max(block, time.Millisecond)
		s.connMu.Lock()
		s.abortPending = false
		s.connMu.Unlock()
		stop := context.AfterFunc(ctx, s.abortRead)
		res, err = s.reader.XReadGroup(ctx, args).Result()
		stop()
	}

	switch {
	case err == nil:
	case errors.Is(err, redis.Nil):
		return nil, nil // BLOCK timed out
	case isNoGroup(err):
		return nil, s.recover(ctx)
	case redisErrorCode(err) == "UNBLOCKED":
		return nil, nil // the log was deleted under a blocked read; the next read tells why
	default:
		// If Redis delivered entries whose reply was lost, they are pending
		// to this consumer and come back through claim() after the lease.
		// Rescanning the own pending list now would instead hand out again
		// the messages the caller is still working on.
		return nil, fmt.Errorf("redisbus: read %q of %q: %w", s.group, s.topic.name, err)
	}

	var entries []redis.XMessage
	if len(res) > 0 {
		entries = res[0].Messages
	}
	return s.messages(ctx, entries, false)
}

// abortRead ends the blocking read in progress by closing its connection;
// go-redis then dials a new one for the next read.
func (s *subscription) abortRead() {
	s.connMu.Lock()
	s.abortPending = true // in case the read is still dialling
	c := s.conn
	s.connMu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// dropDeleted returns the entries that still exist. Pending entries whose
// stream entry was deleted or trimmed come back without fields; they are
// acknowledged and their attempts forgotten so they never come back.
func (s *subscription) dropDeleted(ctx context.Context, entries []redis.XMessage) []redis.XMessage {
	var gone []string
	for _, e := range entries {
		if e.Values == nil {
			gone = append(gone, e.ID)
		}
	}
	if len(gone) == 0 {
		return entries
	}
	s.forget(ctx, gone)
	return slices.DeleteFunc(entries, func(e redis.XMessage) bool { return e.Values == nil })
}

// forget acknowledges ids whose entries no longer exist and deletes their
// attempts. A failure is only logged: the ids turn up again and are retried.
func (s *subscription) forget(ctx context.Context, ids []string) {
	pipe := s.bus.client.Pipeline()
	pipe.XAck(ctx, s.topic.logKey, s.group, ids...)
	pipe.HDel(ctx, s.attemptsKey, ids...)
	if _, err := pipe.Exec(ctx); err != nil {
		s.bus.log.Debug("forgetting deleted entries failed", "broker", s.topic.name, "group", s.group, "err", err)
		return
	}
	s.bus.log.Warn("skipped entries deleted from the log while pending",
		"broker", s.topic.name, "group", s.group, "count", len(ids))
}

// messages converts entries, reading the recorded attempts of redelivered
// ones in one round trip.
func (s *subscription) messages(
	ctx context.Context, entries []redis.XMessage, redelivered bool,
) ([]broker.Message, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	out := make([]broker.Message, len(entries))
	for i, e := range entries {
		payload, _ := e.Values[fieldPayload].(string)
		out[i] = broker.Message{ID: e.ID, Payload: []byte(payload), Redelivered: redelivered}
	}
	if !redelivered {
		return out, nil
	}

	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	vals, err := s.bus.client.HMGet(ctx, s.attemptsKey, ids...).Result()
	if err != nil {
		// The entries are this consumer's now and come back through claim()
		// after the lease, rather than go out with their attempts forgotten.
		return nil, fmt.Errorf("redisbus: read attempts in %q of %q: %w", s.group, s.topic.name, err)
	}
	for i, v := range vals {
		if str, ok := v.(string); ok {
			out[i].Attempts, _ = strconv.Atoi(str)
		}
	}
	return out, nil
}

// errGroupDeleted is returned by Fetch when the group was deleted with
// DeleteGroup while this consumer still ran.
var errGroupDeleted = errors.New("group was deleted")

// recover handles NOGROUP. When the group is not marked as deleted by
// DeleteGroup, Redis lost it (a restart without persistence, FLUSHALL), and
// the log holds only entries published since: recreate the group from the
// start. A group deleted on purpose is not recreated.
func (s *subscription) recover(ctx context.Context) error {
	if s.recovered {
		return fmt.Errorf("redisbus: group %q of %q vanished again right after it was recreated",
			s.group, s.topic.name)
	}
	deleted, err := s.bus.client.SIsMember(ctx, s.topic.deletedKey, s.group).Result()
	if err != nil {
		return fmt.Errorf("redisbus: recover group %q of %q: %w", s.group, s.topic.name, err)
	}
	if deleted {
		return fmt.Errorf("redisbus: %q of %q: %w", s.group, s.topic.name, errGroupDeleted)
	}

	err = s.bus.client.XGroupCreateMkStream(ctx, s.topic.logKey, s.group, "0").Err()
	if err != nil && !isBusyGroup(err) {
		return fmt.Errorf("redisbus: recreate group %q of %q: %w", s.group, s.topic.name, err)
	}
	s.recovered = true
	s.pendingDone, s.pendingCursor, s.claimCursor = true, "0", "0-0"
	if err == nil {
		s.bus.stats.groupsRecreated.Add(1)
		s.bus.log.Warn("consumer group was missing (Redis lost its data?); recreated it from the start of the log",
			"broker", s.topic.name, "group", s.group)
	}
	return nil
}

// Ack acknowledges the messages and forgets their attempts. Acknowledging a
// message that is not pending, or in a group Redis lost, is not an error.
func (s *subscription) Ack(ctx context.Context, ids ...string) error {
	if err := s.usable(); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	pipe := s.bus.client.Pipeline()
	ack := pipe.XAck(ctx, s.topic.logKey, s.group, ids...)
	forget := pipe.HDel(ctx, s.attemptsKey, ids...)
	_, _ = pipe.Exec(ctx)
	if err := ack.Err(); err != nil && !isNoGroup(err) {
		return fmt.Errorf("redisbus: ack in %q of %q: %w", s.group, s.topic.name, err)
	}
	if err := forget.Err(); err != nil {
		return fmt.Errorf("redisbus: ack in %q of %q: %w", s.group, s.topic.name, err)
	}
	if !s.topic.dirty.Load() {
		s.topic.dirty.Store(true)
	}
	return nil
}

// renewScript restarts the idle time of the pending entries ARGV[3..] that
// consumer ARGV[2] still holds in group ARGV[1] of stream KEYS[1]. An entry
// another consumer took after this one's lease expired stays that consumer's:
// a plain XCLAIM would take it back and deliver it twice at once.
var renewScript = redis.NewScript(`
local renewed = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    renewed = renewed + 1
  end
end
return renewed
`)

// Renew restarts the lease of the messages this consumer still holds. It
// ignores ids that are no longer pending or that another consumer took.
func (s *subscription) Renew(ctx context.Context, ids ...string) error {
	if err := s.usable(); err != nil {
		return err
	}
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, 0, len(ids)+2)
	args = append(args, s.group, s.consumer)
	for _, id := range ids {
		args = append(args, id)
	}
	err := renewScript.Run(ctx, s.bus.client, []string{s.topic.logKey}, args...).Err()
	if err != nil && !isNoGroup(err) {
		return fmt.Errorf("redisbus: renew in %q of %q: %w", s.group, s.topic.name, err)
	}
	return nil
}

// SetAttempts records the number of delivery attempts of a held message.
func (s *subscription) SetAttempts(ctx context.Context, id string, attempts int) error {
	if err := s.usable(); err != nil {
		return err
	}
	if attempts < 0 {
		return fmt.Errorf("redisbus: set attempts: must not be negative, got %d", attempts)
	}
	if err := s.bus.client.HSet(ctx, s.attemptsKey, id, attempts).Err(); err != nil {
		return fmt.Errorf("redisbus: set attempts in %q of %q: %w", s.group, s.topic.name, err)
	}
	return nil
}

// Close ends a Fetch in progress, which returns broker.ErrClosed, and closes
// the subscription's connection. Held messages stay pending to the consumer.
// Calling it again returns broker.ErrClosed.
func (s *subscription) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return broker.ErrClosed
	}
	s.closeNow()
	s.sem <- struct{}{} // wait for a Fetch in progress to return
	err := s.reader.Close()

	b := s.bus
	b.subsMu.Lock()
	delete(b.subs, s)
	b.subsMu.Unlock()
	b.log.Info("unsubscribed", "broker", s.topic.name, "group", s.group, "consumer", s.consumer)
	if err != nil {
		return fmt.Errorf("redisbus: close subscription: %w", err)
	}
	return nil
}
