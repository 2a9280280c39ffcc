// Package broker defines the durable log that sits between the ingress and the
// dispatchers, and the contract every backend (Redis Streams, embedded
// JetStream) implements.
//
// Vocabulary: a topic is one Knative broker ("namespace/name") and holds an
// ordered log of encoded CloudEvents. A group is one trigger's (or sensor
// trigger's) cursor over that log: each group sees every message appended
// after the group was created, independently of the other groups. Several
// consumers (gateway replicas) may share a group; a message fetched by one
// consumer is leased to it until it is acknowledged, its lease expires, or the
// consumer renews the lease.
//
// Next to the log, a StateStore keeps small entries that replicas share, such
// as the partial matches of Sensor triggers.
package broker

import (
	"context"
	"errors"
	"time"
)

// ErrBackpressure is returned by Publish when the topic's log is at its
// retention limit and nothing can be trimmed without dropping a message that
// some group has not acknowledged. The ingress answers 429 with Retry-After.
var ErrBackpressure = errors.New("broker: topic is at its retention limit")

// ErrClosed is returned by every method called after Close.
var ErrClosed = errors.New("broker: closed")

// Bus is a durable, multi-topic log with consumer groups. Implementations are
// safe for concurrent use.
type Bus interface {
	// Publish appends the payloads to the topic's log in order. It returns nil
	// only once every payload is durably stored; on error none or some of them
	// may have been stored (the caller answers with a retryable status, and the
	// sender's retry produces duplicates that subscribers dedupe by id).
	Publish(ctx context.Context, topic string, payloads ...[]byte) error

	// Subscribe creates the group if it does not exist, positioned at the end of
	// the log so that it sees only messages published after this call returns,
	// and returns a consumer of that group. Subscribing again to an existing
	// group keeps its position and pending messages.
	Subscribe(ctx context.Context, topic, group string, cfg SubscribeConfig) (Subscription, error)

	// DeleteGroup removes a group, its pending messages and its recorded
	// attempts, so that it no longer holds back retention. Dead letters of the
	// group are kept. Deleting a missing group is not an error.
	DeleteGroup(ctx context.Context, topic, group string) error

	// DeadLetter durably appends a message to the group's dead-letter log.
	DeadLetter(ctx context.Context, topic, group string, dl DeadLetter) error

	// DeadLetters returns up to limit dead letters of the group, oldest first,
	// starting after the dead letter whose ID is after ("" for the beginning).
	DeadLetters(ctx context.Context, topic, group, after string, limit int) ([]DeadLetter, error)

	// Ping reports whether the bus is reachable.
	Ping(ctx context.Context) error

	// Close releases the bus's connections. Subscriptions must be closed first.
	Close() error
}

// SubscribeConfig configures one consumer of a group.
type SubscribeConfig struct {
	// Consumer names this consumer inside the group (the replica id). A
	// consumer that restarts with the same name gets its pending messages back
	// at once. Required.
	Consumer string

	// Lease is how long a fetched message stays this consumer's without a
	// Renew before another consumer of the group may take it. Zero means 30s.
	Lease time.Duration
}

// Subscription is one consumer of a group. Its methods are safe for
// concurrent use.
type Subscription interface {
	// Fetch returns up to max messages, blocking up to wait when none is
	// available. It returns, in this order of preference: messages this
	// consumer held before it restarted, messages whose lease at another
	// consumer expired, and new messages. It returns an empty slice, not an
	// error, when wait elapses. It returns ctx.Err() when ctx is done.
	Fetch(ctx context.Context, max int, wait time.Duration) ([]Message, error)

	// Ack acknowledges messages: they are never delivered to the group again
	// and their recorded attempts are forgotten.
	Ack(ctx context.Context, ids ...string) error

	// Renew extends the lease of messages this consumer holds, for example
	// while a delivery is slow or a retry is waiting. It renews nothing that
	// another consumer took after this one's lease expired: the caller must
	// renew well within the lease.
	Renew(ctx context.Context, ids ...string) error

	// SetAttempts durably records how many delivery attempts a held message
	// has had, so that attempts made before a crash still count. Fetch reports
	// the recorded number in Message.Attempts.
	SetAttempts(ctx context.Context, id string, attempts int) error

	// Close stops the consumer. Messages it holds stay leased to it, so a
	// consumer with the same name takes them back at once and others after
	// the lease.
	Close() error
}

// Message is one entry of a topic's log as seen by a group.
type Message struct {
	// ID identifies the message within the topic; IDs grow in log order.
	ID string
	// Payload is the stored bytes, as given to Publish.
	Payload []byte
	// Attempts is the number of delivery attempts recorded with SetAttempts;
	// 0 for a message never attempted.
	Attempts int
	// Redelivered is true when the message was fetched before by this group
	// (after a crash, a shutdown or an expired lease).
	Redelivered bool
}

// DeadLetter is a message that could not be delivered, with why.
type DeadLetter struct {
	// ID is assigned by DeadLetter and identifies the entry in the dead-letter
	// log; ignored on input.
	ID string
	// Payload is the message payload as published.
	Payload []byte
	// Destination is the target the last attempt was made to.
	Destination string
	// Code is the last HTTP status, or -1 when no response came.
	Code int
	// Reason is a human-readable cause (error text, response excerpt).
	Reason string
	// Attempts is how many attempts were made.
	Attempts int
	// Time is when the message was dead-lettered.
	Time time.Time
}

// ErrStateConflict is returned by StateStore.CompareAndSwapState and
// StateStore.DeleteState when the entry was written, deleted or expired
// since the revision given was read.
var ErrStateConflict = errors.New("broker: state entry changed since it was read")

// StateStore is a small keyed store next to the log, shared by every replica
// that uses the same bus and as durable as the log. The dispatcher keeps the
// partial matches of Sensor triggers in it, so that they survive a restart
// and two replicas never complete the same match twice.
//
// Entries are grouped by topic and namespace: a non-empty name of ASCII
// letters, digits, '.', '_' and '-', such as a group name. Keys are any
// strings, the empty one included. Every write is a
// compare-and-swap on the entry's revision, so concurrent writers never lose
// each other's updates: a writer reads the entry, computes the new value,
// and retries from the read when the swap reports ErrStateConflict.
// Implementations are safe for concurrent use; after the bus is closed every
// method returns ErrClosed.
type StateStore interface {
	// GetState returns the entry at key. A missing or expired entry has a nil
	// Value; its Revision is then what CompareAndSwapState needs to create
	// it (not necessarily 0).
	GetState(ctx context.Context, topic, namespace, key string) (StateEntry, error)

	// CompareAndSwapState stores value at key if the entry's revision is
	// still rev, and returns the new revision, which is greater than every
	// revision the topic's entries had before. ttl > 0 makes the entry
	// expire that long after this write; 0 keeps it until it is written or
	// deleted again. A value may be empty but not nil. It returns
	// ErrStateConflict when the entry changed since rev was read; a swap
	// against the revision of an entry that has expired since may succeed or
	// fail with ErrStateConflict.
	CompareAndSwapState(ctx context.Context, topic, namespace, key string, rev uint64, value []byte,
		ttl time.Duration) (uint64, error)

	// DeleteState removes the entry at key if its revision is still rev, and
	// returns ErrStateConflict otherwise. Deleting a missing entry with the
	// revision GetState gave for it is not an error.
	DeleteState(ctx context.Context, topic, namespace, key string, rev uint64) error

	// PurgeState removes every entry of the namespace. A later swap against
	// a revision read before the purge fails with ErrStateConflict.
	PurgeState(ctx context.Context, topic, namespace string) error
}

// StateEntry is one entry of a StateStore.
type StateEntry struct {
	// Value is the stored bytes; nil when the entry is missing or expired.
	Value []byte
	// Revision identifies this version of the entry, for CompareAndSwapState
	// and DeleteState.
	Revision uint64
}

// ValidStateNamespace reports whether ns may name a StateStore namespace.
func ValidStateNamespace(ns string) bool {
	if ns == "" {
		return false
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
