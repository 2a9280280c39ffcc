package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzLoadBytes feeds arbitrary bytes to the loader: it must never panic,
// and must either return a snapshot with its defaults applied or problems
// that each name the file and print as a single line.
func FuzzLoadBytes(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*/*.yaml")
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seeds in testdata: %v", err)
	}
	for _, name := range seeds {
		if filepath.Base(name) == "aliases.yaml" {
			// Each run expands it up to the node limit, which makes the
			// fuzzer crawl; TestLoadHostileAliases covers it, and the
			// small alias seeds below let the fuzzer build its own.
			continue
		}
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(configWith("http://x/")))
	f.Add([]byte("x: &a [*a]\n"))
	f.Add([]byte("<<: {a: 1}\n"))
	f.Add([]byte("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := LoadBytes("fuzz.yaml", data)
		if err == nil {
			checkSnapshot(t, s)
			return
		}
		var list ErrorList
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error is not a non-empty ErrorList: %T %v", err, err)
		}
		for _, e := range list {
			if e.File != "fuzz.yaml" || e.Msg == "" || e.Line < 0 {
				t.Errorf("bad problem %#v", e)
			}
			if strings.ContainsAny(e.Msg, "\n\r") && !strings.HasPrefix(e.Msg, "invalid YAML") {
				t.Errorf("problem spans lines: %q", e.Msg)
			}
		}
	})
}

func checkSnapshot(t *testing.T, s *Snapshot) {
	t.Helper()
	if s == nil {
		t.Fatal("nil snapshot without an error")
	}
	for _, b := range s.Brokers {
		if b.Object.Namespace == "" || b.Object.Name == "" || b.Origin.File != "fuzz.yaml" {
			t.Errorf("broker %+v", b)
		}
	}
	for _, tr := range s.Triggers {
		if tr.Object.Namespace == "" || tr.Object.Spec.Broker == "" || tr.Object.Spec.Subscriber.URI == nil {
			t.Errorf("trigger %+v", tr)
		}
		if d := tr.Object.Spec.Delivery; d != nil && d.BackoffDelay != nil {
			if _, err := ParseDuration(*d.BackoffDelay); err != nil {
				t.Errorf("accepted backoffDelay: %v", err)
			}
		}
	}
	for _, sn := range s.Sensors {
		if sn.Metadata.Namespace == "" || len(sn.Spec.Dependencies) != 1 || len(sn.Spec.Triggers) == 0 {
			t.Errorf("sensor %+v", sn)
		}
		for _, tr := range sn.Spec.Triggers {
			if tr.HTTP == nil || tr.HTTP.Method == "" {
				t.Errorf("sensor trigger %+v", tr)
			}
		}
	}
}

func TestLoadHostileAliases(t *testing.T) {
	start := time.Now()
	_, err := Load("testdata/invalid/aliases.yaml")
	if err == nil || !strings.Contains(err.Error(), "document too large") {
		t.Errorf("err = %v, want document too large", err)
	}
	if !strings.Contains(err.Error(), "spec.filters[0].any: alias *filters refers to a node that contains it") {
		t.Errorf("err = %v, want the filters cycle refused", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestLoadMixedFile(t *testing.T) {
	_, err := Load("testdata/invalid/mixed.yaml")
	file := filepath.Join("testdata", "invalid", "mixed.yaml")
	assertErrors(t, err, file, []wantErr{
		{11, "spec.broker", `broker "missing" is not defined`, "Trigger default/orders"},
		{13, "spec.filters[0].cesql", "invalid value", ""},
		{14, "spec.filters[1]", "multiple dialects", ""},
		{16, "spec.subscribr", "unknown field", ""},
		{19, "spec.delivery.backoffDelay", `invalid ISO-8601 duration "5s"`, ""},
		{29, "spec.dependencies[0].filter", "Syntax error", "Sensor default/radar"},
		{32, "spec.triggers[0].conditions", `unknown dependency "plate"`, ""},
		{38, "spec.github.secretFrom", "a secret is required", "EventSource default/gh"},
	})
}
