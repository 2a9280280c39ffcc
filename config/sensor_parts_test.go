package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseParamDest(t *testing.T) {
	tests := []struct {
		dest    string
		want    ParamDest
		wantErr string
	}{
		{"http.url", ParamDest{Kind: DestURL}, ""},
		{"http.headers.x-fine-id", ParamDest{Kind: DestHeader, Header: "X-Fine-Id"}, ""},
		{"body", ParamDest{Kind: DestBody}, ""},
		{"body.a.0.b", ParamDest{Kind: DestBody, Path: []string{"a", "0", "b"}}, ""},
		{"event.type", ParamDest{Kind: DestEventType}, ""},
		{"event.source", ParamDest{Kind: DestEventSource}, ""},
		{"event.subject", ParamDest{Kind: DestEventSubject}, ""},
		{"", ParamDest{}, "missing field"},
		{"body.", ParamDest{}, "a field name is empty"},
		{"http.headers.", ParamDest{}, "invalid header name"},
		{"http.headers.a b", ParamDest{}, "invalid header name"},
		{"http.headers.content-type", ParamDest{}, "carries the CloudEvent"},
		{"k8s.metadata.name", ParamDest{}, "unknown destination"},
		{"kubernetes.metadata.labels.app\\.io/name", ParamDest{Kind: DestKubernetes, Field: `metadata.labels.app\.io/name`}, ""},
		{"kubernetes.", ParamDest{}, "empty"},
		{"kubernetes.spec..x", ParamDest{}, "a segment is empty"},
		{"event.id", ParamDest{}, "unknown destination"},
	}
	for _, tt := range tests {
		got, err := ParseParamDest(tt.dest)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseParamDest(%q) error = %v, want one containing %q", tt.dest, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.Kind != tt.want.Kind || got.Header != tt.want.Header || got.Field != tt.want.Field || !slices.Equal(got.Path, tt.want.Path) {
			t.Errorf("ParseParamDest(%q) = %+v, %v; want %+v", tt.dest, got, err, tt.want)
		}
	}
}

func TestConditionDependencies(t *testing.T) {
	deps := []string{"dep1", "dep2", "dep3"}
	tests := []struct {
		cond string
		want []string
	}{
		{"", deps},
		{"dep2", []string{"dep2"}},
		{"dep1 || (dep2 && !dep1)", []string{"dep1", "dep2"}},
	}
	for _, tt := range tests {
		got, err := ConditionDependencies(tt.cond, deps)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ConditionDependencies(%q) = %v, %v; want %v", tt.cond, got, err, tt.want)
		}
	}
	if _, err := ConditionDependencies("dep4", deps); err == nil {
		t.Error("unknown dependency accepted")
	}
}

func TestConditionsResetSchedule(t *testing.T) {
	s, err := ConditionsReset{Cron: "0 0 * * *", Timezone: "Europe/Berlin"}.Schedule()
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	// Midnight in Berlin is 23:00 UTC in winter.
	if got, want := s.Next(from).UTC(), time.Date(2026, 1, 10, 23, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("next reset = %v, want %v", got, want)
	}
	s, err = ConditionsReset{Cron: "@every 1h"}.Schedule()
	if err != nil || !s.Next(from).Equal(from.Add(time.Hour)) {
		t.Errorf("@every 1h: %v, %v", s, err)
	}
}
