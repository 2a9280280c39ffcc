package cloudevent

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
)

// codecVersion leads every stored payload so the format can evolve.
const codecVersion byte = 1

// flagBase64 marks data that arrived as data_base64 in structured mode.
const flagBase64 byte = 1

var errCorrupt = errors.New("cloudevent: corrupt stored event")

// Marshal encodes an event for the bus: a version byte, a flags byte, the
// attribute count, length-prefixed attribute names and values, then the data
// bytes to the end. It is cheaper than JSON and keeps binary data as is.
func Marshal(e *event.Event) ([]byte, error) {
	if e.Context == nil {
		return nil, errors.New("cloudevent: event has no context")
	}
	attrs := Attributes(e)
	size := 2 + binary.MaxVarintLen32 + len(e.DataEncoded)
	for _, a := range attrs {
		size += 2*binary.MaxVarintLen32 + len(a.Name) + len(a.Value)
	}
	b := make([]byte, 0, size)
	var flags byte
	if e.DataBase64 {
		flags |= flagBase64
	}
	b = append(b, codecVersion, flags)
	b = binary.AppendUvarint(b, uint64(len(attrs)))
	for _, a := range attrs {
		b = binary.AppendUvarint(b, uint64(len(a.Name)))
		b = append(b, a.Name...)
		b = binary.AppendUvarint(b, uint64(len(a.Value)))
		b = append(b, a.Value...)
	}
	return append(b, e.DataEncoded...), nil
}

// Unmarshal decodes a payload written by Marshal. The event's data aliases b.
func Unmarshal(b []byte) (*event.Event, error) {
	if len(b) < 3 || b[0] != codecVersion {
		return nil, errCorrupt
	}
	flags := b[1]
	b = b[2:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, errCorrupt
	}
	b = b[k:]
	attrs := make([]Attribute, n)
	for i := range attrs {
		var ok bool
		if attrs[i].Name, b, ok = readString(b); !ok {
			return nil, errCorrupt
		}
		if attrs[i].Value, b, ok = readString(b); !ok {
			return nil, errCorrupt
		}
	}
	if len(attrs) == 0 || attrs[0].Name != "specversion" {
		return nil, errCorrupt
	}
	e := event.New(attrs[0].Value)
	for _, a := range attrs[1:] {
		if err := setAttribute(&e, a.Name, a.Value); err != nil {
			return nil, fmt.Errorf("cloudevent: stored event: %w", err)
		}
	}
	if len(b) > 0 {
		e.DataEncoded = b
	}
	e.DataBase64 = flags&flagBase64 != 0
	return &e, nil
}

func readString(b []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return "", nil, false
	}
	end := k + int(n)
	return string(b[k:end]), b[end:], true
}
