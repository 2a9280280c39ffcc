// Command sbload is signalbox's load generator. It POSTs binary-mode
// CloudEvents to a broker ingress, runs the HTTP subscriber that the broker's
// trigger delivers to, and reports ingress throughput, end-to-end delivery,
// latencies and whether every accepted event arrived.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK         = 0
	exitError      = 1 // bad flags or a setup failure; no report
	exitUsage      = 2
	exitUnverified = 3 // report printed, but nothing was accepted or an accepted event never arrived
)

const usage = `sbload posts CloudEvents (binary mode) to a signalbox broker ingress and
measures what comes back at its own subscriber.

Usage:
  sbload -url http://127.0.0.1:8080/default/bench [flags]

Each event has a unique id (run id + sequence number), type -type, source
-source, -size bytes of data and the extension sbloadsent: the unix time in
nanoseconds at which sbload released it for sending (closed loop: the POST's
start; open loop: its slot in the schedule, late by at most the ~1 ms timer
granularity; waiting for a free connection after that counts as latency).
Point a Trigger of the broker at the
subscriber (-listen; it answers 202 with no body) to measure delivery:
end-to-end latency runs from sbloadsent to the first delivery, and after
sending stops sbload waits up to -drain for the rest, then reports accepted
events never delivered (missing) and deliveries beyond the first
(duplicates). Deliveries of other runs are counted as foreign and ignored.

Without -rate, -concurrency senders each post as soon as their last POST is
answered (closed loop: the ingress's peak). With -rate, events are sent on a
fixed schedule whatever the answers (open loop), through at most
-concurrency connections; the start lag tells whether sbload kept up.

With -url set to the subscriber itself (-listen 127.0.0.1:PORT -url
http://127.0.0.1:PORT/), every POST is its own delivery: a broker that does
no work, whose figures are the ceiling of sbload and HTTP on this machine.

Every answer other than 202 is counted by status (429 and 503 show
backpressure); requests without an answer are transport errors.

Exit status: 0 when something was accepted and (with a subscriber) every
accepted event arrived; 3 when not (the report is still printed); 1 on a
setup error; 2 on bad usage.

Flags:
`

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

// cli is main without the exit, so tests can run it.
func cli(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sbload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	var cfg Config
	fs.StringVar(&cfg.URL, "url", "", "broker ingress URL, e.g. http://127.0.0.1:8080/default/bench (required)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "senders (closed loop) or most requests in flight (open loop)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to send")
	fs.IntVar(&cfg.Size, "size", 1024, "event data size in bytes")
	fs.Float64Var(&cfg.Rate, "rate", 0, "events per second, paced open loop; 0 = closed loop, as fast as answered")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:0",
		`subscriber listen address (port 0 picks one, see the log); "" = no subscriber`)
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "after sending, how long to wait for the remaining deliveries")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "timeout of one POST")
	fs.StringVar(&cfg.Type, "type", "dev.signalbox.sbload", "CloudEvents type of every event")
	fs.StringVar(&cfg.Source, "source", "/sbload", "CloudEvents source of every event")
	asJSON := fs.Bool("json", false, "print the report as one JSON object instead of text")
	logLevel := fs.String("log-level", "info", "progress log on stderr: debug, info, warn or error")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of sbload itself to this file")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sbload: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "sbload: -log-level %q: use debug, info, warn or error\n", *logLevel)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "sbload: -cpuprofile:", err)
			return exitError
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "sbload: -cpuprofile:", err)
			return exitError
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "sbload:", err)
		return exitError
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "sbload:", err)
			return exitError
		}
	} else {
		printReport(stdout, rep)
	}
	if !rep.Verified() {
		return exitUnverified
	}
	return exitOK
}

// printReport writes the human-readable summary.
func printReport(w io.Writer, r *Report) {
	mode := fmt.Sprintf("closed loop, %d senders", r.Concurrency)
	if r.Mode == "open" {
		mode = fmt.Sprintf("open loop at %g events/s, up to %d in flight", r.Rate, r.Concurrency)
	}
	fmt.Fprintf(w, "sbload run %s: %s, %d-byte events, %gs to %s\n", r.RunID, mode, r.Size, r.Duration, r.URL)

	fmt.Fprintf(w, "ingress   sent %d, accepted %d (%.1f/s over %.2fs)", r.Sent, r.Accepted, r.AcceptedPerSec,
		r.SendSeconds)
	codes := make([]string, 0, len(r.Statuses))
	for c := range r.Statuses {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	for _, c := range codes {
		fmt.Fprintf(w, ", %s×%d", c, r.Statuses[c])
	}
	if r.TransportErrors > 0 {
		fmt.Fprintf(w, ", transport errors %d (first: %s)", r.TransportErrors, r.FirstError)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "          POST→202 %s\n", latencyLine(r.PostLatency))
	if r.Mode == "open" {
		fmt.Fprintf(w, "          start lag %s\n", latencyLine(r.StartLag))
	}

	if r.SubscriberURL == "" {
		fmt.Fprintln(w, "delivery  not measured (no subscriber)")
	} else {
		fmt.Fprintf(w, "delivery  delivered %d (%.1f/s, first POST to last delivery %.2fs), missing %d, duplicates %d, "+
			"unconfirmed %d, foreign %d, drained %.2fs, %d connections\n", r.Delivered, r.DeliveredPerSec,
			r.DeliverySeconds, r.Missing, r.Duplicates, r.Unconfirmed, r.Foreign, r.DrainSeconds, r.SubscriberConns)
		if len(r.FirstMissing) > 0 {
			fmt.Fprintf(w, "          first missing sequence numbers: %v\n", r.FirstMissing)
		}
		fmt.Fprintf(w, "          POST→subscriber %s\n", latencyLine(r.EndToEnd))
	}
	fmt.Fprintf(w, "client    CPU %.2fs\n", r.ClientCPUSeconds)
}

func latencyLine(s Summary) string {
	if s.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms (n=%d)",
		s.P50, s.P90, s.P99, s.P999, s.Max, s.Count)
}
