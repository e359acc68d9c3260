// Package suggest proposes blueprint changes that fit a catalog, as Port's
// migration guide for Backstage recommends: enums of the values the catalog
// uses for spec.type and spec.lifecycle, relations the mapping fills (and
// those it never fills), properties the mapping fills that the blueprint
// lacks (and those that are always empty).
//
// A Collector is fed the mapping's results for every catalog entity; Plan
// compares what it saw with the current blueprints. Each Change says
// whether it only adds (Applies): new properties, new relations, values
// added to an enum that already exists. Such changes make up the Patch
// bodies. A new enum (Port then refuses any other value), a removal or any
// other narrowing is only proposed, never part of a Patch.
package suggest

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
)

// maxEnumValues bounds the distinct values an enum is proposed for; more
// means the field is not an enumeration.
const maxEnumValues = 50

// maxEnumLen bounds the length of a value an enum is proposed with.
const maxEnumLen = 64

// enumSource matches the mapping expressions whose values become enum
// proposals.
var enumSource = regexp.MustCompile(`\.spec\.(type|lifecycle)\b`)

// Change is one proposed blueprint change.
type Change struct {
	Blueprint string `json:"blueprint"`
	// Path is the blueprint key changed: "schema.properties.type.enum",
	// "schema.properties.tags", "relations.providesApis".
	Path string `json:"path"`
	// Kind is "enum-values" (values added to an existing enum), "enum" (a
	// new enum), "property", "relation", "unused-property" or
	// "unused-relation".
	Kind string `json:"kind"`
	// Value is what is added: enum values, a property or relation
	// definition.
	Value any `json:"value,omitempty"`
	// Applies is true when the change only adds (--apply makes it).
	Applies bool   `json:"applies"`
	Reason  string `json:"reason"`
}

// Blueprint is the plan for one blueprint.
type Blueprint struct {
	Identifier string   `json:"identifier"`
	Entities   int      `json:"entities"`
	Changes    []Change `json:"changes"`
	// Patch is the body of PATCH /v1/blueprints/{identifier} that makes the
	// changes that apply: the blueprint's whole schema and relations as
	// they are, plus the additions (nil when nothing applies).
	Patch map[string]any `json:"patch,omitempty"`
}

// Plan is every proposal, by blueprint.
type Plan struct {
	Blueprints []Blueprint `json:"blueprints"`
}

// propStats is what was seen of one property of one blueprint.
type propStats struct {
	filled int
	types  map[string]int
	values map[string]int // enum candidates only
	many   bool           // more distinct values than maxEnumValues
	enum   bool           // mapped from spec.type or spec.lifecycle
}

// relStats is what was seen of one relation of one blueprint.
type relStats struct {
	filled     int
	maxTargets int
	targets    map[string]bool // a sample of target identifiers
}

type bpStats struct {
	entities int
	props    map[string]*propStats
	rels     map[string]*relStats
}

// Collector gathers what a mapping yields for a catalog. It is not safe for
// concurrent use.
type Collector struct {
	cfg   *mapping.Config
	bps   map[string]port.Blueprint
	stats map[string]*bpStats
	ids   map[string]map[string]bool // blueprint -> identifiers mapped
}

// NewCollector returns a collector for a mapping and the current
// blueprints.
func NewCollector(cfg *mapping.Config, current []port.Blueprint) *Collector {
	c := &Collector{cfg: cfg, bps: map[string]port.Blueprint{}, stats: map[string]*bpStats{}, ids: map[string]map[string]bool{}}
	for _, b := range current {
		c.bps[b.Identifier] = b
	}
	return c
}

// MapperBlueprints returns the blueprints to build the Mapper with: the
// current ones, with every relation the mapping fills but a blueprint lacks
// declared many, so that all targets are seen (the mapper keeps only the
// first target of a single relation).
func (c *Collector) MapperBlueprints() []port.Blueprint {
	out := map[string]port.Blueprint{}
	for id, b := range c.bps {
		cp := b
		cp.Relations = map[string]port.Relation{}
		for k, v := range b.Relations {
			cp.Relations[k] = v
		}
		out[id] = cp
	}
	for i := range c.cfg.Resources {
		r := &c.cfg.Resources[i]
		v, _ := mapping.Literal(r.Mappings.Blueprint)
		id, _ := v.(string)
		b, ok := out[id]
		if !ok {
			continue
		}
		for rel := range r.Mappings.Relations {
			if _, has := b.Relations[rel]; !has {
				b.Relations[rel] = port.Relation{Many: true}
			}
		}
	}
	list := make([]port.Blueprint, 0, len(out))
	for _, id := range slices.Sorted(maps.Keys(out)) {
		list = append(list, out[id])
	}
	return list
}

// Add records the mapping result of one catalog entity.
func (c *Collector) Add(res mapping.Result) {
	for _, x := range res.Entities {
		st := c.stats[x.Blueprint]
		if st == nil {
			st = &bpStats{props: map[string]*propStats{}, rels: map[string]*relStats{}}
			c.stats[x.Blueprint] = st
		}
		st.entities++
		if c.ids[x.Blueprint] == nil {
			c.ids[x.Blueprint] = map[string]bool{}
		}
		c.ids[x.Blueprint][x.Identifier] = true
		res := &c.cfg.Resources[x.ResourceIndex]
		for name, v := range x.Entity.Properties {
			ps := st.props[name]
			if ps == nil {
				ps = &propStats{types: map[string]int{}, values: map[string]int{}}
				st.props[name] = ps
			}
			if enumSource.MatchString(res.Mappings.Properties[name]) {
				ps.enum = true
			}
			if empty(v) {
				continue
			}
			ps.filled++
			ps.types[typeOf(v)]++
			if !ps.enum || ps.many {
				continue
			}
			// Only short one-line strings are labels an enum can list
			// (`if .spec.type == "grpc" then .spec.definition ...` reads
			// spec.type but yields documents).
			if s, ok := v.(string); ok && len(s) <= maxEnumLen && !strings.ContainsAny(s, "\n\r") {
				ps.values[s]++
				if len(ps.values) > maxEnumValues {
					ps.many = true
				}
			} else {
				ps.many = true
			}
		}
		for name, v := range x.Entity.Relations {
			rs := st.rels[name]
			if rs == nil {
				rs = &relStats{targets: map[string]bool{}}
				st.rels[name] = rs
			}
			targets := relationTargets(v)
			if len(targets) == 0 {
				continue
			}
			rs.filled++
			rs.maxTargets = max(rs.maxTargets, len(targets))
			for _, t := range targets {
				if len(rs.targets) < 200 {
					rs.targets[t] = true
				}
			}
		}
	}
}

func relationTargets(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []any:
		var out []string
		for _, x := range t {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	case map[string]any:
		return []string{"(search query)"}
	}
	return nil
}

func empty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

func typeOf(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "null"
}

// Plan compares what was collected with the current blueprints.
func (c *Collector) Plan() *Plan {
	p := &Plan{Blueprints: []Blueprint{}}
	for _, id := range slices.Sorted(maps.Keys(c.stats)) {
		st := c.stats[id]
		cur, ok := c.bps[id]
		if !ok {
			continue // a blueprint that does not exist: nothing to compare with
		}
		bp := Blueprint{Identifier: id, Entities: st.entities, Changes: []Change{}}
		add := func(ch Change) {
			ch.Blueprint = id
			bp.Changes = append(bp.Changes, ch)
		}
		for _, name := range slices.Sorted(maps.Keys(st.props)) {
			ps := st.props[name]
			def, has := cur.Schema.Properties[name]
			switch {
			case !has && ps.filled > 0:
				add(newProperty(name, ps))
			case has && ps.enum && !ps.many && len(ps.values) > 0 && def.Type == "string":
				if ch, ok := enumChange(name, def, ps, st.entities); ok {
					add(ch)
				}
			}
		}
		// Only what this mapping sets: other integrations or people may
		// fill the rest.
		for _, name := range slices.Sorted(maps.Keys(cur.Schema.Properties)) {
			if ps := st.props[name]; ps != nil && ps.filled == 0 && !slices.Contains(cur.Schema.Required, name) {
				add(Change{Path: "schema.properties." + name, Kind: "unused-property",
					Reason: fmt.Sprintf("the mapping sets it, and it is empty in all %d entities: remove it from the blueprint and the mapping if the catalog will not fill it; --apply never removes", st.entities)})
			}
		}
		for _, name := range slices.Sorted(maps.Keys(st.rels)) {
			rs := st.rels[name]
			if _, has := cur.Relations[name]; !has && rs.filled > 0 {
				add(c.newRelation(name, rs))
			}
		}
		for _, name := range slices.Sorted(maps.Keys(cur.Relations)) {
			if rs := st.rels[name]; rs != nil && rs.filled == 0 && !cur.Relations[name].Required {
				add(Change{Path: "relations." + name, Kind: "unused-relation",
					Reason: fmt.Sprintf("the mapping sets it, and none of the %d entities has a target: remove it from the blueprint and the mapping if the catalog will not use it; --apply never removes", st.entities)})
			}
		}
		bp.Patch = Patch(cur, bp.Changes)
		p.Blueprints = append(p.Blueprints, bp)
	}
	return p
}

func newProperty(name string, ps *propStats) Change {
	ch := Change{Path: "schema.properties." + name, Kind: "property"}
	if len(ps.types) != 1 {
		ch.Reason = fmt.Sprintf("the mapping fills it in %d entities, with values of several types (%s): add it by hand with the type you want", ps.filled, strings.Join(slices.Sorted(maps.Keys(ps.types)), ", "))
		return ch
	}
	typ := slices.Sorted(maps.Keys(ps.types))[0]
	def := map[string]any{"type": typ, "title": title(name)}
	if typ == "array" {
		def["items"] = map[string]any{"type": "string"}
	}
	ch.Value, ch.Applies = def, true
	ch.Reason = fmt.Sprintf("the mapping fills it in %d entities, and Port refuses entities with a property the blueprint lacks", ps.filled)
	return ch
}

func enumChange(name string, def port.Property, ps *propStats, entities int) (Change, bool) {
	seen := slices.Sorted(maps.Keys(ps.values))
	path := "schema.properties." + name + ".enum"
	if len(def.Enum) == 0 {
		return Change{Path: path, Kind: "enum", Value: seen,
			Reason: fmt.Sprintf("the %d entities use %s; an enum shows them as choices in Port, but Port then refuses any other value (a new spec value in Backstage fails to push until added), so --apply leaves it to you", entities, count(len(seen), "value"))}, true
	}
	var missing []string
	for _, v := range seen {
		if !slices.ContainsFunc(def.Enum, func(e any) bool { return fmt.Sprint(e) == v }) {
			missing = append(missing, v)
		}
	}
	if len(missing) == 0 {
		return Change{}, false
	}
	return Change{Path: path, Kind: "enum-values", Value: missing, Applies: true,
		Reason: fmt.Sprintf("the catalog uses values the enum lacks (%d entities); Port refuses them until added", countOf(ps.values, missing))}, true
}

func countOf(values map[string]int, keys []string) int {
	n := 0
	for _, k := range keys {
		n += values[k]
	}
	return n
}

// newRelation proposes a relation with the target blueprint whose mapped
// identifiers contain the targets, many when an entity has several.
func (c *Collector) newRelation(name string, rs *relStats) Change {
	ch := Change{Path: "relations." + name, Kind: "relation"}
	votes := map[string]int{}
	for t := range rs.targets {
		for bp, ids := range c.ids {
			if ids[t] {
				votes[bp]++
			}
		}
	}
	target, best := "", 0
	for _, bp := range slices.Sorted(maps.Keys(votes)) {
		if votes[bp] > best {
			target, best = bp, votes[bp]
		}
	}
	if target == "" {
		ch.Reason = fmt.Sprintf("the mapping fills it in %d entities, but its targets are no mapped entity of any blueprint: add it by hand with the right target", rs.filled)
		return ch
	}
	ch.Value = map[string]any{"title": title(name), "target": target, "required": false, "many": rs.maxTargets > 1}
	ch.Applies = true
	ch.Reason = fmt.Sprintf("the mapping fills it in %d entities (up to %d targets), all of blueprint %q; Port refuses entities with a relation the blueprint lacks", rs.filled, rs.maxTargets, target)
	return ch
}

// Patch builds the PATCH body of the changes that apply, against the
// blueprint as it is now: its whole schema and relations with the
// additions. It returns nil when none applies.
func Patch(cur port.Blueprint, changes []Change) map[string]any {
	schema := cur.Schema
	schema.Properties = map[string]port.Property{}
	for k, v := range cur.Schema.Properties {
		schema.Properties[k] = v
	}
	rels := map[string]port.Relation{}
	for k, v := range cur.Relations {
		rels[k] = v
	}
	var touchedSchema, touchedRels bool
	for _, ch := range changes {
		if !ch.Applies {
			continue
		}
		switch ch.Kind {
		case "property":
			var p port.Property
			if _, exists := schema.Properties[pathName(ch.Path, "schema.properties.")]; exists {
				continue
			}
			if remarshal(ch.Value, &p) == nil {
				schema.Properties[pathName(ch.Path, "schema.properties.")] = p
				touchedSchema = true
			}
		case "enum-values":
			name := pathName(ch.Path, "schema.properties.")
			name = name[:len(name)-len(".enum")]
			p, ok := schema.Properties[name]
			values, _ := ch.Value.([]string)
			if !ok || len(p.Enum) == 0 {
				continue // changed since the plan: the enum is gone
			}
			p.Enum = slices.Clone(p.Enum)
			for _, v := range values {
				if !slices.ContainsFunc(p.Enum, func(e any) bool { return fmt.Sprint(e) == v }) {
					p.Enum = append(p.Enum, v)
					touchedSchema = true
				}
			}
			schema.Properties[name] = p
		case "relation":
			var r port.Relation
			if _, exists := rels[pathName(ch.Path, "relations.")]; exists {
				continue
			}
			if remarshal(ch.Value, &r) == nil {
				rels[pathName(ch.Path, "relations.")] = r
				touchedRels = true
			}
		}
	}
	if !touchedSchema && !touchedRels {
		return nil
	}
	patch := map[string]any{}
	if touchedSchema {
		patch["schema"] = schema
	}
	if touchedRels {
		patch["relations"] = rels
	}
	return patch
}

func pathName(path, prefix string) string { return path[len(prefix):] }

func remarshal(in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// serverKeys are blueprint keys Port sets on every write.
var serverKeys = []string{"updatedAt", "updatedBy"}

// Superset reports whether the blueprint after keeps everything before had:
// every key and value of before (as JSON) is in after, lists keep their
// items, nothing is removed or changed (Port's own updatedAt/updatedBy
// aside). It is the check --apply makes on the result.
func Superset(before, after port.Blueprint) error {
	var b, a map[string]any
	if err := remarshal(before, &b); err != nil {
		return err
	}
	if err := remarshal(after, &a); err != nil {
		return err
	}
	for _, k := range serverKeys {
		delete(b, k)
		delete(a, k)
	}
	return superset("", b, a)
}

func superset(path string, before, after any) error {
	switch b := before.(type) {
	case map[string]any:
		a, ok := after.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: was an object, is %s", orRoot(path), typeOf(after))
		}
		for k, v := range b {
			av, ok := a[k]
			if !ok {
				return fmt.Errorf("%s.%s: removed", orRoot(path), k)
			}
			if err := superset(path+"."+k, v, av); err != nil {
				return err
			}
		}
		return nil
	case []any:
		a, ok := after.([]any)
		if !ok {
			return fmt.Errorf("%s: was a list, is %s", orRoot(path), typeOf(after))
		}
		for _, v := range b {
			if !slices.ContainsFunc(a, func(x any) bool { return reflect.DeepEqual(x, v) }) {
				return fmt.Errorf("%s: %v removed", orRoot(path), v)
			}
		}
		return nil
	}
	if !reflect.DeepEqual(before, after) {
		return fmt.Errorf("%s: %v changed to %v", orRoot(path), before, after)
	}
	return nil
}

func orRoot(p string) string {
	if p == "" {
		return "(blueprint)"
	}
	return p[1:]
}

// count formats "1 value", "3 values".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// title makes "dependsOnComponent" into "Depends On Component".
func title(name string) string {
	var out []rune
	for i, r := range name {
		if i == 0 && r >= 'a' && r <= 'z' {
			r -= 'a' - 'A'
		} else if r >= 'A' && r <= 'Z' && i > 0 {
			out = append(out, ' ')
		}
		out = append(out, r)
	}
	return string(out)
}
