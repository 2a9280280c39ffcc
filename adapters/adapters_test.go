package adapters

import (
	"crypto/sha256"
	"encoding/json"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestParseHexDigest(t *testing.T) {
	good := strings.Repeat("ab", sha256.Size)
	tests := []struct {
		name, header, prefix string
		ok                   bool
	}{
		{"valid", "sha256=" + good, "sha256=", true},
		{"upper-case hex", "sha256=" + strings.ToUpper(good), "sha256=", true},
		{"no prefix wanted", good, "", true},
		{"missing", "", "sha256=", false},
		{"empty digest", "sha256=", "sha256=", false},
		{"wrong prefix", "sha1=" + good, "sha256=", false},
		{"short", "sha256=" + good[:62], "sha256=", false},
		{"long", "sha256=" + good + "00", "sha256=", false},
		{"not hex", "sha256=" + strings.Repeat("zz", sha256.Size), "sha256=", false},
		{"space inside", "sha256= " + good[1:], "sha256=", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := ParseHexDigest(tt.header, tt.prefix, sha256.Size)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && len(d) != sha256.Size {
				t.Errorf("digest has %d bytes", len(d))
			}
		})
	}
}

func TestCheckTimestamp(t *testing.T) {
	now := time.Unix(1_764_512_345, 0)
	tests := []struct {
		ts string
		ok bool
	}{
		{"1764512345", true},
		{"1764512045", true},  // 300 s old: the limit
		{"1764512044", false}, // 301 s old
		{"1764512645", true},  // 300 s ahead
		{"1764512646", false},
		{"-9223372036854775808", false},
		{"9223372036854775807", false},
		{"", false},
		{"12a", false},
		{"1764512345.5", false},
	}
	for _, tt := range tests {
		if err := CheckTimestamp(tt.ts, now, 300*time.Second); (err == nil) != tt.ok {
			t.Errorf("CheckTimestamp(%q) = %v, want ok=%v", tt.ts, err, tt.ok)
		}
	}
}

func TestEqualSecret(t *testing.T) {
	tests := []struct {
		presented, secret string
		want              bool
	}{
		{"s3cret", "s3cret", true},
		{"s3cret", "s3creT", false},
		{"s3cre", "s3cret", false},
		{"", "s3cret", false},
		{"", "", false}, // an empty secret never authenticates anything
	}
	for _, tt := range tests {
		if got := EqualSecret([]byte(tt.presented), []byte(tt.secret)); got != tt.want {
			t.Errorf("EqualSecret(%q, %q) = %v", tt.presented, tt.secret, got)
		}
	}
}

func TestParseObject(t *testing.T) {
	tests := []struct {
		body string
		ok   bool
	}{
		{`{"a":1}`, true},
		{` {"a":{"b":[1,2]}} ` + "\n", true},
		{`null`, false},
		{`[1]`, false},
		{`"x"`, false},
		{`{"a":1} {"b":2}`, false},
		{`{"a":1`, false},
		{``, false},
	}
	for _, tt := range tests {
		if _, err := ParseObject([]byte(tt.body)); (err == nil) != tt.ok {
			t.Errorf("ParseObject(%q) = %v, want ok=%v", tt.body, err, tt.ok)
		}
	}

	obj, err := ParseObject([]byte(`{"id":9007199254740993,"a":{"b":"x","n":1.5},"list":[1]}`))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"id": "9007199254740993", "a.b": "x", "a.n": "1.5", "list": "",
		"a.b.c": "", "missing.x": ""} {
		if got := obj.String(path); got != want {
			t.Errorf("String(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestFormJSON(t *testing.T) {
	v, err := ParseForm([]byte("a=1&b=x+y&b=z&c=&d=%7B%22k%22%3A1%7D"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(FormJSON(v), &got); err != nil {
		t.Fatal(err)
	}
	want := `{"a":"1","b":["x y","z"],"c":"","d":"{\"k\":1}"}`
	if b, _ := json.Marshal(got); string(b) != want {
		t.Errorf("FormJSON = %s, want %s", b, want)
	}
	if _, err := ParseForm([]byte("a=%zz")); err == nil {
		t.Error("ParseForm accepted a bad escape")
	}
}

func TestNewID(t *testing.T) {
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !uuid.MatchString(id) || seen[id] {
			t.Fatalf("NewID() = %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
}

func TestTypeSuffix(t *testing.T) {
	for s, want := range map[string]bool{
		"push": true, "repo:refs_changed": true, "payment_intent.succeeded": true, "a-b": true,
		"": false, "a b": false, "a\nb": false, "é": false, "a/b": false, strings.Repeat("a", 201): false,
	} {
		if got := TypeSuffix(s); got != want {
			t.Errorf("TypeSuffix(%q) = %v", s, got)
		}
	}
}

func TestMediaType(t *testing.T) {
	for ct, want := range map[string]string{
		"application/json":                  "application/json",
		"Application/JSON; charset=UTF-8":   "application/json",
		"application/x-www-form-urlencoded": MediaForm,
		"":                                  "",
		"text/plain; charset":               "text/plain",
	} {
		if got := MediaType(ct); got != want {
			t.Errorf("MediaType(%q) = %q, want %q", ct, got, want)
		}
	}
}

func FuzzParseObject(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `{"a":{"b":[1,{"c":null}]}}`, `[]`, `{"id":1e400}`, `{`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		obj, err := ParseObject(b)
		if err != nil {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		_ = obj.String("a.b.c")
	})
}

func FuzzParseHexDigest(f *testing.F) {
	f.Add("sha256=" + strings.Repeat("0f", 32))
	f.Add("sha256=")
	f.Add("")
	f.Fuzz(func(t *testing.T, header string) {
		d, err := ParseHexDigest(header, "sha256=", sha256.Size)
		if err == nil && (len(d) != sha256.Size || !strings.HasPrefix(header, "sha256=")) {
			t.Fatalf("accepted %q as %x", header, d)
		}
	})
}

func FuzzParseForm(f *testing.F) {
	f.Add([]byte("payload=%7B%7D"))
	f.Add([]byte("a=1&a=2&b"))
	f.Add([]byte("%"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseForm(b)
		if err != nil {
			return
		}
		out := FormJSON(v)
		if !json.Valid(out) {
			t.Fatalf("FormJSON gave invalid JSON %q", out)
		}
		if _, err := url.ParseQuery(string(b)); err != nil {
			t.Fatal("ParseForm accepted what url.ParseQuery refuses")
		}
	})
}
