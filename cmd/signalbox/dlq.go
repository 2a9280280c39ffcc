package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/signalbox-dev/signalbox/broker"
	"github.com/signalbox-dev/signalbox/cloudevent"
	"github.com/signalbox-dev/signalbox/dispatch"
)

// dlqOptions select one trigger's dead letters.
type dlqOptions struct {
	bus     busOptions
	broker  string
	trigger string
	sensor  string
	after   string
	limit   int
}

func (o *dlqOptions) group() (string, error) {
	if o.trigger == "" {
		return "", errors.New("--trigger is required (with --sensor for a sensor's trigger)")
	}
	if o.sensor != "" {
		return dispatch.SensorGroup(o.sensor, o.trigger), nil
	}
	return dispatch.TriggerGroup(o.trigger), nil
}

func (o *dlqOptions) topic() (string, error) {
	ns, name, ok := strings.Cut(o.broker, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("--broker %q: want namespace/name, as in default/default", o.broker)
	}
	return o.broker, nil
}

func newDLQCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List or replay a trigger's dead letters kept in the bus",
	}
	cmd.AddCommand(newDLQListCmd(), newDLQReplayCmd())
	return cmd
}

func addDLQFlags(cmd *cobra.Command, o *dlqOptions) {
	o.bus.addFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.broker, "broker", "default/default", "the trigger's broker as namespace/name")
	f.StringVar(&o.trigger, "trigger", "", "the Trigger's name, or the trigger's name within --sensor")
	f.StringVar(&o.sensor, "sensor", "", "the Sensor whose trigger is meant")
	f.StringVar(&o.after, "after", "", "start after this dead-letter id")
	f.IntVar(&o.limit, "limit", 100, "most dead letters to read")
	annotateEnv(cmd, busFlags...)
}

func newDLQListCmd() *cobra.Command {
	o := &dlqOptions{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "Print dead letters as JSON lines, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd, busFlags...); err != nil {
				return err
			}
			return withDeadLetters(cmd.Context(), o, func(_ broker.Bus, _ string, dls []broker.DeadLetter) error {
				return printDeadLetters(cmd.OutOrStdout(), dls)
			})
		},
	}
	addDLQFlags(cmd, o)
	return cmd
}

func newDLQReplayCmd() *cobra.Command {
	o := &dlqOptions{}
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Publish dead letters back into their broker",
		Long: "Publish dead letters back into their broker as new arrivals. Every trigger of the broker\n" +
			"sees them again, so subscribers that already got an event dedupe it by source and id.\n" +
			"The dead letters stay listed; use --after to continue from the last replayed id.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd, busFlags...); err != nil {
				return err
			}
			return withDeadLetters(cmd.Context(), o, func(bus broker.Bus, topic string, dls []broker.DeadLetter) error {
				return replay(cmd.Context(), cmd.OutOrStdout(), bus, topic, dls)
			})
		},
	}
	addDLQFlags(cmd, o)
	return cmd
}

func withDeadLetters(ctx context.Context, o *dlqOptions, fn func(broker.Bus, string, []broker.DeadLetter) error) error {
	topic, err := o.topic()
	if err != nil {
		return err
	}
	group, err := o.group()
	if err != nil {
		return err
	}
	bus, err := o.bus.open(ctx, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer bus.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	dls, err := bus.DeadLetters(ctx, topic, group, o.after, o.limit)
	if err != nil {
		return fmt.Errorf("read dead letters of %s %s: %w", topic, group, err)
	}
	return fn(bus, topic, dls)
}

// deadLetterLine is one line of `dlq list`.
type deadLetterLine struct {
	ID          string          `json:"id"`
	Time        time.Time       `json:"time"`
	Attempts    int             `json:"attempts"`
	Code        int             `json:"code"`
	Destination string          `json:"destination"`
	Reason      string          `json:"reason"`
	Event       json.RawMessage `json:"event,omitempty"`
	DecodeError string          `json:"decodeError,omitempty"`
}

func printDeadLetters(w io.Writer, dls []broker.DeadLetter) error {
	enc := json.NewEncoder(w)
	for _, dl := range dls {
		line := deadLetterLine{ID: dl.ID, Time: dl.Time, Attempts: dl.Attempts, Code: dl.Code,
			Destination: dl.Destination, Reason: dl.Reason}
		if e, err := cloudevent.Unmarshal(dl.Payload); err != nil {
			line.DecodeError = err.Error()
		} else if b, err := cloudevent.MarshalStructured(e); err != nil {
			line.DecodeError = err.Error()
		} else {
			line.Event = b
		}
		if err := enc.Encode(line); err != nil {
			return err
		}
	}
	return nil
}

func replay(ctx context.Context, w io.Writer, bus broker.Bus, topic string, dls []broker.DeadLetter) error {
	last, n := "", 0
	for _, dl := range dls {
		e, err := cloudevent.Unmarshal(dl.Payload)
		if err != nil {
			return fmt.Errorf("dead letter %s: %w", dl.ID, err)
		}
		if err := cloudevent.PrepareIngress(e, time.Now()); err != nil {
			fmt.Fprintf(w, "skipped %s (event %s): %v\n", dl.ID, e.ID(), err)
			continue
		}
		payload, err := cloudevent.Marshal(e)
		if err != nil {
			return err
		}
		if err := bus.Publish(ctx, topic, payload); err != nil {
			return fmt.Errorf("replay %s (replayed up to %q): %w", dl.ID, last, err)
		}
		last, n = dl.ID, n+1
		fmt.Fprintf(w, "replayed %s (event %s)\n", dl.ID, e.ID())
	}
	fmt.Fprintf(w, "%d dead letter(s) replayed into %s\n", n, topic)
	return nil
}
