// Command speedcorrection is the metadata chain of the speed-camera example:
// it deducts the measuring tolerance from a raw speed (3 km/h up to 100 km/h,
// 3% above) and answers with a radar.speed.measured event for the same
// flash.
package main

import (
	"encoding/json"
	"fmt"
	"log"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/examples/speed-camera/stage"
)

func main() {
	stage.Main("speedcorrection", "127.0.0.1:9102", func(ev *event.Event) (*event.Event, error) {
		var raw struct {
			Kmh   *float64 `json:"kmh"`
			Limit int      `json:"limit"`
		}
		if err := json.Unmarshal(ev.Data(), &raw); err != nil || raw.Kmh == nil {
			return nil, fmt.Errorf("want {\"kmh\": ..., \"limit\": ...}, got %s", ev.Data())
		}
		corrected := *raw.Kmh - 3
		if *raw.Kmh > 100 {
			corrected = *raw.Kmh * 0.97
		}
		kmh := int(corrected) // in the driver's favour
		log.Printf("flash %s: measured %.0f km/h, corrected %d km/h, limit %d", ev.Subject(), *raw.Kmh, kmh, raw.Limit)
		return stage.Reply(ev, "speed-"+ev.Subject(), "/speed-camera/speed-correction", "radar.speed.measured",
			map[string]any{"kmh": kmh, "measured": *raw.Kmh, "limit": raw.Limit})
	})
}
