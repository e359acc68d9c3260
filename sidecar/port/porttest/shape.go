package porttest

import (
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// shape is a small JSON-schema-like description of what a route accepts:
// the emulator checks every request body (and the JSON parts of query
// strings) against one before doing anything else, as Port validates a
// request against the route's schema before handling it. A zero field means
// "no constraint".
type shape struct {
	types    []string // "object", "array", "string", "number", "integer", "boolean", "null"; empty = any
	enum     []any
	props    map[string]*shape
	required []string
	closed   bool   // no keys beyond props
	rest     *shape // every key beyond props (when not closed)
	keyNames *shape // every key of the object (a string shape)
	items    *shape
	minItems int
	maxItems int // 0 = unbounded
	minLen   int
	maxLen   int // 0 = unbounded
	pattern  *regexp.Regexp
	notDots  bool   // the whole string may not be "." or ".."
	format   string // "date-time", "url", "uri"
	min, max *float64
	anyOf    []*shape
	oneOf    []*shape
	ref      func() *shape // a recursive shape, resolved when checked
}

// shapeError is the first place a value breaks its shape, worded like a
// schema validator: "body/entities/3/title must be string".
type shapeError struct {
	path string
	msg  string
}

func (e *shapeError) Error() string { return e.path + " " + e.msg }

// check validates v against s; path names v in the error.
func (s *shape) check(v any, path string) *shapeError {
	if s == nil {
		return nil
	}
	if s.ref != nil {
		return s.ref().check(v, path)
	}
	if len(s.types) > 0 && !slices.ContainsFunc(s.types, func(t string) bool { return isType(v, t) }) {
		return &shapeError{path, "must be " + strings.Join(s.types, ",")}
	}
	if len(s.enum) > 0 && !slices.ContainsFunc(s.enum, func(x any) bool { return jsonEqual(x, v) }) {
		return &shapeError{path, fmt.Sprintf("must be equal to one of the allowed values %v", s.enum)}
	}
	switch t := v.(type) {
	case map[string]any:
		if err := s.checkObject(t, path); err != nil {
			return err
		}
	case []any:
		if err := s.checkArray(t, path); err != nil {
			return err
		}
	case string:
		if err := s.checkString(t, path); err != nil {
			return err
		}
	case float64:
		if s.min != nil && t < *s.min {
			return &shapeError{path, fmt.Sprintf("must be >= %v", *s.min)}
		}
		if s.max != nil && t > *s.max {
			return &shapeError{path, fmt.Sprintf("must be <= %v", *s.max)}
		}
	}
	if len(s.anyOf) > 0 {
		var first *shapeError
		for _, alt := range s.anyOf {
			err := alt.check(v, path)
			if err == nil {
				first = nil
				break
			}
			if first == nil || len(err.path) > len(first.path) {
				first = err // the deepest failure says most
			}
		}
		if first != nil {
			return first
		}
	}
	if len(s.oneOf) > 0 {
		matched := 0
		var deepest *shapeError
		for _, alt := range s.oneOf {
			err := alt.check(v, path)
			if err == nil {
				matched++
			} else if deepest == nil || len(err.path) > len(deepest.path) {
				deepest = err
			}
		}
		switch {
		case matched == 0:
			return deepest
		case matched > 1:
			return &shapeError{path, "must match exactly one schema in oneOf"}
		}
	}
	return nil
}

func (s *shape) checkObject(m map[string]any, path string) *shapeError {
	for _, k := range s.required {
		if _, ok := m[k]; !ok {
			return &shapeError{path, fmt.Sprintf("must have required property '%s'", k)}
		}
	}
	for _, k := range sortedKeys(m) {
		sub := path + "/" + k
		if s.keyNames != nil {
			if err := s.keyNames.check(k, sub); err != nil {
				return &shapeError{path, fmt.Sprintf("property name '%s' is invalid", k)}
			}
		}
		if p, ok := s.props[k]; ok {
			if err := p.check(m[k], sub); err != nil {
				return err
			}
			continue
		}
		if s.closed {
			return &shapeError{path, fmt.Sprintf("must NOT have additional property '%s'", k)}
		}
		if err := s.rest.check(m[k], sub); err != nil {
			return err
		}
	}
	return nil
}

func (s *shape) checkArray(a []any, path string) *shapeError {
	if len(a) < s.minItems {
		return &shapeError{path, fmt.Sprintf("must NOT have fewer than %d items", s.minItems)}
	}
	if s.maxItems > 0 && len(a) > s.maxItems {
		return &shapeError{path, fmt.Sprintf("must NOT have more than %d items", s.maxItems)}
	}
	for i, x := range a {
		if err := s.items.check(x, fmt.Sprintf("%s/%d", path, i)); err != nil {
			return err
		}
	}
	return nil
}

func (s *shape) checkString(v, path string) *shapeError {
	n := utf8.RuneCountInString(v)
	if n < s.minLen {
		return &shapeError{path, fmt.Sprintf("must NOT have fewer than %d characters", s.minLen)}
	}
	if s.maxLen > 0 && n > s.maxLen {
		return &shapeError{path, fmt.Sprintf("must NOT have more than %d characters", s.maxLen)}
	}
	if s.pattern != nil && (!s.pattern.MatchString(v) || s.notDots && (v == "." || v == "..")) {
		return &shapeError{path, fmt.Sprintf("must match pattern %q", s.pattern.String())}
	}
	if s.format != "" && !shapeFormat(s.format, v) {
		return &shapeError{path, fmt.Sprintf("must match format %q", s.format)}
	}
	return nil
}

func isType(v any, t string) bool {
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		f, ok := v.(float64)
		return ok && f == math.Trunc(f)
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	}
	return false
}

func shapeFormat(format, s string) bool {
	switch format {
	case "date-time":
		_, err := time.Parse(time.RFC3339Nano, s)
		return err == nil
	case "url":
		u, err := url.Parse(s)
		return err == nil && u.Scheme != "" && u.Host != ""
	case "uri":
		u, err := url.Parse(s)
		return err == nil && u.Scheme != ""
	}
	return true
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Constructors keep the route shapes short.

func anyValue() *shape { return &shape{} }

func typed(types ...string) *shape { return &shape{types: types} }

func str() *shape { return typed("string") }

func strMax(n int) *shape { return &shape{types: []string{"string"}, maxLen: n} }

func boolean() *shape { return typed("boolean") }

func number() *shape { return typed("number") }

func oneOfValues(vals ...any) *shape { return &shape{enum: vals} }

func strEnum(vals ...string) *shape {
	s := &shape{types: []string{"string"}}
	for _, v := range vals {
		s.enum = append(s.enum, v)
	}
	return s
}

func arrayOf(items *shape) *shape { return &shape{types: []string{"array"}, items: items} }

// object is an open object (other keys allowed) with the given properties.
func object(props map[string]*shape, required ...string) *shape {
	return &shape{types: []string{"object"}, props: props, required: required}
}

// closedObject is an object with exactly the given properties (some
// required).
func closedObject(props map[string]*shape, required ...string) *shape {
	s := object(props, required...)
	s.closed = true
	return s
}

// mapOf is an object whose every value has the shape values and whose keys
// match names (when not nil).
func mapOf(names, values *shape) *shape {
	return &shape{types: []string{"object"}, keyNames: names, rest: values}
}

func anyOf(alts ...*shape) *shape { return &shape{anyOf: alts} }

func oneOf(alts ...*shape) *shape { return &shape{oneOf: alts} }

func fptr(f float64) *float64 { return &f }
