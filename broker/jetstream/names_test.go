package jetstream

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func TestToken(t *testing.T) {
	tests := []struct{ name, want string }{
		{"default/orders", "default_2forders"},
		{"trigger.orders", "trigger_2eorders"},
		{"sensor.s.t", "sensor_2es_2et"},
		{"a_b", "a_5fb"},
		{"Pod-0", "_50od-0"},
		{"*>", "_2a_3e"},
		{"ü", "_c3_bc"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := token(tt.name); got != tt.want {
			t.Errorf("token(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}

	long := token(strings.Repeat("x", maxToken+1))
	if len(long) != 65 || long[0] != 'H' {
		t.Errorf("token of a long name = %q, want H and a SHA-256", long)
	}
	if token(strings.Repeat("x", maxToken)) != strings.Repeat("x", maxToken) {
		t.Error("a name of maxToken plain bytes was hashed")
	}
}

// untoken inverts the escaped form of token; its existence shows that
// token is injective on names it does not hash.
func untoken(tok string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case isPlain(c):
			b.WriteByte(c)
		case c == '_' && i+2 < len(tok):
			v, err := hex.DecodeString(tok[i+1 : i+3])
			if err != nil {
				return "", false
			}
			b.WriteByte(v[0])
			i += 2
		default:
			return "", false
		}
	}
	return b.String(), true
}

func FuzzToken(f *testing.F) {
	seeds := []string{"default/orders", "trigger.orders", "a_b", "H0", "ü*> \t.", strings.Repeat("z", 200)}
	for _, seed := range seeds {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		tok := token(name)
		if len(tok) > maxToken+1 {
			t.Fatalf("token(%q) has %d bytes", name, len(tok))
		}
		if tok != "" && tok[0] == 'H' {
			if len(tok) != 65 {
				t.Fatalf("token(%q) = %q: a hashed token has 65 bytes", name, tok)
			}
			return
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; !isPlain(c) && c != '_' {
				t.Fatalf("token(%q) = %q contains %q", name, tok, c)
			}
		}
		if back, ok := untoken(tok); !ok || back != name {
			t.Fatalf("token(%q) = %q decodes to %q, %v", name, tok, back, ok)
		}
	})
}

func TestParseDelivery(t *testing.T) {
	tests := []struct {
		reply string
		want  delivery
		ok    bool
	}{
		{"$JS.ACK.signalbox_log_a.g.1.42.7.1700000000000000000.3", delivery{42, 7, 1}, true},
		{"$JS.ACK._.Hash.signalbox_log_a.g.3.42.9.1700000000000000000.0", delivery{42, 9, 3}, true},
		{"$JS.ACK._.Hash.signalbox_log_a.g.3.42.9.1700000000000000000.0.extra", delivery{42, 9, 3}, true},
		{"$JS.ACK.s.g.1.42.7.0", delivery{}, false},     // too short
		{"$JS.ACK.s.g.1.42.7.0.0.0", delivery{}, false}, // ten tokens: neither format
		{"$JS.NAK.s.g.1.42.7.0.0", delivery{}, false},   // not an ack subject
		{"$JS.ACK.s.g.one.42.7.0.0", delivery{}, false}, // not a number
		{"$JS.ACK.s.g.1.0.7.0.0", delivery{}, false},    // no sequence 0
		{"_INBOX.abc", delivery{}, false},               // a status reply
	}
	for _, tt := range tests {
		got, ok := parseDelivery(tt.reply)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseDelivery(%q) = %+v, %v; want %+v, %v", tt.reply, got, ok, tt.want, tt.ok)
		}
	}

	// ackSubject builds what parseDelivery reads.
	subj := topicNames("ns/a").ackSubject("g", 42, 7)
	if d, ok := parseDelivery(subj); !ok || d.streamSeq != 42 || d.consumerSeq != 7 {
		t.Errorf("parseDelivery(ackSubject) = %+v, %v", d, ok)
	}
}

func TestHeldRecord(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	rec := heldRecord{lease: 30 * time.Second, written: now, entries: []heldEntry{
		{seq: 5, dseq: 9, since: now.Add(-29 * time.Second)},    // about to expire
		{seq: 6, dseq: 10, since: now.Add(-time.Second)},        // fresh
		{seq: 900, dseq: 11, since: now.Add(-40 * time.Second)}, // expired
		{seq: 901, dseq: 12, since: now},
	}}
	back, err := decodeHeld(rec.encode())
	if err != nil {
		t.Fatal(err)
	}
	if back.lease != rec.lease || !back.written.Equal(rec.written) || len(back.entries) != len(rec.entries) {
		t.Fatalf("decoded %+v, want %+v", back, rec)
	}
	for i, e := range back.entries {
		if w := rec.entries[i]; e.seq != w.seq || e.dseq != w.dseq || !e.since.Equal(w.since) {
			t.Errorf("entry %d = %+v, want %+v", i, e, w)
		}
	}

	// Handed back: what has more than the margin (2s for a 30s lease) to run.
	var seqs []uint64
	for _, e := range back.stillLeased(now) {
		seqs = append(seqs, e.seq)
	}
	if len(seqs) != 2 || seqs[0] != 6 || seqs[1] != 901 {
		t.Errorf("stillLeased = %v, want [6 901]", seqs)
	}
	if got := back.stillLeased(now.Add(time.Hour)); len(got) != 0 {
		t.Errorf("stillLeased an hour later = %v, want none", got)
	}

	big := heldRecord{lease: 30 * time.Second, written: now}
	for i := range 1000 {
		big.entries = append(big.entries, heldEntry{seq: 5_000_000 + uint64(i), dseq: 1_000_000 + uint64(i),
			since: now.Add(-time.Duration(i) * 25 * time.Millisecond)})
	}
	if n := len(big.encode()); n > 8000 {
		t.Errorf("a record of 1000 entries takes %d bytes", n)
	}
	for _, bad := range [][]byte{nil, {0}, {2, 0, 0, 0}, {1, 0, 0, 5}, append(rec.encode(), 0)} {
		if _, err := decodeHeld(bad); err == nil {
			t.Errorf("decodeHeld(%x) succeeded", bad)
		}
	}
}

func FuzzDecodeHeld(f *testing.F) {
	now := time.UnixMilli(1_800_000_000_000)
	f.Add(heldRecord{lease: time.Second, written: now}.encode())
	f.Add(heldRecord{lease: time.Minute, written: now, entries: []heldEntry{{1, 1, now}, {1 << 40, 2, now}}}.encode())
	f.Add([]byte{1, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := decodeHeld(data)
		if err != nil {
			return
		}
		for i := 1; i < len(rec.entries); i++ {
			if rec.entries[i].seq <= rec.entries[i-1].seq {
				t.Fatalf("entries out of order: %+v", rec.entries)
			}
		}
		again, err := decodeHeld(rec.encode())
		if err != nil || len(again.entries) != len(rec.entries) || again.lease != rec.lease {
			t.Fatalf("re-encoding %+v gives %+v, %v", rec, again, err)
		}
	})
}
