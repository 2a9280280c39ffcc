// Package httptarget delivers CloudEvents over HTTP, as Knative subscribers
// and Sensor http triggers expect.
//
// Outcomes: 2xx is success; transport errors, timeouts, 404, 408, 409, 429
// and 5xx are retryable; every other status (other 4xx, and 3xx: redirects
// are not followed, so an event is never re-sent as a GET) is permanent.
// Retry-After is read on 429 and 503. A 2xx response whose headers say it
// carries a CloudEvent is a reply; any other 2xx body is ignored.
package httptarget

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/functions"
)

// DefaultMaxReplyBytes is the largest reply body read when
// Config.MaxReplyBytes is zero; it matches the ingress's default limit.
const DefaultMaxReplyBytes = 1 << 20

// drainBytes is how much of an unwanted response body is read so the
// connection can be reused; a longer body costs a new connection instead.
const drainBytes = 64 << 10

// Config configures one HTTP target.
type Config struct {
	// URL is the absolute http or https URL events are sent to. Required.
	URL string
	// Method is the HTTP method; empty means POST.
	Method string
	// Headers are added to every request. They cannot replace the
	// CloudEvents headers (Ce-*, Content-Type).
	Headers map[string]string
	// Structured sends the event in the JSON structured format instead of
	// binary mode.
	Structured bool
	// Client sends the requests; nil means a client shared by every target
	// that has none (see NewClient). The client should not follow redirects
	// and should have no Timeout: the caller's context bounds an attempt.
	Client *http.Client
	// MaxReplyBytes is the largest reply body accepted, in bytes; zero means
	// DefaultMaxReplyBytes. A larger reply is a ReplyErr.
	MaxReplyBytes int64
}

func (c *Config) validate() error {
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("httptarget: URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("httptarget: URL: want an absolute http or https URL, got %q", c.URL)
	}
	if c.MaxReplyBytes < 0 {
		return fmt.Errorf("httptarget: MaxReplyBytes: must not be negative, got %d", c.MaxReplyBytes)
	}
	for k := range c.Headers {
		if ck := http.CanonicalHeaderKey(k); ck == "Content-Type" || len(ck) > 3 && ck[:3] == "Ce-" {
			return fmt.Errorf("httptarget: Headers: %q would overwrite a CloudEvents header", k)
		}
	}
	return nil
}

// Target is an HTTP target. It is safe for concurrent use.
type Target struct {
	url        string
	method     string
	headers    http.Header
	structured bool
	client     *http.Client
	maxReply   int64
}

var _ functions.Target = (*Target)(nil)

// New returns a target for cfg, or an error naming the invalid field.
func New(cfg Config) (*Target, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Target{
		url:        cfg.URL,
		method:     cfg.Method,
		headers:    make(http.Header, len(cfg.Headers)+1),
		structured: cfg.Structured,
		client:     cfg.Client,
		maxReply:   cfg.MaxReplyBytes,
	}
	if t.method == "" {
		t.method = http.MethodPost
	}
	if t.client == nil {
		t.client = sharedClient
	}
	if t.maxReply == 0 {
		t.maxReply = DefaultMaxReplyBytes
	}
	for k, v := range cfg.Headers {
		t.headers.Set(k, v)
	}
	// Knative's convention: the subscriber may answer with an event.
	t.headers.Set("Prefer", "reply")
	return t, nil
}

// sharedClient serves every target built without a Client, so that they
// share one connection pool.
var sharedClient = NewClient()

// NewClient returns a client tuned for many concurrent deliveries to a few
// subscribers: a large idle pool per host, no redirects and no overall
// timeout (each attempt's context carries its deadline).
func NewClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 256
	tr.IdleConnTimeout = 90 * time.Second
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Destination returns the target's URL.
func (t *Target) Destination() string { return t.url }

// Send makes one attempt. The knativebrokerttl extension is removed from what
// the subscriber sees.
func (t *Target) Send(ctx context.Context, e *event.Event) functions.Outcome {
	ev := e
	if t.structured {
		ev = withoutTTL(e)
	}
	req, err := cloudevent.NewRequest(ctx, t.method, t.url, ev, t.structured)
	if err != nil {
		// The event cannot be encoded: no other attempt will do better.
		return functions.Outcome{Result: functions.Permanent, Status: functions.NoResponse,
			Err: fmt.Errorf("build request: %w", err)}
	}
	if !t.structured {
		// Cheaper than copying the event's context for every delivery.
		delete(req.Header, ttlHeader)
	}
	for k, v := range t.headers {
		req.Header[k] = v
	}

	resp, err := t.client.Do(req)
	if err != nil {
		// Name why the context ended (a shutdown, a timeout) unless the
		// client's error already does.
		if c := context.Cause(ctx); c != nil && !errors.Is(err, c) {
			err = fmt.Errorf("%w (%w)", err, c)
		}
		return functions.Outcome{Result: functions.Retryable, Status: functions.NoResponse, Err: err}
	}
	defer resp.Body.Close()

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return t.success(resp)
	}
	out := functions.Outcome{
		Result: classify(resp.StatusCode),
		Status: resp.StatusCode,
		Err:    fmt.Errorf("%s answered %s", t.url, resp.Status),
	}
	out.Body, _ = io.ReadAll(io.LimitReader(resp.Body, functions.MaxBodyExcerpt))
	drain(resp.Body)
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		out.RetryAfter, _ = functions.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return out
}

func (t *Target) success(resp *http.Response) functions.Outcome {
	out := functions.Outcome{Result: functions.Success, Status: resp.StatusCode}
	if !cloudevent.IsCloudEvent(resp.Header) {
		drain(resp.Body)
		return out
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, t.maxReply+1))
	switch {
	case err != nil:
		out.ReplyErr = fmt.Errorf("read reply: %w", err)
	case int64(len(body)) > t.maxReply:
		out.ReplyErr = fmt.Errorf("reply larger than %d bytes", t.maxReply)
		drain(resp.Body)
	default:
		out.Replies, out.ReplyErr = cloudevent.Parse(resp.Header, body)
	}
	return out
}

// classify maps a non-2xx status to a result.
func classify(status int) functions.Result {
	switch {
	case status == http.StatusNotFound, status == http.StatusRequestTimeout,
		status == http.StatusConflict, status == http.StatusTooManyRequests, status >= 500:
		return functions.Retryable
	}
	return functions.Permanent
}

func drain(r io.Reader) { _, _ = io.Copy(io.Discard, io.LimitReader(r, drainBytes)) }

// ttlHeader is the binary-mode header of knativebrokerttl.
var ttlHeader = http.CanonicalHeaderKey("ce-" + cloudevent.ExtTTL)

// withoutTTL returns e, or a shallow copy without knativebrokerttl: the TTL is
// the broker's business, and subscribers never see it.
func withoutTTL(e *event.Event) *event.Event {
	if _, ok := e.Extensions()[cloudevent.ExtTTL]; !ok {
		return e
	}
	c := *e
	c.Context = e.Context.Clone()
	_ = c.Context.SetExtension(cloudevent.ExtTTL, nil)
	return &c
}
