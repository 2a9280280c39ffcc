package config

import (
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// ParseDuration parses an ISO-8601 duration such as "PT0.2S", "PT1M30S",
// "P1DT12H" or "P2W" with full precision: "PT0.05S" is 50ms, where the
// period library Knative uses keeps a single decimal and would make it 0.
// Any component may carry a fraction ("PT1.5M" is 90s); a leading '-'
// negates. Years and months are refused because their length varies. The
// result is truncated to whole nanoseconds.
func ParseDuration(s string) (time.Duration, error) {
	d, err := parseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid ISO-8601 duration %q: %w", s, err)
	}
	return d, nil
}

func parseDuration(s string) (time.Duration, error) {
	rest, neg := strings.CutPrefix(s, "-")
	rest, ok := strings.CutPrefix(rest, "P")
	if !ok {
		return 0, errors.New(`must start with "P", as in PT5S`)
	}
	if rest == "" {
		return 0, errors.New("has no components")
	}

	total := new(big.Rat)
	inTime := false
	last := -1 // index in order of the last component read, to keep them in order
	for rest != "" {
		if rest[0] == 'T' {
			if inTime {
				return 0, errors.New(`has "T" twice`)
			}
			inTime = true
			rest = rest[1:]
			if rest == "" {
				return 0, errors.New(`has no components after "T"`)
			}
			continue
		}
		num, unit, remainder, err := nextComponent(rest)
		if err != nil {
			return 0, err
		}
		rest = remainder

		idx, size, err := componentUnit(unit, inTime)
		if err != nil {
			return 0, err
		}
		if idx <= last {
			return 0, fmt.Errorf("component %q is out of order or repeated", unit)
		}
		last = idx
		total.Add(total, new(big.Rat).Mul(num, new(big.Rat).SetInt64(int64(size))))
	}

	ns := new(big.Int).Quo(total.Num(), total.Denom())
	if !ns.IsInt64() {
		return 0, errors.New("is too long")
	}
	d := time.Duration(ns.Int64())
	if neg {
		d = -d
	}
	return d, nil
}

// nextComponent reads a decimal number ("12", "0.05", "1,5") and its unit
// letter from the front of s.
func nextComponent(s string) (*big.Rat, byte, string, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	intPart := s[:i]
	frac := ""
	if i < len(s) && (s[i] == '.' || s[i] == ',') {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		frac = s[i+1 : j]
		if frac == "" {
			return nil, 0, "", errors.New("has a decimal point without digits after it")
		}
		i = j
	}
	if intPart == "" && frac == "" {
		return nil, 0, "", fmt.Errorf("expected a number at %q", s)
	}
	if i >= len(s) {
		return nil, 0, "", fmt.Errorf("number %q has no unit", s)
	}
	if len(intPart)+len(frac) > 30 {
		return nil, 0, "", errors.New("has a number with too many digits")
	}
	num, ok := new(big.Rat).SetString("0" + intPart + "." + frac + "0")
	if !ok {
		return nil, 0, "", fmt.Errorf("cannot read number %q", s[:i])
	}
	return num, s[i], s[i+1:], nil
}

// componentUnit gives a unit letter's position in the required order and its
// length in nanoseconds. M means months before "T" and minutes after it.
func componentUnit(unit byte, inTime bool) (int, time.Duration, error) {
	day := 24 * time.Hour
	switch {
	case !inTime && (unit == 'Y' || unit == 'M'):
		return 0, 0, errors.New("uses years or months, which have no fixed length; use weeks or days")
	case !inTime && unit == 'W':
		return 0, 7 * day, nil
	case !inTime && unit == 'D':
		return 1, day, nil
	case inTime && unit == 'H':
		return 2, time.Hour, nil
	case inTime && unit == 'M':
		return 3, time.Minute, nil
	case inTime && unit == 'S':
		return 4, time.Second, nil
	case !inTime && (unit == 'H' || unit == 'S'):
		return 0, 0, fmt.Errorf(`has %q before "T", as in PT5%c`, unit, unit)
	}
	return 0, 0, fmt.Errorf("has unknown unit %q", unit)
}
