package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/signalbox-dev/signalbox/broker"
)

// deadLetterHeader carries a dead letter's fields as JSON; the message body
// is the payload itself, so that a dead letter is no larger than the event.
const deadLetterHeader = "Signalbox-Dead-Letter"

// deadLetterMeta is the JSON in deadLetterHeader. JSON escapes line breaks,
// which a header value must not contain.
type deadLetterMeta struct {
	Destination string    `json:"destination"`
	Code        int       `json:"code"`
	Reason      string    `json:"reason"`
	Attempts    int       `json:"attempts"`
	Time        time.Time `json:"time"`
}

// DeadLetter appends dl to the group's dead letters, in the topic's
// dead-letter stream, which keeps entries for Config.DeadLetterRetention. A
// zero dl.Time is recorded as the current time. dl.ID is ignored.
func (b *Bus) DeadLetter(ctx context.Context, topicName, group string, dl broker.DeadLetter) error {
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
	if _, err := b.deadStream(ctx, t, true); err != nil {
		return b.fail(err)
	}

	if dl.Time.IsZero() {
		dl.Time = time.Now()
	}
	meta, err := json.Marshal(deadLetterMeta{
		Destination: dl.Destination,
		Code:        dl.Code,
		Reason:      dl.Reason,
		Attempts:    dl.Attempts,
		Time:        dl.Time.UTC(),
	})
	if err != nil {
		return fmt.Errorf("jetstream: dead-letter to %q of %q: %w", group, topicName, err)
	}
	msg := &nats.Msg{Subject: t.deadSubject(token(group)), Data: dl.Payload, Header: nats.Header{}}
	msg.Header.Set(deadLetterHeader, string(meta))
	if _, err := b.js.PublishMsg(ctx, msg); err != nil {
		return b.fail(fmt.Errorf("jetstream: dead-letter to %q of %q: %w", group, topicName, err))
	}
	return nil
}

// deadStream returns the topic's dead-letter stream. With create it creates
// or updates the stream, once per bus; without, it returns nil when the
// stream does not exist.
func (b *Bus) deadStream(ctx context.Context, t *topic, create bool) (natsjs.Stream, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dead != nil {
		return t.dead, nil
	}

	var s natsjs.Stream
	var err error
	if create {
		s, err = b.js.CreateOrUpdateStream(ctx, natsjs.StreamConfig{
			Name:        t.deadStream,
			Description: "signalbox dead letters of " + t.name,
			Subjects:    []string{t.deadPrefix + "*"},
			Retention:   natsjs.LimitsPolicy,
			MaxAge:      b.cfg.DeadLetterRetention,
			Storage:     natsjs.FileStorage,
			Replicas:    1,
		})
	} else {
		s, err = b.js.Stream(ctx, t.deadStream)
		if errors.Is(err, natsjs.ErrStreamNotFound) {
			return nil, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("jetstream: dead-letter stream of %q: %w", t.name, err)
	}
	t.dead = s
	return s, nil
}

// DeadLetters returns up to limit dead letters of the group, oldest first,
// after the one whose ID is after ("" for the start). IDs are sequences of
// the topic's dead-letter stream. limit must be positive. Each entry is one
// round trip; this is for listing, not for bulk export.
func (b *Bus) DeadLetters(
	ctx context.Context, topicName, group, after string, limit int,
) ([]broker.DeadLetter, error) {
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	if group == "" {
		return nil, errors.New("jetstream: group name is empty")
	}
	if limit <= 0 {
		return nil, fmt.Errorf("jetstream: dead letters: limit must be positive, got %d", limit)
	}
	next := uint64(1)
	if after != "" {
		seq, err := strconv.ParseUint(after, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("jetstream: dead letters: malformed ID %q", after)
		}
		next = seq + 1
	}
	t, err := b.topic(topicName)
	if err != nil {
		return nil, err
	}
	s, err := b.deadStream(ctx, t, false)
	if err != nil {
		return nil, b.fail(err)
	}
	if s == nil {
		return []broker.DeadLetter{}, nil
	}

	subject := t.deadSubject(token(group))
	out := []broker.DeadLetter{}
	for len(out) < limit {
		// The server returns the first entry at or after next on subject.
		m, err := s.GetMsg(ctx, next, natsjs.WithGetMsgSubject(subject))
		if errors.Is(err, natsjs.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, b.fail(fmt.Errorf("jetstream: list dead letters of %q of %q: %w", group, topicName, err))
		}
		dl, err := parseDeadLetter(m)
		if err != nil {
			return nil, fmt.Errorf("jetstream: dead letter %d of %q of %q: %w", m.Sequence, group, topicName, err)
		}
		out = append(out, dl)
		next = m.Sequence + 1
	}
	return out, nil
}

func parseDeadLetter(m *natsjs.RawStreamMsg) (broker.DeadLetter, error) {
	var meta deadLetterMeta
	if err := json.Unmarshal([]byte(m.Header.Get(deadLetterHeader)), &meta); err != nil {
		return broker.DeadLetter{}, fmt.Errorf("header %s: %w", deadLetterHeader, err)
	}
	return broker.DeadLetter{
		ID:          strconv.FormatUint(m.Sequence, 10),
		Payload:     m.Data,
		Destination: meta.Destination,
		Code:        meta.Code,
		Reason:      meta.Reason,
		Attempts:    meta.Attempts,
		Time:        meta.Time,
	}, nil
}
