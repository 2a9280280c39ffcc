package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/signalbox-dev/signalbox/cloudevent"
)

// newReceiveCmd is a tiny subscriber for demos and debugging: it prints every
// CloudEvent it receives and answers with a fixed status.
func newReceiveCmd() *cobra.Command {
	var (
		addr   string
		status int
	)
	cmd := &cobra.Command{
		Use:   "receive",
		Short: "Run an HTTP subscriber that prints the CloudEvents it receives",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if status < 200 || status > 599 {
				return fmt.Errorf("--status %d: use an HTTP status from 200 to 599", status)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return receive(ctx, addr, status, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:9090", "HTTP listen address")
	cmd.Flags().IntVar(&status, "status", http.StatusOK, "HTTP status to answer every event with")
	return cmd
}

func receive(ctx context.Context, addr string, status int, out io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", addr, err)
	}
	var mu sync.Mutex
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		text := describe(r, body)
		mu.Lock()
		fmt.Fprint(out, text)
		mu.Unlock()
		w.WriteHeader(status)
	})}
	fmt.Fprintf(out, "receiving CloudEvents on http://%s/ (answering %d)\n", ln.Addr(), status)
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// describe renders one received request: its CloudEvent attributes, sorted,
// and its data.
func describe(r *http.Request, body []byte) string {
	var b strings.Builder
	events, err := cloudevent.Parse(r.Header, body)
	if err != nil {
		fmt.Fprintf(&b, "%s %s: not a CloudEvent (%v)\n%s\n\n", r.Method, r.URL.Path, err, body)
		return b.String()
	}
	for _, e := range events {
		fmt.Fprintf(&b, "── %s %s\n", r.Method, r.URL.Path)
		attrs := cloudevent.Attributes(e)
		sort.Slice(attrs, func(i, j int) bool { return attrs[i].Name < attrs[j].Name })
		for _, a := range attrs {
			fmt.Fprintf(&b, "  %-20s %s\n", a.Name+":", a.Value)
		}
		if len(e.Data()) > 0 {
			fmt.Fprintf(&b, "  data: %s\n", e.Data())
		}
	}
	b.WriteString("\n")
	return b.String()
}
