package e2e

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The speed-camera example runs end to end as the README shows: its three
// stage programs and its config, with overlapping flashes posted to the
// ingress. Only the speeding flashes are fined, each with its own plate.
func TestSpeedCameraExample(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(filepath.Separator), "../examples/speed-camera/cmd/...")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the example: %v\n%s", err, out)
	}

	// The stages on free ports, and the example's config pointed at them.
	cfgText, err := os.ReadFile("../examples/speed-camera/signalbox.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(cfgText)
	lines := make(chan string, 100)
	for i, name := range []string{"platereader", "speedcorrection", "fineissuer"} {
		addr := freeAddr(t)
		cfg = strings.ReplaceAll(cfg, fmt.Sprintf("127.0.0.1:%d", 9101+i), addr)
		cmd := exec.Command(filepath.Join(bin, name), "--addr", addr)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		go func() {
			s := bufio.NewScanner(stdout)
			for s.Scan() {
				lines <- s.Text()
			}
		}()
		waitListening(t, addr)
	}
	gw := startGateway(t, "", writeConfig(t, cfg), "--data-dir", t.TempDir())

	post := func(flash, kind, data string) {
		t.Helper()
		h := map[string]string{"ce-specversion": "1.0", "ce-id": flash + "-" + kind, "ce-source": "/speed-camera/cam-7",
			"ce-type": "radar." + kind, "ce-subject": flash, "content-type": "application/json"}
		if code := postEvent(t, gw.URL+"/default/default", h, data); code != 202 {
			t.Fatalf("post %s %s: %d", flash, kind, code)
		}
	}
	image := func(plate string) string {
		return fmt.Sprintf(`{"image":%q}`, base64.StdEncoding.EncodeToString([]byte(plate)))
	}
	post("1", "flash.image", image("KA-SB 101"))
	post("2", "speed.raw", `{"kmh":96,"limit":50}`)
	post("2", "flash.image", image("HD-XY 202"))
	post("3", "speed.raw", `{"kmh":52,"limit":50}`)
	post("1", "speed.raw", `{"kmh":131,"limit":100}`)
	post("3", "flash.image", image("MA-ZZ 303"))

	fine := regexp.MustCompile(`^FINE flash=(\S+) plate="([^"]+)" speed=(\d+) limit=(\d+) excess=(\d+) ` +
		`type=com.example.fine.issued id=\S+$`)
	var got []string
	deadline := time.After(15 * time.Second)
	for len(got) < 2 {
		select {
		case l := <-lines:
			m := fine.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("unexpected output %q", l)
			}
			got = append(got, strings.Join(m[1:], " "))
		case <-deadline:
			t.Fatalf("fines after 15s: %v", got)
		}
	}
	select {
	case l := <-lines:
		t.Fatalf("more output: %q", l)
	case <-time.After(500 * time.Millisecond):
	}
	slices.Sort(got)
	want := []string{"1 KA-SB 101 127 100 27", "2 HD-XY 202 93 50 43"}
	if !slices.Equal(got, want) {
		t.Errorf("fines %q, want %q", got, want)
	}
}

// waitListening waits until something accepts connections at addr.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens at %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
