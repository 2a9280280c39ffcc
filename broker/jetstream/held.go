package jetstream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// A held record lists the messages one consumer of a group holds, so that a
// consumer restarting with the same name can hand them back to the group at
// once instead of waiting for their leases to expire. JetStream does not know
// which client holds a delivered message; this record is how the bus knows.
//
// The record is the latest message on the consumer's held subject in the
// state stream. It is rewritten after every Fetch that returned messages,
// after every Renew and on Close; acknowledged messages leave it at the next
// rewrite. A stale entry is harmless: the server ignores a nak of a message
// that is no longer pending.
type heldRecord struct {
	// lease is the subscription's lease, which the server applies as the
	// group's ack wait.
	lease time.Duration
	// written is when the record was written.
	written time.Time
	// entries are sorted by stream sequence, without duplicates.
	entries []heldEntry
}

// heldEntry is one held message.
type heldEntry struct {
	seq  uint64 // stream sequence: the message ID
	dseq uint64 // consumer sequence of the delivery the consumer holds
	// since is when the lease started, by this host's clock: when the message
	// arrived or was last renewed. The server started its own lease clock a
	// little earlier, so since+lease is a little late; see handBackMargin.
	since time.Time
}

const heldVersion = 1

var errBadHeldRecord = errors.New("malformed held record")

// encode returns the record's binary form: a version byte, the lease in
// milliseconds, the write time in Unix milliseconds, the entry count, then
// per entry the sequence as a delta from the previous one, the consumer
// sequence, and how many milliseconds before the write its lease started. A
// thousand held messages take about 8 KB.
func (r heldRecord) encode() []byte {
	buf := make([]byte, 0, 32+len(r.entries)*10)
	buf = append(buf, heldVersion)
	buf = binary.AppendUvarint(buf, uint64(max(r.lease.Milliseconds(), 0)))
	written := r.written.UnixMilli()
	buf = binary.AppendVarint(buf, written)
	buf = binary.AppendUvarint(buf, uint64(len(r.entries)))

	prev := uint64(0)
	for _, e := range r.entries {
		buf = binary.AppendUvarint(buf, e.seq-prev)
		buf = binary.AppendUvarint(buf, e.dseq)
		buf = binary.AppendUvarint(buf, uint64(max(written-e.since.UnixMilli(), 0)))
		prev = e.seq
	}
	return buf
}

// decodeHeld parses what encode wrote. It never panics on malformed input.
func decodeHeld(buf []byte) (heldRecord, error) {
	if len(buf) == 0 || buf[0] != heldVersion {
		return heldRecord{}, errBadHeldRecord
	}
	d := decoder{buf: buf[1:]}
	leaseMs := d.uvarint()
	written := d.varint()
	n := d.uvarint()
	if d.err != nil || leaseMs > uint64(365*24*time.Hour/time.Millisecond) || n > uint64(len(d.buf)) {
		return heldRecord{}, errBadHeldRecord
	}

	r := heldRecord{
		lease:   time.Duration(leaseMs) * time.Millisecond,
		written: time.UnixMilli(written),
		entries: make([]heldEntry, 0, n),
	}
	prev := uint64(0)
	for range n {
		delta, dseq, age := d.uvarint(), d.uvarint(), d.uvarint()
		if d.err != nil || delta == 0 || prev+delta < prev || age > 1<<40 {
			return heldRecord{}, errBadHeldRecord
		}
		prev += delta
		since := time.UnixMilli(written - int64(age))
		r.entries = append(r.entries, heldEntry{seq: prev, dseq: dseq, since: since})
	}
	if len(d.buf) != 0 {
		return heldRecord{}, fmt.Errorf("%w: %d trailing bytes", errBadHeldRecord, len(d.buf))
	}
	return r, nil
}

type decoder struct {
	buf []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.err = errBadHeldRecord
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.err = errBadHeldRecord
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// handBackMargin is how long before its lease would end by this host's clock
// a held message is no longer handed back on restart. It covers the time
// between the server starting the lease and the message arriving here, and
// the time the nak takes to reach the server: a nak arriving after the lease
// ended could take the message from another consumer that has it by then.
func handBackMargin(lease time.Duration) time.Duration {
	return min(max(lease/10, 100*time.Millisecond), 2*time.Second)
}

// stillLeased returns the entries whose lease, by this host's clock, has more
// than the margin to run at now: no other consumer can have been given them
// yet, so handing them back cannot cause a duplicate concurrent delivery.
// Entries whose lease has run out come back to the group by themselves.
func (r heldRecord) stillLeased(now time.Time) []heldEntry {
	margin := handBackMargin(r.lease)
	var out []heldEntry
	for _, e := range r.entries {
		if now.Add(margin).Before(e.since.Add(r.lease)) {
			out = append(out, e)
		}
	}
	return out
}

// sortEntries orders entries by sequence, as encode requires.
func sortEntries(entries []heldEntry) {
	slices.SortFunc(entries, func(a, b heldEntry) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
}
