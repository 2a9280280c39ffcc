package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

const (
	// preallocCap bounds the latencies preallocated per sender (8 bytes each).
	preallocCap = 1 << 16
	// maxQueue bounds the events released and not yet sent in an open loop
	// (32 bytes each): a quarter million is minutes of backlog at any rate
	// a single client can reach.
	maxQueue = 1 << 18
)

// send posts events until the duration is over (closed loop) or every
// scheduled event was sent (open loop), then waits for the answers. It
// returns when sending started and each sender's latencies.
func (r *run) send(ctx context.Context) (time.Time, []*workerStats) {
	workers := make([]*workerStats, r.cfg.Concurrency)
	for i := range workers {
		workers[i] = &workerStats{}
	}
	var wg sync.WaitGroup
	start := time.Now()
	if r.cfg.Rate > 0 {
		r.sendOpen(ctx, start, workers, &wg)
	} else {
		r.sendClosed(ctx, start, workers, &wg)
	}
	wg.Wait()
	return start, workers
}

// sendClosed runs one sender per worker, each posting its next event as soon
// as the last one was answered.
func (r *run) sendClosed(ctx context.Context, start time.Time, workers []*workerStats, wg *sync.WaitGroup) {
	deadline := start.Add(r.cfg.Duration)
	// A guess at the answers per sender that spares most regrowth.
	per := min(int(r.cfg.Duration.Seconds()*20_000)/len(workers), preallocCap)
	for _, w := range workers {
		w.post = make([]time.Duration, 0, per)
		wg.Go(func() {
			for ctx.Err() == nil {
				now := time.Now()
				if !now.Before(deadline) {
					return
				}
				seq := r.issued.Add(1) - 1
				if seq >= maxEvents {
					return
				}
				r.post(ctx, w, seq, now)
			}
		})
	}
}

// release is an event the pacer handed to the senders, and when.
type release struct {
	seq uint64
	at  time.Time
}

// sendOpen hands events to the senders at the pacer's schedule. Each event is
// stamped with the moment the pacer released it: its slot, or up to about a
// millisecond later because Go's timers cannot wake more finely than that
// without spinning on a CPU the server under test needs. Waiting for a free
// sender after the release counts as latency, so a saturated server cannot
// hide behind a client that slowed down (coordinated omission).
func (r *run) sendOpen(ctx context.Context, start time.Time, workers []*workerStats, wg *sync.WaitGroup) {
	p := pacer{start: start, rate: r.cfg.Rate}
	total := min(p.total(r.cfg.Duration), maxEvents)
	// The queue is deep enough that the pacer practically never blocks on it:
	// a blocked pacer would release late and hide the wait.
	work := make(chan release, min(total, maxQueue))
	per := min(int(total)/len(workers)+16, preallocCap)
	for _, w := range workers {
		w.post = make([]time.Duration, 0, per)
		w.lag = make([]time.Duration, 0, per)
		wg.Go(func() {
			for ev := range work {
				w.lag = append(w.lag, max(time.Since(p.at(ev.seq)), 0))
				r.post(ctx, w, ev.seq, ev.at)
			}
		})
	}

	defer close(work)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var next uint64
	for next < total {
		now := time.Now()
		for due := min(p.due(now), total); next < due; next++ {
			select {
			case work <- release{seq: next, at: now}:
				r.issued.Store(next + 1)
			case <-ctx.Done():
				return
			}
		}
		if next == total {
			return
		}
		timer.Reset(time.Until(p.at(next)))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return
		}
	}
}

// post sends event seq in binary mode and records the answer. released is
// when the event was released for sending; it travels in the sbloadsent
// extension.
func (r *run) post(ctx context.Context, w *workerStats, seq uint64, released time.Time) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.URL, bytes.NewReader(r.payload))
	if err != nil {
		r.fail(err)
		return
	}
	// Assigning canonical keys directly skips Header.Set's canonicalisation;
	// the shared value slices are never written to.
	h := req.Header
	h["Ce-Specversion"] = r.hdr.specversion
	h["Ce-Id"] = []string{r.prefix + strconv.FormatUint(seq, 10)}
	h["Ce-Source"] = r.hdr.source
	h["Ce-Type"] = r.hdr.typ
	h["Ce-Sbloadsent"] = []string{strconv.FormatInt(r.clock.unix(released), 10)}
	if len(r.payload) > 0 {
		h["Content-Type"] = r.hdr.ctype
	}

	begin := time.Now()
	resp, err := r.client.Do(req)
	end := time.Now()
	maxInt64(&r.lastAnswer, r.clock.unix(end))
	if err != nil {
		if ctx.Err() == nil {
			r.fail(err)
		}
		return
	}
	// Reading the answer to its end lets the connection be reused.
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()

	code := resp.StatusCode
	if code < 0 || code >= len(r.statuses) {
		code = 0
	}
	if code == http.StatusAccepted {
		r.accepted.add(seq)
		w.post = append(w.post, end.Sub(begin))
	}
	r.statuses[code].Add(1)
}

// fail counts a POST that got no answer and keeps the first error to show.
func (r *run) fail(err error) {
	r.transportErrs.Add(1)
	r.firstErr.Do(func() { r.firstErrMsg = err.Error() })
}
