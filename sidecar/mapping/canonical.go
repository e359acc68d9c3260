package mapping

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/portbridge/portbridge/sidecar/port"
)

// appendEntity appends the canonical JSON encoding of e: the same keys and
// omissions as encoding/json gives port.Entity, object keys sorted at every
// level, no insignificant whitespace, no HTML escaping. Two entities that
// differ only in the order of keys encode to the same bytes.
func appendEntity(b []byte, e *port.Entity) ([]byte, error) {
	var err error
	b = append(b, '{')
	first := true
	field := func(name string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"', ':')
	}
	if e.Identifier != nil {
		field("identifier")
		if b, err = appendValue(b, e.Identifier); err != nil {
			return b, fmt.Errorf("identifier: %w", err)
		}
	}
	if e.Title != "" {
		field("title")
		b = appendString(b, e.Title)
	}
	if e.Icon != "" {
		field("icon")
		b = appendString(b, e.Icon)
	}
	if e.Team != nil {
		field("team")
		if b, err = appendValue(b, e.Team); err != nil {
			return b, fmt.Errorf("team: %w", err)
		}
	}
	if e.Blueprint != "" {
		field("blueprint")
		b = appendString(b, e.Blueprint)
	}
	if len(e.Properties) > 0 {
		field("properties")
		if b, err = appendObject(b, e.Properties); err != nil {
			return b, fmt.Errorf("properties.%w", err)
		}
	}
	if len(e.Relations) > 0 {
		field("relations")
		if b, err = appendObject(b, e.Relations); err != nil {
			return b, fmt.Errorf("relations.%w", err)
		}
	}
	return append(b, '}'), nil
}

// appendValue appends the canonical JSON of a JSON-like value (as produced by
// encoding/json, YAML decoding normalised by this package, or gojq).
func appendValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case string:
		return appendString(b, v), nil
	case float64:
		return appendFloat(b, v), nil
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case json.Number:
		if f, err := v.Float64(); err == nil && !math.IsInf(f, 0) {
			if _, err := strconv.ParseInt(string(v), 10, 64); err == nil {
				return append(b, v...), nil
			}
			return appendFloat(b, f), nil
		}
		return b, fmt.Errorf("invalid number %q", string(v))
	case *big.Int:
		return v.Append(b, 10), nil
	case map[string]any:
		return appendObject(b, v)
	case []any:
		b = append(b, '[')
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendValue(b, x); err != nil {
				return b, fmt.Errorf("[%d]: %w", i, err)
			}
		}
		return append(b, ']'), nil
	}
	// Anything else (typed maps and slices from Go callers): encoding/json
	// sorts map keys, which keeps the output canonical enough for hashing.
	raw, err := json.Marshal(v)
	if err != nil {
		return b, fmt.Errorf("cannot encode %T: %w", v, err)
	}
	return append(b, raw...), nil
}

func appendObject(b []byte, m map[string]any) ([]byte, error) {
	var small [16]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		var err error
		if b, err = appendValue(b, m[k]); err != nil {
			return b, fmt.Errorf("%s: %w", k, err)
		}
	}
	return append(b, '}'), nil
}

// appendFloat formats like encoding/json (ES6 number formatting). Integral
// values print without a fraction, so 3.0 and 3 encode alike. NaN becomes
// null and infinities the largest finite doubles, as jq prints them.
func appendFloat(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, "null"...)
	case math.IsInf(f, 1):
		f = math.MaxFloat64
	case math.IsInf(f, -1):
		f = -math.MaxFloat64
	}
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.AppendInt(b, int64(f), 10)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
