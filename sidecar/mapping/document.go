package mapping

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/portbridge/portbridge/sidecar/port"
)

// Document returns a port-app-config YAML document as the JSON object Port
// keeps in an integration's config (what Port's mapping editor shows). The
// document must load (Load) first, so that Port never receives a mapping
// the sidecar itself refuses.
func Document(doc []byte, name string) (map[string]any, error) {
	if _, err := Load(doc, name); err != nil {
		return nil, err
	}
	var v any
	if err := yaml.Unmarshal(doc, &v); err != nil {
		return nil, &ConfigError{File: name, Msg: "invalid YAML: " + err.Error()}
	}
	n, err := normalizeYAML(v)
	if err != nil {
		return nil, &ConfigError{File: name, Msg: err.Error()}
	}
	m, ok := n.(map[string]any)
	if !ok {
		return nil, &ConfigError{File: name, Msg: "the document must be a mapping with a `resources` list"}
	}
	return m, nil
}

// LoadDocument parses a port-app-config held as a JSON object (an
// integration's config in Port). Errors name the key path; their line
// numbers count lines of the object rendered as indented JSON.
func LoadDocument(doc map[string]any, name string) (*Config, error) {
	if len(doc) == 0 {
		return nil, &ConfigError{File: name, Msg: "the config is empty: it has no resources"}
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, &ConfigError{File: name, Msg: "cannot encode: " + err.Error()}
	}
	return Load(b, name)
}

// CheckBlueprints checks a mapping against the blueprints it writes to, as
// Port has them: every resource whose blueprint is a constant must name an
// existing blueprint and only properties and relations that blueprint
// defines. Port would refuse every entity of a resource that fails this, so
// such a mapping is refused as a whole. Resources whose blueprint is a jq
// expression are checked per entity by Port. Every problem is reported,
// each naming the resource, its kind and the key.
func CheckBlueprints(cfg *Config, bps []port.Blueprint) error {
	byID := map[string]*port.Blueprint{}
	for i := range bps {
		byID[bps[i].Identifier] = &bps[i]
	}
	var errs []error
	bad := func(i int, key, format string, args ...any) {
		path := fmt.Sprintf("resources[%d].port.entity.mappings", i)
		if key != "" {
			path += "." + key
		}
		errs = append(errs, &ConfigError{File: cfg.Name, Line: cfg.Resources[i].line, Key: path,
			Msg: fmt.Sprintf("(kind %s) ", cfg.Resources[i].Kind) + fmt.Sprintf(format, args...)})
	}
	for i := range cfg.Resources {
		m := cfg.Resources[i].Mappings
		id := constString(normalizeQuotes(m.Blueprint))
		if id == "" {
			continue
		}
		bp := byID[id]
		if bp == nil {
			bad(i, "blueprint", "blueprint %q does not exist in Port", id)
			continue
		}
		for _, p := range sortedKeys(m.Properties) {
			if _, ok := bp.Schema.Properties[p]; !ok {
				bad(i, "properties."+p, "blueprint %s has no property %q (it has %s)", id, p, list(sortedKeys(bp.Schema.Properties)))
			}
		}
		for _, r := range sortedKeys(m.Relations) {
			if _, ok := bp.Relations[r]; !ok {
				bad(i, "relations."+r, "blueprint %s has no relation %q (it has %s)", id, r, list(sortedKeys(bp.Relations)))
			}
		}
	}
	return errors.Join(errs...)
}

func list(keys []string) string {
	if len(keys) == 0 {
		return "none"
	}
	const max = 12
	if len(keys) > max {
		return fmt.Sprintf("%q and %d more", slices.Clip(keys[:max]), len(keys)-max)
	}
	return fmt.Sprintf("%q", keys)
}
