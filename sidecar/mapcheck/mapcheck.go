// Package mapcheck checks a port-app-config against the blueprints it will
// write to and against sample catalog entities, so that what Port would
// refuse at push time (422) shows before anything is pushed: properties and
// relations the blueprint lacks, required ones the mapping never sets,
// values whose type, format or enum cannot fit the blueprint property,
// identifiers that break Port's rule or collide, and identifier
// expressions that yield invalid identifiers for plausible catalog values.
//
// Every problem names the mapping file, line and column of the field it is
// about. Static checks need only the mapping and the blueprints; the rest
// evaluates the mapping over the sample.
package mapcheck

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/mail"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
)

// Severity of a Problem: an error is what Port would refuse or a mapping
// that loses data; a warning is what can go wrong with other catalog
// values.
type Severity string

const (
	Error   Severity = "error"
	Warning Severity = "warning"
)

// Problem is one finding, at a position in the mapping file.
type Problem struct {
	File     string   `json:"file"`
	Line     int      `json:"line,omitempty"`
	Column   int      `json:"column,omitempty"`
	Key      string   `json:"key,omitempty"`
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
	// Count is how many sample entities showed it (0 for static checks).
	Count int `json:"count,omitempty"`
	// Examples are refs of sample entities that showed it.
	Examples []string `json:"examples,omitempty"`
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
		if p.Column > 0 {
			fmt.Fprintf(&b, ":%d", p.Column)
		}
	}
	fmt.Fprintf(&b, ": %s: ", p.Severity)
	if p.Key != "" {
		b.WriteString(p.Key + ": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Input is what Check works on.
type Input struct {
	Config *mapping.Config
	// Blueprints are those that will exist when the mapping runs.
	Blueprints []port.Blueprint
	// BlueprintSource says where Blueprints came from, for messages
	// ("Port", "the embedded default blueprints", a file name).
	BlueprintSource string
	// Sample, when not nil, yields catalog entities to evaluate the mapping
	// over (as the catalog API returns them).
	Sample func(yield func(map[string]any) bool)
	// Options are the mapping's sandbox options (AllowEnv, Timeout);
	// Blueprints is set from the field above.
	Options mapping.Options
}

// Result is the outcome of Check.
type Result struct {
	Problems []Problem
	// Sampled is how many sample entities were mapped.
	Sampled int
	// Mapped is how many Port entities they produced.
	Mapped int
}

// Errors counts the problems of severity Error.
func (r Result) Errors() int {
	n := 0
	for _, p := range r.Problems {
		if p.Severity == Error {
			n++
		}
	}
	return n
}

// checker collects problems for one Check.
type checker struct {
	cfg  *mapping.Config
	bps  map[string]*port.Blueprint
	src  string
	list []*Problem
	agg  map[string]*Problem // aggregated sample findings by key
}

func (c *checker) add(p *Problem) { c.list = append(c.list, p) }

// at builds a problem at a field of resource i.
func (c *checker) at(i int, field string, pos mapping.Position, sev Severity, format string, args ...any) *Problem {
	r := &c.cfg.Resources[i]
	key := fmt.Sprintf("resources[%d] (kind %s)", i, r.Kind)
	if field != "" {
		key += " " + field
	}
	return &Problem{File: c.cfg.Name, Line: pos.Line, Column: pos.Column, Key: key, Severity: sev, Message: fmt.Sprintf(format, args...)}
}

// seen aggregates a sample finding: the first occurrence makes the
// problem, later ones count and add examples.
func (c *checker) seen(key, ref string, mk func() *Problem) {
	p, ok := c.agg[key]
	if !ok {
		p = mk()
		c.agg[key] = p
		c.add(p)
	}
	p.Count++
	if len(p.Examples) < 3 && ref != "" && !slices.Contains(p.Examples, ref) {
		p.Examples = append(p.Examples, ref)
	}
}

// Check runs every check and returns the problems in file order.
func Check(ctx context.Context, in Input) Result {
	c := &checker{cfg: in.Config, bps: map[string]*port.Blueprint{}, src: in.BlueprintSource, agg: map[string]*Problem{}}
	if c.src == "" {
		c.src = "the configured blueprints"
	}
	for i := range in.Blueprints {
		c.bps[in.Blueprints[i].Identifier] = &in.Blueprints[i]
	}
	for i := range in.Config.Resources {
		c.static(i)
	}
	var res Result
	if in.Sample != nil {
		res.Sampled, res.Mapped = c.evaluate(ctx, in)
	}
	for _, p := range c.list {
		if p.Count > 0 && p.Message != "" {
			p.Message = fmt.Sprintf("%s (%d of %d sample entities, e.g. %s)", p.Message, p.Count, res.Sampled, strings.Join(p.Examples, ", "))
		}
		res.Problems = append(res.Problems, *p)
	}
	sort.SliceStable(res.Problems, func(i, j int) bool {
		a, b := res.Problems[i], res.Problems[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return res
}

// static checks resource i against its blueprint when the blueprint is a
// constant.
func (c *checker) static(i int) {
	r := &c.cfg.Resources[i]
	m := &r.Mappings
	if id, ok := m.Identifier.(string); ok {
		if v, lit := mapping.Literal(id); lit {
			s, isStr := v.(string)
			switch {
			case !isStr:
				c.add(c.at(i, "identifier", r.ValuePosition("identifier"), Error, "the identifier is the constant %s, not a string: every entity is skipped", describe(v)))
			case mapping.ValidIdentifier(s) != nil:
				c.add(c.at(i, "identifier", r.ValuePosition("identifier"), Error, "%v", mapping.ValidIdentifier(s)))
			default:
				c.add(c.at(i, "identifier", r.ValuePosition("identifier"), Warning, "the identifier is the constant %q: every selected entity overwrites the same Port entity", s))
			}
		}
	}
	v, ok := mapping.Literal(m.Blueprint)
	name, isStr := v.(string)
	if !ok || !isStr {
		return // decided per entity: checked on the sample
	}
	bp := c.bps[name]
	if bp == nil {
		c.add(c.at(i, "blueprint", r.ValuePosition("blueprint"), Error, "blueprint %q does not exist in %s; known: %s", name, c.src, strings.Join(slices.Sorted(maps.Keys(c.bps)), ", ")))
		return
	}
	for _, prop := range slices.Sorted(maps.Keys(m.Properties)) {
		field := "properties." + prop
		def, ok := bp.Schema.Properties[prop]
		if !ok {
			c.add(c.at(i, field, r.FieldPosition(field), Error, "blueprint %q has no property %q, so Port refuses every entity of this resource (422)%s",
				name, prop, hintProperty(prop, bp)))
			continue
		}
		if lit, ok := mapping.Literal(m.Properties[prop]); ok && lit != nil {
			if msg := checkValue(def, lit); msg != "" {
				c.add(c.at(i, field, r.ValuePosition(field), Error, "the constant %s does not fit property %q of blueprint %q: %s", literal(lit), prop, name, msg))
			}
		}
	}
	for _, req := range bp.Schema.Required {
		if _, ok := m.Properties[req]; !ok {
			c.add(c.at(i, "properties", sectionPosition(r, "properties"), Error, "blueprint %q requires property %q, which this resource does not map: Port refuses the entities (422)", name, req))
		}
	}
	for _, rel := range slices.Sorted(maps.Keys(m.Relations)) {
		if _, ok := bp.Relations[rel]; !ok {
			field := "relations." + rel
			c.add(c.at(i, field, r.FieldPosition(field), Error, "blueprint %q has no relation %q, so Port refuses every entity of this resource (422); its relations: %s",
				name, rel, orNone(slices.Sorted(maps.Keys(bp.Relations)))))
		}
	}
	for _, rel := range slices.Sorted(maps.Keys(bp.Relations)) {
		if bp.Relations[rel].Required {
			if _, ok := m.Relations[rel]; !ok {
				c.add(c.at(i, "relations", sectionPosition(r, "relations"), Error, "blueprint %q requires relation %q, which this resource does not map: Port refuses the entities (422)", name, rel))
			}
		}
	}
}

// sectionPosition is where a resource's properties or relations are, or
// where its blueprint is named when it has none.
func sectionPosition(r *mapping.Resource, section string) mapping.Position {
	if p := r.FieldPosition(section); p.Column > 0 {
		return p
	}
	return r.ValuePosition("blueprint")
}

// literal formats a constant as jq would write it.
func literal(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

// hintProperty suggests what the author may have meant.
func hintProperty(prop string, bp *port.Blueprint) string {
	switch strings.ToLower(prop) {
	case "name", "title":
		return "; an entity's name is its title: map it with mappings.title (older Port mappings kept it in a property the current blueprints do not have)"
	case "identifier":
		return "; the identifier is mappings.identifier"
	}
	best, bestD := "", 3
	for p := range bp.Schema.Properties {
		if d := distance(strings.ToLower(prop), strings.ToLower(p)); d < bestD {
			best, bestD = p, d
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	return "; its properties: " + orNone(slices.Sorted(maps.Keys(bp.Schema.Properties)))
}

// checkValue says why v cannot be the value of a property defined as def,
// or "". Null is always accepted here (required properties are checked
// separately).
func checkValue(def port.Property, v any) string {
	if v == nil {
		return ""
	}
	if msg := checkType(def.Type, v); msg != "" {
		return msg
	}
	if len(def.Enum) > 0 && !slices.ContainsFunc(def.Enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
		return fmt.Sprintf("%s is not one of its enum values %s", describe(v), describeList(def.Enum))
	}
	if s, ok := v.(string); ok {
		if msg := checkFormat(def.Format, s); msg != "" {
			return msg
		}
	}
	if def.Type == "array" && def.Items != nil {
		item := port.Property{}
		item.Type, _ = def.Items["type"].(string)
		item.Format, _ = def.Items["format"].(string)
		item.Enum, _ = def.Items["enum"].([]any)
		for k, x := range v.([]any) {
			if msg := checkValue(item, x); msg != "" {
				return fmt.Sprintf("item %d: %s", k, msg)
			}
		}
	}
	return ""
}

func checkType(typ string, v any) string {
	want := map[string]func(any) bool{
		"string":  func(v any) bool { _, ok := v.(string); return ok },
		"number":  func(v any) bool { _, ok := v.(float64); return ok },
		"boolean": func(v any) bool { _, ok := v.(bool); return ok },
		"object":  func(v any) bool { _, ok := v.(map[string]any); return ok },
		"array":   func(v any) bool { _, ok := v.([]any); return ok },
	}[typ]
	if want == nil || want(v) {
		return ""
	}
	return fmt.Sprintf("the property is of type %s, the value is %s", typ, describe(v))
}

func checkFormat(format, s string) string {
	bad := ""
	switch format {
	case "url":
		if u, err := url.Parse(s); err != nil || u.Scheme == "" || u.Host == "" {
			bad = "an absolute URL"
		}
	case "email":
		if a, err := mail.ParseAddress(s); err != nil || a.Address != s {
			bad = "an e-mail address"
		}
	case "date-time":
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			bad = "an RFC 3339 date-time"
		}
	case "ipv4":
		if ip := net.ParseIP(s); ip == nil || ip.To4() == nil {
			bad = "an IPv4 address"
		}
	case "ipv6":
		if ip := net.ParseIP(s); ip == nil || ip.To4() != nil {
			bad = "an IPv6 address"
		}
	}
	if bad == "" {
		return ""
	}
	return fmt.Sprintf("the property has format %s, and %s is not %s", format, describe(s), bad)
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if len(x) > 60 {
			x = x[:57] + "..."
		}
		return fmt.Sprintf("the string %q", x)
	case float64:
		return fmt.Sprintf("the number %v", x)
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	case []any:
		return fmt.Sprintf("an array of %d", len(x))
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func describeList(vs []any) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprint(v)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
