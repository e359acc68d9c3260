package port

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// UpsertOptions are the query flags of entity writes. Bulk upserts always
// send upsert=true.
type UpsertOptions struct {
	Merge                        bool // merge properties and relations key by key instead of replacing the entity
	CreateMissingRelatedEntities bool // create bare relation targets that do not exist
	ValidationOnly               bool // validate only, store nothing
}

func (o UpsertOptions) query() url.Values {
	return boolQuery("upsert", true, "merge", o.Merge,
		"create_missing_related_entities", o.CreateMissingRelatedEntities, "validation_only", o.ValidationOnly)
}

// maxBulkDelete is the number of identifiers one bulk delete may carry.
const maxBulkDelete = 100

func entitiesPath(blueprint string) string {
	return "/v1/blueprints/" + escape(blueprint) + "/entities"
}

func entityName(e Entity) string {
	if s, ok := e.Identifier.(string); ok {
		return s
	}
	if e.Identifier == nil {
		return "(generated)"
	}
	b, _ := json.Marshal(e.Identifier)
	return string(b)
}

// encodeEntity encodes an entity for a request body; Blueprint is never
// sent (it is in the URL).
func encodeEntity(e Entity) ([]byte, error) {
	e.Blueprint = ""
	return json.Marshal(e)
}

// UpsertEntity creates or updates one entity (upsert=true) and returns it
// as Port stored it.
func (c *Client) UpsertEntity(ctx context.Context, blueprint string, e Entity, opts UpsertOptions) (*Entity, error) {
	if err := validateEntity(blueprint, &e); err != nil {
		return nil, err
	}
	body, err := encodeEntity(e)
	if err != nil {
		return nil, fmt.Errorf("encoding entity %s of blueprint %q: %w", entityName(e), blueprint, err)
	}
	var out struct {
		Entity Entity `json:"entity"`
	}
	_, err = c.do(ctx, call{method: http.MethodPost, route: "POST /v1/blueprints/{b}/entities",
		path: entitiesPath(blueprint), query: opts.query(), body: body}, &out)
	if err != nil {
		return nil, fmt.Errorf("upserting entity %s of blueprint %q: %w", entityName(e), blueprint, err)
	}
	return &out.Entity, nil
}

// GetEntity returns one entity; a missing entity or blueprint gives
// IsNotFound(err).
func (c *Client) GetEntity(ctx context.Context, blueprint, id string) (*Entity, error) {
	var out struct {
		Entity Entity `json:"entity"`
	}
	_, err := c.do(ctx, call{method: http.MethodGet, route: "GET /v1/blueprints/{b}/entities/{id}",
		path: entitiesPath(blueprint) + "/" + escape(id)}, &out)
	if err != nil {
		return nil, fmt.Errorf("getting entity %q of blueprint %q: %w", id, blueprint, err)
	}
	return &out.Entity, nil
}

// ListEntities returns every entity of a blueprint in one request (Port does
// not page this route; prefer SearchEntities for large blueprints).
func (c *Client) ListEntities(ctx context.Context, blueprint string) ([]Entity, error) {
	var out struct {
		Entities []Entity `json:"entities"`
	}
	_, err := c.do(ctx, call{method: http.MethodGet, route: "GET /v1/blueprints/{b}/entities", path: entitiesPath(blueprint)}, &out)
	if err != nil {
		return nil, fmt.Errorf("listing entities of blueprint %q: %w", blueprint, err)
	}
	return out.Entities, nil
}

// CountEntities returns the number of entities of a blueprint.
func (c *Client) CountEntities(ctx context.Context, blueprint string) (int, error) {
	var out struct {
		Count int `json:"count"`
	}
	_, err := c.do(ctx, call{method: http.MethodGet, route: "GET /v1/blueprints/{b}/entities-count",
		path: "/v1/blueprints/" + escape(blueprint) + "/entities-count"}, &out)
	if err != nil {
		return 0, fmt.Errorf("counting entities of blueprint %q: %w", blueprint, err)
	}
	return out.Count, nil
}

// DeleteEntity deletes one entity; an entity that is already gone (404) is
// not an error. Without deleteDependents Port refuses (IsHasDependents) when
// other entities have a required relation to it.
func (c *Client) DeleteEntity(ctx context.Context, blueprint, id string, deleteDependents bool) error {
	_, err := c.do(ctx, call{method: http.MethodDelete, route: "DELETE /v1/blueprints/{b}/entities/{id}",
		path: entitiesPath(blueprint) + "/" + escape(id), query: boolQuery("delete_dependents", deleteDependents)}, nil)
	if err != nil && !IsNotFound(err) {
		return fmt.Errorf("deleting entity %q of blueprint %q: %w", id, blueprint, err)
	}
	return nil
}

// BulkDelete deletes entities of one blueprint in requests of at most 100
// identifiers and returns the identifiers Port reported deleted (missing
// ones are simply absent). It stops at the first failed request.
func (c *Client) BulkDelete(ctx context.Context, blueprint string, ids []string, deleteDependents bool) ([]string, error) {
	var deleted []string
	for start := 0; start < len(ids); start += maxBulkDelete {
		chunk := ids[start:min(start+maxBulkDelete, len(ids))]
		body, err := json.Marshal(map[string][]string{"entities": chunk})
		if err != nil {
			return deleted, err
		}
		var out struct {
			DeletedEntities []string `json:"deletedEntities"`
		}
		_, err = c.do(ctx, call{method: http.MethodPost, route: "POST /v1/blueprints/{b}/bulk/entities/delete",
			path:  "/v1/blueprints/" + escape(blueprint) + "/bulk/entities/delete",
			query: boolQuery("delete_dependents", deleteDependents), body: body}, &out)
		if err != nil {
			return deleted, fmt.Errorf("deleting %d entities of blueprint %q (from %q): %w", len(chunk), blueprint, chunk[0], err)
		}
		deleted = append(deleted, out.DeletedEntities...)
	}
	return deleted, nil
}
