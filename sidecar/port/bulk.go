package port

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

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

// bulkAnswer is Port's answer to a bulk upsert (200 and 207 alike). Its
// top-level ok is not trusted: a 207 in which every entity failed may say
// false, and the per-index results are what count.
type bulkAnswer struct {
	Entities []struct {
		Created    bool   `json:"created"`
		Identifier string `json:"identifier"`
		Index      int    `json:"index"`
		// OK false, should Port ever mark a result so, fails that entity
		// alone.
		OK         *bool  `json:"ok"`
		StatusCode int    `json:"statusCode"`
		Error      string `json:"error"`
		Message    string `json:"message"`
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
// concurrency cap, and returns exactly one result per input entity,
// results[i] for entities[i]. A request Port refuses as a whole is split
// so that only the entities at fault fail: on 413 in halves; on 422 (Port
// rejects the whole request when one entity does not fit the route's
// schema) the entity the message names is sent alone, else the request is
// halved, recursively — one bad entity among n costs at most
// 2⌈log₂ n⌉ extra requests and fails with Port's status, code and message.
// err is non-nil only when nothing could be attempted (ctx done,
// authentication failed); every other failure is in the entities' Err, a
// *Error naming the entity.
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

// sendBulk sends one chunk and writes the results of its entities; a whole
// refusal that one entity can cause (413, 422) splits the chunk.
func (c *Client) sendBulk(ctx context.Context, blueprint string, chunk []bulkItem, opts UpsertOptions, results []BulkResult) {
	var out bulkAnswer
	req := call{method: http.MethodPost, route: "POST /v1/blueprints/{b}/entities/bulk",
		path: entitiesPath(blueprint) + "/bulk", query: opts.query(), body: bulkBody(chunk), anyOK: true}
	status, err := c.do(ctx, req, &out)
	if err != nil {
		if parts := splitRefused(err, chunk); parts != nil {
			c.log.Debug("port refused a bulk request as a whole, splitting it to isolate the cause",
				"blueprint", blueprint, "entities", len(chunk), "status", StatusOf(err), "err", err)
			for _, p := range parts {
				c.sendBulk(ctx, blueprint, p, opts, results)
			}
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
		done[r.Index] = true
		if r.OK != nil && !*r.OK {
			res.Err = itemError(req, chunk[r.Index].name, status, r.StatusCode, r.Error, r.Message)
			continue
		}
		res.Created, res.Err = r.Created, nil
		if r.Identifier != "" {
			res.Identifier = r.Identifier
		}
	}
	for _, r := range out.Errors {
		if r.Index < 0 || r.Index >= len(chunk) {
			continue
		}
		done[r.Index] = true
		results[chunk[r.Index].index].Err = itemError(req, chunk[r.Index].name, status, r.StatusCode, r.Error, r.Message)
	}
	for i, ok := range done {
		if !ok {
			results[chunk[i].index].Err = &Error{Status: status, Code: CodeMissingResult, Method: req.method, Path: req.path,
				Entity: chunk[i].name, Message: fmt.Sprintf("Port's answer has no result for index %d", i)}
		}
	}
}

// itemError is the failure of one entity inside a bulk answer.
func itemError(req call, name string, status, itemStatus int, code, msg string) *Error {
	if itemStatus == 0 {
		itemStatus = status
	}
	if code == "" {
		code = CodeItemFailed
	}
	if msg == "" {
		msg = "Port reported this entity as failed"
	}
	return &Error{Status: itemStatus, Code: code, Message: msg, Method: req.method, Path: req.path, Entity: name}
}

// bulkIndex finds the entity a whole-request error names
// ("body/entities/3/title must be string").
var bulkIndex = regexp.MustCompile(`entities[/.\[](\d+)`)

// splitRefused returns the parts to send instead of a chunk Port refused
// as a whole, or nil when the refusal is final for every entity: 413 splits
// in halves; a 422 about the body splits off the entity its message names,
// else in halves. A 422 about the query string or path concerns every
// entity alike.
func splitRefused(err error, chunk []bulkItem) [][]bulkItem {
	pe, ok := asError(err)
	if !ok || len(chunk) < 2 {
		return nil
	}
	half := len(chunk) / 2
	switch pe.Status {
	case http.StatusRequestEntityTooLarge:
		return [][]bulkItem{chunk[:half], chunk[half:]}
	case http.StatusUnprocessableEntity:
		for _, where := range []string{"querystring", "params", "headers"} {
			if strings.HasPrefix(pe.Message, where) {
				return nil
			}
		}
		if m := bulkIndex.FindStringSubmatch(pe.Message); m != nil {
			if i, err := strconv.Atoi(m[1]); err == nil && i < len(chunk) {
				rest := append(append(make([]bulkItem, 0, len(chunk)-1), chunk[:i]...), chunk[i+1:]...)
				return [][]bulkItem{chunk[i : i+1], rest}
			}
		}
		return [][]bulkItem{chunk[:half], chunk[half:]}
	}
	return nil
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
