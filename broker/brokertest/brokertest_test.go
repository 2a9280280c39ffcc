package brokertest

import "testing"

func TestCompareIDs(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1-0", "1-0", 0},
		{"1-0", "1-1", -1},
		{"9-0", "10-0", -1},
		{"1700000000000-9", "1700000000000-10", -1},
		{"1700000000001-0", "1700000000000-99", 1},
		{"42", "42", 0},
		{"9", "10", -1},
		{"007", "7", 0},
		{"1-2", "1-2-0", -1},
		{"a1", "b0", -1},
		{"", "0", -1},
	}
	for _, tt := range tests {
		if got := CompareIDs(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareIDs(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := CompareIDs(tt.b, tt.a); got != -tt.want {
			t.Errorf("CompareIDs(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}
