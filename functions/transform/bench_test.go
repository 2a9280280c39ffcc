package transform

import (
	"context"
	"os"
	"testing"
)

// benchInput is a two-dependency Sensor input of about 800 bytes.
func benchInput(b *testing.B) []byte {
	b.Helper()
	in, err := os.ReadFile("testdata/sensor_input.json")
	if err != nil {
		b.Fatal(err)
	}
	return in
}

func benchApply(b *testing.B, spec Spec) {
	tr, err := Compile(spec, Limits{})
	if err != nil {
		b.Fatal(err)
	}
	in := benchInput(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		out, err := tr.Apply(ctx, in)
		if err != nil || len(out) != 1 {
			b.Fatalf("Apply = %d values, %v", len(out), err)
		}
	}
}

func BenchmarkJQObject(b *testing.B) {
	benchApply(b, Spec{JQ: `{plate: .plate.data.text, kmh: .speed.data.kmh}`})
}

func BenchmarkJQIdentity(b *testing.B) {
	benchApply(b, Spec{JQ: `.`})
}

func BenchmarkLuaObject(b *testing.B) {
	benchApply(b, Spec{Lua: `function transform(in_)
  return {plate = in_.plate.data.text, kmh = in_.speed.data.kmh}
end`})
}

func BenchmarkLuaIdentity(b *testing.B) {
	benchApply(b, Spec{Lua: `function transform(in_) return in_ end`})
}

// BenchmarkLuaNewState is the fixed cost of one Apply: a sandboxed
// interpreter with its libraries, nothing run.
func BenchmarkLuaNewState(b *testing.B) {
	l, err := Limits{}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r := newLuaRun(context.Background(), l)
		r.L.Close()
	}
}
