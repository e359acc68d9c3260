package port

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
)

// MaxSearchLimit is the largest page size of a blueprint search.
const MaxSearchLimit = 1000

// SearchRequest is the body of POST /v1/blueprints/{b}/entities/search.
// Query is a rule group {"combinator": "and"|"or", "rules": [...]}; nil
// matches every entity. Include and Exclude take bare property and relation
// ids and $-meta-properties ($identifier, $title, ...). Limit is the page
// size, 1..1000; 0 means 1000.
type SearchRequest struct {
	Query   map[string]any `json:"query,omitempty"`
	Include []string       `json:"include,omitempty"`
	Exclude []string       `json:"exclude,omitempty"`
	Limit   int            `json:"limit,omitempty"`
	From    string         `json:"from,omitempty"`
}

// SearchEntities streams one blueprint's entities matching q, one page of
// up to q.Limit entities per request, following `next`. Iteration stops at
// the first error, which is yielded with a zero Entity.
func (c *Client) SearchEntities(ctx context.Context, blueprint string, q SearchRequest) iter.Seq2[Entity, error] {
	return func(yield func(Entity, error) bool) {
		if q.Limit <= 0 || q.Limit > MaxSearchLimit {
			q.Limit = MaxSearchLimit
		}
		for page := 0; ; page++ {
			body, err := json.Marshal(q)
			if err != nil {
				yield(Entity{}, fmt.Errorf("encoding the search of blueprint %q: %w", blueprint, err))
				return
			}
			var out struct {
				Entities []Entity `json:"entities"`
				Next     string   `json:"next"`
			}
			_, err = c.do(ctx, call{method: http.MethodPost, route: "POST /v1/blueprints/{b}/entities/search",
				path: entitiesPath(blueprint) + "/search", body: body}, &out)
			if err != nil {
				yield(Entity{}, fmt.Errorf("searching entities of blueprint %q (page %d): %w", blueprint, page+1, err))
				return
			}
			for _, e := range out.Entities {
				if e.Blueprint == "" {
					e.Blueprint = blueprint
				}
				if !yield(e, nil) {
					return
				}
			}
			if out.Next == "" {
				return
			}
			q.From = out.Next
		}
	}
}

// SearchAll runs POST /v1/entities/search across all blueprints. query is
// the bare rule group {"combinator", "rules"}; Port does not page this
// route.
func (c *Client) SearchAll(ctx context.Context, query map[string]any) ([]Entity, error) {
	body, err := json.Marshal(query)
	if err != nil {
		return nil, fmt.Errorf("encoding the search: %w", err)
	}
	var out struct {
		Entities []Entity `json:"entities"`
	}
	_, err = c.do(ctx, call{method: http.MethodPost, route: "POST /v1/entities/search", path: "/v1/entities/search", body: body}, &out)
	if err != nil {
		return nil, fmt.Errorf("searching entities: %w", err)
	}
	return out.Entities, nil
}
