package port

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// laterBlueprintKeys are the blueprint keys that may refer to relations or
// other blueprints, so they are added only after every blueprint exists, as
// Port's own integration does.
var laterBlueprintKeys = []string{"ownership", "teamInheritance", "mirrorProperties", "calculationProperties", "aggregationProperties"}

// GetBlueprint returns a blueprint; a missing one gives IsNotFound(err).
func (c *Client) GetBlueprint(ctx context.Context, id string) (*Blueprint, error) {
	var out struct {
		Blueprint Blueprint `json:"blueprint"`
	}
	_, err := c.do(ctx, call{method: http.MethodGet, route: "GET /v1/blueprints/{b}", path: "/v1/blueprints/" + escape(id)}, &out)
	if err != nil {
		return nil, fmt.Errorf("getting blueprint %q: %w", id, err)
	}
	return &out.Blueprint, nil
}

// ListBlueprints returns every blueprint of the organization.
func (c *Client) ListBlueprints(ctx context.Context) ([]Blueprint, error) {
	var out struct {
		Blueprints []Blueprint `json:"blueprints"`
	}
	if _, err := c.do(ctx, call{method: http.MethodGet, route: "GET /v1/blueprints", path: "/v1/blueprints"}, &out); err != nil {
		return nil, fmt.Errorf("listing blueprints: %w", err)
	}
	return out.Blueprints, nil
}

// CreateBlueprints creates blueprints that may refer to each other, in any
// order: first each one bare (schema only), then its relations by PATCH,
// then the keys that depend on relations (ownership, mirror, calculation
// and aggregation properties). A blueprint that already exists (409) is
// left exactly as it is.
func (c *Client) CreateBlueprints(ctx context.Context, bps []Blueprint) error {
	created := make([]bool, len(bps))
	for i, bp := range bps {
		bare := bp
		bare.Relations = nil
		bare.Extra = map[string]any{}
		for k, v := range bp.Extra {
			bare.Extra[k] = v
		}
		for _, k := range laterBlueprintKeys {
			delete(bare.Extra, k)
		}
		body, err := json.Marshal(bare)
		if err != nil {
			return fmt.Errorf("encoding blueprint %q: %w", bp.Identifier, err)
		}
		_, err = c.do(ctx, call{method: http.MethodPost, route: "POST /v1/blueprints", path: "/v1/blueprints",
			query: map[string][]string{"create_catalog_page": {"false"}}, body: body}, nil)
		switch {
		case IsConflict(err):
			continue
		case err != nil:
			return fmt.Errorf("creating blueprint %q: %w", bp.Identifier, err)
		}
		created[i] = true
	}
	for i, bp := range bps {
		if !created[i] || len(bp.Relations) == 0 {
			continue
		}
		if _, err := c.PatchBlueprint(ctx, bp.Identifier, map[string]any{"relations": bp.Relations}); err != nil {
			return fmt.Errorf("adding the relations of blueprint %q: %w", bp.Identifier, err)
		}
	}
	for i, bp := range bps {
		patch := map[string]any{}
		for _, k := range laterBlueprintKeys {
			if v, ok := bp.Extra[k]; ok {
				patch[k] = v
			}
		}
		if !created[i] || len(patch) == 0 {
			continue
		}
		if _, err := c.PatchBlueprint(ctx, bp.Identifier, patch); err != nil {
			return fmt.Errorf("completing blueprint %q: %w", bp.Identifier, err)
		}
	}
	return nil
}

// PatchBlueprint merges patch into a blueprint's top-level keys.
func (c *Client) PatchBlueprint(ctx context.Context, id string, patch map[string]any) (*Blueprint, error) {
	body, err := json.Marshal(patch)
	if err != nil {
		return nil, fmt.Errorf("encoding the patch of blueprint %q: %w", id, err)
	}
	var out struct {
		Blueprint Blueprint `json:"blueprint"`
	}
	_, err = c.do(ctx, call{method: http.MethodPatch, route: "PATCH /v1/blueprints/{b}", path: "/v1/blueprints/" + escape(id), body: body}, &out)
	if err != nil {
		return nil, fmt.Errorf("patching blueprint %q: %w", id, err)
	}
	return &out.Blueprint, nil
}

// DeleteBlueprint deletes a blueprint; Port refuses (IsHasDependents) while
// it still has entities.
func (c *Client) DeleteBlueprint(ctx context.Context, id string) error {
	_, err := c.do(ctx, call{method: http.MethodDelete, route: "DELETE /v1/blueprints/{b}", path: "/v1/blueprints/" + escape(id)}, nil)
	if err != nil {
		return fmt.Errorf("deleting blueprint %q: %w", id, err)
	}
	return nil
}
