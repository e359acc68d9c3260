package mapping

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Port's defaults for the global port-app-config flags (Ocean's
// PortAppConfig model).
const (
	DefaultCreateMissingRelatedEntities = true
	DefaultDeleteDependentEntities      = true
	DefaultEnableMergeEntity            = true
	DefaultEntityDeletionThreshold      = 0.9
	defaultItemsToParseName             = "item"
)

// Config is a parsed port-app-config document.
type Config struct {
	// Name is where the document came from (a file path), used in errors.
	Name      string
	Resources []Resource

	CreateMissingRelatedEntities bool
	DeleteDependentEntities      bool
	EnableMergeEntity            bool
	// EntityDeletionThreshold is the largest share (0..1) of the owned
	// entities one plan may delete (see plan.Guard): 0 forbids deletion, 1
	// sets no limit; absent means DefaultEntityDeletionThreshold.
	EntityDeletionThreshold float64
}

// Resource is one entry of `resources`: which Backstage kind it selects and
// how entities of that kind become Port entities.
type Resource struct {
	// Kind is the Backstage kind as written (matched case-insensitively).
	// "*" is a portbridge extension: every kind no other resource names.
	Kind string
	// Selector is the jq expression in selector.query; it must yield a boolean.
	Selector string
	// ItemsToParse, when set, is a jq expression yielding an array; each
	// element is mapped as its own entity with the element under
	// ItemsToParseName (default "item").
	ItemsToParse                  string
	ItemsToParseName              string
	ItemsToParseTopLevelTransform bool
	Mappings                      EntityMapping

	line   int                // line of the resource in the document
	pos    map[string]yamlPos // jq field path -> position of its text
	keyPos map[string]yamlPos // field path -> position of its key
	styles map[string]yaml.Style
	doc    *source // the document's text, for positions inside expressions
}

// FieldPosition returns where a field of the resource is written: the
// position of its key ("properties.name" points at `name:`), or of its
// value when it has no key of its own ("identifier.combinator"), or the
// resource's line.
func (r *Resource) FieldPosition(field string) Position {
	if p, ok := r.keyPos[field]; ok {
		return Position{p.line, p.col}
	}
	if p, ok := r.pos[field]; ok {
		return Position{p.line, p.col}
	}
	return Position{Line: r.line}
}

// ValuePosition returns where the jq expression of a field starts (the
// first character of a block scalar's content is on the next line), or
// FieldPosition when the field has no expression.
func (r *Resource) ValuePosition(field string) Position {
	if p, ok := r.pos[field]; ok {
		return Position{p.line, p.col}
	}
	return r.FieldPosition(field)
}

// ExprPosition returns the position of byte offset off of a field's jq
// expression as written in the document (decoded text, before the
// single-quote normalisation).
func (r *Resource) ExprPosition(field string, off int) Position {
	p, ok := r.pos[field]
	if !ok {
		return r.FieldPosition(field)
	}
	raw, _ := r.rawExpr(field)
	return r.doc.position(Position{p.line, p.col}, r.styles[field], raw, off)
}

// rawExpr returns a field's jq expression as written (a leaf of a template
// for identifier, team and relations given as search queries).
func (r *Resource) rawExpr(field string) (string, bool) {
	m := &r.Mappings
	switch {
	case field == "selector.query":
		return r.Selector, true
	case field == "itemsToParse":
		return r.ItemsToParse, true
	case field == "title":
		return m.Title, true
	case field == "blueprint":
		return m.Blueprint, true
	case field == "icon":
		return m.Icon, true
	case strings.HasPrefix(field, "properties."):
		v, ok := m.Properties[strings.TrimPrefix(field, "properties.")]
		return v, ok
	}
	root, rest, _ := strings.Cut(field, ".")
	var v any
	switch {
	case strings.HasPrefix(field, "identifier"):
		v, rest = m.Identifier, strings.TrimPrefix(field, "identifier")
	case strings.HasPrefix(field, "team"):
		v, rest = m.Team, strings.TrimPrefix(field, "team")
	case root == "relations":
		name, sub, _ := strings.Cut(rest, ".")
		name, idx, hasIdx := strings.Cut(name, "[")
		v = m.Relations[name]
		rest = sub
		if hasIdx {
			rest = "[" + idx
			if sub != "" {
				rest += "." + sub
			}
		}
	default:
		return "", false
	}
	return templateLeaf(v, strings.TrimPrefix(rest, "."))
}

// templateLeaf follows a path like "rules[0].value" into a search-query
// template and returns the jq expression there.
func templateLeaf(v any, path string) (string, bool) {
	for path != "" {
		var key string
		if strings.HasPrefix(path, "[") {
			end := strings.IndexByte(path, ']')
			if end < 0 {
				return "", false
			}
			i, err := strconv.Atoi(path[1:end])
			list, ok := v.([]any)
			if err != nil || !ok || i < 0 || i >= len(list) {
				return "", false
			}
			v, path = list[i], strings.TrimPrefix(path[end+1:], ".")
			continue
		}
		key, path, _ = strings.Cut(path, ".")
		if k, idx, ok := strings.Cut(key, "["); ok {
			key, path = k, "["+idx+func() string {
				if path != "" {
					return "." + path
				}
				return ""
			}()
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		v = obj[key]
	}
	s, ok := v.(string)
	return s, ok
}

// EntityMapping is port.entity.mappings. Identifier, Team and relation values
// are either a jq expression (string) or a search-query object whose string
// leaves are jq expressions (map[string]any / []any trees), as in Port.
type EntityMapping struct {
	Identifier any
	Title      string
	Blueprint  string
	Icon       string
	Team       any
	Properties map[string]string
	Relations  map[string]any
}

type yamlPos struct{ line, col int }

// ConfigErrors is every problem found in a port-app-config document, in
// document order. Load and New return a single *ConfigError when there is
// only one.
type ConfigErrors []*ConfigError

func (e ConfigErrors) Error() string {
	parts := make([]string, len(e))
	for i, c := range e {
		parts[i] = c.Error()
	}
	return strings.Join(parts, "\n")
}

// Unwrap lets errors.As find each *ConfigError.
func (e ConfigErrors) Unwrap() []error {
	out := make([]error, len(e))
	for i, c := range e {
		out[i] = c
	}
	return out
}

// joinConfigErrors returns nil, the only error, or all of them in
// document order.
func joinConfigErrors(errs []*ConfigError) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	sort.SliceStable(errs, func(i, j int) bool {
		if errs[i].Line != errs[j].Line {
			return errs[i].Line < errs[j].Line
		}
		return errs[i].Column < errs[j].Column
	})
	return ConfigErrors(errs)
}

// ConfigError is a problem in a port-app-config document, with its position.
type ConfigError struct {
	File   string
	Line   int
	Column int
	Key    string // the offending key or field path, when there is one
	Msg    string
}

func (e *ConfigError) Error() string {
	var b bytes.Buffer
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load parses a port-app-config YAML document in Port's format. name is used
// in errors (a file path). Every problem is reported (a ConfigErrors when
// there are several), each with its line and column: unknown keys, wrong
// types, missing fields. Expressions are not compiled here; New does that.
func Load(data []byte, name string) (*Config, error) {
	if name == "" {
		name = "port-app-config"
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		pos, msg := syntaxErrorPosition(data, err)
		return nil, &ConfigError{File: name, Line: pos.Line, Column: pos.Column, Msg: "invalid YAML: " + msg}
	}
	p := &loader{name: name, src: newSource(data)}
	cfg := &Config{
		Name:                         name,
		CreateMissingRelatedEntities: DefaultCreateMissingRelatedEntities,
		DeleteDependentEntities:      DefaultDeleteDependentEntities,
		EnableMergeEntity:            DefaultEnableMergeEntity,
		EntityDeletionThreshold:      DefaultEntityDeletionThreshold,
	}
	if len(doc.Content) == 0 {
		return nil, &ConfigError{File: name, Msg: "document is empty"}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, p.errAt(root, "", "the document must be a mapping with a `resources` list")
	}
	var sawResources bool
	_ = p.eachKey(root, "", func(key string, k, v *yaml.Node) error {
		switch key {
		case "resources":
			sawResources = true
			return p.resources(cfg, v)
		case "createMissingRelatedEntities":
			return p.boolean(v, key, &cfg.CreateMissingRelatedEntities)
		case "deleteDependentEntities":
			return p.boolean(v, key, &cfg.DeleteDependentEntities)
		case "enableMergeEntity":
			return p.boolean(v, key, &cfg.EnableMergeEntity)
		case "entityDeletionThreshold":
			if isNull(v) {
				return nil
			}
			f, err := strconv.ParseFloat(v.Value, 64)
			if v.Kind != yaml.ScalarNode || err != nil || f < 0 || f > 1 {
				return p.errAt(v, key, "must be a number between 0 and 1")
			}
			cfg.EntityDeletionThreshold = f
			return nil
		}
		return p.errAt(k, key, "unknown key")
	})
	if !sawResources {
		_ = p.errAt(root, "resources", "missing; the document must list resources")
	}
	if err := joinConfigErrors(p.errs); err != nil {
		return nil, err
	}
	return cfg, nil
}

// loader reads one document, recording every problem and carrying on.
type loader struct {
	name string
	src  *source
	errs []*ConfigError
}

// errAt records a problem at n and returns it (callers return it to skip
// what depends on the broken part).
func (p *loader) errAt(n *yaml.Node, key, msg string) error {
	e := &ConfigError{File: p.name, Line: n.Line, Column: n.Column, Key: key, Msg: msg}
	p.errs = append(p.errs, e)
	return e
}

// eachKey calls fn for every key of a mapping node, rejecting duplicates.
// It goes on after a key whose fn fails (the problem is recorded) and
// returns the first failure.
func (p *loader) eachKey(n *yaml.Node, path string, fn func(key string, k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errAt(n, path, "must be a mapping")
	}
	var first error
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			if err := p.errAt(k, path, "keys must be strings"); first == nil {
				first = err
			}
			continue
		}
		full := joinPath(path, k.Value)
		if seen[k.Value] {
			if err := p.errAt(k, full, "duplicate key"); first == nil {
				first = err
			}
			continue
		}
		seen[k.Value] = true
		if err := fn(k.Value, k, v); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func (p *loader) boolean(v *yaml.Node, key string, dst *bool) error {
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
		return p.errAt(v, key, "must be true or false")
	}
	*dst = v.Value == "true" || v.Value == "True" || v.Value == "TRUE"
	return nil
}

// scalar reads a scalar (string, number or boolean text) as jq source.
func (p *loader) scalar(v *yaml.Node, key string) (string, error) {
	if v.Kind != yaml.ScalarNode {
		return "", p.errAt(v, key, "must be a jq expression (a string)")
	}
	if isNull(v) {
		return "", nil
	}
	return v.Value, nil
}

func (p *loader) resources(cfg *Config, v *yaml.Node) error {
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		return p.errAt(v, "resources", "must be a list")
	}
	var first error
	for i, rn := range v.Content {
		r, err := p.resource(rn, fmt.Sprintf("resources[%d]", i))
		if err != nil && first == nil {
			first = err
		}
		cfg.Resources = append(cfg.Resources, r)
	}
	return first
}

func (p *loader) resource(n *yaml.Node, path string) (Resource, error) {
	r := Resource{
		line:                          n.Line,
		pos:                           map[string]yamlPos{},
		keyPos:                        map[string]yamlPos{},
		styles:                        map[string]yaml.Style{},
		doc:                           p.src,
		ItemsToParseName:              defaultItemsToParseName,
		ItemsToParseTopLevelTransform: true,
	}
	var sawPort bool
	expr := func(v *yaml.Node, key, field string, dst *string) error {
		s, err := p.scalar(v, key)
		if err != nil {
			return err
		}
		*dst = s
		r.pos[field] = yamlPos{v.Line, v.Column}
		r.styles[field] = v.Style
		return nil
	}
	err := p.eachKey(n, path, func(key string, k, v *yaml.Node) error {
		full := joinPath(path, key)
		r.keyPos[key] = yamlPos{k.Line, k.Column}
		switch key {
		case "kind":
			if v.Kind != yaml.ScalarNode || v.Value == "" {
				return p.errAt(v, full, "must be a non-empty string")
			}
			r.Kind = v.Value
			return nil
		case "selector":
			return p.eachKey(v, full, func(key string, k, v *yaml.Node) error {
				if key != "query" {
					return p.errAt(k, joinPath(full, key), "unknown key")
				}
				return expr(v, joinPath(full, key), "selector.query", &r.Selector)
			})
		case "port":
			sawPort = true
			return p.portSection(&r, v, full, expr)
		}
		return p.errAt(k, full, "unknown key")
	})
	missing := func(cond bool, key, msg string) {
		if cond {
			if e := p.errAt(n, joinPath(path, key), msg); err == nil {
				err = e
			}
		}
	}
	// A field with a problem of its own already is not also "missing".
	missing(r.Kind == "" && !p.hasErr(joinPath(path, "kind")), "kind", "missing")
	missing(r.Selector == "" && !p.hasErr(joinPath(path, "selector")), "selector.query", "missing (use 'true' to select every entity)")
	missing(!sawPort, "port", "missing")
	if sawPort && !p.hasErr(joinPath(path, "port.entity")) {
		missing(r.Mappings.Identifier == nil, "port.entity.mappings.identifier", "missing")
		missing(r.Mappings.Blueprint == "", "port.entity.mappings.blueprint", "missing")
	}
	return r, err
}

// hasErr reports whether a problem was recorded for key or a key under it.
func (p *loader) hasErr(key string) bool {
	for _, e := range p.errs {
		if e.Key == key || strings.HasPrefix(e.Key, key+".") || strings.HasPrefix(e.Key, key+"[") {
			return true
		}
	}
	return false
}

type exprFunc func(v *yaml.Node, key, field string, dst *string) error

func (p *loader) portSection(r *Resource, n *yaml.Node, path string, expr exprFunc) error {
	var sawEntity bool
	err := p.eachKey(n, path, func(key string, k, v *yaml.Node) error {
		full := joinPath(path, key)
		switch key {
		case "entity":
			sawEntity = true
			return p.eachKey(v, full, func(key string, k, v *yaml.Node) error {
				if key != "mappings" {
					return p.errAt(k, joinPath(full, key), "unknown key")
				}
				return p.mappings(r, v, joinPath(full, key), expr)
			})
		case "itemsToParse":
			return expr(v, full, "itemsToParse", &r.ItemsToParse)
		case "itemsToParseName":
			if v.Kind != yaml.ScalarNode || v.Value == "" {
				return p.errAt(v, full, "must be a non-empty string")
			}
			r.ItemsToParseName = v.Value
			return nil
		case "itemsToParseTopLevelTransform":
			return p.boolean(v, full, &r.ItemsToParseTopLevelTransform)
		}
		return p.errAt(k, full, "unknown key")
	})
	if err == nil && !sawEntity {
		err = p.errAt(n, joinPath(path, "entity.mappings"), "missing")
	}
	return err
}

func (p *loader) mappings(r *Resource, n *yaml.Node, path string, expr exprFunc) error {
	m := &r.Mappings
	return p.eachKey(n, path, func(key string, k, v *yaml.Node) error {
		full := joinPath(path, key)
		r.keyPos[key] = yamlPos{k.Line, k.Column}
		switch key {
		case "identifier", "team":
			t, err := p.template(r, v, full, key)
			if err != nil {
				return err
			}
			if key == "identifier" {
				m.Identifier = t
			} else {
				m.Team = t
			}
			return nil
		case "title":
			return expr(v, full, key, &m.Title)
		case "blueprint":
			return expr(v, full, key, &m.Blueprint)
		case "icon":
			return expr(v, full, key, &m.Icon)
		case "properties":
			m.Properties = map[string]string{}
			if isNull(v) {
				return nil
			}
			return p.eachKey(v, full, func(key string, k, v *yaml.Node) error {
				r.keyPos["properties."+key] = yamlPos{k.Line, k.Column}
				var s string
				if err := expr(v, joinPath(full, key), "properties."+key, &s); err != nil {
					return err
				}
				m.Properties[key] = s
				return nil
			})
		case "relations":
			m.Relations = map[string]any{}
			if isNull(v) {
				return nil
			}
			return p.eachKey(v, full, func(key string, k, v *yaml.Node) error {
				r.keyPos["relations."+key] = yamlPos{k.Line, k.Column}
				t, err := p.template(r, v, joinPath(full, key), "relations."+key)
				if err != nil {
					return err
				}
				m.Relations[key] = t
				return nil
			})
		}
		return p.errAt(k, full, "unknown key")
	})
}

// template reads a jq expression or a search-query tree (objects and lists
// whose string leaves are jq expressions).
func (p *loader) template(r *Resource, n *yaml.Node, path, field string) (any, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if isNull(n) {
			return nil, nil
		}
		r.pos[field] = yamlPos{n.Line, n.Column}
		r.styles[field] = n.Style
		return n.Value, nil
	case yaml.MappingNode:
		out := map[string]any{}
		err := p.eachKey(n, path, func(key string, k, v *yaml.Node) error {
			t, err := p.template(r, v, joinPath(path, key), field+"."+key)
			out[key] = t
			return err
		})
		return out, err
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		var first error
		for i, c := range n.Content {
			suffix := fmt.Sprintf("[%d]", i)
			t, err := p.template(r, c, path+suffix, field+suffix)
			if err != nil && first == nil {
				first = err
			}
			out = append(out, t)
		}
		return out, first
	}
	return nil, p.errAt(n, path, "must be a jq expression or a search query object")
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
