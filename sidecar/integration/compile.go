package integration

import (
	"context"
	"fmt"
	"slices"

	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
)

// BlueprintReader reads blueprints from Port (port.Client).
type BlueprintReader interface {
	GetBlueprint(ctx context.Context, id string) (*port.Blueprint, error)
}

// Compiler returns the Options.Compile of a sidecar: it loads an
// integration's config as a port-app-config, checks it against the
// blueprints it writes as Port has them now (read on every call, so a
// blueprint added in Port's UI counts), and compiles it with opts (whose
// Blueprints fill in those Port does not have). A wrong mapping's error
// wraps ErrInvalidMapping; a blueprint that cannot be read is a passing
// error.
func Compiler(p BlueprintReader, opts mapping.Options, identifier string) func(context.Context, map[string]any) (*mapping.Mapper, error) {
	return func(ctx context.Context, doc map[string]any) (*mapping.Mapper, error) {
		mc, err := mapping.LoadDocument(doc, fmt.Sprintf("integration %s config in Port", identifier))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidMapping, err)
		}
		if len(mc.Resources) == 0 {
			// Most likely a mapping emptied by mistake: it would make every
			// entity the sidecar wrote stale.
			return nil, fmt.Errorf("%w: integration %s config in Port: resources is empty, so every Port entity this sidecar wrote would be deleted; give at least one resource", ErrInvalidMapping, identifier)
		}
		var inPort []port.Blueprint
		for _, bp := range mc.ManagedBlueprints() {
			got, err := p.GetBlueprint(ctx, bp)
			switch {
			case err == nil:
				inPort = append(inPort, *got)
			case port.IsNotFound(err):
			default:
				return nil, fmt.Errorf("read blueprint %s from Port to check the mapping: %w", bp, err)
			}
		}
		if err := mapping.CheckBlueprints(mc, inPort); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidMapping, err)
		}
		o := opts
		o.Blueprints = slices.Clone(inPort)
		for _, d := range opts.Blueprints {
			if !slices.ContainsFunc(inPort, func(b port.Blueprint) bool { return b.Identifier == d.Identifier }) {
				o.Blueprints = append(o.Blueprints, d)
			}
		}
		m, err := mapping.New(mc, o)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidMapping, err)
		}
		return m, nil
	}
}
