// Package stage runs one step of the speed-camera example: an HTTP
// subscriber that receives a CloudEvent from signalbox and may answer with
// another, which signalbox publishes back into the broker (a reply).
package stage

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/cloudevent"
)

// Handler handles one event and returns the reply to send, or nil. An error
// answers 422, which signalbox does not retry.
type Handler func(ev *event.Event) (*event.Event, error)

// Main parses --addr (default defAddr), serves h there until SIGINT or
// SIGTERM, and exits.
func Main(name, defAddr string, h Handler) {
	addr := flag.String("addr", defAddr, "HTTP listen address")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix(name + ": ")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, *addr, h); err != nil {
		log.Fatal(err)
	}
}

func serve(ctx context.Context, addr string, h Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		evs, err := cloudevent.Parse(r.Header, body)
		if err != nil || len(evs) != 1 {
			http.Error(w, fmt.Sprintf("want one CloudEvent: %v", err), http.StatusBadRequest)
			return
		}
		reply, err := h(evs[0])
		if err != nil {
			log.Printf("event %s: %v", evs[0].ID(), err)
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		if reply == nil {
			w.WriteHeader(http.StatusOK)
			return
		}
		cloudevent.WriteBinary(w.Header(), reply)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(reply.Data())
	})}
	log.Printf("listening on %s", ln.Addr())
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Reply builds a reply event about the same flash as ev (same subject).
func Reply(ev *event.Event, id, source, typ string, data any) (*event.Event, error) {
	r := event.New()
	r.SetID(id)
	r.SetSource(source)
	r.SetType(typ)
	r.SetSubject(ev.Subject())
	if err := r.SetData(event.ApplicationJSON, data); err != nil {
		return nil, err
	}
	return &r, nil
}
