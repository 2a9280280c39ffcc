package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/signalbox-dev/signalbox/adapters/receiver"
	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/broker/jetstream"
	"github.com/signalbox-dev/signalbox/broker/redisbus"
	"github.com/signalbox-dev/signalbox/config"
	"github.com/signalbox-dev/signalbox/dispatch"
	"github.com/signalbox-dev/signalbox/gateway"
)

// serveOptions are the flags of `signalbox serve`; see DESIGN's command-line
// table and the README.
type serveOptions struct {
	bus             busOptions
	addr            string
	configPaths     []string
	logLevel        string
	replicaID       string
	lease           time.Duration
	shutdownTimeout time.Duration
	maxBodyBytes    int64
	debugAddr       string
	kubeconfig      string
}

// busFlags names the flags of busOptions.
var busFlags = []string{"bus", "data-dir", "nats-listen", "broker-capacity"}

// busOptions are the flags that choose and open the event bus; serve and
// dlq share them.
type busOptions struct {
	url        string
	dataDir    string
	natsListen string
	capacity   int64
}

func (o *busOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.url, "bus", "embedded", "event bus: redis://host:port/db, rediss://..., nats://host:port or embedded")
	f.StringVar(&o.dataDir, "data-dir", "./data", "where the embedded bus keeps its files")
	f.StringVar(&o.natsListen, "nats-listen", "", "expose the embedded JetStream on this address")
	f.Int64Var(&o.capacity, "broker-capacity", redisbus.DefaultMaxLen,
		"most events a broker keeps; when its slowest trigger falls this far behind, the ingress answers 429")
}

func newServeCmd() *cobra.Command {
	host, _ := os.Hostname()
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway: ingress, broker and dispatchers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd); err != nil {
				return err
			}
			return serve(cmd.Context(), o)
		},
	}
	o.bus.addFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.addr, "addr", ":8080", "HTTP listen address")
	f.StringSliceVar(&o.configPaths, "config", []string{"./signalbox.yaml"},
		"YAML file or directory of Broker, Trigger, Sensor and EventSource objects; repeatable; reloaded on change")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.replicaID, "replica-id", host,
		"this replica's consumer name in the bus; replicas on one host need distinct ids")
	f.DurationVar(&o.lease, "lease", 30*time.Second,
		"how long an event held by a silent replica stays its own before another replica takes it")
	f.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second,
		"on SIGTERM: time for in-flight attempts before the rest are handed back")
	f.Int64Var(&o.maxBodyBytes, "max-body-bytes", gateway.DefaultMaxBodyBytes, "largest request the ingress reads")
	f.StringVar(&o.debugAddr, "debug-addr", "", "serve Go's /debug/pprof profiles on this address (keep it private)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file of Sensor kubernetes triggers; "+
		"default: KUBECONFIG, then the pod's service account, then ~/.kube/config")
	annotateEnv(cmd)
	return cmd
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// open connects to the bus named by --bus.
func (o *busOptions) open(ctx context.Context, log *slog.Logger) (broker.Bus, error) {
	switch {
	case strings.HasPrefix(o.url, "redis://"), strings.HasPrefix(o.url, "rediss://"):
		redis.SetLogger(redisLogger{log})
		bus, err := redisbus.New(ctx, redisbus.Config{URL: o.url, MaxLen: o.capacity, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("--bus %s: %w (is Redis running? start it with `redis-server` or pick another --bus)",
				redactURL(o.url), err)
		}
		return bus, nil
	case o.url == "embedded":
		bus, err := jetstream.New(ctx, jetstream.Config{DataDir: o.dataDir, Listen: o.natsListen,
			MaxLen: o.capacity, Logger: log})
		if errors.Is(err, jetstream.ErrDataDirLocked) {
			return nil, fmt.Errorf("--data-dir %s is in use by a running gateway; stop it, or start that gateway "+
				"with --nats-listen 127.0.0.1:4223 and pass --bus nats://127.0.0.1:4223 here", o.dataDir)
		}
		if err != nil {
			return nil, fmt.Errorf("embedded bus in --data-dir %s: %w", o.dataDir, err)
		}
		return bus, nil
	case strings.HasPrefix(o.url, "nats://"), strings.HasPrefix(o.url, "tls://"):
		if o.natsListen != "" {
			return nil, errors.New("--nats-listen exposes the embedded bus; it cannot be used with a nats:// --bus")
		}
		bus, err := jetstream.New(ctx, jetstream.Config{URL: o.url, MaxLen: o.capacity, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("--bus %s: %w (is nats-server running with -js?)", redactURL(o.url), err)
		}
		return bus, nil
	}
	return nil, fmt.Errorf("--bus %q: use redis://host:port/db, rediss://host:port/db, nats://host:port or embedded",
		redactURL(o.url))
}

func serve(ctx context.Context, o *serveOptions) error {
	log, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	if o.replicaID == "" {
		return errors.New("--replica-id must not be empty")
	}
	if o.lease <= 0 {
		return fmt.Errorf("--lease %v: must be positive (and the same on every replica)", o.lease)
	}
	if o.maxBodyBytes <= 0 {
		return fmt.Errorf("--max-body-bytes %d: must be positive", o.maxBodyBytes)
	}
	if o.bus.capacity <= 0 {
		return fmt.Errorf("--broker-capacity %d: must be positive", o.bus.capacity)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	bus, err := o.bus.open(ctx, log)
	if err != nil {
		return err
	}
	defer bus.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	disp, err := dispatch.New(dispatch.Config{
		Bus:             bus,
		ReplicaID:       o.replicaID,
		Lease:           o.lease,
		ShutdownTimeout: o.shutdownTimeout,
		Logger:          log,
		Metrics:         reg,
		Kubeconfig:      o.kubeconfig,
	})
	if err != nil {
		return err
	}

	hooks, err := receiver.New(receiver.Config{Bus: bus, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}

	var loaded atomic.Bool
	gw, err := gateway.New(gateway.Config{
		Bus:          bus,
		MaxBodyBytes: o.maxBodyBytes,
		Webhooks:     hooks,
		Ready:        func() bool { return loaded.Load() && disp.Ready() },
		Logger:       log,
		Registry:     reg,
	})
	if err != nil {
		return err
	}

	// Bind early so a busy port fails fast, but serve only once the first
	// config is applied: until then connections wait in the backlog instead
	// of being told that their broker does not exist.
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", o.addr, err)
	}
	defer ln.Close()

	// Triggers get their consumer groups before their broker accepts events,
	// so no accepted event can be missed by a trigger defined with it.
	firstApply := make(chan error, 1)
	first := true
	apply := func(snap *config.Snapshot) {
		applyCtx, cancel := ctx, context.CancelFunc(func() {})
		if !first {
			// A reload must not wait forever for a bus that is down: the
			// dispatcher keeps creating missing groups in the background.
			applyCtx, cancel = context.WithTimeout(ctx, time.Minute)
		}
		err := disp.Apply(applyCtx, snap)
		cancel()
		if first {
			first = false
			firstApply <- err
		}
		if err != nil {
			log.Error("config not applied; the previous one stays in force", "err", err)
			return
		}
		names := make([]string, 0, len(snap.Brokers))
		for _, b := range snap.Brokers {
			names = append(names, b.Namespace()+"/"+b.Name())
		}
		gw.SetBrokers(names)
		if err := hooks.Apply(snap); err != nil {
			log.Error("webhook sources not all applied", "err", err)
		}
		loaded.Store(true)
		log.Info("config applied", "brokers", len(snap.Brokers), "triggers", len(snap.Triggers),
			"sensors", len(snap.Sensors), "event_sources", len(snap.EventSources))
	}
	watcher := &config.Watcher{Paths: o.configPaths, Logger: log, OnChange: apply}
	watchErr := make(chan error, 1)
	go func() { watchErr <- watcher.Run(ctx) }()
	select {
	case err := <-firstApply:
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
	case err := <-watchErr:
		if err == nil {
			return ctx.Err()
		}
		return fmt.Errorf("config: %w", err)
	}

	if o.debugAddr != "" {
		if err := serveDebug(ctx, o.debugAddr, log); err != nil {
			return err
		}
	}
	srv := &http.Server{Handler: gw.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	log.Info("signalbox serving", "addr", ln.Addr().String(), "replica_id", o.replicaID, "version", version)

	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", o.shutdownTimeout)
	case err := <-srvErr:
		return fmt.Errorf("http server: %w", err)
	case err := <-watchErr:
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}

	// Stop taking events first, then give in-flight deliveries their whole
	// budget: a slow ingress request must not eat into it.
	httpCtx, cancelHTTP := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancelHTTP()
	if err := srv.Shutdown(httpCtx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	dispCtx, cancelDisp := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancelDisp()
	if err := disp.Close(dispCtx); err != nil {
		log.Warn("dispatcher shutdown", "err", err)
	}
	log.Info("stopped")
	return nil
}

// redactURL hides the password of a bus URL for logs.
func redactURL(s string) string {
	i := strings.Index(s, "://")
	j := strings.LastIndex(s, "@")
	if i < 0 || j < i {
		return s
	}
	return s[:i+3] + "***@" + s[j+1:]
}
