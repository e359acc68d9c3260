package mapping

import (
	"regexp"
	"strings"

	"github.com/itchyny/gojq"
)

// Native evaluation of one hot expression shape.
//
// Mappings select relation targets from the catalog's own relations with
//
//	.relations[]? | select(.type == "ownedBy" and (.targetRef | startswith("group:"))) | .targetRef
//
// (the default mapping has eight of them per component). In gojq that is
// some 15 instructions per relation per expression; evaluated in Go it is a
// string comparison. The shape is recognised in the jq source; the native
// evaluator handles the well-formed case (relations an array of objects,
// string targets) and reports anything else as not handled, and then the
// expression runs in gojq as usual — so results, including errors, are
// exactly jq's. The differential tests against the jq CLI cover both paths,
// and the jq CLI (make bench) always runs the original expression.

var relationFilter = regexp.MustCompile(`^\s*\.relations\s*\[\]\?\s*\|\s*select\(\s*\.type\s*==\s*"([^"\\]*)"\s+and\s+\(\s*\.targetRef\s*\|\s*startswith\(\s*"([^"\\]*)"\s*\)\s*\)\s*\)\s*\|\s*\.targetRef\s*$`)

// nativeSlot evaluates one slot natively, with the wrapper's result shape:
// [first output] or [] for single slots, [every output] for all-slots.
type nativeSlot struct {
	slot     int
	relType  string
	prefix   string
	all      bool
	fallback *gojq.Code // the wrapped expression alone, for inputs not handled
}

// compileNative recognises slot expressions with a native evaluator.
func compileNative(s slot, index int, opts []gojq.CompilerOption) (*nativeSlot, error) {
	m := relationFilter.FindStringSubmatch(s.expr)
	if m == nil {
		return nil, nil
	}
	wrap := "__pb_1"
	if s.all {
		wrap = "__pb_n"
	}
	code, err := compileSource(prelude+wrap+"((\n"+s.expr+"\n))", opts)
	if err != nil {
		return nil, err
	}
	return &nativeSlot{slot: index, relType: m[1], prefix: m[2], all: s.all, fallback: code}, nil
}

// eval returns the slot's value, or false when the input is not of the
// well-formed shape the native code handles.
func (n *nativeSlot) eval(input map[string]any) ([]any, bool) {
	rels, present := input["relations"]
	if !present || rels == nil {
		return []any{}, true // null[]? yields nothing
	}
	list, ok := rels.([]any)
	if !ok {
		return nil, false
	}
	out := []any{}
	for _, r := range list {
		obj, ok := r.(map[string]any)
		if !ok {
			return nil, false // jq would fail on .type: let it say how
		}
		t, ok := obj["type"].(string)
		if !ok {
			if obj["type"] == nil {
				continue // null == "x" is false
			}
			return nil, false
		}
		if t != n.relType {
			continue
		}
		target, ok := obj["targetRef"].(string)
		if !ok {
			return nil, false // startswith on a non-string fails in jq
		}
		if !strings.HasPrefix(target, n.prefix) {
			continue
		}
		out = append(out, target)
		if !n.all {
			return out, true
		}
	}
	return out, true
}

// nativePlaceholder replaces a natively evaluated expression in the
// combined gojq program: it costs nothing and its result is overwritten.
const nativePlaceholder = "empty"
