package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/signalbox-dev/signalbox/broker"
)

var _ broker.StateStore = (*Bus)(nil)

// State entries live next to the topic's log, under its hash tag:
//
//	signalbox:{ns/name}:state:<namespace>:<key>   hash: r (revision), v (value);
//	                                              PEXPIRE when written with a TTL
//	signalbox:{ns/name}:state-rev                 counter the revisions come from
//
// Revisions come from one counter per topic rather than from the entry, so
// an entry that expires and is created again never repeats a revision that
// a slow writer may still hold.

const (
	stateFieldRevision = "r"
	stateFieldValue    = "v"
)

func stateKey(topic, namespace, key string) string {
	return stateNamespacePrefix(topic, namespace) + key
}

func stateNamespacePrefix(topic, namespace string) string {
	return keyPrefix(topic) + "state:" + namespace + ":"
}

func stateRevKey(topic string) string { return keyPrefix(topic) + "state-rev" }

// casScript writes or deletes an entry if its revision is still ARGV[1]
// ("0" for a missing entry). It returns -1 on a conflict, else the new
// revision (0 for a delete).
//
//	KEYS[1] the entry, KEYS[2] the topic's revision counter
//	ARGV[1] expected revision, ARGV[2] "set" or "del", ARGV[3] value,
//	ARGV[4] TTL in milliseconds (0: none)
var casScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'r')
if (cur or '0') ~= ARGV[1] then
  return -1
end
if ARGV[2] == 'del' then
  redis.call('DEL', KEYS[1])
  return 0
end
local rev = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'r', rev, 'v', ARGV[3])
if tonumber(ARGV[4]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
else
  redis.call('PERSIST', KEYS[1])
end
return rev
`)

func (b *Bus) checkState(topicName, namespace string) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if err := validateTopic(topicName); err != nil {
		return err
	}
	if !broker.ValidStateNamespace(namespace) {
		return fmt.Errorf("redisbus: state namespace %q: want letters, digits, '.', '_' and '-'", namespace)
	}
	return nil
}

// GetState returns the entry at key; a missing or expired one has revision 0.
func (b *Bus) GetState(ctx context.Context, topicName, namespace, key string) (broker.StateEntry, error) {
	if err := b.checkState(topicName, namespace); err != nil {
		return broker.StateEntry{}, err
	}
	vals, err := b.client.HMGet(ctx, stateKey(topicName, namespace, key), stateFieldRevision, stateFieldValue).Result()
	if err != nil {
		return broker.StateEntry{}, fmt.Errorf("redisbus: get state %q of %q: %w", key, namespace, err)
	}
	revStr, _ := vals[0].(string)
	if revStr == "" {
		return broker.StateEntry{}, nil
	}
	rev, err := strconv.ParseUint(revStr, 10, 64)
	if err != nil {
		return broker.StateEntry{}, fmt.Errorf("redisbus: state %q of %q: bad revision %q", key, namespace, revStr)
	}
	value, _ := vals[1].(string)
	return broker.StateEntry{Value: []byte(value), Revision: rev}, nil
}

// CompareAndSwapState writes value at key if its revision is still rev.
func (b *Bus) CompareAndSwapState(ctx context.Context, topicName, namespace, key string, rev uint64,
	value []byte, ttl time.Duration) (uint64, error) {
	if err := b.checkState(topicName, namespace); err != nil {
		return 0, err
	}
	if value == nil {
		return 0, errors.New("redisbus: state value must not be nil")
	}
	if ttl < 0 {
		return 0, fmt.Errorf("redisbus: state TTL must not be negative, got %v", ttl)
	}
	ms := int64(0)
	if ttl > 0 {
		ms = max(ttl.Milliseconds(), 1)
	}
	keys := []string{stateKey(topicName, namespace, key), stateRevKey(topicName)}
	n, err := casScript.Run(ctx, b.client, keys, strconv.FormatUint(rev, 10), "set", value, ms).Int64()
	if err != nil {
		return 0, fmt.Errorf("redisbus: write state %q of %q: %w", key, namespace, err)
	}
	if n < 0 {
		return 0, broker.ErrStateConflict
	}
	return uint64(n), nil
}

// DeleteState removes the entry at key if its revision is still rev.
func (b *Bus) DeleteState(ctx context.Context, topicName, namespace, key string, rev uint64) error {
	if err := b.checkState(topicName, namespace); err != nil {
		return err
	}
	keys := []string{stateKey(topicName, namespace, key), stateRevKey(topicName)}
	n, err := casScript.Run(ctx, b.client, keys, strconv.FormatUint(rev, 10), "del", "", 0).Int64()
	if err != nil {
		return fmt.Errorf("redisbus: delete state %q of %q: %w", key, namespace, err)
	}
	if n < 0 {
		return broker.ErrStateConflict
	}
	return nil
}

// PurgeState deletes every entry of the namespace. It scans the keyspace for
// them, so it costs time in proportion to the whole database; it is meant
// for occasional resets, not for every event.
func (b *Bus) PurgeState(ctx context.Context, topicName, namespace string) error {
	if err := b.checkState(topicName, namespace); err != nil {
		return err
	}
	pattern := globEscape(stateNamespacePrefix(topicName, namespace)) + "*"
	iter := b.client.Scan(ctx, 0, pattern, 512).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := b.client.Del(ctx, batch...).Err()
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) >= 512 {
			if err := flush(); err != nil {
				return fmt.Errorf("redisbus: purge state of %q: %w", namespace, err)
			}
		}
	}
	if err := iter.Err(); err != nil {
		return fmt.Errorf("redisbus: purge state of %q: %w", namespace, err)
	}
	if err := flush(); err != nil {
		return fmt.Errorf("redisbus: purge state of %q: %w", namespace, err)
	}
	return nil
}

// globEscape quotes the characters SCAN's MATCH treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
