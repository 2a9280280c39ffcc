package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/signalbox-dev/signalbox/internal/redistest"
)

// An event without data and without the attributes some triggers filter on
// reaches only the triggers it matches, and the dispatcher keeps going.
// Presence filters ("") match only when the attribute exists, for extensions
// and context attributes alike.
func TestFieldCaseMissingAttributesAndNoData(t *testing.T) {
	t.Parallel()
	subject, ping, cesql, extPresent, subjectPresent := newRecorder(t, nil), newRecorder(t, nil),
		newRecorder(t, nil), newRecorder(t, nil), newRecorder(t, nil)
	trig := func(name, filter, uri string) string {
		return fmt.Sprintf("\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: %s, namespace: default}\n"+
			"spec:\n  broker: default\n  %s\n  subscriber: {uri: %s}\n", name, filter, uri)
	}
	cfg := writeConfig(t, brokerYAML+
		trig("t1", `filters: [{exact: {subject: orders}}]`, subject.URL)+
		trig("t2", `filters: [{exact: {type: com.example.ping}}]`, ping.URL)+
		trig("t3", `filters: [{cesql: "myext = 'v'"}]`, cesql.URL)+
		trig("t4", `filter: {attributes: {myext: ""}}`, extPresent.URL)+
		trig("t5", `filter: {attributes: {subject: ""}}`, subjectPresent.URL))
	redis := redistest.Start(t)
	gw := startGateway(t, redis.URL(), cfg)

	req, _ := http.NewRequest(http.MethodPost, gw.URL+"/default/default", http.NoBody)
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/s",
		"ce-type": "com.example.ping"} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("post e-1: %d", resp.StatusCode)
	}
	got := ping.WaitFor(t, 1, 10*time.Second)
	if len(got[0].Body) != 0 {
		t.Errorf("body = %q, want empty", got[0].Body)
	}

	postEvent(t, gw.URL+"/default/default", map[string]string{"ce-specversion": "1.0", "ce-id": "e-2",
		"ce-source": "/s", "ce-type": "com.example.other", "ce-subject": "orders"}, "")
	if got := ids(subject.WaitFor(t, 1, 2*time.Second)); !slices.Equal(got, []string{"e-2"}) {
		t.Errorf("subject trigger got %v", got)
	}
	subjectPresent.WaitFor(t, 1, 2*time.Second)
	cesql.Quiet(t, 0, 300*time.Millisecond)
	extPresent.Quiet(t, 0, 0)
	if got := ids(subjectPresent.Quiet(t, 1, 0)); !slices.Equal(got, []string{"e-2"}) {
		t.Errorf("subject-present trigger got %v, want only e-2", got)
	}
}

// A CEL error in one branch of || does not drop an event the other branch
// matches, and a filter error never turns into an ingress error.
func TestFieldCaseCELHasOnMissingPath(t *testing.T) {
	t.Parallel()
	sub, sub2 := newRecorder(t, nil), newRecorder(t, nil)
	cfg := writeConfig(t, brokerYAML+fmt.Sprintf(`
---
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: s1, namespace: default}
spec:
  broker: default
  dependencies:
    - {name: any, filter: 'has(data.fizz.baz.buzz) || data.kind == "x"'}
  triggers:
    - {name: out, http: {url: %s}}
---
apiVersion: signalbox.dev/v1alpha1
kind: Sensor
metadata: {name: s2, namespace: default}
spec:
  broker: default
  dependencies:
    - {name: any, filter: 'data.object_attributes.oldrev != "" || data.object_kind == "merge_request"'}
  triggers:
    - {name: out, http: {url: %s}}
`, sub.URL, sub2.URL))
	redis := redistest.Start(t)
	gw := startGateway(t, redis.URL(), cfg)
	for _, ev := range []struct{ id, body string }{
		{"f-1", `{"fizz":{"buzz":{"baz":"biz"}},"kind":"x"}`},
		{"f-2", `{"fizz":{"buzz":{}},"kind":"y"}`},
		{"f-3", `{"object_kind":"merge_request","object_attributes":{}}`},
	} {
		if code := postEvent(t, gw.URL+"/default/default", ce(ev.id, "t"), ev.body); code != http.StatusAccepted {
			t.Fatalf("post %s: %d", ev.id, code)
		}
	}
	if got := ids(sub.WaitFor(t, 1, 10*time.Second)); !slices.Equal(got, []string{"f-1"}) {
		t.Errorf("s1 got %v", got)
	}
	if got := ids(sub2.WaitFor(t, 1, 10*time.Second)); !slices.Equal(got, []string{"f-3"}) {
		t.Errorf("s2 got %v", got)
	}
	sub.Quiet(t, 1, 300*time.Millisecond)
	sub2.Quiet(t, 1, 0)
}
