// Package limits defines the bounds on input that enters the sidecar (RPC
// requests, catalog entities, mappings given for a preview) and checks a
// Backstage entity against them. Every bound names its config key, so an
// error tells the user which setting to change.
//
// The bounds are chosen so that whatever passes them can be stored and read
// back by every later stage: the queue stores a change as protobuf, whose
// decoder refuses messages nested deeper than 10,000 levels, and one JSON
// level of an entity is up to three protobuf levels (Struct, map entry,
// Value), so MaxDepth is capped at 1,000.
package limits

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portbridge/portbridge/sidecar/redact"
)

// Limits bounds the input the sidecar accepts. Zero fields mean the default
// (see Default); WithDefaults fills them in.
type Limits struct {
	// MaxDepth bounds how deeply objects and arrays nest in an entity; the
	// entity object itself is level 1, metadata level 2.
	MaxDepth int
	// MaxEntityBytes bounds an entity's size as JSON.
	MaxEntityBytes int
	// MaxStringBytes bounds every string in an entity, keys included (API
	// definitions are the largest strings in a normal catalog).
	MaxStringBytes int
	// MaxMetadataFieldBytes bounds the JSON size of each field of an
	// entity's metadata (name, title, description, annotations, labels,
	// tags, links, ...).
	MaxMetadataFieldBytes int
	// MaxChangesPerBatch bounds the changes of one PublishChanges request
	// or one StreamChanges message.
	MaxChangesPerBatch int
	// MaxSourceBytes bounds a batch's source (the publisher's name).
	MaxSourceBytes int
	// MaxReasonBytes bounds TriggerResync's reason.
	MaxReasonBytes int
	// MaxRefBytes bounds entity_ref, uid and etag (on the change and in the
	// entity's metadata).
	MaxRefBytes int
	// MaxMappingYAMLBytes bounds the mapping a PreviewMapping request
	// brings.
	MaxMappingYAMLBytes int
}

// The config keys of the bounds, named in every violation.
const (
	KeyMaxDepth              = "limits.maxDepth"
	KeyMaxEntityBytes        = "limits.maxEntityBytes"
	KeyMaxStringBytes        = "limits.maxStringBytes"
	KeyMaxMetadataFieldBytes = "limits.maxMetadataFieldBytes"
	KeyMaxChangesPerBatch    = "limits.maxChangesPerBatch"
	KeyMaxSourceBytes        = "limits.maxSourceBytes"
	KeyMaxReasonBytes        = "limits.maxReasonBytes"
	KeyMaxRefBytes           = "limits.maxRefBytes"
	KeyMaxMappingYAMLBytes   = "limits.maxMappingYamlBytes"
)

// MaxDepthCeiling is the largest MaxDepth allowed: deeper entities could not
// be decoded from the queue (see the package documentation).
const MaxDepthCeiling = 1000

// Default returns the default bounds.
func Default() Limits {
	return Limits{
		MaxDepth:              64,
		MaxEntityBytes:        4 << 20,
		MaxStringBytes:        1 << 20,
		MaxMetadataFieldBytes: 256 << 10,
		MaxChangesPerBatch:    1000,
		MaxSourceBytes:        256,
		MaxReasonBytes:        200,
		MaxRefBytes:           255,
		MaxMappingYAMLBytes:   256 << 10,
	}
}

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	d := Default()
	for _, f := range l.fields() {
		if *f.v == 0 {
			*f.v = *d.field(f.key)
		}
	}
	return l
}

type field struct {
	key string
	v   *int
}

func (l *Limits) fields() []field {
	return []field{
		{KeyMaxDepth, &l.MaxDepth}, {KeyMaxEntityBytes, &l.MaxEntityBytes}, {KeyMaxStringBytes, &l.MaxStringBytes},
		{KeyMaxMetadataFieldBytes, &l.MaxMetadataFieldBytes}, {KeyMaxChangesPerBatch, &l.MaxChangesPerBatch},
		{KeyMaxSourceBytes, &l.MaxSourceBytes}, {KeyMaxReasonBytes, &l.MaxReasonBytes}, {KeyMaxRefBytes, &l.MaxRefBytes},
		{KeyMaxMappingYAMLBytes, &l.MaxMappingYAMLBytes},
	}
}

func (l *Limits) field(key string) *int {
	for _, f := range l.fields() {
		if f.key == key {
			return f.v
		}
	}
	return nil
}

// Validate checks that every bound is positive and MaxDepth is at most
// MaxDepthCeiling; errors name the key.
func (l Limits) Validate() error {
	var errs []error
	for _, f := range l.fields() {
		if *f.v < 1 {
			errs = append(errs, fmt.Errorf("key %s: must be at least 1, got %d", f.key, *f.v))
		}
	}
	if l.MaxDepth > MaxDepthCeiling {
		errs = append(errs, fmt.Errorf("key %s: must be at most %d (deeper entities cannot be decoded from the queue), got %d", KeyMaxDepth, MaxDepthCeiling, l.MaxDepth))
	}
	if l.MaxStringBytes > l.MaxEntityBytes {
		errs = append(errs, fmt.Errorf("key %s: %d is larger than %s (%d)", KeyMaxStringBytes, l.MaxStringBytes, KeyMaxEntityBytes, l.MaxEntityBytes))
	}
	return errors.Join(errs...)
}

// Violation is one bound an input breaks.
type Violation struct {
	// Path is where in the input, relative to the checked value, e.g.
	// ".spec.definition" or ".metadata.annotations"; "" for the value
	// itself.
	Path string
	// Msg says which bound, with its key, and never holds more than a
	// short prefix of the value.
	Msg string
}

func (v *Violation) Error() string {
	if v.Path == "" {
		return v.Msg
	}
	return v.Path + ": " + v.Msg
}

// TooLong returns the violation of a string longer than max bytes, or nil.
func TooLong(s string, max int, key string) *Violation {
	if len(s) <= max {
		return nil
	}
	return &Violation{Msg: fmt.Sprintf("longer than the %d-byte limit (%s): %s", max, key, redact.Quote(s))}
}

// CheckEntity checks a Backstage entity decoded from JSON (objects are
// map[string]any, arrays []any) against the depth, size and string bounds.
// It stops at the first violation and stops walking as soon as the entity
// is over a bound, so a huge or deeply nested entity costs little; a walk
// that finds nothing allocates nothing.
func (l Limits) CheckEntity(entity map[string]any) *Violation {
	c := checker{l: l.WithDefaults()}
	c.object(entity, 1, false)
	return c.result()
}

// CheckStruct is CheckEntity for an entity as a protobuf Struct.
func (l Limits) CheckStruct(entity *structpb.Struct) *Violation {
	c := checker{l: l.WithDefaults()}
	c.pbObject(entity.GetFields(), 1, false)
	return c.result()
}

// checker walks one entity; size is its JSON size so far. After a
// violation every level on the way back adds its key or index to rev (the
// path, innermost first), so the path costs nothing unless it is needed.
type checker struct {
	l     Limits
	size  int
	v     *Violation
	rev   []pathElem
	whole bool // the violation is about the whole entity: no path
}

// pathElem is an object key, or an array index when isKey is false.
type pathElem struct {
	key   string
	index int
	isKey bool
}

func (p pathElem) String() string {
	if p.isKey {
		return pathKey(p.key)
	}
	return "[" + strconv.Itoa(p.index) + "]"
}

const maxPathShown = 12

func (c *checker) fail(format string, args ...any) {
	if c.v == nil {
		c.v = &Violation{Msg: fmt.Sprintf(format, args...)}
	}
}

// unwind adds one level of the path of a violation found below it.
func (c *checker) unwind(e pathElem) {
	if c.v != nil && !c.whole {
		c.rev = append(c.rev, e)
	}
}

func (c *checker) result() *Violation {
	if c.v == nil || len(c.rev) == 0 {
		return c.v
	}
	var b strings.Builder
	n := len(c.rev)
	for i := n - 1; i >= 0; i-- {
		depth := n - 1 - i
		if n > maxPathShown && depth == maxPathShown/2 {
			fmt.Fprintf(&b, "…(%d levels)…", n-maxPathShown)
			i = maxPathShown / 2
		}
		b.WriteString(c.rev[i].String())
	}
	c.v.Path = b.String()
	return c.v
}

func (c *checker) add(n int) bool {
	c.size += n
	if c.size > c.l.MaxEntityBytes {
		c.whole = true
		c.fail("the entity is over the %d-byte limit as JSON (%s)", c.l.MaxEntityBytes, KeyMaxEntityBytes)
		return false
	}
	return true
}

func (c *checker) str(s string) bool {
	if v := TooLong(s, c.l.MaxStringBytes, KeyMaxStringBytes); v != nil {
		c.fail("string %s", v.Msg)
		return false
	}
	return c.add(len(s) + 2)
}

// key checks an object key; a violation is reported at the object.
func (c *checker) key(k string) bool {
	if v := TooLong(k, c.l.MaxStringBytes, KeyMaxStringBytes); v != nil {
		c.fail("object key %s", v.Msg)
		return false
	}
	return c.add(len(k) + 3)
}

// depth checks the nesting level of a container about to be entered.
func (c *checker) depth(level int) bool {
	if level > c.l.MaxDepth {
		c.fail("nested deeper than %d levels of objects and arrays (%s)", c.l.MaxDepth, KeyMaxDepth)
		return false
	}
	return c.add(2)
}

// metaField checks the size of one metadata field after walking it.
func (c *checker) metaField(start int) bool {
	if n := c.size - start; n > c.l.MaxMetadataFieldBytes {
		c.fail("the metadata field is %d bytes as JSON, over the %d-byte limit (%s)", n, c.l.MaxMetadataFieldBytes, KeyMaxMetadataFieldBytes)
		return false
	}
	return true
}

// object walks an object at level; meta says it is the entity's metadata.
func (c *checker) object(m map[string]any, level int, meta bool) bool {
	if !c.depth(level) {
		return false
	}
	for k, v := range m {
		if !c.key(k) {
			return false
		}
		start := c.size
		if !c.value(v, level, level == 1 && k == "metadata") || meta && !c.metaField(start) {
			c.unwind(pathElem{key: k, isKey: true})
			return false
		}
	}
	return true
}

func (c *checker) value(v any, level int, meta bool) bool {
	switch v := v.(type) {
	case map[string]any:
		return c.object(v, level+1, meta)
	case []any:
		if !c.depth(level + 1) {
			return false
		}
		for i, x := range v {
			if !c.value(x, level+1, false) || !c.add(1) {
				c.unwind(pathElem{index: i})
				return false
			}
		}
		return true
	case string:
		return c.str(v)
	case float64:
		return c.number(v)
	case nil:
		return c.add(4)
	case bool:
		return c.add(5)
	default: // json.Number, ints from other decoders
		return c.add(len(fmt.Sprint(v)))
	}
}

func (c *checker) pbObject(m map[string]*structpb.Value, level int, meta bool) bool {
	if !c.depth(level) {
		return false
	}
	for k, v := range m {
		if !c.key(k) {
			return false
		}
		start := c.size
		if !c.pbValue(v, level, level == 1 && k == "metadata") || meta && !c.metaField(start) {
			c.unwind(pathElem{key: k, isKey: true})
			return false
		}
	}
	return true
}

func (c *checker) pbValue(v *structpb.Value, level int, meta bool) bool {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		return c.pbObject(k.StructValue.GetFields(), level+1, meta)
	case *structpb.Value_ListValue:
		if !c.depth(level + 1) {
			return false
		}
		for i, x := range k.ListValue.GetValues() {
			if !c.pbValue(x, level+1, false) || !c.add(1) {
				c.unwind(pathElem{index: i})
				return false
			}
		}
		return true
	case *structpb.Value_StringValue:
		return c.str(k.StringValue)
	case *structpb.Value_NumberValue:
		return c.number(k.NumberValue)
	case *structpb.Value_BoolValue:
		return c.add(5)
	default: // null, or a Value with no kind (encoded as null)
		return c.add(4)
	}
}

// number checks that f can be written as JSON (NaN and infinities cannot;
// only binary protobuf can carry them) and counts its length.
func (c *checker) number(f float64) bool {
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		c.fail("%v is not a JSON number", f)
		return false
	case f == math.Trunc(f) && math.Abs(f) < 1e15:
		n := 1
		for a := math.Abs(f); a >= 10; a /= 10 {
			n++
		}
		if f < 0 {
			n++
		}
		return c.add(n)
	}
	return c.add(24) // an upper bound of the shortest form
}

// pathKey renders an object key as a path segment: .name when it is a plain
// identifier, else ["quoted"], cut to a short prefix.
func pathKey(k string) string {
	plain := k != "" && len(k) <= 40
	for _, r := range k {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			plain = false
			break
		}
	}
	if plain {
		return "." + k
	}
	return "[" + redact.Quote(k) + "]"
}
