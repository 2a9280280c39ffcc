// Command platereader is the image chain of the speed-camera example: it
// "recognises" the number plate on a flash's image and answers with a
// radar.plate.read event for the same flash.
//
// The example's camera has no real pictures: its image is the plate text,
// base64-encoded, which stands in for optical character recognition.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/signalbox-dev/signalbox/examples/speed-camera/stage"
)

func main() {
	stage.Main("platereader", "127.0.0.1:9101", func(ev *event.Event) (*event.Event, error) {
		var img struct {
			Image string `json:"image"`
		}
		if err := json.Unmarshal(ev.Data(), &img); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		text, err := base64.StdEncoding.DecodeString(img.Image)
		if err != nil || len(text) == 0 {
			return nil, fmt.Errorf("no plate recognised in the image")
		}
		plate := strings.ToUpper(strings.TrimSpace(string(text)))
		log.Printf("flash %s: plate %s", ev.Subject(), plate)
		return stage.Reply(ev, "plate-"+ev.Subject(), "/speed-camera/plate-reader", "radar.plate.read",
			map[string]any{"text": plate, "confidence": 0.97})
	})
}
