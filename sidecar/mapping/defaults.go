package mapping

import (
	_ "embed"
	"encoding/json"
	"fmt"

	"github.com/portbridge/portbridge/sidecar/port"
)

//go:embed defaults/port-app-config.yaml
var defaultMappingYAML []byte

//go:embed defaults/blueprints.json
var defaultBlueprintsJSON []byte

// DefaultMappingYAML returns the embedded default mapping document.
func DefaultMappingYAML() []byte { return append([]byte(nil), defaultMappingYAML...) }

// DefaultConfig returns the embedded corrected default mapping. Each call
// returns a fresh copy.
func DefaultConfig() *Config {
	cfg, err := Load(defaultMappingYAML, "embedded:sidecar/mapping/defaults/port-app-config.yaml")
	if err != nil {
		panic(fmt.Sprintf("mapping: the embedded default mapping does not load: %v", err))
	}
	return cfg
}

// DefaultBlueprints returns the embedded default blueprints: component, api,
// resource, system, domain, group, user, template, location and
// backstageEntity (for custom kinds). Each call returns a fresh copy.
func DefaultBlueprints() []port.Blueprint {
	var bps []port.Blueprint
	if err := json.Unmarshal(defaultBlueprintsJSON, &bps); err != nil {
		panic(fmt.Sprintf("mapping: the embedded default blueprints do not decode: %v", err))
	}
	return bps
}
