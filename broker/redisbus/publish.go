package redisbus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/signalbox-dev/signalbox/broker"
)

// States of a pubReq. A request is taken by exactly one of: a writer
// (reqTaken, it will complete done), the publisher giving up on a cancelled
// context (reqAbandoned, nobody completes done) or Close (reqTaken).
const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

// pubReq is one Publish call waiting for a writer.
type pubReq struct {
	topic    *topic
	payloads [][]byte
	state    atomic.Int32
	done     chan error // buffered: the writer never blocks on it

	// first and last index the request's commands in the writer's batch.
	first, last int
}

var reqPool = sync.Pool{New: func() any { return &pubReq{done: make(chan error, 1)} }}

func getReq(t *topic, payloads [][]byte) *pubReq {
	r := reqPool.Get().(*pubReq)
	r.topic, r.payloads = t, payloads
	r.state.Store(reqQueued)
	return r
}

// putReq recycles a request whose done has been received from.
func putReq(r *pubReq) {
	r.topic, r.payloads = nil, nil
	reqPool.Put(r)
}

// Publish appends the payloads to the topic's log, in order and contiguous,
// and returns once Redis has stored them all. It returns
// broker.ErrBackpressure without contacting Redis while the topic is full.
// When ctx is done before a writer took the call, nothing is stored and
// ctx.Err() is returned; once taken, Publish waits for the outcome, so the
// payloads are never referenced after it returns.
func (b *Bus) Publish(ctx context.Context, topicName string, payloads ...[]byte) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	t, err := b.topic(topicName)
	if err != nil {
		return err
	}
	if len(payloads) == 0 {
		return nil
	}
	if t.full.Load() {
		b.stats.backpressured.Add(1)
		return broker.ErrBackpressure
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	r := getReq(t, payloads)
	if !b.enqueue(r) {
		putReq(r)
		return broker.ErrClosed
	}
	select {
	case err := <-r.done:
		putReq(r)
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return ctx.Err() // the writer drops r; it is not recycled
		}
		err := <-r.done
		putReq(r)
		return err
	}
}

// enqueue adds r to the queue and wakes a writer. It reports false after
// Close.
func (b *Bus) enqueue(r *pubReq) bool {
	b.queueMu.Lock()
	if b.queueClosed {
		b.queueMu.Unlock()
		return false
	}
	b.queue = append(b.queue, r)
	b.queueMu.Unlock()
	b.wake()
	return true
}

func (b *Bus) wake() {
	select {
	case b.kick <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// take moves up to MaxBatch payloads' worth of requests (at least one) from
// the queue into batch. When requests remain it wakes another writer, so that
// pipelines overlap under load.
func (b *Bus) take(batch []*pubReq) []*pubReq {
	b.queueMu.Lock()
	defer b.queueMu.Unlock()
	n, payloads := 0, 0
	for n < len(b.queue) && (n == 0 || payloads+len(b.queue[n].payloads) <= b.cfg.MaxBatch) {
		payloads += len(b.queue[n].payloads)
		n++
	}
	batch = append(batch, b.queue[:n]...)
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	if rest > 0 {
		b.wake()
	}
	return batch
}

// writer sends queued publishes until Close.
func (b *Bus) writer() {
	defer b.wg.Done()
	// In-flight pipelines finish even when Close cancels b.ctx, so that a
	// publisher always learns what happened to its payloads.
	ctx := context.WithoutCancel(b.ctx)
	var w batchWriter
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.kick:
		}
		for {
			w.batch = b.take(w.batch[:0])
			if len(w.batch) == 0 {
				break
			}
			b.flush(ctx, &w)
		}
	}
}

// batchWriter holds a writer's buffers, reused from batch to batch.
type batchWriter struct {
	batch []*pubReq
	cmds  []redis.Cmder
	args  []any
}

// flush sends one batch in one pipeline and completes its requests.
func (b *Bus) flush(ctx context.Context, w *batchWriter) {
	live := w.batch[:0]
	nargs := 0
	for _, r := range w.batch {
		if r.state.CompareAndSwap(reqQueued, reqTaken) {
			live = append(live, r)
			nargs += 5 * len(r.payloads)
		}
	}
	clear(w.batch[len(live):])
	w.batch = live
	if len(live) == 0 {
		return
	}

	// Commands slice their arguments out of one array; capping each slice's
	// capacity keeps them from growing into their neighbours.
	if cap(w.args) < nargs {
		w.args = make([]any, 0, nargs)
	}
	args := w.args[:0]
	cmds := w.cmds[:0]
	for _, r := range live {
		r.first = len(cmds)
		multi := len(r.payloads) > 1
		if multi {
			cmds = append(cmds, redis.NewStatusCmd(ctx, "multi"))
		}
		for _, p := range r.payloads {
			start := len(args)
			args = append(args, "xadd", r.topic.logKeyArg, "*", fieldPayload, p)
			cmds = append(cmds, redis.NewStringCmd(ctx, args[start:len(args):len(args)]...))
		}
		if multi {
			cmds = append(cmds, redis.NewSliceCmd(ctx, "exec"))
		}
		r.last = len(cmds)
	}

	pipe := b.client.Pipeline()
	_ = pipe.BatchProcess(ctx, cmds...)
	_, _ = pipe.Exec(ctx)
	b.stats.batches.Add(1)

	stored := 0
	for _, r := range live {
		err := requestErr(cmds[r.first:r.last])
		if err != nil {
			err = fmt.Errorf("redisbus: publish to %q: %w", r.topic.name, err)
		} else {
			stored += len(r.payloads)
			if !r.topic.dirty.Load() {
				r.topic.dirty.Store(true)
			}
		}
		r.done <- err
	}
	b.stats.published.Add(uint64(stored))

	// Drop references to payloads and requests before the buffers wait for
	// the next batch.
	clear(args)
	clear(cmds)
	clear(live)
	w.args, w.cmds = args[:0], cmds[:0]
}

// requestErr returns the first error among one request's commands, looking
// inside the EXEC reply of a transaction for errors of queued commands.
func requestErr(cmds []redis.Cmder) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return err
		}
	}
	if exec, ok := cmds[len(cmds)-1].(*redis.SliceCmd); ok {
		for _, v := range exec.Val() {
			if err, ok := v.(error); ok {
				return err
			}
		}
	}
	return nil
}
