package mapping

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"

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
	styles map[string]yaml.Style
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
// in errors (a file path). Unknown keys are errors naming the key and line.
// Expressions are not compiled here; New does that.
func Load(data []byte, name string) (*Config, error) {
	if name == "" {
		name = "port-app-config"
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &ConfigError{File: name, Msg: "invalid YAML: " + err.Error()}
	}
	p := &loader{name: name}
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
	err := p.eachKey(root, "", func(key string, k, v *yaml.Node) error {
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
	if err != nil {
		return nil, err
	}
	if !sawResources {
		return nil, p.errAt(root, "resources", "missing; the document must list resources")
	}
	return cfg, nil
}

type loader struct{ name string }

func (p *loader) errAt(n *yaml.Node, key, msg string) error {
	return &ConfigError{File: p.name, Line: n.Line, Column: n.Column, Key: key, Msg: msg}
}

// eachKey calls fn for every key of a mapping node, rejecting duplicates.
func (p *loader) eachKey(n *yaml.Node, path string, fn func(key string, k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errAt(n, path, "must be a mapping")
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return p.errAt(k, path, "keys must be strings")
		}
		full := joinPath(path, k.Value)
		if seen[k.Value] {
			return p.errAt(k, full, "duplicate key")
		}
		seen[k.Value] = true
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
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
	for i, rn := range v.Content {
		r, err := p.resource(rn, fmt.Sprintf("resources[%d]", i))
		if err != nil {
			return err
		}
		cfg.Resources = append(cfg.Resources, r)
	}
	return nil
}

func (p *loader) resource(n *yaml.Node, path string) (Resource, error) {
	r := Resource{
		line:                          n.Line,
		pos:                           map[string]yamlPos{},
		styles:                        map[string]yaml.Style{},
		ItemsToParseName:              defaultItemsToParseName,
		ItemsToParseTopLevelTransform: true,
	}
	var sawSelector, sawPort bool
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
		switch key {
		case "kind":
			if v.Kind != yaml.ScalarNode || v.Value == "" {
				return p.errAt(v, full, "must be a non-empty string")
			}
			r.Kind = v.Value
			return nil
		case "selector":
			sawSelector = true
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
	if err != nil {
		return r, err
	}
	switch {
	case r.Kind == "":
		return r, p.errAt(n, joinPath(path, "kind"), "missing")
	case !sawSelector || r.Selector == "":
		return r, p.errAt(n, joinPath(path, "selector.query"), "missing (use 'true' to select every entity)")
	case !sawPort:
		return r, p.errAt(n, joinPath(path, "port"), "missing")
	case r.Mappings.Identifier == nil:
		return r, p.errAt(n, joinPath(path, "port.entity.mappings.identifier"), "missing")
	case r.Mappings.Blueprint == "":
		return r, p.errAt(n, joinPath(path, "port.entity.mappings.blueprint"), "missing")
	}
	return r, nil
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
		for i, c := range n.Content {
			suffix := fmt.Sprintf("[%d]", i)
			t, err := p.template(r, c, path+suffix, field+suffix)
			if err != nil {
				return nil, err
			}
			out = append(out, t)
		}
		return out, nil
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
