// Package redistest starts a real redis-server for tests.
//
// Each Server runs on a free loopback port with persistence off, so a test
// can kill it and start it again empty (the way a Redis without persistence
// comes back after a crash). The process is killed when the test ends.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long Start and Restart wait for PING to answer.
const startTimeout = 10 * time.Second

// Server is a redis-server process started by Start. Its methods may be
// called from any goroutine of the test.
type Server struct {
	// Addr is the server's host:port on 127.0.0.1. It stays the same across
	// Restart.
	Addr string

	t    testing.TB
	port int
	args []string
	dir  string

	mu     sync.Mutex
	proc   *os.Process   // nil while not running
	exited chan struct{} // closed once proc has been waited for
}

// Start starts redis-server on a free 127.0.0.1 port with `--save ""
// --appendonly no`, plus args (for example "--maxmemory", "10mb"), waits
// until it answers PING and registers a cleanup that kills it. The test fails
// at once when redis-server is not installed or does not come up.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redistest: redis-server not found on PATH (install it: apt-get install redis-server): %v", err)
	}

	s := &Server{t: t, args: args, dir: t.TempDir()}
	t.Cleanup(s.Kill)

	// The free port is found by binding and releasing it, so another process
	// may take it before redis-server binds; try a few ports before giving up.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

// URL returns the server's address as a redis:// URL for database 0.
func (s *Server) URL() string {
	return "redis://" + s.Addr + "/0"
}

// Kill stops the server with SIGKILL and waits for it to exit. Its data is
// lost. Killing a server that is not running does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	_ = s.proc.Signal(syscall.SIGKILL)
	<-s.exited
	s.proc = nil
}

// Restart kills the server if it runs and starts it again, empty, on the
// same port. The test fails when it does not come up.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()

	// Right after a kill the port can be briefly refused to a new listener;
	// retry for a short while.
	var err error
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart redis-server on %s: %v", s.Addr, err)
}

// start runs redis-server on s.port and waits for PING. On failure the
// process is gone and the error includes its output.
func (s *Server) start() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--loglevel", "warning",
	}
	args = append(args, s.args...)

	out := &lockedBuffer{}
	cmd := exec.Command("redis-server", args...)
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return err
	}
	// This goroutine owns Wait; Kill waits for it through done.
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		exited <- cmd.Wait()
		close(done)
	}()

	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server exited (%v): %s", err, strings.TrimSpace(out.String()))
		default:
		}
		if err := ping(s.Addr); err == nil {
			break
		} else if time.Now().After(deadline) {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited
			return fmt.Errorf("no answer to PING after %v (%v): %s", startTimeout, err, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	s.mu.Lock()
	s.proc = cmd.Process
	s.exited = done
	s.mu.Unlock()
	return nil
}

// ping sends one PING over a fresh connection and expects +PONG.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected reply %q", strings.TrimSpace(line))
	}
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("listener address is not TCP")
	}
	return addr.Port, nil
}

// lockedBuffer collects a process's output, written from the exec package's
// copying goroutines and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
