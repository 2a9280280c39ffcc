package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/signalbox-dev/signalbox/broker"
)

var _ broker.StateStore = (*Bus)(nil)

// State entries of a topic live in its kv stream, one subject per entry that
// keeps only its latest message:
//
//	signalbox_kv_<topic>   subject signalbox.kv.<topic>.<namespace>.k<key>
//
// (namespace and key escaped with token; the "k" keeps the empty key a valid
// token). An entry's revision is the stream sequence of its latest message,
// and every write is a publish that expects that sequence
// (Nats-Expected-Last-Subject-Sequence), which is JetStream's own
// compare-and-swap. A delete is a marker message (header Signalbox-Op: del).
//
// Expiry is kept twice: the exact deadline in a header, checked on every
// read, and a server-side per-message TTL (Nats-TTL, whole seconds, rounded
// up) that removes the message afterwards, so that expired entries do not
// pile up. Delete markers expire after stateMarkerTTL.
const (
	headerStateOp      = "Signalbox-Op"
	headerStateExpires = "Signalbox-Expires" // unix nanoseconds
	stateOpDelete      = "del"
	stateMarkerTTL     = time.Minute
)

// JetStream error codes of a failed expectation on the last sequence of a
// subject: 10071 on a stream with one replica, 10164 on replicated ones.
const (
	errCodeWrongLastSeq           = 10071
	errCodeWrongLastSeqReplicated = 10164
)

func (n names) stateEntrySubject(nsTok, key string) string {
	return n.kvPrefix + nsTok + "." + token("k"+key)
}

// checkState validates the arguments shared by the StateStore methods and
// returns the topic with its kv stream.
func (b *Bus) checkState(ctx context.Context, topicName, namespace string) (*topic, natsjs.Stream, error) {
	if b.closed.Load() {
		return nil, nil, broker.ErrClosed
	}
	if !broker.ValidStateNamespace(namespace) {
		return nil, nil, fmt.Errorf("jetstream: state namespace %q: want letters, digits, '.', '_' and '-'", namespace)
	}
	t, err := b.topic(topicName)
	if err != nil {
		return nil, nil, err
	}
	kv, err := b.kvStream(ctx, t)
	if err != nil {
		return nil, nil, b.fail(err)
	}
	return t, kv, nil
}

// kvStream creates the topic's kv stream on first use. Per-message TTLs need
// nats-server 2.11 or later.
func (b *Bus) kvStream(ctx context.Context, t *topic) (natsjs.Stream, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.kv != nil {
		return t.kv, nil
	}
	kv, err := b.js.CreateOrUpdateStream(ctx, natsjs.StreamConfig{
		Name:              t.kvStream,
		Description:       "signalbox state entries of " + t.name,
		Subjects:          []string{t.kvPrefix + ">"},
		Retention:         natsjs.LimitsPolicy,
		MaxMsgsPerSubject: 1,
		Storage:           natsjs.FileStorage,
		Replicas:          1,
		AllowDirect:       true,
		AllowMsgTTL:       true,
	})
	if err != nil {
		return nil, fmt.Errorf("jetstream: create state stream of %q: %w", t.name, err)
	}
	t.kv = kv
	return kv, nil
}

// lastEntry reads the latest message of an entry's subject. live reports
// whether it holds a value that has not expired; seq is 0 when there is no
// message at all.
func lastEntry(ctx context.Context, kv natsjs.Stream, subject string, now time.Time) (value []byte,
	seq uint64, live bool, err error) {
	m, err := kv.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, natsjs.ErrMsgNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	if m.Header.Get(headerStateOp) == stateOpDelete {
		return nil, m.Sequence, false, nil
	}
	if exp := m.Header.Get(headerStateExpires); exp != "" {
		ns, err := strconv.ParseInt(exp, 10, 64)
		if err != nil || now.UnixNano() >= ns {
			return nil, m.Sequence, false, nil
		}
	}
	if m.Data == nil {
		m.Data = []byte{}
	}
	return m.Data, m.Sequence, true, nil
}

// GetState returns the entry at key. A missing, deleted or expired entry
// has the sequence of its latest message (or 0) as its revision.
func (b *Bus) GetState(ctx context.Context, topicName, namespace, key string) (broker.StateEntry, error) {
	t, kv, err := b.checkState(ctx, topicName, namespace)
	if err != nil {
		return broker.StateEntry{}, err
	}
	value, seq, _, err := lastEntry(ctx, kv, t.stateEntrySubject(token(namespace), key), time.Now())
	if err != nil {
		return broker.StateEntry{}, b.fail(fmt.Errorf("jetstream: get state %q of %q: %w", key, namespace, err))
	}
	return broker.StateEntry{Value: value, Revision: seq}, nil
}

// CompareAndSwapState writes value at key if its revision is still rev.
func (b *Bus) CompareAndSwapState(ctx context.Context, topicName, namespace, key string, rev uint64,
	value []byte, ttl time.Duration) (uint64, error) {
	if value == nil {
		return 0, errors.New("jetstream: state value must not be nil")
	}
	if ttl < 0 {
		return 0, fmt.Errorf("jetstream: state TTL must not be negative, got %v", ttl)
	}
	t, kv, err := b.checkState(ctx, topicName, namespace)
	if err != nil {
		return 0, err
	}
	msg := nats.NewMsg(t.stateEntrySubject(token(namespace), key))
	msg.Data = value
	if ttl > 0 {
		msg.Header.Set(headerStateExpires, strconv.FormatInt(time.Now().Add(ttl).UnixNano(), 10))
		msg.Header.Set(natsjs.MsgTTLHeader, serverTTL(ttl))
	}
	seq, err := b.swap(ctx, kv, msg, rev)
	if err != nil {
		return 0, b.fail(fmt.Errorf("jetstream: write state %q of %q: %w", key, namespace, err))
	}
	return seq, nil
}

// DeleteState removes the entry at key if its revision is still rev.
func (b *Bus) DeleteState(ctx context.Context, topicName, namespace, key string, rev uint64) error {
	t, kv, err := b.checkState(ctx, topicName, namespace)
	if err != nil {
		return err
	}
	subject := t.stateEntrySubject(token(namespace), key)
	if rev == 0 {
		// Nothing was ever written, or its messages are gone: that is only
		// still true if no message exists now.
		_, seq, _, err := lastEntry(ctx, kv, subject, time.Now())
		if err != nil {
			return b.fail(fmt.Errorf("jetstream: delete state %q of %q: %w", key, namespace, err))
		}
		if seq != 0 {
			return broker.ErrStateConflict
		}
		return nil
	}
	msg := nats.NewMsg(subject)
	msg.Header.Set(headerStateOp, stateOpDelete)
	msg.Header.Set(natsjs.MsgTTLHeader, serverTTL(stateMarkerTTL))
	if _, err := b.swap(ctx, kv, msg, rev); err != nil {
		return b.fail(fmt.Errorf("jetstream: delete state %q of %q: %w", key, namespace, err))
	}
	return nil
}

// swap publishes msg if the latest message of its subject is still rev.
func (b *Bus) swap(ctx context.Context, kv natsjs.Stream, msg *nats.Msg, rev uint64) (uint64, error) {
	msg.Header.Set(natsjs.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	ack, err := b.js.PublishMsg(ctx, msg)
	if apiErr, ok := errors.AsType[*natsjs.APIError](err); ok &&
		(apiErr.ErrorCode == errCodeWrongLastSeq || apiErr.ErrorCode == errCodeWrongLastSeqReplicated) {
		return 0, broker.ErrStateConflict
	}
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// PurgeState removes every entry of the namespace.
func (b *Bus) PurgeState(ctx context.Context, topicName, namespace string) error {
	t, kv, err := b.checkState(ctx, topicName, namespace)
	if err != nil {
		return err
	}
	if err := kv.Purge(ctx, natsjs.WithPurgeSubject(t.kvPrefix+token(namespace)+".>")); err != nil {
		return b.fail(fmt.Errorf("jetstream: purge state of %q: %w", namespace, err))
	}
	return nil
}

// serverTTL formats a Nats-TTL header: whole seconds, at least one, rounded
// up so that the server never removes an entry before its deadline.
func serverTTL(d time.Duration) string {
	secs := (d + time.Second - 1) / time.Second
	return strconv.FormatInt(int64(max(secs, 1)), 10) + "s"
}
