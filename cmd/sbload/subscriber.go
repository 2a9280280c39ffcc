package main

import (
	"encoding/json"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ServeHTTP is the subscriber the broker's trigger delivers to. It records
// each CloudEvent of this run (binary or JSON structured mode) and answers
// 202 with no body, so no delivery turns into a reply event. 202 rather than
// 200 lets sbload post to its own subscriber, which then stands for a broker
// that does no work: the ceiling of sbload and HTTP on the machine.
func (r *run) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	now := r.clock.nowUnix()
	var id, sent string
	if isStructured(req.Header.Get("Content-Type")) {
		id, sent = structuredFields(req.Body)
	} else {
		// The server canonicalised the keys already, so a map read is enough.
		id, sent = first(req.Header["Ce-Id"]), first(req.Header["Ce-Sbloadsent"])
	}
	// Reading the body to its end lets the dispatcher reuse the connection.
	_, _ = io.Copy(io.Discard, req.Body)
	r.record(unescape(id), unescape(sent), now)
	w.WriteHeader(http.StatusAccepted)
}

// connState counts the subscriber's new connections.
func (r *run) connState(_ net.Conn, state http.ConnState) {
	if state == http.StateNew {
		r.conns.Add(1)
	}
}

// record counts one delivery that arrived at now (unix ns).
func (r *run) record(id, sent string, now int64) {
	seq, ok := r.seqOf(id)
	if !ok {
		r.foreign.Add(1)
		return
	}
	switch r.delivered.add(seq) {
	case 0:
		r.foreign.Add(1)
		return
	case 1:
	default:
		return // a redelivery: counted by the tracker, not timed
	}
	r.unique.Add(1)
	maxInt64(&r.lastDelivery, now)
	if ns, err := strconv.ParseInt(sent, 10, 64); err == nil {
		r.e2eMu.Lock()
		r.e2e = append(r.e2e, time.Duration(now-ns))
		r.e2eMu.Unlock()
	}
}

// seqOf returns the sequence number of an event id of this run.
func (r *run) seqOf(id string) (uint64, bool) {
	rest, ok := strings.CutPrefix(id, r.prefix)
	if !ok {
		return 0, false
	}
	seq, err := strconv.ParseUint(rest, 10, 64)
	return seq, err == nil
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// unescape undoes the percent-encoding the CloudEvents HTTP binding applies
// to binary-mode header values; a value it cannot decode is kept as is.
func unescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

func isStructured(contentType string) bool {
	if !strings.HasPrefix(contentType, "application/cloudevents") {
		return false
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/cloudevents+json"
}

// structuredFields reads the id and sbloadsent attributes of a JSON
// structured event. An extension may arrive as a JSON string or number.
func structuredFields(body io.Reader) (id, sent string) {
	var e struct {
		ID   string          `json:"id"`
		Sent json.RawMessage `json:"sbloadsent"`
	}
	if err := json.NewDecoder(body).Decode(&e); err != nil {
		return "", ""
	}
	return e.ID, strings.Trim(string(e.Sent), `"`)
}
