package mapcheck

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/portbridge/portbridge/sidecar/mapping"
)

// maxProbeBases is how many sample entities per resource serve as the base
// of identifier probes.
const maxProbeBases = 2

// evaluate maps every sample entity and checks what comes out; it returns
// how many entities were sampled and how many Port entities they gave.
func (c *checker) evaluate(ctx context.Context, in Input) (sampled, mapped int) {
	opts := in.Options
	opts.Blueprints = in.Blueprints
	m, err := mapping.New(in.Config, opts)
	if err != nil {
		return 0, 0 // the mapping does not compile: reported by its own validation
	}
	owners := map[string]string{} // blueprint + identifier -> ref of the first entity
	bases := map[int][]map[string]any{}
	var links []link
	in.Sample(func(e map[string]any) bool {
		if ctx.Err() != nil {
			return false
		}
		sampled++
		ref := refOf(e)
		res := m.Map(ctx, e)
		mapped += len(res.Entities)
		c.results(ref, res)
		for _, x := range res.Entities {
			c.entity(x, ref)
			key := x.Blueprint + "\x00" + x.Identifier
			if first, dup := owners[key]; dup && first != ref {
				i := x.ResourceIndex
				r := &c.cfg.Resources[i]
				c.seen(fmt.Sprintf("dup\x00%d", i), ref, func() *Problem {
					return c.at(i, "identifier", r.ValuePosition("identifier"), Error,
						"entities map to an identifier another entity already has (%s and %s are both %q in blueprint %q): Port keeps only the last one written",
						first, ref, x.Identifier, x.Blueprint)
				})
			} else if !dup {
				owners[key] = ref
			}
			if len(bases[x.ResourceIndex]) < maxProbeBases && !x.SearchIdentifier {
				bases[x.ResourceIndex] = append(bases[x.ResourceIndex], e)
			}
			links = c.links(links, x, ref)
		}
		return true
	})
	c.dangling(links, owners)
	c.probe(ctx, m, bases)
	return sampled, mapped
}

// link is one relation target a mapped entity points at.
type link struct {
	resource          int
	relation, target  string
	blueprint, source string
}

// links appends the relation targets of x whose target blueprint is known.
func (c *checker) links(out []link, x mapping.Mapped, ref string) []link {
	bp := c.bps[x.Blueprint]
	if bp == nil {
		return out
	}
	for rel, v := range x.Entity.Relations {
		def, ok := bp.Relations[rel]
		if !ok {
			continue
		}
		var targets []any
		switch t := v.(type) {
		case string:
			targets = []any{t}
		case []any:
			targets = t
		}
		for _, t := range targets {
			if s, ok := t.(string); ok {
				out = append(out, link{resource: x.ResourceIndex, relation: rel, target: s, blueprint: def.Target, source: ref})
			}
		}
	}
	return out
}

// dangling reports relation targets that no sampled entity maps to: Port
// creates an empty placeholder entity for each when the mapping keeps
// createMissingRelatedEntities on (a Backstage owner written without a
// kind is a Group, so `owner: guest` points at group:default/guest even
// when only a user guest exists), and refuses the entity otherwise.
func (c *checker) dangling(links []link, owners map[string]string) {
	for _, l := range links {
		if _, ok := owners[l.blueprint+"\x00"+l.target]; ok {
			continue
		}
		i := l.resource
		r := &c.cfg.Resources[i]
		field := "relations." + l.relation
		c.seen(fmt.Sprintf("dangling\x00%d\x00%s", i, l.relation), l.source, func() *Problem {
			if c.cfg.CreateMissingRelatedEntities {
				return c.at(i, field, r.ValuePosition(field), Warning,
					"targets no entity of blueprint %q that the sample maps to (e.g. %q): with createMissingRelatedEntities Port creates an empty placeholder entity for each", l.blueprint, l.target)
			}
			return c.at(i, field, r.ValuePosition(field), Error,
				"targets no entity of blueprint %q that the sample maps to (e.g. %q): with createMissingRelatedEntities false Port refuses these entities (422)", l.blueprint, l.target)
		})
	}
}

// results records the skips and field warnings of one entity.
func (c *checker) results(ref string, res mapping.Result) {
	for _, w := range res.Skipped {
		if w.ResourceIndex < 0 {
			continue // not the mapping's fault (an entity without metadata)
		}
		i := w.ResourceIndex
		r := &c.cfg.Resources[i]
		c.seen(fmt.Sprintf("skip\x00%d\x00%s", i, w.Field), ref, func() *Problem {
			return c.at(i, w.Field, r.ValuePosition(w.Field), Error, "entities are skipped, nothing is pushed for them: %s", w.Message)
		})
	}
	for _, w := range res.Warnings {
		i := w.ResourceIndex
		r := &c.cfg.Resources[i]
		c.seen(fmt.Sprintf("warn\x00%d\x00%s", i, w.Field), ref, func() *Problem {
			return c.at(i, w.Field, r.ValuePosition(w.Field), Warning, "the field fails and is sent as null: %s", w.Message)
		})
	}
}

// entity checks one mapped entity against its blueprint.
func (c *checker) entity(x mapping.Mapped, ref string) {
	i := x.ResourceIndex
	r := &c.cfg.Resources[i]
	bp := c.bps[x.Blueprint]
	if bp == nil {
		c.seen(fmt.Sprintf("bp\x00%d\x00%s", i, x.Blueprint), ref, func() *Problem {
			return c.at(i, "blueprint", r.ValuePosition("blueprint"), Error, "entities map to blueprint %q, which does not exist in %s", x.Blueprint, c.src)
		})
		return
	}
	_, constBP := mapping.Literal(r.Mappings.Blueprint)
	for _, prop := range slices.Sorted(maps.Keys(x.Entity.Properties)) {
		field := "properties." + prop
		v := x.Entity.Properties[prop]
		def, ok := bp.Schema.Properties[prop]
		switch {
		case !ok && !constBP: // with a constant blueprint the static check said it
			c.seen(fmt.Sprintf("noprop\x00%d\x00%s\x00%s", i, bp.Identifier, prop), ref, func() *Problem {
				return c.at(i, field, r.FieldPosition(field), Error, "blueprint %q has no property %q: Port refuses these entities (422)", bp.Identifier, prop)
			})
		case !ok:
		case v == nil && slices.Contains(bp.Schema.Required, prop):
			c.seen(fmt.Sprintf("required\x00%d\x00%s", i, prop), ref, func() *Problem {
				return c.at(i, field, r.ValuePosition(field), Error, "the value is null, and blueprint %q requires property %q: Port refuses these entities (422)", bp.Identifier, prop)
			})
		default:
			if msg := checkValue(def, v); msg != "" {
				c.seen(fmt.Sprintf("type\x00%d\x00%s", i, prop), ref, func() *Problem {
					return c.at(i, field, r.ValuePosition(field), Error, "values do not fit property %q of blueprint %q, Port refuses these entities (422): %s", prop, bp.Identifier, msg)
				})
			}
		}
	}
	if constBP {
		return
	}
	for _, rel := range slices.Sorted(maps.Keys(x.Entity.Relations)) {
		if _, ok := bp.Relations[rel]; !ok {
			field := "relations." + rel
			c.seen(fmt.Sprintf("norel\x00%d\x00%s\x00%s", i, bp.Identifier, rel), ref, func() *Problem {
				return c.at(i, field, r.FieldPosition(field), Error, "blueprint %q has no relation %q: Port refuses these entities (422)", bp.Identifier, rel)
			})
		}
	}
}

// probeValue is a value Backstage accepts in free-text fields and Port
// does not accept in identifiers (a space, '#', '?').
const probeValue = "Probe value #1?"

// freeText lists catalog fields whose values Backstage does not restrict to
// identifier characters: titles, descriptions, annotation values, link
// titles and URLs, spec.type and spec.lifecycle (free strings), profile
// names and e-mails, tags ('#' is allowed in tags), location targets.
var freeText = []struct {
	path string
	set  func(e map[string]any)
}{
	{"metadata.title", func(e map[string]any) { meta(e)["title"] = probeValue }},
	{"metadata.description", func(e map[string]any) { meta(e)["description"] = probeValue }},
	{"metadata.annotations", func(e map[string]any) {
		ann, _ := meta(e)["annotations"].(map[string]any)
		out := map[string]any{"example.com/probe": probeValue}
		for k := range ann {
			out[k] = probeValue
		}
		meta(e)["annotations"] = out
	}},
	{"metadata.tags", func(e map[string]any) { meta(e)["tags"] = []any{"c#", "go"} }},
	{"metadata.links", func(e map[string]any) {
		meta(e)["links"] = []any{map[string]any{"url": "https://example.com/a b?c=d#e", "title": probeValue}}
	}},
	{"spec.type", func(e map[string]any) { spec(e)["type"] = probeValue }},
	{"spec.lifecycle", func(e map[string]any) { spec(e)["lifecycle"] = probeValue }},
	{"spec.profile", func(e map[string]any) {
		spec(e)["profile"] = map[string]any{"displayName": probeValue, "email": "probe value@example.com"}
	}},
	{"spec.target", func(e map[string]any) { spec(e)["target"] = "https://example.com/a b?c=d" }},
}

func meta(e map[string]any) map[string]any { return e["metadata"].(map[string]any) }

func spec(e map[string]any) map[string]any {
	s, ok := e["spec"].(map[string]any)
	if !ok {
		s = map[string]any{}
		e["spec"] = s
	}
	return s
}

// probe maps copies of sample entities with one free-text field set to a
// value Backstage allows and Port identifiers do not, and warns when the
// identifier then becomes invalid. Resources without sample entities are
// probed with a minimal entity of their kind.
func (c *checker) probe(ctx context.Context, m *mapping.Mapper, bases map[int][]map[string]any) {
	for i := range c.cfg.Resources {
		r := &c.cfg.Resources[i]
		list := bases[i]
		if len(list) == 0 && r.Kind != "*" {
			list = []map[string]any{syntheticEntity(r.Kind)}
		}
		// Only bases that map to a valid identifier tell anything.
		list = slices.DeleteFunc(slices.Clone(list), func(e map[string]any) bool { return !mapsTo(ctx, m, e, i) })
		c.probeNamespace(ctx, m, i, list)
	fields:
		for _, ft := range freeText {
			for _, base := range list {
				e := deepCopy(base)
				ft.set(e)
				res := m.Map(ctx, e)
				for _, w := range res.Skipped {
					if w.ResourceIndex != i || w.Field != "identifier" || !strings.Contains(w.Message, "identifier") {
						continue
					}
					c.add(c.at(i, "identifier", r.ValuePosition("identifier"), Warning,
						"the identifier can be invalid for Port: it depends on %s, which Backstage lets hold any text (with %s set to such text: %s)",
						ft.path, ft.path, w.Message))
					continue fields
				}
			}
		}
	}
}

// syntheticEntity is an entity of kind with every free-text field set to
// a plain value, the base of probes for resources the sample has no entity
// for.
func syntheticEntity(kind string) map[string]any {
	return map[string]any{"apiVersion": "backstage.io/v1alpha1", "kind": kind,
		"metadata": map[string]any{"name": "probe", "namespace": "default", "title": "probe", "description": "probe",
			"annotations": map[string]any{"example.com/probe": "probe"}, "tags": []any{"go"},
			"links": []any{map[string]any{"url": "https://example.com/", "title": "probe"}}},
		"spec": map[string]any{"type": "service", "lifecycle": "production", "owner": "group:default/probe",
			"profile": map[string]any{"displayName": "probe", "email": "probe@example.com"}, "target": "https://example.com/"}}
}

// mapsTo reports whether e maps to a Port entity with a plain identifier
// through resource i.
func mapsTo(ctx context.Context, m *mapping.Mapper, e map[string]any, i int) bool {
	if _, ok := e["metadata"].(map[string]any); !ok {
		return false
	}
	for _, x := range m.Map(ctx, e).Entities {
		if x.ResourceIndex == i && !x.SearchIdentifier {
			return true
		}
	}
	return false
}

// probeNamespace warns when the identifier stays the same for an entity
// moved to another namespace: two entities of the same name in different
// namespaces would then be one Port entity.
func (c *checker) probeNamespace(ctx context.Context, m *mapping.Mapper, i int, list []map[string]any) {
	idOf := func(e map[string]any) (string, bool) {
		for _, x := range m.Map(ctx, e).Entities {
			if x.ResourceIndex == i && !x.SearchIdentifier {
				return x.Identifier, true
			}
		}
		return "", false
	}
	for _, base := range list {
		a, ok := idOf(base)
		if !ok {
			continue
		}
		e := deepCopy(base)
		meta(e)["namespace"] = "portbridge-probe"
		if b, ok := idOf(e); ok && a == b {
			r := &c.cfg.Resources[i]
			c.add(c.at(i, "identifier", r.ValuePosition("identifier"), Warning,
				"the identifier does not change with metadata.namespace (%q in both): entities of the same name in two namespaces become one Port entity; Port's integration uses .metadata.identifier (kind:namespace/name)", a))
		}
		return
	}
}

func deepCopy(v map[string]any) map[string]any {
	var cp func(any) any
	cp = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			out := make(map[string]any, len(x))
			for k, e := range x {
				out[k] = cp(e)
			}
			return out
		case []any:
			out := make([]any, len(x))
			for i, e := range x {
				out[i] = cp(e)
			}
			return out
		}
		return v
	}
	return cp(v).(map[string]any)
}

// refOf is the entity's ref (kind:namespace/name) for messages.
func refOf(e map[string]any) string {
	kind, _ := e["kind"].(string)
	md, _ := e["metadata"].(map[string]any)
	name, _ := md["name"].(string)
	ns, _ := md["namespace"].(string)
	if ns == "" {
		ns = "default"
	}
	return strings.ToLower(kind) + ":" + ns + "/" + name
}
