// Command fineissuer is the last stage of the speed-camera example: it
// receives a fine that signalbox joined from the plate and the speed of one
// flash, and prints it.
package main

import (
	"encoding/json"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/examples/speed-camera/stage"
)

func main() {
	stage.Main("fineissuer", "127.0.0.1:9103", func(ev *event.Event) (*event.Event, error) {
		var f struct {
			Flash  string `json:"flash"`
			Plate  string `json:"plate"`
			Kmh    int    `json:"kmh"`
			Limit  int    `json:"limit"`
			Excess int    `json:"excess"`
		}
		if err := json.Unmarshal(ev.Data(), &f); err != nil {
			return nil, fmt.Errorf("fine: %w", err)
		}
		// One line per fine on stdout; the event id lets a real issuer
		// drop a fine it was sent twice.
		fmt.Printf("FINE flash=%s plate=%q speed=%d limit=%d excess=%d type=%s id=%s\n",
			f.Flash, f.Plate, f.Kmh, f.Limit, f.Excess, ev.Type(), ev.ID())
		return nil, nil
	})
}
