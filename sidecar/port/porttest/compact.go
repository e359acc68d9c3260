package porttest

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// This file holds how the store keeps its entities small: with 100,000
// entities in one process (`portbridge dev --generate 100000`), decoded
// maps, a map per relation target and a copy of every writer's name per
// entity cost several times the entities' JSON.

// jsonObject is an entity's properties or relations kept as their JSON
// encoding: an object with its keys sorted, as encoding/json writes a map,
// so that an answer carries the same bytes it would for the decoded map;
// empty means {}. Most stored entities are only written and read back
// whole; rules and relation walks decode it. Being a string, it cannot be
// changed in place: a change encodes a new one.
type jsonObject string

// encodeObject encodes a decoded object.
func encodeObject(m map[string]any) (jsonObject, error) {
	if len(m) == 0 {
		return "", nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	return jsonObject(b), nil
}

// decode returns a new map of the object (empty, never nil).
func (o jsonObject) decode() map[string]any {
	m := map[string]any{}
	if o != "" {
		// encodeObject or UnmarshalJSON made it from a decoded object.
		_ = json.Unmarshal([]byte(o), &m)
	}
	return m
}

// MarshalJSON returns the encoding.
func (o jsonObject) MarshalJSON() ([]byte, error) {
	if o == "" {
		return []byte("{}"), nil
	}
	return []byte(o), nil
}

// UnmarshalJSON takes an object (or null, meaning empty) and keeps it in
// the canonical encoding.
func (o *jsonObject) UnmarshalJSON(b []byte) error {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		// Unwrapped: encoding/json adds the field's path
		// (record.entities.properties) to its own error type only.
		return err
	}
	enc, err := encodeObject(m)
	if err != nil {
		return fmt.Errorf("encoding an entity's properties or relations: %w", err)
	}
	*o = enc
	return nil
}

// inSet is the entities whose relations point at one entity, one entry
// per relation value (an entity that points twice is there twice): a
// short list, since most entities have few, or counts in a map once there
// are more than inSetListMax (a group that owns thousands). A map per
// target costs several hundred bytes even for one entry.
type inSet struct {
	list []refKey
	big  map[refKey]int
}

const inSetListMax = 32

// add counts one more relation value of src pointing here.
func (in *inSet) add(src refKey) {
	switch {
	case in.big != nil:
		in.big[src]++
	case len(in.list) < inSetListMax:
		list := make([]refKey, len(in.list)+1) // exact: most lists stay short
		copy(list, in.list)
		list[len(in.list)] = src
		in.list = list
	default:
		in.big = make(map[refKey]int, len(in.list)+1)
		for _, k := range in.list {
			in.big[k]++
		}
		in.big[src]++
		in.list = nil
	}
}

// remove counts one relation value of src pointing here less.
func (in *inSet) remove(src refKey) {
	if in.big != nil {
		if in.big[src]--; in.big[src] <= 0 {
			delete(in.big, src)
		}
		return
	}
	if i := slices.Index(in.list, src); i >= 0 {
		in.list = slices.Delete(in.list, i, i+1)
	}
}

func (in *inSet) empty() bool { return len(in.list) == 0 && len(in.big) == 0 }

// sources returns each pointing entity once, in no order (a new slice).
func (in *inSet) sources() []refKey {
	if in.big != nil {
		return slices.Collect(maps.Keys(in.big))
	}
	out := make([]refKey, 0, len(in.list))
	for _, k := range in.list {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// interner keeps one copy of what many records repeat: their metas, and
// the strings (clients and User-Agents that wrote them, teams) and lists
// (data sources, teams) in those. It stops adding once it holds internMax
// of a kind, so that a stream of distinct writers cannot grow it without
// bound.
type interner struct {
	strs  map[string]string
	lists map[string][]string
	metas map[string]*meta
}

const internMax = 10_000

func newInterner() *interner {
	return &interner{strs: map[string]string{}, lists: map[string][]string{}, metas: map[string]*meta{}}
}

// meta returns a shared meta equal to m (nil is the empty one). Shared
// metas are never changed: a record to be changed gets a copy (clone).
func (in *interner) meta(m *meta) *meta {
	if m == nil {
		m = &meta{}
	}
	key := strings.Join([]string{m.Icon, strings.Join(m.Team, "\x00"), m.CreatedBy, m.UpdatedBy, strings.Join(m.DataSources, "\x00")}, "\x01")
	if x, ok := in.metas[key]; ok && x.equal(m) {
		return x
	}
	shared := &meta{Icon: in.str(m.Icon), Team: in.list(m.Team), CreatedBy: in.str(m.CreatedBy), UpdatedBy: in.str(m.UpdatedBy),
		DataSources: in.list(m.DataSources)}
	if len(in.metas) < internMax {
		in.metas[key] = shared
	}
	return shared
}

func (m *meta) equal(o *meta) bool {
	sameList := func(a, b []string) bool { return slices.Equal(a, b) && (a == nil) == (b == nil) }
	return m.Icon == o.Icon && m.CreatedBy == o.CreatedBy && m.UpdatedBy == o.UpdatedBy &&
		sameList(m.Team, o.Team) && sameList(m.DataSources, o.DataSources)
}

// str returns the kept copy of s.
func (in *interner) str(s string) string {
	if x, ok := in.strs[s]; ok {
		return x
	}
	if len(in.strs) < internMax {
		in.strs[s] = s
	}
	return s
}

// list returns a shared copy of a list of strings (nil stays nil, empty
// stays empty). Shared lists are never changed in place: their capacity is
// their length, so an append copies.
func (in *interner) list(l []string) []string {
	if len(l) == 0 {
		return slices.Clip(l)
	}
	key := strings.Join(l, "\x00")
	if x, ok := in.lists[key]; ok && slices.Equal(x, l) {
		return x
	}
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = in.str(s)
	}
	if len(in.lists) < internMax {
		in.lists[key] = out
	}
	return out
}
