package celexpr

import (
	"errors"
	"reflect"
	"testing"
)

func TestCompileValue(t *testing.T) {
	e := newEvent(t, "application/json", []byte(`{"flash":{"id":9007199254740993,"lane":2.5},"tags":["a"]}`), nil)
	e.SetSubject("s-1")
	tests := []struct {
		expr    string
		want    any
		wantErr bool
	}{
		{`event.subject`, "s-1", false},
		{`data.flash.id`, int64(9007199254740993), false},
		{`data.flash.lane`, 2.5, false},
		{`{"k": data.tags, "n": null, "b": b"hi"}`, map[string]any{"k": []any{"a"}, "n": nil, "b": "aGk="}, false},
		{`data.missing`, nil, true},
		{`int`, nil, true}, // a type has no JSON form
	}
	for _, tt := range tests {
		x, err := CompileValue(tt.expr)
		if err != nil {
			t.Fatalf("CompileValue(%q): %v", tt.expr, err)
		}
		got, err := x.Eval(NewInput(e))
		if (err != nil) != tt.wantErr || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s = %#v, %v; want %#v (error %v)", tt.expr, got, err, tt.want, tt.wantErr)
		}
	}
	if _, err := CompileValue(`event.subject +`); err == nil {
		t.Error("syntax error accepted")
	}
	x, _ := CompileValue(`int`)
	if _, err := x.Eval(NewInput(e)); !errors.Is(err, ErrUnsupportedValue) {
		t.Errorf("type value: %v, want ErrUnsupportedValue", err)
	}
}

func TestCompileVars(t *testing.T) {
	x, err := CompileVars(`"/" + plate.data.text + "/" + string(speed.data.kmh - 50)`, []string{"plate", "speed"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := x.Eval(map[string]any{
		"plate": map[string]any{"data": map[string]any{"text": "KA-1"}},
		"speed": map[string]any{"data": map[string]any{"kmh": int64(91)}},
	})
	if err != nil || got != "/KA-1/41" {
		t.Errorf("Eval = %#v, %v", got, err)
	}
	if _, err := x.Eval(map[string]any{"plate": map[string]any{}}); err == nil {
		t.Error("unbound variable evaluated")
	}
	if _, err := CompileVars(`sped.data`, []string{"speed"}); err == nil {
		t.Error("unknown variable compiled")
	}
}
