package jetstream

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/signalbox-dev/signalbox/broker"
)

// Publish appends the payloads to the topic's log, in order and next to each
// other as far as this process's publishers go, and returns once the server
// has stored them all. The payloads are sent without waiting for each
// other's acknowledgement, and concurrent calls share the connection, so
// there is no round trip per payload. It returns broker.ErrBackpressure when
// the topic holds Config.MaxLen unacknowledged messages; some of the
// payloads may then be stored. When ctx ends first it returns ctx.Err(), and
// the payloads may or may not be stored.
func (b *Bus) Publish(ctx context.Context, topicName string, payloads ...[]byte) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.inflight.Done()

	t, err := b.topic(topicName)
	if err != nil {
		return err
	}
	if len(payloads) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.ready(ctx, t); err != nil {
		return b.fail(err)
	}

	futures, err := b.send(t, payloads)
	if err != nil {
		return b.fail(fmt.Errorf("jetstream: publish to %q: %w", topicName, err))
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return b.fail(publishErr(topicName, err))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// enter registers a Publish call with Close, which waits for it.
func (b *Bus) enter() error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed.Load() {
		return broker.ErrClosed
	}
	b.inflight.Add(1)
	return nil
}

// send hands the payloads to the connection under the topic's publish lock,
// so that the server stores them one after the other.
func (b *Bus) send(t *topic, payloads [][]byte) ([]natsjs.PubAckFuture, error) {
	futures := make([]natsjs.PubAckFuture, 0, len(payloads))
	t.pubMu.Lock()
	defer t.pubMu.Unlock()
	for _, p := range payloads {
		f, err := b.js.PublishMsgAsync(&nats.Msg{Subject: t.logSubject, Data: p})
		if err != nil {
			return nil, err
		}
		futures = append(futures, f)
	}
	return futures, nil
}

// errCodeStoreFailed is the JetStream API error code for a message the
// stream refused to store; its description tells why.
const errCodeStoreFailed = 10077

// publishErr maps the server's "maximum messages exceeded", which a
// DiscardNew stream at MaxMsgs returns, to broker.ErrBackpressure.
func publishErr(topic string, err error) error {
	if apiErr, ok := errors.AsType[*natsjs.APIError](err); ok &&
		apiErr.ErrorCode == errCodeStoreFailed && apiErr.Description == server.ErrMaxMsgs.Error() {
		return fmt.Errorf("jetstream: publish to %q: %w", topic, broker.ErrBackpressure)
	}
	return fmt.Errorf("jetstream: publish to %q: %w", topic, err)
}
