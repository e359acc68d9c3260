package port

import (
	"context"
	"fmt"
	"net/http"

	"golang.org/x/sync/errgroup"
)

// Port's limits for one bulk upsert request.
const (
	MaxBulkEntities = 20      // entities per bulk upsert
	MaxBodyBytes    = 1 << 20 // bytes per request body (1 MiB)
)

// BulkResult is the outcome for one entity of a BulkUpsert.
type BulkResult struct {
	Index      int    // position in the input slice
	Identifier string // the identifier Port reported (generated ones included)
	Created    bool   // true if Port created the entity, false if it updated one
	Err        error  // nil on success; a *Error otherwise
}

const (
	bulkPrefix = `{"entities":[`
	bulkSuffix = `]}`
)

// bulkItem is one encoded entity waiting for a bulk request.
type bulkItem struct {
	index int
	name  string
	data  []byte
}

// EncodeBulk encodes entities into bulk-upsert bodies of at most
// MaxBulkEntities entities and MaxBodyBytes bytes each, measured on the
// encoded bytes. Entities that cannot be sent at all (bad identifier,
// encoding failure, larger than a body on their own) get an error in
// rejected, indexed like entities. It is what BulkUpsert sends.
func EncodeBulk(blueprint string, entities []Entity) (bodies [][]byte, rejected []error) {
	items, rejected := encodeItems(blueprint, entities)
	for _, chunk := range packBulk(items) {
		bodies = append(bodies, bulkBody(chunk))
	}
	return bodies, rejected
}

func encodeItems(blueprint string, entities []Entity) ([]bulkItem, []error) {
	rejected := make([]error, len(entities))
	items := make([]bulkItem, 0, len(entities))
	for i := range entities {
		name := entityName(entities[i])
		if err := validateEntity(blueprint, &entities[i]); err != nil {
			rejected[i] = err
			continue
		}
		data, err := encodeEntity(entities[i])
		if err != nil {
			rejected[i] = &Error{Code: CodeBadRequest, Entity: name,
				Message: fmt.Sprintf("encoding entity of blueprint %q: %v", blueprint, err)}
			continue
		}
		if len(data)+len(bulkPrefix)+len(bulkSuffix) > MaxBodyBytes {
			rejected[i] = &Error{Code: CodeEntityTooLarge, Entity: name,
				Message: fmt.Sprintf("blueprint %q: the entity encodes to %d bytes, over Port's %d-byte body limit", blueprint, len(data), MaxBodyBytes)}
			continue
		}
		items = append(items, bulkItem{index: i, name: name, data: data})
	}
	return items, rejected
}

// packBulk groups items into requests within both limits, keeping order.
func packBulk(items []bulkItem) [][]bulkItem {
	var chunks [][]bulkItem
	start, size := 0, len(bulkPrefix)+len(bulkSuffix)
	for i, it := range items {
		add := len(it.data)
		if i > start {
			add++ // comma
		}
		if i > start && (i-start == MaxBulkEntities || size+add > MaxBodyBytes) {
			chunks = append(chunks, items[start:i])
			start, size, add = i, len(bulkPrefix)+len(bulkSuffix), len(it.data)
		}
		size += add
	}
	if start < len(items) {
		chunks = append(chunks, items[start:])
	}
	return chunks
}

func bulkBody(chunk []bulkItem) []byte {
	n := len(bulkPrefix) + len(bulkSuffix) + len(chunk)
	for _, it := range chunk {
		n += len(it.data)
	}
	body := make([]byte, 0, n)
	body = append(body, bulkPrefix...)
	for i, it := range chunk {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, it.data...)
	}
	return append(body, bulkSuffix...)
}

// bulkAnswer is Port's answer to a bulk upsert (200 and 207 alike).
type bulkAnswer struct {
	Entities []struct {
		Created    bool   `json:"created"`
		Identifier string `json:"identifier"`
		Index      int    `json:"index"`
	} `json:"entities"`
	Errors []struct {
		Identifier string `json:"identifier"`
		Index      int    `json:"index"`
		StatusCode int    `json:"statusCode"`
		Error      string `json:"error"`
		Message    string `json:"message"`
	} `json:"errors"`
}

// BulkUpsert upserts entities of one blueprint with
// POST /v1/blueprints/{b}/entities/bulk: it splits them into requests of at
// most 20 entities and 1 MiB encoded, sends them concurrently up to the
// concurrency cap, splits again on 413, and returns exactly one result per
// input entity, results[i] for entities[i]. err is non-nil only when nothing
// could be attempted (ctx done, authentication failed); every other failure
// is in the entities' Err.
func (c *Client) BulkUpsert(ctx context.Context, blueprint string, entities []Entity, opts UpsertOptions) ([]BulkResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := c.accessToken(ctx); err != nil {
		return nil, err
	}
	results := make([]BulkResult, len(entities))
	items, rejected := encodeItems(blueprint, entities)
	for i := range entities {
		results[i] = BulkResult{Index: i, Identifier: entityName(entities[i]), Err: rejected[i]}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cap(c.sem))
	for _, chunk := range packBulk(items) {
		g.Go(func() error {
			c.sendBulk(gctx, blueprint, chunk, opts, results)
			return nil
		})
	}
	_ = g.Wait()
	return results, nil
}

// sendBulk sends one chunk and writes the results of its entities; a 413
// splits the chunk in two.
func (c *Client) sendBulk(ctx context.Context, blueprint string, chunk []bulkItem, opts UpsertOptions, results []BulkResult) {
	var out bulkAnswer
	req := call{method: http.MethodPost, route: "POST /v1/blueprints/{b}/entities/bulk",
		path: entitiesPath(blueprint) + "/bulk", query: opts.query(), body: bulkBody(chunk)}
	_, err := c.do(ctx, req, &out)
	if err != nil {
		if StatusOf(err) == http.StatusRequestEntityTooLarge && len(chunk) > 1 {
			c.log.Debug("port refused a bulk body as too large, splitting", "blueprint", blueprint, "entities", len(chunk))
			half := len(chunk) / 2
			c.sendBulk(ctx, blueprint, chunk[:half], opts, results)
			c.sendBulk(ctx, blueprint, chunk[half:], opts, results)
			return
		}
		for _, it := range chunk {
			results[it.index].Err = withEntity(err, it.name)
		}
		return
	}
	done := make([]bool, len(chunk))
	for _, r := range out.Entities {
		if r.Index < 0 || r.Index >= len(chunk) {
			continue
		}
		res := &results[chunk[r.Index].index]
		res.Created, res.Err, done[r.Index] = r.Created, nil, true
		if r.Identifier != "" {
			res.Identifier = r.Identifier
		}
	}
	for _, r := range out.Errors {
		if r.Index < 0 || r.Index >= len(chunk) {
			continue
		}
		done[r.Index] = true
		results[chunk[r.Index].index].Err = &Error{Status: r.StatusCode, Code: r.Error, Message: r.Message,
			Method: req.method, Path: req.path, Entity: chunk[r.Index].name}
	}
	for i, ok := range done {
		if !ok {
			results[chunk[i].index].Err = &Error{Code: CodeMissingResult, Method: req.method, Path: req.path,
				Entity: chunk[i].name, Message: fmt.Sprintf("Port's answer has no result for index %d", i)}
		}
	}
}

// withEntity returns err as a *Error naming the entity.
func withEntity(err error, name string) error {
	if pe, ok := asError(err); ok {
		cp := *pe
		cp.Entity = name
		return &cp
	}
	return &Error{Code: CodeRequestFailed, Entity: name, Message: err.Error()}
}
