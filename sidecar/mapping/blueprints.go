package mapping

import (
	"context"
	"fmt"

	"github.com/portbridge/portbridge/sidecar/port"
)

// BlueprintAPI is what blueprint setup needs from Port; *port.Client
// satisfies it.
type BlueprintAPI interface {
	// GetBlueprint returns the blueprint; a missing one gives an error for
	// which port.IsNotFound is true.
	GetBlueprint(ctx context.Context, id string) (*port.Blueprint, error)
	// CreateBlueprints creates blueprints without their relations first and
	// then adds the relations, so blueprints may refer to each other.
	CreateBlueprints(ctx context.Context, bps []port.Blueprint) error
}

// EnsureBlueprints creates those of bps that do not exist in Port yet
// (initializePortResources) and returns their identifiers. It never changes
// a blueprint that exists, so a user's edits survive. Unlike Ocean, which
// skips the whole set when any blueprint exists, it creates the missing ones.
func EnsureBlueprints(ctx context.Context, api BlueprintAPI, bps []port.Blueprint) (created []string, err error) {
	var missing []port.Blueprint
	for _, bp := range bps {
		_, err := api.GetBlueprint(ctx, bp.Identifier)
		switch {
		case err == nil:
			continue
		case port.IsNotFound(err):
			missing = append(missing, bp)
		default:
			return nil, fmt.Errorf("checking whether blueprint %q exists: %w", bp.Identifier, err)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	ids := make([]string, len(missing))
	for i, bp := range missing {
		ids[i] = bp.Identifier
	}
	if err := api.CreateBlueprints(ctx, missing); err != nil {
		return nil, fmt.Errorf("creating blueprints %v: %w", ids, err)
	}
	return ids, nil
}
