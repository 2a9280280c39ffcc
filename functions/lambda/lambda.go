// Package lambda invokes AWS Lambda functions with CloudEvents, as a Sensor
// trigger's lambda target.
//
// The function receives the event in the CloudEvents JSON structured format
// as its payload. Outcomes of one Invoke call:
//
//   - 200 (RequestResponse), 202 (Event): success. A RequestResponse result
//     that is a CloudEvent in JSON (an object with "specversion") is a reply.
//   - 200 with X-Amz-Function-Error: the function failed. Retryable, unless
//     Config.FunctionErrorPermanent; the function's error document is the
//     Outcome's Body.
//   - 429 (throttling) and 5xx: retryable; Retry-After is read on 429 and 503.
//   - every other 4xx: permanent (unknown function, bad payload, denied).
//   - no response (transport error, timeout): retryable.
//
// The SDK's own retries are off: each Send is exactly one attempt, and the
// dispatcher schedules the next.
package lambda

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awslambda "github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/smithy-go"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/functions"
)

// Invocation types accepted in Config.InvocationType.
const (
	// RequestResponse waits for the function's result (the default).
	RequestResponse = "RequestResponse"
	// Event queues the invocation; Lambda answers 202 at once and runs the
	// function later, retrying it on its own terms.
	Event = "Event"
)

// MaxReplyBytes is the largest function result read as a reply; it matches
// the ingress's default limit.
const MaxReplyBytes = 1 << 20

// Config configures one Lambda target.
type Config struct {
	// FunctionName is the function's name, ARN or partial ARN. Required.
	FunctionName string
	// Qualifier is a version number or alias; empty invokes the unqualified
	// function ($LATEST, or the qualifier written in an ARN).
	Qualifier string
	// Region is the AWS region (eu-west-1). Empty means the region of the AWS
	// default configuration (AWS_REGION, the shared config file); one of
	// the two is required.
	Region string
	// InvocationType is RequestResponse (empty means this) or Event.
	InvocationType string
	// Endpoint replaces the service endpoint, as an absolute URL
	// (http://localhost:4566 for LocalStack). Empty means AWS's endpoint for
	// Region.
	Endpoint string
	// Credentials are static credentials, resolved from secret references.
	// Nil means the AWS default credential chain (environment variables,
	// shared files, web identity, container and EC2 instance roles).
	Credentials *aws.Credentials
	// FunctionErrorPermanent makes a function error (X-Amz-Function-Error)
	// permanent: the event is dead-lettered after one attempt. By default a
	// function error is retryable.
	FunctionErrorPermanent bool
}

func (c *Config) validate() error {
	if c.FunctionName == "" {
		return errors.New("lambda: FunctionName: required")
	}
	switch c.InvocationType {
	case "", RequestResponse, Event:
	default:
		return fmt.Errorf("lambda: InvocationType: want %s or %s, got %q", RequestResponse, Event, c.InvocationType)
	}
	if c.Endpoint != "" {
		if !strings.HasPrefix(c.Endpoint, "http://") && !strings.HasPrefix(c.Endpoint, "https://") {
			return fmt.Errorf("lambda: Endpoint: want an absolute http or https URL, got %q", c.Endpoint)
		}
	}
	if c.Credentials != nil && (c.Credentials.AccessKeyID == "" || c.Credentials.SecretAccessKey == "") {
		return errors.New("lambda: Credentials: access key id and secret access key are both required")
	}
	return nil
}

// Target invokes one Lambda function. It is safe for concurrent use.
type Target struct {
	client         *awslambda.Client
	functionName   string
	qualifier      *string
	invocationType types.InvocationType
	fnErrResult    functions.Result
	dest           string
	secrets        []string
	log            *slog.Logger
}

var _ functions.Target = (*Target)(nil)

// New returns a target for cfg, or an error naming the invalid field. It
// reads the AWS shared configuration but makes no request: credentials of
// the default chain are fetched at the first Send.
func New(cfg Config, log *slog.Logger) (*Target, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }),
	}
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	var secrets []string
	if c := cfg.Credentials; c != nil {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)))
		secrets = nonEmpty(c.SecretAccessKey, c.SessionToken)
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("lambda: load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		return nil, errors.New("lambda: Region: required (none in the AWS configuration either)")
	}

	client := awslambda.NewFromConfig(awsCfg, func(o *awslambda.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.Retryer = aws.NopRetryer{}
		// Wrapping the configured client keeps what the configuration set
		// on it (AWS_CA_BUNDLE, proxies).
		next := o.HTTPClient
		if next == nil {
			next = awshttp.NewBuildableClient()
		}
		o.HTTPClient = &captureClient{next: next}
	})
	t := &Target{
		client:         client,
		functionName:   cfg.FunctionName,
		invocationType: types.InvocationTypeRequestResponse,
		fnErrResult:    functions.Retryable,
		dest:           destination(awsCfg.Region, cfg.FunctionName, cfg.Qualifier),
		secrets:        secrets,
		log:            log,
	}
	if cfg.Qualifier != "" {
		t.qualifier = aws.String(cfg.Qualifier)
	}
	if cfg.InvocationType == Event {
		t.invocationType = types.InvocationTypeEvent
	}
	if cfg.FunctionErrorPermanent {
		t.fnErrResult = functions.Permanent
	}
	return t, nil
}

// destination names the function: its ARN when it was given one, else
// lambda:{region}:{name}, with the qualifier appended after a colon.
func destination(region, name, qualifier string) string {
	d := name
	if !strings.HasPrefix(name, "arn:") {
		d = "lambda:" + region + ":" + name
	}
	if qualifier != "" {
		d += ":" + qualifier
	}
	return d
}

// Destination returns the function's ARN, or lambda:{region}:{name}, with
// the qualifier when there is one.
func (t *Target) Destination() string { return t.dest }

// Send invokes the function once with e in the JSON structured format,
// without the knativebrokerttl extension.
func (t *Target) Send(ctx context.Context, e *event.Event) functions.Outcome {
	payload, err := cloudevent.MarshalStructured(withoutTTL(e))
	if err != nil {
		return functions.Outcome{Result: functions.Permanent, Status: functions.NoResponse,
			Err: fmt.Errorf("encode event: %w", err)}
	}

	var rec capture
	out, err := t.client.Invoke(withCapture(ctx, &rec), &awslambda.InvokeInput{
		FunctionName:   aws.String(t.functionName),
		Qualifier:      t.qualifier,
		InvocationType: t.invocationType,
		Payload:        payload,
	})
	if err != nil {
		return t.failure(ctx, err, &rec)
	}

	if out.FunctionError != nil {
		return t.functionError(e, out)
	}
	t.log.Debug("lambda invoked", "function", t.dest, "event_id", e.ID(),
		"status", out.StatusCode, "executed_version", aws.ToString(out.ExecutedVersion))
	res := functions.Outcome{Result: functions.Success, Status: int(out.StatusCode)}
	if t.invocationType == types.InvocationTypeRequestResponse {
		res.Replies, res.ReplyErr = reply(out.Payload)
	}
	return res
}

// functionError classifies a 200 whose X-Amz-Function-Error says the
// function failed. The error document (errorType, errorMessage, ...) becomes
// the Body, so that the dead letter carries it.
func (t *Target) functionError(e *event.Event, out *awslambda.InvokeOutput) functions.Outcome {
	var doc struct {
		ErrorType string `json:"errorType"`
	}
	_ = json.Unmarshal(out.Payload, &doc)
	msg := "function error " + aws.ToString(out.FunctionError)
	if doc.ErrorType != "" {
		msg += " (" + doc.ErrorType + ")"
	}
	t.log.Debug("lambda function error", "function", t.dest, "event_id", e.ID(),
		"function_error", aws.ToString(out.FunctionError), "error_type", doc.ErrorType)
	return functions.Outcome{
		Result: t.fnErrResult,
		Status: int(out.StatusCode),
		Body:   t.redactBytes(excerpt(out.Payload)),
		Err:    fmt.Errorf("%s: %s", t.dest, t.redact(msg)),
	}
}

// failure classifies an Invoke error: an answer with a status, or none.
func (t *Target) failure(ctx context.Context, err error, rec *capture) functions.Outcome {
	if rec.status == 0 {
		if c := context.Cause(ctx); c != nil && !errors.Is(err, c) {
			err = fmt.Errorf("%w (%w)", err, c)
		}
		return functions.Outcome{Result: functions.Retryable, Status: functions.NoResponse,
			Err: t.redactErr(fmt.Errorf("%s: %w", t.dest, err))}
	}

	out := functions.Outcome{
		Result: classify(rec.status, err),
		Status: rec.status,
		Body:   t.redactBytes(rec.body.Bytes()),
		Err:    fmt.Errorf("%s: %s", t.dest, t.redact(describe(rec.status, err))),
	}
	if rec.status == http.StatusTooManyRequests || rec.status == http.StatusServiceUnavailable {
		out.RetryAfter, _ = functions.ParseRetryAfter(rec.retryAfter, time.Now())
	}
	return out
}

// describe names an API error by its status, code and message, without the
// SDK's operation prefix and request id.
func describe(status int, err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return fmt.Sprintf("answered %d %s: %s", status, apiErr.ErrorCode(), apiErr.ErrorMessage())
	}
	return fmt.Sprintf("answered %d: %v", status, err)
}

// classify maps an error response to a result: throttling and server
// errors may pass, client errors will not. A 2xx here is a response the SDK
// could not read, which another attempt may read.
func classify(status int, err error) functions.Result {
	var throttled *types.TooManyRequestsException
	switch {
	case status == http.StatusTooManyRequests, errors.As(err, &throttled), status >= 500,
		status >= 200 && status < 300:
		return functions.Retryable
	}
	return functions.Permanent
}

// reply reads a RequestResponse result: a JSON object with specversion is a
// CloudEvent reply; anything else is not a reply.
func reply(payload []byte) ([]*event.Event, error) {
	p := bytes.TrimSpace(payload)
	if len(p) == 0 || p[0] != '{' {
		return nil, nil
	}
	var probe struct {
		SpecVersion *json.RawMessage `json:"specversion"`
	}
	if json.Unmarshal(p, &probe) != nil || probe.SpecVersion == nil {
		return nil, nil
	}
	if len(p) > MaxReplyBytes {
		return nil, fmt.Errorf("reply larger than %d bytes", MaxReplyBytes)
	}
	ev, err := cloudevent.ParseStructured(p)
	if err != nil {
		return nil, fmt.Errorf("reply: %w", err)
	}
	return []*event.Event{ev}, nil
}

// redactErr returns err, or an error with its text redacted when it holds a
// secret (giving up its chain in that unlikely case).
func (t *Target) redactErr(err error) error {
	msg := err.Error()
	if clean := t.redact(msg); clean != msg {
		return errors.New(clean)
	}
	return err
}

// redact removes the configured secrets from text bound for an error, a log
// or a dead letter: a misbehaving endpoint may echo a session token back.
func (t *Target) redact(s string) string {
	for _, sec := range t.secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return s
}

func (t *Target) redactBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return []byte(t.redact(string(b)))
}

func excerpt(b []byte) []byte {
	if len(b) > functions.MaxBodyExcerpt {
		b = b[:functions.MaxBodyExcerpt]
	}
	return b
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

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

// capture keeps what the SDK's error deserializer consumes: the status, the
// Retry-After header and the start of an error response's body.
type capture struct {
	status     int
	retryAfter string
	body       bytes.Buffer
}

type captureKey struct{}

func withCapture(ctx context.Context, c *capture) context.Context {
	return context.WithValue(ctx, captureKey{}, c)
}

// captureClient records, for the attempt whose context carries a capture,
// the parts of an error response the Outcome reports. One attempt makes one
// request: the retryer is off.
type captureClient struct {
	next awslambda.HTTPClient
}

func (c *captureClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.next.Do(req)
	if err != nil {
		return resp, err
	}
	rec, ok := req.Context().Value(captureKey{}).(*capture)
	if !ok {
		return resp, nil
	}
	rec.status = resp.StatusCode
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		rec.retryAfter = resp.Header.Get("Retry-After")
		resp.Body = teeBody{Reader: io.TeeReader(resp.Body, limitWriter{&rec.body, functions.MaxBodyExcerpt}),
			Closer: resp.Body}
	}
	return resp, nil
}

type teeBody struct {
	io.Reader
	io.Closer
}

// limitWriter keeps the first n bytes written and accepts the rest unseen.
type limitWriter struct {
	buf *bytes.Buffer
	n   int
}

func (w limitWriter) Write(p []byte) (int, error) {
	if room := w.n - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
