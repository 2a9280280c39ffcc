package redistest

import (
	"strconv"
	"strings"
	"testing"
)

func TestStartKillRestart(t *testing.T) {
	s := Start(t)
	if err := ping(s.Addr); err != nil {
		t.Fatalf("ping after Start: %v", err)
	}
	if want := "redis://" + s.Addr + "/0"; s.URL() != want {
		t.Errorf("URL() = %q, want %q", s.URL(), want)
	}
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Errorf("Addr = %q, want a 127.0.0.1 address", s.Addr)
	}

	s.Kill()
	if err := ping(s.Addr); err == nil {
		t.Fatal("ping after Kill succeeded")
	}
	s.Kill() // a second kill is a no-op

	addr := s.Addr
	s.Restart()
	if s.Addr != addr {
		t.Errorf("Addr after Restart = %q, want %q", s.Addr, addr)
	}
	if err := ping(s.Addr); err != nil {
		t.Fatalf("ping after Restart: %v", err)
	}
	s.Restart() // restarting a running server kills it first
	if err := ping(s.Addr); err != nil {
		t.Fatalf("ping after second Restart: %v", err)
	}
}

func TestStartExtraArgs(t *testing.T) {
	s := Start(t, "--maxmemory", "10mb")
	if err := ping(s.Addr); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func TestStartReportsBadArgs(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{t: t, port: port, dir: t.TempDir(), args: []string{"--no-such-option", "x"}}
	s.Addr = "127.0.0.1:" + strconv.Itoa(port)
	t.Cleanup(s.Kill)

	err = s.start()
	if err == nil {
		t.Fatal("start with an unknown option succeeded")
	}
	if !strings.Contains(err.Error(), "no-such-option") {
		t.Errorf("error %q does not include redis-server's complaint", err)
	}
}
