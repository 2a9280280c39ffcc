// Package functionstest is the conformance suite of delivery targets. Every
// target (HTTP, Lambda, OpenWhisk, Kubernetes) runs the same table of
// outcomes against a real local server that speaks the target's wire
// protocol, so that the dispatcher can treat all of them alike: the same
// success, retryable, retry-after, permanent, timeout and reply outcomes,
// and no secret in any log, error or dead-letter body.
//
// A target's test adapts its server with a Harness and calls Run.
package functionstest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/functions"
)

// Case is an outcome the suite asks a server to produce.
type Case string

// Cases of the suite, in the order Run drives them.
const (
	// Success: the server accepts the event and answers with no event.
	Success Case = "success"
	// Retryable: the server answers with the protocol's retryable failure and
	// a body describing it.
	Retryable Case = "retryable"
	// RetryAfter: the server throttles and asks for Scenario.RetryAfter.
	RetryAfter Case = "retry-after"
	// Permanent: the server refuses the event for good, with a body saying
	// why.
	Permanent Case = "permanent"
	// Timeout: the server does not answer until the attempt gives up.
	Timeout Case = "timeout"
	// Reply: the server accepts the event and answers with Scenario.Reply.
	Reply Case = "reply"
)

// Cases lists every case.
var Cases = []Case{Success, Retryable, RetryAfter, Permanent, Timeout, Reply}

// Scenario tells a harness how its server answers every attempt.
type Scenario struct {
	// Case is the outcome to produce.
	Case Case
	// RetryAfter is the wait a RetryAfter server asks for; whole seconds.
	RetryAfter time.Duration
	// Reply is the event a Reply server answers with.
	Reply *event.Event
}

// Fixture is a target whose server plays one scenario.
type Fixture struct {
	// Target is the target under test, using the logger Start was given.
	Target functions.Target
	// Received returns the ids of the events the server accepted so far.
	Received func() []string
	// Secrets are strings (keys, tokens) that must never appear in the
	// target's logs, errors or bodies.
	Secrets []string
}

// Harness adapts one target to the suite.
type Harness struct {
	// Start starts a server playing s, returns a target pointed at it that
	// logs to log, and registers every cleanup on t. It may be called from
	// parallel subtests.
	Start func(t *testing.T, s Scenario, log *slog.Logger) Fixture
	// NoReplies is set for protocols that cannot answer with an event
	// (Kubernetes): the Reply case then checks that a success carries no
	// reply.
	NoReplies bool
	// Timeout is the deadline of the Timeout case's attempt; zero means
	// 300ms.
	Timeout time.Duration
}

// retryAfter is the wait RetryAfter servers ask for: long enough to tell
// apart from a default, never actually waited.
const retryAfter = 3 * time.Second

// Run drives every case through h, each in a parallel subtest, then sends
// several events at once to check the target under the race detector.
func Run(t *testing.T, h Harness) {
	t.Helper()
	for _, c := range Cases {
		t.Run(string(c), func(t *testing.T) {
			t.Parallel()
			runCase(t, h, c)
		})
	}
	t.Run("concurrent", func(t *testing.T) {
		t.Parallel()
		runConcurrent(t, h)
	})
}

func runCase(t *testing.T, h Harness, c Case) {
	logs := &LogBuffer{}
	log := logs.Logger()
	s := Scenario{Case: c, RetryAfter: retryAfter, Reply: ReplyEvent()}
	f := h.Start(t, s, log)
	e := NewEvent("conformance-" + string(c))
	before := mustMarshal(t, e)

	timeout := 20 * time.Second
	if c == Timeout {
		timeout = h.Timeout
		if timeout == 0 {
			timeout = 300 * time.Millisecond
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	out := f.Target.Send(ctx, e)
	elapsed := time.Since(start)

	if f.Target.Destination() == "" {
		t.Error("Destination is empty")
	}
	if after := mustMarshal(t, e); !bytes.Equal(before, after) {
		t.Errorf("Send modified the event:\nbefore %s\nafter  %s", before, after)
	}
	checkOutcome(t, h, s, e, f, out, elapsed, timeout)
	checkSecrets(t, f.Secrets, logs.String(), out)
}

func checkOutcome(t *testing.T, h Harness, s Scenario, e *event.Event, f Fixture, out functions.Outcome,
	elapsed, timeout time.Duration) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("%s: %s; outcome %s", s.Case, fmt.Sprintf(format, args...), describe(out))
	}
	switch s.Case {
	case Success, Reply:
		if out.Result != functions.Success || out.Err != nil || out.ReplyErr != nil {
			fail("want success without errors")
		}
		if !slices.Contains(f.Received(), e.ID()) {
			fail("server received %v, want %s among them", f.Received(), e.ID())
		}
		wantReply := s.Case == Reply && !h.NoReplies
		switch {
		case !wantReply && len(out.Replies) != 0:
			fail("want no reply")
		case wantReply && (len(out.Replies) != 1 || out.Replies[0].ID() != s.Reply.ID()):
			fail("want the reply %s", s.Reply.ID())
		}
	case Retryable, RetryAfter, Permanent:
		want := functions.Retryable
		if s.Case == Permanent {
			want = functions.Permanent
		}
		if out.Result != want || out.Err == nil {
			fail("want %v with an error", want)
		}
		if out.Status == functions.NoResponse || out.Status == 0 {
			fail("want the server's status")
		}
		if len(out.Body) == 0 {
			fail("want the server's explanation in Body, for the dead letter")
		}
		if s.Case == RetryAfter && out.RetryAfter != s.RetryAfter {
			fail("want RetryAfter %v", s.RetryAfter)
		}
		if s.Case != RetryAfter && out.RetryAfter != 0 {
			fail("want no RetryAfter")
		}
	case Timeout:
		if out.Result != functions.Retryable || out.Status != functions.NoResponse || out.Err == nil {
			fail("want retryable, no response, with an error")
		}
		if elapsed > timeout+2*time.Second {
			fail("the attempt outlived its %v deadline: %v", timeout, elapsed)
		}
	}
}

// checkSecrets fails when a secret appears in what a target lets out.
func checkSecrets(t *testing.T, secrets []string, logs string, out functions.Outcome) {
	t.Helper()
	places := map[string]string{"log": logs, "body": string(out.Body)}
	if out.Err != nil {
		places["error"] = out.Err.Error()
	}
	if out.ReplyErr != nil {
		places["reply error"] = out.ReplyErr.Error()
	}
	for _, sec := range secrets {
		for where, text := range places {
			if sec != "" && strings.Contains(text, sec) {
				t.Errorf("a secret appears in the %s: %q", where, text)
			}
		}
	}
}

func runConcurrent(t *testing.T, h Harness) {
	f := h.Start(t, Scenario{Case: Success}, slog.New(slog.DiscardHandler))
	const n = 8
	var wg sync.WaitGroup
	outs := make([]functions.Outcome, n)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			outs[i] = f.Target.Send(ctx, NewEvent(fmt.Sprintf("conformance-concurrent-%d", i)))
		})
	}
	wg.Wait()
	got := f.Received()
	for i, out := range outs {
		if out.Result != functions.Success {
			t.Errorf("send %d: %s", i, describe(out))
		}
		if id := fmt.Sprintf("conformance-concurrent-%d", i); !slices.Contains(got, id) {
			t.Errorf("server did not receive %s", id)
		}
	}
}

// NewEvent returns the event the suite sends: JSON data, a subject that
// needs escaping, an extension and a TTL (which targets must not forward).
func NewEvent(id string) *event.Event {
	e := event.New("1.0")
	e.SetID(id)
	e.SetSource("/conformance")
	e.SetType("dev.signalbox.conformance")
	e.SetSubject(`order "42" café`)
	e.SetExtension("myext", "v")
	e.SetExtension(cloudevent.ExtTTL, "254")
	_ = e.SetData("application/json", map[string]any{"order": 42})
	return &e
}

// ReplyEvent returns the event Reply servers answer with.
func ReplyEvent() *event.Event {
	e := event.New("1.0")
	e.SetID("conformance-reply")
	e.SetSource("/conformance/target")
	e.SetType("dev.signalbox.conformance.reply")
	_ = e.SetData("application/json", map[string]any{"ok": true})
	return &e
}

// Recorder collects the ids of received events for Fixture.Received. It is
// safe for concurrent use; the zero value is ready.
type Recorder struct {
	mu  sync.Mutex
	ids []string
}

// Add records id.
func (r *Recorder) Add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, id)
}

// IDs returns the ids recorded so far.
func (r *Recorder) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ids)
}

func describe(out functions.Outcome) string {
	return fmt.Sprintf("{%v status=%d retry_after=%v replies=%d reply_err=%v err=%v body=%q}",
		out.Result, out.Status, out.RetryAfter, len(out.Replies), out.ReplyErr, out.Err, out.Body)
}

func mustMarshal(t *testing.T, e *event.Event) []byte {
	t.Helper()
	b, err := cloudevent.MarshalStructured(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// LogBuffer keeps what a logger writes, for tests that grep the log. It is
// safe for concurrent use; the zero value is ready.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Logger returns a JSON logger at debug level writing to b.
func (b *LogBuffer) Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Write appends p to the buffer.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
