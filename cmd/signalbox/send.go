package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/signalbox-dev/signalbox/cloudevent"
)

type sendOptions struct {
	typ, source, id, subject string
	data, dataFile, ctype    string
	extensions               []string
	structured               bool
	timeout                  time.Duration
}

// newSendCmd posts one CloudEvent, like curl with the right headers.
func newSendCmd() *cobra.Command {
	o := &sendOptions{}
	cmd := &cobra.Command{
		Use:   "send URL",
		Short: "Post a CloudEvent to a broker (or any CloudEvents endpoint)",
		Example: `  signalbox send http://localhost:8080/default/default --type com.example.order.created \
    --source /shop --data '{"order": 42}'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return send(cmd.Context(), args[0], o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.typ, "type", "", "event type (required)")
	f.StringVar(&o.source, "source", "/signalbox/cli", "event source")
	f.StringVar(&o.id, "id", "", "event id (default: a new UUID)")
	f.StringVar(&o.subject, "subject", "", "event subject")
	f.StringVar(&o.data, "data", "", "event data")
	f.StringVar(&o.dataFile, "data-file", "", "read event data from this file (- for stdin)")
	f.StringVar(&o.ctype, "content-type", "application/json", "data content type")
	f.StringArrayVar(&o.extensions, "ext", nil, "extension attribute name=value; repeatable")
	f.BoolVar(&o.structured, "structured", false, "send in structured mode instead of binary")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "request timeout")
	_ = cmd.MarkFlagRequired("type")
	return cmd
}

func send(ctx context.Context, url string, o *sendOptions, out io.Writer) error {
	e := event.New()
	if o.id == "" {
		o.id = uuid.NewString()
	}
	e.SetID(o.id)
	e.SetType(o.typ)
	e.SetSource(o.source)
	e.SetTime(time.Now())
	if o.subject != "" {
		e.SetSubject(o.subject)
	}
	for _, kv := range o.extensions {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !cloudevent.ValidExtensionName(name) {
			return fmt.Errorf("--ext %q: want name=value with a name of lower-case letters and digits", kv)
		}
		e.SetExtension(name, value)
	}
	data := []byte(o.data)
	if o.dataFile != "" && o.data != "" {
		return fmt.Errorf("--data and --data-file: give one of them")
	}
	if o.dataFile != "" {
		var err error
		if o.dataFile == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(o.dataFile)
		}
		if err != nil {
			return fmt.Errorf("--data-file: %w", err)
		}
	}
	if len(data) > 0 {
		if (o.ctype == "application/json" || strings.HasSuffix(o.ctype, "+json")) && !json.Valid(data) {
			return fmt.Errorf("the data is not valid JSON; fix it or pass --content-type (for example text/plain)")
		}
		e.SetDataContentType(o.ctype)
		e.DataEncoded = data
	}
	if err := cloudevent.Validate(&e); err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := cloudevent.NewRequest(ctx, http.MethodPost, url, &e, o.structured)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(out, "%s %s (id %s)\n", resp.Status, url, o.id)
	return nil
}
