package functions

import (
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"3", 3 * time.Second, true},
		{" 0 ", 0, true},
		{"86400", 86400 * time.Second, true},
		{"99999999999999999", math.MaxInt64, true},
		{now.Add(2 * time.Second).Format(http.TimeFormat), 2 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{"Sun, 06 Nov 1994 08:49:37 GMT", 0, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
	}
	for _, tc := range tests {
		got, ok := ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestErrorData(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body string
		want string
	}{
		{"", ""},
		{`{"error":"boom"}`, "eyJlcnJvciI6ImJvb20ifQ=="},
	}
	for _, tc := range tests {
		if got := (Outcome{Body: []byte(tc.body)}).ErrorData(); got != tc.want {
			t.Errorf("ErrorData(%q) = %q, want %q", tc.body, got, tc.want)
		}
	}
	long := Outcome{Body: []byte(strings.Repeat("x", 5000))}
	if n := len(long.ErrorData()); n > 1024 {
		t.Fatalf("ErrorData of a long body has %d characters, want at most 1024", n)
	}
}

func TestResultString(t *testing.T) {
	t.Parallel()
	for r, want := range map[Result]string{Success: "success", Retryable: "retryable", Permanent: "permanent"} {
		if r.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(r), r.String(), want)
		}
	}
}
