package main

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	oneToHundred := make([]time.Duration, 100)
	for i := range oneToHundred {
		oneToHundred[i] = time.Duration(i+1) * time.Millisecond
	}
	thousand := make([]time.Duration, 1000)
	for i := range thousand {
		thousand[i] = time.Duration(i+1) * time.Microsecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single value is every percentile", []time.Duration{7}, 99.9, 7},
		{"p50 of 1..100 is 50", oneToHundred, 50, 50 * time.Millisecond},
		{"p99 of 1..100 is 99", oneToHundred, 99, 99 * time.Millisecond},
		{"p99.9 of 1..100 is the max", oneToHundred, 99.9, 100 * time.Millisecond},
		{"p100 is the max", oneToHundred, 100, 100 * time.Millisecond},
		{"tiny p is the min", oneToHundred, 0.001, time.Millisecond},
		{"p99.9 of 1..1000 is 999", thousand, 99.9, 999 * time.Microsecond},
		{"p50 of two is the lower", []time.Duration{1, 2}, 50, 1},
		{"p51 of two is the upper", []time.Duration{1, 2}, 51, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%d values, %g) = %v, want %v", len(tt.sorted), tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarizeSortsAndSummarizes(t *testing.T) {
	t.Parallel()
	d := make([]time.Duration, 1000)
	for i := range d {
		d[i] = time.Duration(i+1) * time.Millisecond
	}
	rand.Shuffle(len(d), func(i, j int) { d[i], d[j] = d[j], d[i] })

	s := summarize(d)
	want := Summary{Count: 1000, Min: 1, Mean: 500.5, P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000}
	if s != want {
		t.Errorf("summarize = %+v, want %+v", s, want)
	}
	if (summarize(nil) != Summary{}) {
		t.Errorf("summarize(nil) = %+v, want the zero Summary", summarize(nil))
	}
}

func TestPacerSchedule(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	tests := []struct {
		name      string
		rate      float64
		elapsed   time.Duration
		wantDue   uint64
		duration  time.Duration
		wantTotal uint64
	}{
		{"before start nothing is due", 2000, -time.Millisecond, 0, 10 * time.Second, 20000},
		{"at start the first event is due", 2000, 0, 1, time.Second, 2000},
		{"just before the second slot", 2000, 499 * time.Microsecond, 1, time.Second, 2000},
		{"at the second slot", 2000, 500 * time.Microsecond, 2, time.Second, 2000},
		{"one second at 2000/s", 2000, time.Second, 2001, time.Second, 2000},
		{"fractional rate", 2.5, time.Second, 3, 3 * time.Second, 8},
		{"slow rate rounds the total up", 3, 0, 1, 500 * time.Millisecond, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pacer{start: start, rate: tt.rate}
			if got := p.due(start.Add(tt.elapsed)); got != tt.wantDue {
				t.Errorf("due(+%v) = %d, want %d", tt.elapsed, got, tt.wantDue)
			}
			if got := p.total(tt.duration); got != tt.wantTotal {
				t.Errorf("total(%v) = %d, want %d", tt.duration, got, tt.wantTotal)
			}
		})
	}
}

// TestPacerAtAgreesWithDue checks that the event due at p.at(i) is exactly
// the i-th one, over a long schedule, so neither drifts from the other.
func TestPacerAtAgreesWithDue(t *testing.T) {
	t.Parallel()
	for _, rate := range []float64{1, 3, 2000, 7919.5, 100000} {
		p := pacer{start: time.Unix(0, 0), rate: rate}
		for _, i := range []uint64{0, 1, 2, 999, 1000, 123456, 9999999} {
			at := p.at(i)
			if got := p.due(at); got != i+1 {
				t.Errorf("rate %g: due(at(%d)) = %d, want %d", rate, i, got, i+1)
			}
			if i > 0 {
				if got := p.due(at.Add(-time.Nanosecond)); got > i {
					t.Errorf("rate %g: due just before at(%d) = %d, want at most %d", rate, i, got, i)
				}
			}
		}
	}
}

func TestTrackerCountsConcurrently(t *testing.T) {
	t.Parallel()
	var tr tracker
	const goroutines, perSeq = 8, 3
	seqs := []uint64{0, 1, chunkSize - 1, chunkSize, 5*chunkSize + 17, maxEvents - 1}
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for _, s := range seqs {
				for range perSeq {
					tr.add(s)
				}
			}
		})
	}
	wg.Wait()
	for _, s := range seqs {
		if got := tr.get(s); got != goroutines*perSeq {
			t.Errorf("get(%d) = %d, want %d", s, got, goroutines*perSeq)
		}
	}
	if got := tr.get(2); got != 0 {
		t.Errorf("get(2) = %d, want 0 for a seq never added", got)
	}
	if got := tr.add(maxEvents); got != 0 {
		t.Errorf("add(maxEvents) = %d, want 0 (out of range)", got)
	}
}

func TestReconcile(t *testing.T) {
	t.Parallel()
	var accepted, delivered tracker
	// seq: 0 ok, 1 missing, 2 delivered three times, 3 unconfirmed,
	// 4 neither (refused and never stored), 5 missing.
	for _, s := range []uint64{0, 1, 2, 5} {
		accepted.add(s)
	}
	for _, s := range []uint64{0, 2, 2, 2, 3} {
		delivered.add(s)
	}
	got := reconcile(&accepted, &delivered, 6)
	if got.Missing != 2 || got.Duplicates != 2 || got.Unconfirmed != 1 {
		t.Errorf("reconcile = %+v, want 2 missing, 2 duplicates, 1 unconfirmed", got)
	}
	if len(got.FirstMissing) != 2 || got.FirstMissing[0] != 1 || got.FirstMissing[1] != 5 {
		t.Errorf("FirstMissing = %v, want [1 5]", got.FirstMissing)
	}
}
