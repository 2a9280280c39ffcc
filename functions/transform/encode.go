package transform

import (
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// maxDepth bounds the nesting of values read and written, as encoding/json
// does, so that the recursive encoders cannot exhaust the goroutine stack.
const maxDepth = 10000

// jsonWriter appends JSON text to buf and fails, before allocating past it,
// once buf would exceed max bytes.
type jsonWriter struct {
	buf []byte
	max int
}

// errTooLarge is the error of a write past w.max.
func (w *jsonWriter) errTooLarge() error {
	return fmt.Errorf("%w: more than %d bytes", ErrOutputTooLarge, w.max)
}

// raw appends s verbatim.
func (w *jsonWriter) raw(s string) error {
	if len(w.buf)+len(s) > w.max {
		return w.errTooLarge()
	}
	w.buf = append(w.buf, s...)
	return nil
}

// byte1 appends one structural byte.
func (w *jsonWriter) byte1(c byte) error {
	if len(w.buf)+1 > w.max {
		return w.errTooLarge()
	}
	w.buf = append(w.buf, c)
	return nil
}

// float appends f in the shortest form that reads back as f, without an
// exponent for integers below 1e21 (as encoding/json does). f must be finite.
func (w *jsonWriter) float(f float64) error {
	var tmp [32]byte
	b := tmp[:0]
	abs := math.Abs(f)
	switch {
	case abs == math.Trunc(abs) && abs < 1e21:
		b = strconv.AppendFloat(b, f, 'f', -1, 64)
	case abs != 0 && (abs < 1e-6 || abs >= 1e21):
		b = strconv.AppendFloat(b, f, 'e', -1, 64)
		// Shorten e-07 to e-7, as encoding/json does.
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	default:
		b = strconv.AppendFloat(b, f, 'f', -1, 64)
	}
	if len(w.buf)+len(b) > w.max {
		return w.errTooLarge()
	}
	w.buf = append(w.buf, b...)
	return nil
}

// str appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as with
// encoding/json; '<', '>' and '&' are not escaped because the output is an
// event body, not HTML.
func (w *jsonWriter) str(s string) error {
	// Escaping at most sextuples a byte; check the common case cheaply and
	// the worst case exactly.
	if len(w.buf)+len(s)+2 > w.max {
		return w.errTooLarge()
	}
	w.buf = append(w.buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			w.buf = append(w.buf, s[start:i]...)
			switch c {
			case '"', '\\':
				w.buf = append(w.buf, '\\', c)
			case '\n':
				w.buf = append(w.buf, '\\', 'n')
			case '\r':
				w.buf = append(w.buf, '\\', 'r')
			case '\t':
				w.buf = append(w.buf, '\\', 't')
			default:
				w.buf = append(w.buf, '\\', 'u', '0', '0', hexDigit(c>>4), hexDigit(c&0xf))
			}
			i++
			start = i
		} else {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				w.buf = append(w.buf, s[start:i]...)
				w.buf = append(w.buf, "\ufffd"...)
				i += size
				start = i
			} else {
				i += size
			}
		}
		if len(w.buf) > w.max {
			return w.errTooLarge()
		}
	}
	w.buf = append(w.buf, s[start:]...)
	w.buf = append(w.buf, '"')
	if len(w.buf) > w.max {
		return w.errTooLarge()
	}
	return nil
}

func hexDigit(c byte) byte { return "0123456789abcdef"[c] }
