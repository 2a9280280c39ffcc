package redisbus

import (
	"math"
	"testing"
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
