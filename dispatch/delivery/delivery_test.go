package delivery

import (
	"math"
	"strings"
	"testing"
	"time"

	duckv1 "knative.dev/eventing/pkg/apis/duck/v1"
	"knative.dev/pkg/apis"
	pkgduckv1 "knative.dev/pkg/apis/duck/v1"
)

func ptr[T any](v T) *T { return &v }

func sink(u string) *pkgduckv1.Destination {
	url, err := apis.ParseURL(u)
	if err != nil {
		panic(err)
	}
	return &pkgduckv1.Destination{URI: url}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	linear := duckv1.BackoffPolicyLinear
	jsonFormat := duckv1.DeliveryFormatJson
	brokerFull := &duckv1.DeliverySpec{
		Retry: ptr[int32](3), BackoffPolicy: &linear, BackoffDelay: ptr("PT1S"),
		Timeout: ptr("PT5S"), RetryAfterMax: ptr("PT10S"), DeadLetterSink: sink("http://dlq.local/"),
		Format: &jsonFormat,
	}
	base := Policy{Backoff: Exponential, BackoffDelay: DefaultBackoffDelay, Timeout: DefaultTimeout,
		RetryAfterMax: DefaultRetryAfterMax}
	with := func(change func(*Policy)) Policy {
		p := base
		change(&p)
		return p
	}
	tests := []struct {
		name            string
		broker, trigger *duckv1.DeliverySpec
		want            Policy
	}{
		{"neither: Knative broker default", nil, nil, with(func(p *Policy) { p.Retry = 10 })},
		{"broker only", brokerFull, nil, Policy{Retry: 3, Backoff: Linear, BackoffDelay: time.Second,
			Timeout: 5 * time.Second, RetryAfterMax: 10 * time.Second, DeadLetterSink: "http://dlq.local/",
			Structured: true}},
		{"trigger replaces broker whole", brokerFull, &duckv1.DeliverySpec{BackoffDelay: ptr("PT0.05S")},
			with(func(p *Policy) { p.BackoffDelay = 50 * time.Millisecond })},
		{"trigger only", nil, &duckv1.DeliverySpec{Retry: ptr[int32](2)}, with(func(p *Policy) { p.Retry = 2 })},
		{"empty trigger delivery: no retries", nil, &duckv1.DeliverySpec{}, base},
		{"empty broker delivery: no retries", &duckv1.DeliverySpec{}, nil, base},
		{"empty trigger over full broker", brokerFull, &duckv1.DeliverySpec{}, base},
		{"retryAfterMax zero ignores header", nil, &duckv1.DeliverySpec{RetryAfterMax: ptr("PT0S")},
			with(func(p *Policy) { p.RetryAfterMax = 0 })},
		{"binary format", nil, &duckv1.DeliverySpec{Format: ptr(duckv1.DeliveryFormatBinary)}, base},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Resolve(tc.broker, tc.trigger)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Resolve = %+v\nwant      %+v", got, tc.want)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	t.Parallel()
	bad := duckv1.BackoffPolicyType("random")
	badFormat := duckv1.FormatType("xml")
	tests := []struct {
		name            string
		broker, trigger *duckv1.DeliverySpec
		want            []string
	}{
		{"trigger fields", nil, &duckv1.DeliverySpec{Retry: ptr[int32](-1), BackoffPolicy: &bad,
			BackoffDelay: ptr("1s"), Timeout: ptr("PT0S"), RetryAfterMax: ptr("P1M"), Format: &badFormat},
			[]string{"trigger spec.delivery.retry", "trigger spec.delivery.backoffPolicy",
				"trigger spec.delivery.backoffDelay", "trigger spec.delivery.timeout",
				"trigger spec.delivery.retryAfterMax", "trigger spec.delivery.format"}},
		{"negative", nil, &duckv1.DeliverySpec{BackoffDelay: ptr("-PT1S"), RetryAfterMax: ptr("-PT1S")},
			[]string{"trigger spec.delivery.backoffDelay", "trigger spec.delivery.retryAfterMax"}},
		{"broker field", &duckv1.DeliverySpec{BackoffDelay: ptr("PTS")}, nil,
			[]string{"broker spec.delivery.backoffDelay"}},
		{"sink ref", nil, &duckv1.DeliverySpec{DeadLetterSink: &pkgduckv1.Destination{
			Ref: &pkgduckv1.KReference{Kind: "Service", Name: "dlq"}}},
			[]string{"trigger spec.delivery.deadLetterSink.ref"}},
		{"relative sink", nil, &duckv1.DeliverySpec{DeadLetterSink: sink("/dlq")},
			[]string{"trigger spec.delivery.deadLetterSink.uri"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Resolve(tc.broker, tc.trigger)
			if err == nil {
				t.Fatal("Resolve accepted an invalid delivery")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

func TestBackoffFor(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	tests := []struct {
		policy BackoffPolicy
		delay  time.Duration
		n      int
		want   time.Duration
	}{
		{Linear, 100 * ms, 1, 100 * ms},
		{Linear, 100 * ms, 2, 200 * ms},
		{Linear, 100 * ms, 3, 300 * ms},
		{Exponential, 200 * ms, 1, 200 * ms},
		{Exponential, 200 * ms, 2, 400 * ms},
		{Exponential, 200 * ms, 3, 800 * ms},
		{Exponential, 50 * ms, 5, 800 * ms},
		{Exponential, 200 * ms, 0, 0},
		{Exponential, 0, 3, 0},
		{Exponential, time.Second, 80, math.MaxInt64},
		{Exponential, time.Hour, 40, math.MaxInt64},
		{Linear, math.MaxInt64 / 2, 3, math.MaxInt64},
	}
	for _, tc := range tests {
		p := Policy{Backoff: tc.policy, BackoffDelay: tc.delay}
		if got := p.BackoffFor(tc.n); got != tc.want {
			t.Errorf("%s %v retry %d: BackoffFor = %v, want %v", tc.policy, tc.delay, tc.n, got, tc.want)
		}
	}
}

func TestWait(t *testing.T) {
	t.Parallel()
	s := time.Second
	exp := Policy{Backoff: Exponential, BackoffDelay: 200 * time.Millisecond, RetryAfterMax: 10 * s}
	tests := []struct {
		name       string
		p          Policy
		n          int
		retryAfter time.Duration
		draw       float64
		want       time.Duration
	}{
		{"no jitter", exp, 1, 0, 0, 200 * time.Millisecond},
		{"jitter adds at most 10%", exp, 1, 0, 0.75, 215 * time.Millisecond},
		{"half jitter", exp, 3, 0, 0.5, 840 * time.Millisecond},
		{"retry-after longer than backoff", exp, 1, 3 * s, 0, 3 * s},
		{"retry-after shorter than backoff", exp, 5, s, 0, 3200 * time.Millisecond},
		{"retry-after capped", exp, 1, 86400 * s, 0, 10 * s},
		{"cap never shortens backoff", Policy{Backoff: Linear, BackoffDelay: 20 * s, RetryAfterMax: 10 * s},
			1, 60 * s, 0, 20 * s},
		{"retryAfterMax zero ignores header", Policy{Backoff: Linear, BackoffDelay: 100 * time.Millisecond},
			1, 30 * s, 0, 100 * time.Millisecond},
	}
	for _, tc := range tests {
		if got := tc.p.wait(tc.n, tc.retryAfter, tc.draw); got != tc.want {
			t.Errorf("%s: wait = %v, want %v", tc.name, got, tc.want)
		}
	}
	for range 1000 {
		got := exp.Wait(2, 0)
		if got < 400*time.Millisecond || got > 440*time.Millisecond {
			t.Fatalf("Wait(2) = %v, want within [400ms, 440ms]", got)
		}
	}
}
