// Package openwhisk invokes Apache OpenWhisk actions with CloudEvents, as a
// Sensor trigger's openwhisk target.
//
// The action is invoked with POST {host}/api/v1/namespaces/{ns}/actions/{action}
// and basic authentication; its parameters are the event in the CloudEvents
// JSON structured format. Outcomes of one invocation:
//
//   - 200: success. With a blocking invocation, a result that is a CloudEvent
//     in JSON (an object with "specversion") is a reply.
//   - 202: success: the activation was accepted (a non-blocking invocation, or
//     a blocking one that outran the controller's wait). The activation id is
//     logged at debug level.
//   - 429 (throttled), 502 (the action failed: an application or developer
//     error) and every other 5xx: retryable; Retry-After is read on 429 and
//     503.
//   - every other status (401, 403, 404, 413, ...): permanent. Redirects are
//     not followed.
//   - no response (transport error, timeout): retryable.
package openwhisk

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/functions"
)

// DefaultNamespace is the namespace used when Config.Namespace is empty: the
// namespace of the credentials' owner.
const DefaultNamespace = "_"

// MaxReplyBytes is the largest result body read as a reply; it matches the
// ingress's default limit.
const MaxReplyBytes = 1 << 20

// drainBytes is how much of an unwanted body is read so the connection can be
// reused.
const drainBytes = 64 << 10

// Config configures one OpenWhisk target.
type Config struct {
	// Host is the API host as a base URL with its scheme
	// (https://openwhisk.example:443). Required.
	Host string
	// Namespace is the action's namespace; empty means DefaultNamespace.
	Namespace string
	// Action is the action's name, or package/action. Required.
	Action string
	// Auth is the credential in OpenWhisk's UUID:KEY form, resolved from a
	// secret reference. Required. It never appears in logs or errors.
	Auth string
	// NonBlocking invokes the action without waiting for its result: the
	// controller answers 202 with the activation id. The zero value waits
	// (blocking=true), as OpenWhisk triggers usually do.
	NonBlocking bool
	// Result asks a blocking invocation for the action's result alone
	// (result=true) instead of the whole activation record. Either way a
	// result that is a CloudEvent is a reply.
	Result bool
	// CACertPEM holds PEM certificates trusted in addition to the system's,
	// for a controller with a private certificate authority.
	CACertPEM []byte
	// Insecure turns TLS certificate verification off. For development only:
	// New logs a warning each time it is set.
	Insecure bool
}

func (c *Config) validate() error {
	u, err := url.Parse(c.Host)
	if err != nil {
		return fmt.Errorf("openwhisk: Host: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("openwhisk: Host: want a base URL with its scheme (https://ow.example:443), got %q", c.Host)
	}
	if c.Action == "" {
		return errors.New("openwhisk: Action: required")
	}
	for seg := range strings.SplitSeq(c.Action, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("openwhisk: Action: want name or package/name, got %q", c.Action)
		}
	}
	if strings.Count(c.Action, "/") > 1 {
		return fmt.Errorf("openwhisk: Action: want name or package/name, got %q", c.Action)
	}
	if strings.Contains(c.Namespace, "/") {
		return fmt.Errorf("openwhisk: Namespace: must not contain '/', got %q", c.Namespace)
	}
	if user, key, ok := strings.Cut(c.Auth, ":"); !ok || user == "" || key == "" {
		// Never quote the value: it is a secret.
		return errors.New("openwhisk: Auth: want UUID:KEY")
	}
	if c.NonBlocking && c.Result {
		return errors.New("openwhisk: Result: only a blocking invocation has a result")
	}
	if len(c.CACertPEM) > 0 && !x509.NewCertPool().AppendCertsFromPEM(c.CACertPEM) {
		return errors.New("openwhisk: CACertPEM: no PEM certificate found")
	}
	return nil
}

// Target invokes one OpenWhisk action. It is safe for concurrent use.
type Target struct {
	url      string // with the query
	dest     string // without it
	user     string
	key      string
	blocking bool
	client   *http.Client
	secrets  []string
	log      *slog.Logger
}

var _ functions.Target = (*Target)(nil)

// New returns a target for cfg, or an error naming the invalid field.
func New(cfg Config, log *slog.Logger) (*Target, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ns := cfg.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	segs := strings.Split(cfg.Action, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	dest := strings.TrimRight(cfg.Host, "/") + "/api/v1/namespaces/" + url.PathEscape(ns) + "/actions/" +
		strings.Join(segs, "/")
	q := url.Values{"blocking": {fmt.Sprint(!cfg.NonBlocking)}}
	if cfg.Result {
		q.Set("result", "true")
	}

	client, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Insecure {
		log.Warn("openwhisk: TLS certificate verification is OFF for this target; "+
			"anyone on the path can read its credentials; use it for development only",
			"destination", dest)
	}
	user, key, _ := strings.Cut(cfg.Auth, ":")
	return &Target{
		url:      dest + "?" + q.Encode(),
		dest:     dest,
		user:     user,
		key:      key,
		blocking: !cfg.NonBlocking,
		client:   client,
		secrets:  []string{cfg.Auth, key, base64.StdEncoding.EncodeToString([]byte(cfg.Auth))},
		log:      log,
	}, nil
}

// sharedClient serves every target with the default TLS settings, so that
// they share one connection pool.
var sharedClient = newHTTPClient(nil)

func newClient(cfg Config) (*http.Client, error) {
	if len(cfg.CACertPEM) == 0 && !cfg.Insecure {
		return sharedClient, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(cfg.CACertPEM) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pool.AppendCertsFromPEM(cfg.CACertPEM)
		tc.RootCAs = pool
	}
	if cfg.Insecure {
		tc.InsecureSkipVerify = true
	}
	return newHTTPClient(tc), nil
}

// newHTTPClient returns a client that follows no redirects and has no
// overall timeout: each attempt's context carries its deadline.
func newHTTPClient(tc *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	if tc != nil {
		tr.TLSClientConfig = tc
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Destination returns the action's URL, without the query.
func (t *Target) Destination() string { return t.dest }

// Send invokes the action once with e, in the JSON structured format and
// without the knativebrokerttl extension, as its parameters.
func (t *Target) Send(ctx context.Context, e *event.Event) functions.Outcome {
	body, err := cloudevent.MarshalStructured(withoutTTL(e))
	if err != nil {
		return functions.Outcome{Result: functions.Permanent, Status: functions.NoResponse,
			Err: fmt.Errorf("encode event: %w", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return functions.Outcome{Result: functions.Permanent, Status: functions.NoResponse, Err: err}
	}
	// The controller reads parameters as a JSON object.
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(t.user, t.key)

	resp, err := t.client.Do(req)
	if err != nil {
		if c := context.Cause(ctx); c != nil && !errors.Is(err, c) {
			err = fmt.Errorf("%w (%w)", err, c)
		}
		return functions.Outcome{Result: functions.Retryable, Status: functions.NoResponse,
			Err: t.redactErr(err)}
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode == http.StatusAccepted:
		return t.accepted(e, resp)
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return t.success(e, resp)
	}
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, functions.MaxBodyExcerpt))
	drain(resp.Body)
	excerpt = []byte(t.redact(string(excerpt)))
	msg := fmt.Sprintf("%s answered %s", t.dest, resp.Status)
	if reason := errorReason(excerpt); reason != "" {
		msg += ": " + reason
	}
	out := functions.Outcome{
		Result: classify(resp.StatusCode),
		Status: resp.StatusCode,
		Body:   excerpt,
		Err:    errors.New(msg),
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		out.RetryAfter, _ = functions.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	t.log.Debug("openwhisk invocation failed", "destination", t.dest, "event_id", e.ID(),
		"status", resp.StatusCode, "activation_id", activationID(resp.Header, excerpt))
	return out
}

// accepted handles a 202: the activation runs, or keeps running, without
// the controller waiting for it.
func (t *Target) accepted(e *event.Event, resp *http.Response) functions.Outcome {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, drainBytes))
	drain(resp.Body)
	t.log.Debug("openwhisk activation accepted", "destination", t.dest, "event_id", e.ID(),
		"activation_id", activationID(resp.Header, b), "blocking", t.blocking)
	return functions.Outcome{Result: functions.Success, Status: resp.StatusCode}
}

func (t *Target) success(e *event.Event, resp *http.Response) functions.Outcome {
	out := functions.Outcome{Result: functions.Success, Status: resp.StatusCode}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxReplyBytes+1))
	drain(resp.Body)
	t.log.Debug("openwhisk action invoked", "destination", t.dest, "event_id", e.ID(),
		"status", resp.StatusCode, "activation_id", activationID(resp.Header, body))
	switch {
	case !t.blocking:
	case err != nil:
		out.ReplyErr = fmt.Errorf("read result: %w", err)
	case len(body) > MaxReplyBytes:
		out.ReplyErr = fmt.Errorf("result larger than %d bytes", MaxReplyBytes)
	default:
		out.Replies, out.ReplyErr = reply(body)
	}
	return out
}

// reply reads a blocking invocation's answer, either the result itself or
// the activation record holding it in response.result. A result that is a
// JSON object with specversion is a CloudEvent reply.
func reply(body []byte) ([]*event.Event, error) {
	var doc map[string]json.RawMessage
	if json.Unmarshal(body, &doc) != nil {
		return nil, nil
	}
	result := body
	if _, ok := doc["activationId"]; ok {
		var rec struct {
			Response struct {
				Result json.RawMessage `json:"result"`
			} `json:"response"`
		}
		if json.Unmarshal(body, &rec) != nil || len(rec.Response.Result) == 0 {
			return nil, nil
		}
		result = rec.Response.Result
		doc = nil
		if json.Unmarshal(result, &doc) != nil {
			return nil, nil
		}
	}
	if _, ok := doc["specversion"]; !ok {
		return nil, nil
	}
	ev, err := cloudevent.ParseStructured(result)
	if err != nil {
		return nil, fmt.Errorf("reply: %w", err)
	}
	return []*event.Event{ev}, nil
}

// classify maps a non-2xx status to a result.
func classify(status int) functions.Result {
	if status == http.StatusTooManyRequests || status >= 500 {
		return functions.Retryable
	}
	return functions.Permanent
}

// errorReason extracts the controller's "error" message, or that of a failed
// activation's result, from an error body.
func errorReason(body []byte) string {
	var doc struct {
		Error    any `json:"error"`
		Response struct {
			Status string `json:"status"`
			Result struct {
				Error any `json:"error"`
			} `json:"result"`
		} `json:"response"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return ""
	}
	reason := ""
	switch {
	case doc.Error != nil:
		reason = fmt.Sprint(doc.Error)
	case doc.Response.Status != "":
		reason = doc.Response.Status
		if doc.Response.Result.Error != nil {
			reason += ": " + fmt.Sprint(doc.Response.Result.Error)
		}
	}
	if len(reason) > 200 {
		reason = strings.ToValidUTF8(reason[:200], "") + "..."
	}
	return reason
}

// activationID returns the activation id from the controller's header, else
// from the body.
func activationID(h http.Header, body []byte) string {
	if id := h.Get("X-Openwhisk-Activation-Id"); id != "" {
		return id
	}
	var doc struct {
		ActivationID string `json:"activationId"`
	}
	_ = json.Unmarshal(body, &doc)
	return doc.ActivationID
}

// redactErr returns err, or an error with its text redacted when it holds
// the credential (giving up its chain in that unlikely case).
func (t *Target) redactErr(err error) error {
	msg := err.Error()
	if clean := t.redact(msg); clean != msg {
		return errors.New(clean)
	}
	return err
}

// redact removes the credential from text bound for an error, a log or a
// dead letter: a misbehaving proxy may echo the Authorization header.
func (t *Target) redact(s string) string {
	for _, sec := range t.secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return s
}

func drain(r io.Reader) { _, _ = io.Copy(io.Discard, io.LimitReader(r, drainBytes)) }

// withoutTTL returns e, or a shallow copy without knativebrokerttl: the TTL
// is the broker's business and targets never see it.
func withoutTTL(e *event.Event) *event.Event {
	if _, ok := e.Extensions()[cloudevent.ExtTTL]; !ok {
		return e
	}
	c := *e
	c.Context = e.Context.Clone()
	_ = c.Context.SetExtension(cloudevent.ExtTTL, nil)
	return &c
}
