package lambda

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/functions"
	"github.com/signalbox-dev/signalbox/functions/functionstest"
)

var testCreds = aws.Credentials{
	AccessKeyID:     "AKIDSIGNALBOXTEST",
	SecretAccessKey: "secret-access-key-never-logged",
	SessionToken:    "session-token-never-logged",
}

func newTestTarget(t *testing.T, f *fakeLambda, cfg Config, log *slog.Logger) *Target {
	t.Helper()
	if cfg.FunctionName == "" {
		cfg.FunctionName = "orders"
	}
	if cfg.Region == "" {
		cfg.Region = f.region
	}
	cfg.Endpoint = f.srv.URL
	if cfg.Credentials == nil {
		c := f.creds
		cfg.Credentials = &c
	}
	tg, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func TestConformance(t *testing.T) {
	t.Parallel()
	functionstest.Run(t, functionstest.Harness{Start: startLambda})
}

// startLambda plays the scenario as Lambda would: a function error for the
// retryable case, throttling for retry-after, an unknown function (whose
// message echoes the session token, to check redaction) for permanent.
func startLambda(t *testing.T, s functionstest.Scenario, log *slog.Logger) functionstest.Fixture {
	var rec functionstest.Recorder
	f := newFakeLambda(t, testCreds, func(w http.ResponseWriter, r *http.Request, body []byte) {
		switch s.Case {
		case functionstest.Success:
			if ev, err := cloudevent.ParseStructured(body); err == nil {
				rec.Add(ev.ID())
			}
			_, _ = w.Write([]byte(`{"statusCode":200}`))
		case functionstest.Reply:
			if ev, err := cloudevent.ParseStructured(body); err == nil {
				rec.Add(ev.ID())
			}
			b, _ := cloudevent.MarshalStructured(s.Reply)
			_, _ = w.Write(b)
		case functionstest.Retryable:
			w.Header().Set("X-Amz-Function-Error", "Unhandled")
			_, _ = w.Write([]byte(`{"errorType":"Error","errorMessage":"database unavailable"}`))
		case functionstest.RetryAfter:
			w.Header().Set("Retry-After", strconv.Itoa(int(s.RetryAfter.Seconds())))
			awsError(w, http.StatusTooManyRequests, "TooManyRequestsException", "Rate Exceeded.")
		case functionstest.Permanent:
			awsError(w, http.StatusNotFound, "ResourceNotFoundException",
				"Function not found (token "+r.Header.Get("X-Amz-Security-Token")+")")
		case functionstest.Timeout:
			<-r.Context().Done()
		}
	})
	return functionstest.Fixture{
		Target:   newTestTarget(t, f, Config{}, log),
		Received: rec.IDs,
		Secrets:  []string{testCreds.SecretAccessKey, testCreds.SessionToken},
	}
}

func TestSignedRequest(t *testing.T) {
	t.Parallel()
	f := newFakeLambda(t, testCreds, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.WriteHeader(http.StatusAccepted)
	})
	tests := []struct {
		name      string
		cfg       Config
		wantPath  string
		wantQual  string
		wantType  string
		wantDest  string
		wantState int
	}{
		{"event by name", Config{FunctionName: "orders", Qualifier: "live", InvocationType: Event},
			"/2015-03-31/functions/orders/invocations", "live", "Event", "lambda:eu-west-1:orders:live", 202},
		{"by ARN", Config{FunctionName: "arn:aws:lambda:eu-west-1:123456789012:function:orders"},
			"/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:orders/invocations", "",
			"RequestResponse", "arn:aws:lambda:eu-west-1:123456789012:function:orders", 202},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTestTarget(t, f, tc.cfg, nil)
			e := functionstest.NewEvent("signed-" + tc.name)
			out := tg.Send(context.Background(), e)
			if out.Result != functions.Success || out.Status != tc.wantState || len(out.Replies) != 0 {
				t.Fatalf("Send = %+v", out)
			}
			if tg.Destination() != tc.wantDest {
				t.Errorf("Destination = %q, want %q", tg.Destination(), tc.wantDest)
			}
			var got *invocation
			for _, inv := range f.received() {
				if strings.Contains(string(inv.Payload), e.ID()) {
					got = &inv
				}
			}
			if got == nil {
				t.Fatal("the fake received no signed invocation with the event")
			}
			if got.Path != tc.wantPath || got.Qualifier != tc.wantQual || got.InvocationType != tc.wantType {
				t.Errorf("invocation %s ?Qualifier=%s type %s, want %s ?Qualifier=%s type %s",
					got.Path, got.Qualifier, got.InvocationType, tc.wantPath, tc.wantQual, tc.wantType)
			}
			var fields map[string]any
			if err := json.Unmarshal(got.Payload, &fields); err != nil {
				t.Fatalf("payload is not JSON: %v", err)
			}
			if fields["id"] != e.ID() || fields["subject"] != e.Subject() || fields["myext"] != "v" ||
				fields["specversion"] != "1.0" {
				t.Errorf("payload = %s, want the event in structured JSON", got.Payload)
			}
			if _, ok := fields[cloudevent.ExtTTL]; ok {
				t.Errorf("the function saw the TTL: %s", got.Payload)
			}
		})
	}
}

func TestWrongSecretIsRefused(t *testing.T) {
	t.Parallel()
	f := newFakeLambda(t, testCreds, func(w http.ResponseWriter, r *http.Request, body []byte) {
		t.Error("an invocation with a wrong signature was accepted")
	})
	f.badSigOK = true
	wrong := testCreds
	wrong.SecretAccessKey = "not-the-secret"
	out := newTestTarget(t, f, Config{Credentials: &wrong}, nil).Send(context.Background(), functionstest.NewEvent("x"))
	if out.Result != functions.Permanent || out.Status != http.StatusForbidden ||
		!strings.Contains(out.Err.Error(), "InvalidSignatureException") {
		t.Fatalf("Send = %+v, want permanent 403 InvalidSignatureException", out)
	}
}

func TestOutcomes(t *testing.T) {
	t.Parallel()
	fnError := func(kind string) func(w http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			w.Header().Set("X-Amz-Function-Error", kind)
			_, _ = w.Write([]byte(`{"errorType":"ValueError","errorMessage":"no order id","stackTrace":[]}`))
		}
	}
	apiError := func(status int, code string, header ...string) func(w http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			for i := 0; i+1 < len(header); i += 2 {
				w.Header().Set(header[i], header[i+1])
			}
			awsError(w, status, code, code+" happened")
		}
	}
	tests := []struct {
		name       string
		cfg        Config
		respond    func(w http.ResponseWriter)
		want       functions.Result
		status     int
		retryAfter time.Duration
		errHas     []string
		bodyHas    string
		reply      string
		replyErr   bool
	}{
		{name: "unhandled function error", respond: fnError("Unhandled"), want: functions.Retryable, status: 200,
			errHas: []string{"Unhandled", "ValueError"}, bodyHas: `"errorMessage":"no order id"`},
		{name: "handled function error", respond: fnError("Handled"), want: functions.Retryable, status: 200,
			errHas: []string{"Handled", "ValueError"}, bodyHas: "no order id"},
		{name: "function error made permanent", cfg: Config{FunctionErrorPermanent: true},
			respond: fnError("Unhandled"), want: functions.Permanent, status: 200, errHas: []string{"Unhandled"}},
		{name: "throttled", respond: apiError(429, "TooManyRequestsException", "Retry-After", "7"),
			want: functions.Retryable, status: 429, retryAfter: 7 * time.Second,
			errHas: []string{"429", "TooManyRequestsException"}, bodyHas: "TooManyRequestsException happened"},
		{name: "throttled without Retry-After", respond: apiError(429, "TooManyRequestsException"),
			want: functions.Retryable, status: 429},
		{name: "service exception", respond: apiError(500, "ServiceException"), want: functions.Retryable, status: 500,
			errHas: []string{"ServiceException"}},
		{name: "not ready", respond: apiError(502, "ResourceNotReadyException"), want: functions.Retryable, status: 502},
		{name: "unavailable with Retry-After", respond: apiError(503, "ServiceException", "Retry-After", "2"),
			want: functions.Retryable, status: 503, retryAfter: 2 * time.Second},
		{name: "retry-after ignored on 500", respond: apiError(500, "ServiceException", "Retry-After", "2"),
			want: functions.Retryable, status: 500},
		{name: "bad payload", respond: apiError(400, "InvalidRequestContentException"), want: functions.Permanent,
			status: 400, errHas: []string{"InvalidRequestContentException"}},
		{name: "access denied", respond: apiError(403, "AccessDeniedException"), want: functions.Permanent, status: 403},
		{name: "unknown function", respond: apiError(404, "ResourceNotFoundException"), want: functions.Permanent,
			status: 404},
		{name: "payload too large", respond: apiError(413, "RequestTooLargeException"), want: functions.Permanent,
			status: 413},
		{name: "plain result is no reply", respond: func(w http.ResponseWriter) {
			_, _ = w.Write([]byte(`{"ok":true,"data":{"specversion":"1.0"}}`))
		}, want: functions.Success, status: 200},
		{name: "null result", respond: func(w http.ResponseWriter) { _, _ = w.Write([]byte(`null`)) },
			want: functions.Success, status: 200},
		{name: "reply", respond: func(w http.ResponseWriter) {
			_, _ = w.Write([]byte(`{"specversion":"1.0","id":"r-1","source":"/fn","type":"t","data":{"a":1}}`))
		}, want: functions.Success, status: 200, reply: "r-1"},
		{name: "invalid reply", respond: func(w http.ResponseWriter) {
			_, _ = w.Write([]byte(`{"specversion":"1.0","source":"/fn","type":"t"}`))
		}, want: functions.Success, status: 200, replyErr: true},
		{name: "event invocation ignores result", cfg: Config{InvocationType: Event}, respond: func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte(`{"specversion":"1.0","id":"r-1","source":"/fn","type":"t"}`))
		}, want: functions.Success, status: 202},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeLambda(t, testCreds, func(w http.ResponseWriter, r *http.Request, body []byte) { tc.respond(w) })
			out := newTestTarget(t, f, tc.cfg, nil).Send(context.Background(), functionstest.NewEvent("e-1"))
			if out.Result != tc.want || out.Status != tc.status || out.RetryAfter != tc.retryAfter {
				t.Fatalf("Send = %v %d retry-after %v (%v), want %v %d %v",
					out.Result, out.Status, out.RetryAfter, out.Err, tc.want, tc.status, tc.retryAfter)
			}
			if (out.Err == nil) != (tc.want == functions.Success) {
				t.Fatalf("Err = %v for %v", out.Err, out.Result)
			}
			for _, s := range tc.errHas {
				if !strings.Contains(out.Err.Error(), s) {
					t.Errorf("Err = %q, want it to name %q", out.Err, s)
				}
			}
			if !strings.Contains(string(out.Body), tc.bodyHas) {
				t.Errorf("Body = %q, want it to hold %q", out.Body, tc.bodyHas)
			}
			if tc.want != functions.Success && len(out.Body) == 0 {
				t.Error("a failure without Body: the dead letter would not say why")
			}
			if (out.ReplyErr != nil) != tc.replyErr {
				t.Errorf("ReplyErr = %v, want error %v", out.ReplyErr, tc.replyErr)
			}
			switch {
			case tc.reply == "" && len(out.Replies) != 0:
				t.Errorf("Replies = %v, want none", out.Replies)
			case tc.reply != "" && (len(out.Replies) != 1 || out.Replies[0].ID() != tc.reply):
				t.Errorf("Replies = %v, want %s", out.Replies, tc.reply)
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	f := newFakeLambda(t, testCreds, nil)
	tg := newTestTarget(t, f, Config{}, nil)
	f.srv.Close()
	out := tg.Send(context.Background(), functionstest.NewEvent("e-1"))
	if out.Result != functions.Retryable || out.Status != functions.NoResponse || out.Err == nil {
		t.Fatalf("Send = %+v", out)
	}
}

// TestDefaultCredentialChain runs without static credentials: the SDK's
// default chain finds them in the environment, and the region too. The EC2
// metadata service is never probed.
func TestDefaultCredentialChain(t *testing.T) {
	creds := aws.Credentials{AccessKeyID: "AKIDFROMENV", SecretAccessKey: "env-secret"}
	t.Setenv("AWS_ACCESS_KEY_ID", creds.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", creds.SecretAccessKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_PROFILE", "")

	f := newFakeLambda(t, creds, func(w http.ResponseWriter, r *http.Request, body []byte) {
		_, _ = w.Write([]byte(`{}`))
	})
	tg, err := New(Config{FunctionName: "orders", Endpoint: f.srv.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out := tg.Send(context.Background(), functionstest.NewEvent("e-1")); out.Result != functions.Success {
		t.Fatalf("Send = %+v", out)
	}
	if tg.Destination() != "lambda:eu-west-1:orders" {
		t.Errorf("Destination = %q", tg.Destination())
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no function", Config{Region: "eu-west-1"}, "FunctionName"},
		{"dry run", Config{FunctionName: "f", Region: "eu-west-1", InvocationType: "DryRun"}, "InvocationType"},
		{"relative endpoint", Config{FunctionName: "f", Region: "eu-west-1", Endpoint: "localhost:4566"}, "Endpoint"},
		{"half credentials", Config{FunctionName: "f", Region: "eu-west-1",
			Credentials: &aws.Credentials{AccessKeyID: "AKID"}}, "Credentials"},
	}
	for _, tc := range tests {
		if _, err := New(tc.cfg, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New error = %v, want one naming %s", tc.name, err, tc.want)
		}
	}
}

// FuzzReply reads function results, which the function's author controls:
// no panic, and a reply is always a valid event.
func FuzzReply(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"r","source":"/s","type":"t","data":{"a":1}}`))
	f.Add([]byte(`{"specversion":"1.0","id":"r"}`))
	f.Add([]byte(`{"statusCode":200,"body":"ok"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`  {"specversion":null}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		evs, err := reply(payload)
		if err != nil && len(evs) != 0 {
			t.Fatal("replies together with an error")
		}
		for _, ev := range evs {
			if verr := ev.Validate(); verr != nil {
				t.Fatalf("invalid reply accepted: %v", verr)
			}
		}
	})
}
