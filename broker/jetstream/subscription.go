package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/signalbox-dev/signalbox/broker"
)

// Acknowledgement payloads the server understands.
var (
	ackAck      = []byte("+ACK")
	ackNak      = []byte("-NAK")
	ackProgress = []byte("+WPI")
)

// recordTimeout bounds writing a held record where no caller's context
// applies (on Close, and after a Fetch whose context ended), and waiting on
// Close for the server to confirm acknowledgements.
const recordTimeout = 5 * time.Second

// Subscribe creates the group's consumer at the end of the topic's log unless
// it exists, hands back to the group the messages that a consumer of the same
// name held before (see the package documentation), and returns a consumer
// of the group. cfg.Consumer is required; a zero cfg.Lease means
// DefaultLease. The lease becomes the group's ack wait. Keep one open
// subscription per consumer name: two would overwrite each other's held
// record.
func (b *Bus) Subscribe(
	ctx context.Context, topicName, group string, cfg broker.SubscribeConfig,
) (broker.Subscription, error) {
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	switch {
	case group == "":
		return nil, errors.New("jetstream: group name is empty")
	case cfg.Consumer == "":
		return nil, errors.New("jetstream: SubscribeConfig.Consumer: required")
	case cfg.Lease < 0:
		return nil, fmt.Errorf("jetstream: SubscribeConfig.Lease: must not be negative, got %v", cfg.Lease)
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	t, err := b.topic(topicName)
	if err != nil {
		return nil, err
	}
	if err := b.ready(ctx, t); err != nil {
		return nil, b.fail(err)
	}

	groupTok := token(group)
	_, err = b.js.CreateOrUpdateConsumer(ctx, t.logStream, natsjs.ConsumerConfig{
		Durable:       groupTok,
		Description:   "signalbox group " + group,
		DeliverPolicy: natsjs.DeliverNewPolicy,
		AckPolicy:     natsjs.AckExplicitPolicy,
		AckWait:       cfg.Lease,
		MaxDeliver:    -1,
		MaxAckPending: -1,
	})
	if err != nil {
		return nil, b.fail(fmt.Errorf("jetstream: create group %q of %q: %w", group, topicName, err))
	}

	s := &subscription{
		bus:         b,
		topic:       t,
		group:       group,
		groupTok:    groupTok,
		consumer:    cfg.Consumer,
		lease:       cfg.Lease,
		nextSubject: t.nextPrefix + groupTok,
		heldSubject: t.heldSubject(groupTok, token(cfg.Consumer)),
		sem:         make(chan struct{}, 1),
		held:        make(map[uint64]*heldMsg),
	}
	s.closeCtx, s.closeNow = context.WithCancel(context.Background())
	handedBack, err := s.handBackPrevious(ctx)
	if err != nil {
		s.closeNow()
		return nil, b.fail(err)
	}

	b.mu.Lock()
	if b.closed.Load() { // Close has already taken its list of subscriptions
		b.mu.Unlock()
		s.closeNow()
		return nil, broker.ErrClosed
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()

	b.log.Info("subscribed", "broker", topicName, "group", group, "consumer", cfg.Consumer,
		"lease", cfg.Lease, "handed_back", handedBack)
	return s, nil
}

// subscription is one consumer of a group.
type subscription struct {
	bus         *Bus
	topic       *topic
	group       string
	groupTok    string
	consumer    string
	lease       time.Duration
	nextSubject string // where pull requests go
	heldSubject string // where the held record lives

	closed   atomic.Bool
	closeCtx context.Context // done once Close is called
	closeNow context.CancelFunc

	// sem serialises Fetch, and Close takes it for good.
	sem chan struct{}
	// writeMu serialises held record writes, so that an older snapshot never
	// overwrites a newer one.
	writeMu sync.Mutex

	mu   sync.Mutex
	held map[uint64]*heldMsg // by stream sequence
	// written is when the held record was last written.
	written time.Time
	// lastAcked is the ack subject of the last held message acknowledged.
	lastAcked string
	// recordFailing is set while held records cannot be written, so that
	// the failure is logged once.
	recordFailing bool
}

// heldMsg is a message this consumer fetched and has not acknowledged.
type heldMsg struct {
	reply       string    // the delivery's ack subject
	dseq        uint64    // the delivery's consumer sequence
	since       time.Time // when the lease started, by this host's clock
	hasAttempts bool      // a record of attempts exists
}

// usable returns broker.ErrClosed once the subscription or its bus is closed.
func (s *subscription) usable() error {
	if s.closed.Load() || s.bus.closed.Load() {
		return broker.ErrClosed
	}
	return nil
}

// handBackPrevious naks the still-leased messages of the held record that a
// previous subscription with this consumer name left, then removes the
// record so that they are not handed back twice. It returns how many it
// handed back.
func (s *subscription) handBackPrevious(ctx context.Context) (int, error) {
	msg, err := s.topic.state.GetLastMsgForSubject(ctx, s.heldSubject)
	if errors.Is(err, natsjs.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("jetstream: read held messages of %q in %q: %w", s.consumer, s.group, err)
	}

	rec, err := decodeHeld(msg.Data)
	var entries []heldEntry
	if err != nil {
		s.bus.log.Warn("ignoring unreadable record of held messages; they come back after their lease",
			"broker", s.topic.name, "group", s.group, "consumer", s.consumer, "err", err)
	} else {
		entries = rec.stillLeased(time.Now())
	}

	if len(entries) > 0 {
		subjects := make([]string, len(entries))
		for i, e := range entries {
			subjects[i] = s.topic.ackSubject(s.groupTok, e.seq, e.dseq)
		}
		if err := s.bus.nakAndWait(ctx, subjects); err != nil {
			return 0, fmt.Errorf("jetstream: hand back held messages of %q in %q: %w", s.consumer, s.group, err)
		}
	}
	if err := s.topic.state.Purge(ctx, natsjs.WithPurgeSubject(s.heldSubject)); err != nil {
		return 0, fmt.Errorf("jetstream: clear held messages of %q in %q: %w", s.consumer, s.group, err)
	}
	return len(entries), nil
}

// nakAndWait naks the deliveries and waits until the server has processed
// them: the last nak asks for a reply, and the server handles one
// connection's acknowledgements in order.
func (b *Bus) nakAndWait(ctx context.Context, subjects []string) error {
	last := len(subjects) - 1
	for _, subj := range subjects[:last] {
		if err := b.nc.Publish(subj, ackNak); err != nil {
			return err
		}
	}
	_, err := b.nc.RequestWithContext(ctx, subjects[last], ackNak)
	return err
}

// Fetch returns up to max messages: those handed back to the group (by a
// restart of a consumer or an expired lease) first, then new ones, blocking
// up to wait until at least one is available. Redelivered messages carry the
// attempts recorded by SetAttempts. It returns ctx.Err() when ctx ends and
// broker.ErrClosed when the subscription closes while it waits; messages on
// their way at that moment are handed back to the group at once. Concurrent
// calls run one at a time.
func (s *subscription) Fetch(ctx context.Context, count int, wait time.Duration) ([]broker.Message, error) {
	if err := s.usable(); err != nil {
		return nil, err
	}
	if count <= 0 {
		return nil, fmt.Errorf("jetstream: fetch: max must be positive, got %d", count)
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
		raw, err := s.pull(ctx, count, time.Until(deadline))
		if err != nil {
			return nil, err
		}
		if len(raw) > 0 {
			return s.accept(ctx, raw)
		}

		// The server ended the request early without messages, for example
		// because other requests were waiting for the few there were: ask
		// again shortly, rather than spin.
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return []broker.Message{}, nil
		}
		select {
		case <-time.After(min(remaining, 10*time.Millisecond)):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// pullRequest is the body of a JetStream pull request. With NoWait and
// Expires both set the server waits up to Expires for a first message, then
// returns at once with what is available, up to Batch.
type pullRequest struct {
	Batch   int           `json:"batch"`
	Expires time.Duration `json:"expires,omitempty"`
	NoWait  bool          `json:"no_wait"`
}

// pullGrace is how long past its expiry a pull request may go unanswered
// before the client gives up on it.
const pullGrace = 2 * time.Second

// pull sends one pull request and collects its messages. When ctx ends it
// hands back what arrived and returns ctx.Err().
func (s *subscription) pull(ctx context.Context, count int, wait time.Duration) ([]*nats.Msg, error) {
	nc := s.bus.nc
	inbox := nc.NewInbox()
	// The server sends at most count messages and a status: a channel that
	// size never overflows, and is far smaller than a sync subscription's.
	ch := make(chan *nats.Msg, count+4)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("jetstream: fetch from %q of %q: %w", s.group, s.topic.name, err)
	}
	req := pullRequest{Batch: count, NoWait: true}
	if wait >= time.Millisecond {
		req.Expires = wait
	}
	body, err := json.Marshal(req)
	if err == nil {
		err = nc.PublishRequest(s.nextSubject, inbox, body)
	}
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("jetstream: fetch from %q of %q: %w", s.group, s.topic.name, err)
	}

	// The server answers by the expiry; the timer is for when it cannot.
	timer := time.NewTimer(max(wait, 0) + pullGrace)
	defer timer.Stop()
	var msgs []*nats.Msg
	for len(msgs) < count {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return s.giveUp(ctx, sub, ch, msgs)
		case <-timer.C:
			return s.giveUp(ctx, sub, ch, msgs)
		}

		if m.Reply != "" && m.Header.Get(statusHeader) == "" {
			msgs = append(msgs, m)
			continue
		}
		if err := s.status(m); err != nil {
			_ = sub.Unsubscribe()
			return s.partial(msgs, err)
		}
		if m.Header.Get(statusHeader) != statusHeartbeat {
			break // the request is over
		}
	}
	_ = sub.Unsubscribe()
	return msgs, nil
}

// giveUp ends a pull request that ctx cancelled or the server left
// unanswered. When ctx ended it hands back everything that arrived and
// returns ctx.Err(); otherwise it returns what arrived.
func (s *subscription) giveUp(
	ctx context.Context, sub *nats.Subscription, ch <-chan *nats.Msg, msgs []*nats.Msg,
) ([]*nats.Msg, error) {
	msgs = append(msgs, s.abandon(sub, ch)...)
	if err := ctx.Err(); err != nil {
		s.handBack(msgs)
		return nil, err
	}
	return msgs, nil
}

// Headers of status messages, and the codes that end pull requests.
const (
	statusHeader      = "Status"
	descriptionHeader = "Description"

	statusNoMessages = "404"
	statusTimeout    = "408"
	statusConflict   = "409"
	statusNoServer   = "503"
	statusHeartbeat  = "100"
)

// errGroupMissing is returned by Fetch when the group's consumer does not
// exist: it was deleted with DeleteGroup, or the server lost it.
var errGroupMissing = errors.New("group does not exist (deleted?)")

// status interprets a status message ending (or, for a heartbeat, not
// ending) a pull request.
func (s *subscription) status(m *nats.Msg) error {
	code := m.Header.Get(statusHeader)
	switch code {
	case statusNoMessages, statusTimeout, statusHeartbeat:
		return nil
	case statusNoServer:
		return fmt.Errorf("jetstream: fetch from %q of %q: %w", s.group, s.topic.name, errGroupMissing)
	case statusConflict:
		desc := m.Header.Get(descriptionHeader)
		if desc == "Consumer Deleted" {
			return fmt.Errorf("jetstream: fetch from %q of %q: %w", s.group, s.topic.name, errGroupMissing)
		}
		return fmt.Errorf("jetstream: fetch from %q of %q: server refused: %s", s.group, s.topic.name, desc)
	}
	return fmt.Errorf("jetstream: fetch from %q of %q: unexpected status %s %s",
		s.group, s.topic.name, code, m.Header.Get(descriptionHeader))
}

// partial returns the messages that arrived before err, if any, and err
// otherwise: the error comes back on the next Fetch.
func (s *subscription) partial(msgs []*nats.Msg, err error) ([]*nats.Msg, error) {
	if len(msgs) > 0 {
		return msgs, nil
	}
	return nil, err
}

// abandon ends a pull request early: draining the inbox subscription tells
// the server to stop delivering to it, and a flush then waits until whatever
// it sent before has arrived. It returns those messages.
func (s *subscription) abandon(sub *nats.Subscription, ch <-chan *nats.Msg) []*nats.Msg {
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.Drain(); err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), pullGrace)
	defer cancel()
	if err := s.bus.nc.FlushWithContext(ctx); err != nil {
		return nil // what was on its way comes back after the lease
	}

	var strays []*nats.Msg
	for {
		select {
		case m := <-ch:
			if m.Reply != "" && m.Header.Get(statusHeader) == "" {
				strays = append(strays, m)
			}
		default:
			return strays
		}
	}
}

// handBack naks deliveries the caller will never see, so that the group gets
// them again at once.
func (s *subscription) handBack(msgs []*nats.Msg) {
	for _, m := range msgs {
		_ = s.bus.nc.Publish(m.Reply, ackNak)
	}
	if len(msgs) > 0 {
		s.bus.log.Debug("handed back messages of an interrupted fetch",
			"broker", s.topic.name, "group", s.group, "count", len(msgs))
	}
}

// accept turns deliveries into messages, reads the recorded attempts of
// redelivered ones, records them as held and writes the held record.
func (s *subscription) accept(ctx context.Context, raw []*nats.Msg) ([]broker.Message, error) {
	now := time.Now()
	out := make([]broker.Message, 0, len(raw))
	held := make([]*heldMsg, 0, len(raw))
	seqs := make([]uint64, 0, len(raw))
	for _, m := range raw {
		d, ok := parseDelivery(m.Reply)
		if !ok {
			// Not from a consumer of ours; nothing to acknowledge it with.
			s.bus.log.Warn("skipping a delivery with an unreadable ack subject",
				"broker", s.topic.name, "group", s.group, "subject", m.Reply)
			continue
		}
		msg := broker.Message{ID: strconv.FormatUint(d.streamSeq, 10), Payload: m.Data, Redelivered: d.count > 1}
		h := &heldMsg{reply: m.Reply, dseq: d.consumerSeq, since: now}
		if msg.Redelivered {
			attempts, found, err := s.readAttempts(ctx, d.streamSeq)
			if err != nil {
				s.handBack(raw)
				return nil, err
			}
			msg.Attempts, h.hasAttempts = attempts, found
		}
		out = append(out, msg)
		held = append(held, h)
		seqs = append(seqs, d.streamSeq)
	}

	s.mu.Lock()
	for i, seq := range seqs {
		s.held[seq] = held[i]
	}
	s.mu.Unlock()
	s.writeHeld(ctx, true)
	return out, nil
}

// readAttempts returns the attempts recorded for the message, and whether a
// record exists.
func (s *subscription) readAttempts(ctx context.Context, seq uint64) (int, bool, error) {
	m, err := s.topic.state.GetLastMsgForSubject(ctx, s.topic.attemptsSubject(s.groupTok, seq))
	if errors.Is(err, natsjs.ErrMsgNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("jetstream: read attempts in %q of %q: %w", s.group, s.topic.name, err)
	}
	n, err := strconv.Atoi(string(m.Data))
	if err != nil {
		return 0, false, fmt.Errorf("jetstream: attempts of %d in %q of %q: %w", seq, s.group, s.topic.name, err)
	}
	return n, true, nil
}

// writeHeld rewrites the held record from the held messages whose lease has
// not run out; it forgets the others, which the server may have given to
// another consumer meanwhile. Unless force is set it writes only when the
// record is a quarter lease old, so that renewing many messages one by one
// does not rewrite it each time; a restart then hands back a little less. A
// failure is logged, not returned: it only means that a restart gets those
// messages back after their lease rather than at once.
func (s *subscription) writeHeld(ctx context.Context, force bool) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	now := time.Now()
	s.mu.Lock()
	if !force && now.Sub(s.written) < s.lease/4 {
		s.mu.Unlock()
		return
	}
	s.written = now
	rec := heldRecord{lease: s.lease, written: now, entries: make([]heldEntry, 0, len(s.held))}
	for seq, h := range s.held {
		if !now.Before(h.since.Add(s.lease)) {
			delete(s.held, seq)
			continue
		}
		rec.entries = append(rec.entries, heldEntry{seq: seq, dseq: h.dseq, since: h.since})
	}
	s.mu.Unlock()
	sortEntries(rec.entries)

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	_, err := s.bus.js.Publish(ctx, s.heldSubject, rec.encode())

	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil && !s.recordFailing && !s.bus.closed.Load():
		s.recordFailing = true
		s.bus.log.Warn("cannot record held messages; after a restart they come back only after their lease",
			"broker", s.topic.name, "group", s.group, "consumer", s.consumer, "err", err)
	case err == nil && s.recordFailing:
		s.recordFailing = false
		s.bus.log.Info("recording held messages works again",
			"broker", s.topic.name, "group", s.group, "consumer", s.consumer)
	}
}

// target returns the subject that acknowledges, naks or renews the message
// with the given ID, and the held message if this consumer holds it. An ID
// this consumer does not hold is still acknowledged by its sequence.
func (s *subscription) target(seq uint64) (string, *heldMsg) {
	if h := s.held[seq]; h != nil {
		return h.reply, h
	}
	return s.topic.ackSubject(s.groupTok, seq, 0), nil
}

// parseIDs parses message IDs.
func parseIDs(ids []string) ([]uint64, error) {
	seqs := make([]uint64, len(ids))
	for i, id := range ids {
		seq, err := strconv.ParseUint(id, 10, 64)
		if err != nil || seq == 0 {
			return nil, fmt.Errorf("jetstream: malformed message ID %q", id)
		}
		seqs[i] = seq
	}
	return seqs, nil
}

// Ack acknowledges the messages and removes their recorded attempts. The
// acknowledgements are sent without waiting for the server, so one lost in
// a crash means a redelivery; Close waits until the server has processed
// them all. Acknowledging a message that is not pending is not an error.
func (s *subscription) Ack(ctx context.Context, ids ...string) error {
	if err := s.usable(); err != nil {
		return err
	}
	seqs, err := parseIDs(ids)
	if err != nil {
		return err
	}

	var forget []uint64 // messages that may have a record of attempts
	subjects := make([]string, len(seqs))
	s.mu.Lock()
	for i, seq := range seqs {
		subj, h := s.target(seq)
		subjects[i] = subj
		if h != nil {
			s.lastAcked = subj
		}
		if h == nil || h.hasAttempts {
			forget = append(forget, seq)
		}
		delete(s.held, seq)
	}
	s.mu.Unlock()

	for _, subj := range subjects {
		if err := s.bus.nc.Publish(subj, ackAck); err != nil {
			return s.bus.fail(fmt.Errorf("jetstream: ack in %q of %q: %w", s.group, s.topic.name, err))
		}
	}
	for _, seq := range forget {
		err := s.topic.state.Purge(ctx, natsjs.WithPurgeSubject(s.topic.attemptsSubject(s.groupTok, seq)))
		if err != nil {
			return s.bus.fail(fmt.Errorf("jetstream: forget attempts in %q of %q: %w", s.group, s.topic.name, err))
		}
	}
	return nil
}

// confirmAcks waits until the server has processed every acknowledgement
// this consumer sent. It acknowledges the last acknowledged delivery again,
// asking for a reply: the server handles one connection's acknowledgements
// in order, and answers an acknowledgement of a message that is no longer
// pending all the same.
func (s *subscription) confirmAcks() {
	s.mu.Lock()
	subj := s.lastAcked
	s.mu.Unlock()
	if subj == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	if _, err := s.bus.nc.RequestWithContext(ctx, subj, ackAck); err != nil {
		s.bus.log.Warn("cannot confirm acknowledgements; some messages may be delivered again",
			"broker", s.topic.name, "group", s.group, "consumer", s.consumer, "err", err)
	}
}

// Renew restarts the lease of the messages and, every quarter lease at most,
// rewrites the held record. A message this consumer does not hold has its
// lease restarted all the same.
func (s *subscription) Renew(ctx context.Context, ids ...string) error {
	if err := s.usable(); err != nil {
		return err
	}
	seqs, err := parseIDs(ids)
	if err != nil {
		return err
	}
	if len(seqs) == 0 {
		return nil
	}

	// The lease restarts when the server gets the notice, a little after
	// now: recording now errs on the safe side.
	// A message whose lease already ran out may have been delivered to
	// another consumer; the server would accept this consumer's progress
	// notice for it all the same and extend the new holder's lease, so such
	// a message is forgotten instead of renewed.
	now := time.Now()
	s.mu.Lock()
	subjects := make([]string, 0, len(seqs))
	for _, seq := range seqs {
		h := s.held[seq]
		if h == nil {
			continue
		}
		if now.Sub(h.since) >= s.lease {
			delete(s.held, seq)
			continue
		}
		h.since = now
		subjects = append(subjects, h.reply)
	}
	s.mu.Unlock()

	for _, subj := range subjects {
		if err := s.bus.nc.Publish(subj, ackProgress); err != nil {
			return s.bus.fail(fmt.Errorf("jetstream: renew in %q of %q: %w", s.group, s.topic.name, err))
		}
	}
	s.writeHeld(ctx, false)
	return nil
}

// SetAttempts durably records the number of delivery attempts of a message.
func (s *subscription) SetAttempts(ctx context.Context, id string, attempts int) error {
	if err := s.usable(); err != nil {
		return err
	}
	if attempts < 0 {
		return fmt.Errorf("jetstream: set attempts: must not be negative, got %d", attempts)
	}
	seqs, err := parseIDs([]string{id})
	if err != nil {
		return err
	}

	subj := s.topic.attemptsSubject(s.groupTok, seqs[0])
	if _, err := s.bus.js.Publish(ctx, subj, []byte(strconv.Itoa(attempts))); err != nil {
		return s.bus.fail(fmt.Errorf("jetstream: set attempts in %q of %q: %w", s.group, s.topic.name, err))
	}
	s.mu.Lock()
	if h := s.held[seqs[0]]; h != nil {
		h.hasAttempts = true
	}
	s.mu.Unlock()
	return nil
}

// Close ends a Fetch in progress, which returns broker.ErrClosed, waits until
// the server has processed this consumer's acknowledgements, and writes the
// held record: the messages this consumer holds stay leased to it, so a
// consumer with the same name gets them back at once and others after the
// lease. Calling it again returns broker.ErrClosed.
func (s *subscription) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return broker.ErrClosed
	}
	s.closeNow()
	s.sem <- struct{}{} // wait for a Fetch in progress to return

	b := s.bus
	if b.nc.IsConnected() { // else both would only time out
		s.confirmAcks()
		s.writeHeld(context.Background(), true)
	}
	b.mu.Lock()
	delete(b.subs, s)
	b.mu.Unlock()
	b.log.Info("unsubscribed", "broker", s.topic.name, "group", s.group, "consumer", s.consumer)
	return nil
}
