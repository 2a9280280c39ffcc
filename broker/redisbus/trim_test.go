package redisbus

import (
	"context"
	"math"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/signalbox-dev/signalbox/internal/redistest"
)

func TestStreamID(t *testing.T) {
	tests := []struct {
		in       string
		want     streamID
		wantNext string
		wantErr  bool
	}{
		{in: "0-0", want: streamID{0, 0}, wantNext: "0-1"},
		{in: "1700000000000-5", want: streamID{1700000000000, 5}, wantNext: "1700000000000-6"},
		{in: "5-18446744073709551615", want: streamID{5, math.MaxUint64}, wantNext: "6-0"},
		{in: "", wantErr: true},
		{in: "12", wantErr: true},
		{in: "a-1", wantErr: true},
		{in: "1-b", wantErr: true},
		{in: "-1-1", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseID(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("parseID(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseID(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			continue
		}
		if got.String() != tt.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tt.in)
		}
		if next := got.next(); next.String() != tt.wantNext || !got.less(next) || next.less(got) {
			t.Errorf("%q.next() = %q, want %q and greater", tt.in, next, tt.wantNext)
		}
	}
}

// TestTrimSkipsWhenGroupsChanged: a trim computed from a stale list of
// groups (one was recreated from the start meanwhile) removes nothing.
func TestTrimSkipsWhenGroupsChanged(t *testing.T) {
	srv := redistest.Start(t)
	raw := rawClient(t, srv)
	ctx := context.Background()
	for range 10 {
		if err := raw.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: []string{"e", "x"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := raw.XGroupCreate(ctx, "s", "a", "0").Err(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, groups, mode, bound string
		want                      int64
	}{
		{"stale groups, minid", "", "minid", "9999999999999-0", -1},
		{"stale groups, maxlen", "b", "maxlen", "1", -1},
		{"same groups, empty bound", "a", "minid", "", 10},
		{"same groups", "a", "minid", "9999999999999-0", 0},
	}
	for _, tt := range tests {
		n, err := trimScript.Run(ctx, raw, []string{"s"}, tt.groups, tt.mode, tt.bound).Int64()
		if err != nil || n != tt.want {
			t.Fatalf("%s: trim = %d, %v; want %d", tt.name, n, err, tt.want)
		}
	}
}
