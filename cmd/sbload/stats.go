package main

import (
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// clock turns monotonic readings into unix nanoseconds. The sender stamps
// events with it and the subscriber reads it on arrival; both sit in one
// process, so deriving both readings from one monotonic base keeps latencies
// right even if the wall clock is stepped during a run.
type clock struct {
	base     time.Time
	baseUnix int64
}

func newClock() clock {
	now := time.Now()
	return clock{base: now, baseUnix: now.UnixNano()}
}

// nowUnix returns the current time in unix nanoseconds.
func (c clock) nowUnix() int64 { return c.unix(time.Now()) }

// unix converts a time read in this process to unix nanoseconds.
func (c clock) unix(t time.Time) int64 { return c.baseUnix + int64(t.Sub(c.base)) }

// pacer schedules an open-loop run: event i is due at start + i/rate,
// whatever happened to the events before it, so a slow answer delays no
// later send (closed-loop senders would hide queueing that way).
type pacer struct {
	start time.Time
	rate  float64 // events per second, > 0
}

// at returns when event i is due, rounded up to the nanosecond so that due
// counts event i as due from that instant on.
func (p pacer) at(i uint64) time.Time {
	return p.start.Add(time.Duration(math.Ceil(float64(i) * float64(time.Second) / p.rate)))
}

// due returns how many events are due at now: events 0 .. due-1.
func (p pacer) due(now time.Time) uint64 {
	elapsed := now.Sub(p.start)
	if elapsed < 0 {
		return 0
	}
	return uint64(elapsed.Seconds()*p.rate) + 1
}

// total returns how many events a run of duration d sends.
func (p pacer) total(d time.Duration) uint64 {
	return uint64(math.Ceil(d.Seconds()*p.rate - 1e-9))
}

// Summary describes a set of latencies in milliseconds.
type Summary struct {
	Count int     `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// summarize sorts d in place and returns its summary; an empty d gives the
// zero Summary.
func summarize(d []time.Duration) Summary {
	if len(d) == 0 {
		return Summary{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	return Summary{
		Count: len(d),
		Min:   ms(d[0]),
		Mean:  ms(sum / time.Duration(len(d))),
		P50:   ms(percentile(d, 50)),
		P90:   ms(percentile(d, 90)),
		P99:   ms(percentile(d, 99)),
		P999:  ms(percentile(d, 99.9)),
		Max:   ms(d[len(d)-1]),
	}
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of the
// sorted durations: the smallest value that at least p% of them do not
// exceed.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The epsilon keeps binary rounding (99.9/100*1000 = 999.0000000000001)
	// from moving the rank one up; the same trick serves pacer.total.
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-9))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// tracker counts, per event sequence number, how often something happened to
// it (accepted, delivered). It grows in fixed chunks allocated on first use,
// so recording is lock-free and allocates once per chunkSize events.
type tracker struct {
	chunks [maxChunks]atomic.Pointer[[chunkSize]uint32]
}

const (
	chunkBits = 16
	chunkSize = 1 << chunkBits
	maxChunks = 1 << 14
	// maxEvents is how many sequence numbers a tracker holds (about a billion,
	// a day at 10k events/s); sends stop there.
	maxEvents = maxChunks * chunkSize
)

// add increments seq's count and returns the new count. A seq at or past
// maxEvents is not counted and gives 0.
func (t *tracker) add(seq uint64) uint32 {
	c := t.chunk(seq, true)
	if c == nil {
		return 0
	}
	return atomic.AddUint32(&c[seq&(chunkSize-1)], 1)
}

// get returns seq's count.
func (t *tracker) get(seq uint64) uint32 {
	c := t.chunk(seq, false)
	if c == nil {
		return 0
	}
	return atomic.LoadUint32(&c[seq&(chunkSize-1)])
}

func (t *tracker) chunk(seq uint64, create bool) *[chunkSize]uint32 {
	i := seq >> chunkBits
	if i >= maxChunks {
		return nil
	}
	c := t.chunks[i].Load()
	if c != nil || !create {
		return c
	}
	// Two goroutines may race to create the chunk; the loser adopts the
	// winner's so no count is lost.
	fresh := new([chunkSize]uint32)
	if t.chunks[i].CompareAndSwap(nil, fresh) {
		return fresh
	}
	return t.chunks[i].Load()
}

// Reconciliation compares what the ingress accepted with what the subscriber
// received.
type Reconciliation struct {
	// Missing is the number of accepted events never delivered.
	Missing uint64 `json:"missing"`
	// Duplicates is the number of deliveries beyond the first, over all events.
	Duplicates uint64 `json:"duplicates"`
	// Unconfirmed is the number of events delivered whose POST did not get a
	// 202 (a timeout or error after the event was stored).
	Unconfirmed uint64 `json:"unconfirmed"`
	// FirstMissing lists up to ten sequence numbers of missing events.
	FirstMissing []uint64 `json:"first_missing,omitempty"`
}

// reconcile checks events 0 .. n-1.
func reconcile(accepted, delivered *tracker, n uint64) Reconciliation {
	var r Reconciliation
	for seq := range n {
		a, d := accepted.get(seq), delivered.get(seq)
		switch {
		case a > 0 && d == 0:
			r.Missing++
			if len(r.FirstMissing) < 10 {
				r.FirstMissing = append(r.FirstMissing, seq)
			}
		case a == 0 && d > 0:
			r.Unconfirmed++
		}
		if d > 1 {
			r.Duplicates += uint64(d - 1)
		}
	}
	return r
}

// maxInt64 raises v to at least n.
func maxInt64(v *atomic.Int64, n int64) {
	for {
		cur := v.Load()
		if n <= cur || v.CompareAndSwap(cur, n) {
			return
		}
	}
}
