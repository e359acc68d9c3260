// Package catalog reads Backstage's software catalog over its REST API: a
// by-query scan that fetches one page ahead and reports what it saw
// (totalItems, entities, whether the last page came), a cheap listing of
// entity versions (ref, uid, etag), batch reads by ref (collected or
// streamed), single reads by name or uid, and Backstage entity refs.
package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portbridge/portbridge/sidecar/limits"
	"github.com/portbridge/portbridge/sidecar/redact"
)

// Entity is one catalog entity decoded with encoding/json (numbers are
// float64), ready for gojq.
type Entity = map[string]any

// DefaultPageSize is the by-query page size when Config.PageSize is 0.
const DefaultPageSize = 500

// refsChunk is how many refs one by-refs request carries; Backstage's server
// also works in chunks of 200.
const refsChunk = 200

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// Config configures a Client.
type Config struct {
	BaseURL    string // the Backstage backend base, e.g. http://localhost:7007 (the client adds /api/catalog)
	Token      string // optional static token, sent as Authorization: Bearer
	PageSize   int    // by-query page size; default 500
	HTTPClient *http.Client
	Logger     *slog.Logger
	Metrics    prometheus.Registerer // optional: requests per route/status, latency

	// Retries is how many times a request is repeated after a not-ready
	// answer (503, 404 without error body) or a network error; 0 means 6,
	// negative means never.
	Retries int
	// RetryWait is the first wait between attempts, doubled each time up to
	// 5 s; 0 means 200 ms.
	RetryWait time.Duration

	// Limits bound the entities the client hands out (depth, size,
	// strings); zero fields get limits.Default's values. An entity over
	// them is skipped: logged at warn with its ref and the reason, counted
	// in portbridge_catalog_entities_skipped_total{limit} and in Skipped,
	// and reported to OnSkip.
	Limits limits.Limits
	// OnSkip, when set, is called with the ref of every entity skipped
	// for the limits and the reason (a caller can keep such entities from
	// looking deleted).
	OnSkip func(ref, reason string)
}

// Client reads one Backstage catalog. It is safe for concurrent use.
type Client struct {
	base      string // …/api/catalog
	token     string
	pageSize  int
	hc        *http.Client
	log       *slog.Logger
	retries   int
	retryWait time.Duration
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	skips     *prometheus.CounterVec
	limits    limits.Limits
	onSkip    func(ref, reason string)
	skipped   atomic.Uint64
	// bodies hold answers while they are decoded: a scan reuses a few
	// buffers instead of growing a decoder's buffer for every page.
	bodies sync.Pool
}

// New checks cfg and returns a client.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("catalog base URL %s: %s", redact.Quote(cfg.BaseURL), redact.URL(err.Error()))
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("catalog base URL %s: want http(s)://host[:port][/path]", redact.Quote(cfg.BaseURL))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("catalog base URL %s: must not have a query or fragment", redact.Quote(cfg.BaseURL))
	}
	if strings.ContainsAny(cfg.Token, " \t\r\n") {
		return nil, fmt.Errorf("catalog token contains whitespace")
	}
	if cfg.PageSize < 0 {
		return nil, fmt.Errorf("catalog page size %d: must be positive", cfg.PageSize)
	}
	c := &Client{
		base:      strings.TrimRight(cfg.BaseURL, "/") + "/api/catalog",
		token:     cfg.Token,
		pageSize:  cfg.PageSize,
		hc:        cfg.HTTPClient,
		log:       cfg.Logger,
		retries:   cfg.Retries,
		retryWait: cfg.RetryWait,
		limits:    cfg.Limits.WithDefaults(),
		onSkip:    cfg.OnSkip,
	}
	if err := c.limits.Validate(); err != nil {
		return nil, fmt.Errorf("catalog client: %w", err)
	}
	if c.pageSize == 0 {
		c.pageSize = DefaultPageSize
	}
	c.bodies.New = func() any { return new(bytes.Buffer) }
	if c.hc == nil {
		c.hc = &http.Client{Timeout: 60 * time.Second}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.retries == 0:
		c.retries = 6
	case c.retries < 0:
		c.retries = 0
	}
	if c.retryWait <= 0 {
		c.retryWait = 200 * time.Millisecond
	}
	if cfg.Metrics != nil {
		if err := c.registerMetrics(cfg.Metrics); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Client) registerMetrics(reg prometheus.Registerer) error {
	c.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portbridge_catalog_requests_total",
		Help: "Requests to the Backstage catalog API by route and HTTP status (0: no answer).",
	}, []string{"route", "code"})
	c.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "portbridge_catalog_request_duration_seconds",
		Help:    "Latency of Backstage catalog API requests by route.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	}, []string{"route"})
	c.skips = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "portbridge_catalog_entities_skipped_total",
		Help: "Catalog entities skipped because they are over an input limit, by the limit's config key.",
	}, []string{"limit"})
	if err := reg.Register(c.skips); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return fmt.Errorf("register catalog skip metric: %w", err)
		}
		c.skips = are.ExistingCollector.(*prometheus.CounterVec)
	}
	if err := reg.Register(c.requests); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return fmt.Errorf("register catalog request metric: %w", err)
		}
		c.requests = are.ExistingCollector.(*prometheus.CounterVec)
	}
	if err := reg.Register(c.latency); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return fmt.Errorf("register catalog latency metric: %w", err)
		}
		c.latency = are.ExistingCollector.(*prometheus.HistogramVec)
	}
	return nil
}

// Query selects entities for Entities and Scan. The zero Query is every
// entity.
type Query struct {
	Filters    []string // Backstage filter strings (`kind=component,spec.type=service`), OR across elements
	Fields     []string // projection, e.g. "kind", "metadata.name"; empty means whole entities
	OrderField string   // e.g. "metadata.name,asc"; empty means Backstage's default (by uid)
	// Stats, when set, is updated as the scan goes (the scan's Result):
	// what a caller needs to prove a scan complete, and to show progress.
	Stats *ScanResult
	// OnSkip, when set, is told the ref of every entity skipped for the
	// input limits, and the scan then ends without the *LimitError it
	// would otherwise yield last: the caller keeps those refs itself.
	OnSkip func(ref string)
	// ExcludeTotal asks the catalog not to count the matches
	// (totalItems=exclude, as catalog backend 4.0.0 has it; older ones
	// ignore it and count). ScanResult.TotalItems is then -1. Counting
	// costs the catalog a query over all matches, once per scan.
	ExcludeTotal bool
}

// Entities streams all matching entities page by page, fetching the next
// page while the caller handles the current one; it holds at most two
// pages. It yields (nil, err) and stops on any failure (HTTP error after
// retries, malformed page, entity without kind or metadata.name): a failed
// scan never looks complete. Whole entities over the limits are skipped
// (see Config.Limits) and the scan goes on; after the last entity it then
// yields (nil, *LimitError) unless q.OnSkip is set, so that a caller never
// takes a skipped entity for a deleted one. It is Scan(ctx, q).Entities().
func (c *Client) Entities(ctx context.Context, q Query) iter.Seq2[Entity, error] {
	return c.Scan(ctx, q).Entities()
}

// Versions lists the ref, uid and etag of every matching entity; it is
// Scan(ctx, q).Versions().
func (c *Client) Versions(ctx context.Context, q Query) iter.Seq2[Version, error] {
	return c.Scan(ctx, q).Versions()
}

// countPage is a by-query answer read only for its count.
type countPage struct {
	TotalItems *int `json:"totalItems"`
}

// skip records an entity over the limits: log, metric, counter, callback,
// and the error the read will report.
func (c *Client) skip(ctx context.Context, le *LimitError, ref string, e Entity, v *limits.Violation, maxRefs int) *LimitError {
	reason := v.Error()
	c.skipped.Add(1)
	if c.skips != nil {
		c.skips.WithLabelValues(limitKey(v.Msg)).Inc()
	}
	c.log.WarnContext(ctx, "catalog entity skipped: over the input limits", "ref", ref, "uid", uidOf(e), "reason", reason)
	if c.onSkip != nil {
		c.onSkip(ref, reason)
	}
	if le == nil {
		le = &LimitError{First: reason}
	}
	le.Skipped++
	if len(le.Refs) < maxRefs {
		le.Refs = append(le.Refs, ref)
	}
	return le
}

// scanRefs is how many skipped refs a scan's LimitError lists.
const scanRefs = 100

// limitKey finds the config key a violation names ("limits.maxDepth").
func limitKey(msg string) string {
	i := strings.Index(msg, "(limits.")
	if i < 0 {
		return "other"
	}
	key, _, _ := strings.Cut(msg[i+1:], ")")
	return key
}

// Skipped returns how many entities the client has skipped for the limits
// since it was created.
func (c *Client) Skipped() uint64 { return c.skipped.Load() }

func uidOf(e Entity) any {
	if m, ok := e["metadata"].(map[string]any); ok {
		return m["uid"]
	}
	return nil
}

// EntitiesByRefs reads entities by ref in chunks; result[i] is nil when
// refs[i] does not exist. Refs may be in any form ParseRef accepts with a
// kind; they are sent in Backstage's canonical lower-case form. Whole
// entities over the limits are nil too, and then the error is a
// *LimitError naming them (the other results are valid): such an entity
// exists, so a caller must not take it for a deleted one. FetchByRefs
// streams instead of collecting.
func (c *Client) EntitiesByRefs(ctx context.Context, refs []string, fields []string) ([]Entity, error) {
	canon := make([]string, len(refs))
	for i, r := range refs {
		ref, err := ParseRef(r, "")
		if err != nil {
			return nil, fmt.Errorf("read entities by refs: ref %d: %w", i, err)
		}
		canon[i] = ref.String()
	}
	out := make([]Entity, 0, len(refs))
	for start := 0; start < len(canon); start += refsChunk {
		items, err := c.byRefs(ctx, canon[start:min(start+refsChunk, len(canon))], fields, start)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
	}
	var over *LimitError
	if len(fields) == 0 {
		for i, e := range out {
			if e == nil {
				continue
			}
			if v := c.limits.CheckEntity(e); v != nil {
				over = c.skip(ctx, over, canon[i], e, v, len(canon))
				out[i] = nil
			}
		}
	}
	if over != nil {
		return out, over
	}
	return out, nil
}

// EntityByRef reads one entity by kind, namespace and name. A missing entity
// gives an error for which IsNotFound is true.
func (c *Client) EntityByRef(ctx context.Context, ref Ref) (Entity, error) {
	if ref.Kind == "" || ref.Name == "" {
		return nil, fmt.Errorf("read entity by ref %q: kind and name are required", ref.String())
	}
	ns := ref.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	u := c.base + "/entities/by-name/" + url.PathEscape(ref.Kind) + "/" + url.PathEscape(ns) + "/" + url.PathEscape(ref.Name)
	var e Entity
	if err := c.do(ctx, "by-name", http.MethodGet, u, nil, &e); err != nil {
		return nil, fmt.Errorf("read entity %s: %w", ref, err)
	}
	if e == nil {
		return nil, &MalformedResponseError{URL: u, Reason: "entity is null"}
	}
	return c.checkOne(ctx, ref.String(), e)
}

// EntityByUID reads one entity by metadata.uid. A missing entity gives an
// error for which IsNotFound is true.
func (c *Client) EntityByUID(ctx context.Context, uid string) (Entity, error) {
	if uid == "" {
		return nil, fmt.Errorf("read entity by uid: uid is empty")
	}
	u := c.base + "/entities/by-uid/" + url.PathEscape(uid)
	var e Entity
	if err := c.do(ctx, "by-uid", http.MethodGet, u, nil, &e); err != nil {
		return nil, fmt.Errorf("read entity with uid %s: %w", uid, err)
	}
	if e == nil {
		return nil, &MalformedResponseError{URL: u, Reason: "entity is null"}
	}
	ref := "uid " + uid
	if r, err := RefOf(e); err == nil {
		ref = r.String()
	}
	return c.checkOne(ctx, ref, e)
}

// checkOne returns e, or a *LimitError when it is over the limits.
func (c *Client) checkOne(ctx context.Context, ref string, e Entity) (Entity, error) {
	if v := c.limits.CheckEntity(e); v != nil {
		return nil, c.skip(ctx, nil, ref, e, v, 1)
	}
	return e, nil
}

// Ping makes one request (no retries) that needs a serving catalog and valid
// credentials: by-query with limit 0.
func (c *Client) Ping(ctx context.Context) error {
	u := c.base + "/entities/by-query?limit=0"
	var p countPage
	if err := c.once(ctx, "by-query", http.MethodGet, u, nil, &p); err != nil {
		return fmt.Errorf("ping catalog: %w", err)
	}
	if p.TotalItems == nil {
		return &MalformedResponseError{URL: u, Reason: "no totalItems"}
	}
	return nil
}

// Count returns totalItems for the filters (OR across elements), reading no
// entities.
func (c *Client) Count(ctx context.Context, filters ...string) (int, error) {
	params := url.Values{}
	params.Set("limit", "0")
	for _, f := range filters {
		params.Add("filter", f)
	}
	u := c.base + "/entities/by-query?" + params.Encode()
	var p countPage
	if err := c.do(ctx, "by-query", http.MethodGet, u, nil, &p); err != nil {
		return 0, fmt.Errorf("count catalog entities: %w", err)
	}
	if p.TotalItems == nil {
		return 0, &MalformedResponseError{URL: u, Reason: "no totalItems"}
	}
	return *p.TotalItems, nil
}

// do runs one request with retries on not-ready answers and network errors.
func (c *Client) do(ctx context.Context, route, method, u string, body, out any) error {
	wait := c.retryWait
	for attempt := 0; ; attempt++ {
		err := c.once(ctx, route, method, u, body, out)
		if err == nil || attempt >= c.retries || !retryable(err) || ctx.Err() != nil {
			return err
		}
		jitter := time.Duration(rand.Int64N(int64(wait)/4 + 1))
		c.log.DebugContext(ctx, "catalog request failed, retrying", "route", route, "attempt", attempt+1, "wait", wait, "err", err)
		t := time.NewTimer(wait + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-t.C:
		}
		wait = min(wait*2, 5*time.Second)
	}
}

func retryable(err error) bool {
	if IsNotReady(err) {
		return true
	}
	var ne *networkError
	return errors.As(err, &ne)
}

// networkError is a request that got no HTTP answer, or an answer cut short.
type networkError struct {
	method, url string
	err         error
}

func (e *networkError) Error() string {
	return fmt.Sprintf("catalog %s %s: %s", e.method, redact.URL(e.url), redact.URL(e.err.Error()))
}
func (e *networkError) Unwrap() error { return e.err }

func (c *Client) once(ctx context.Context, route, method, u string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s request body: %w", route, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("build catalog request %s %s: %w", method, u, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if c.latency != nil {
		c.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	}
	if err != nil {
		c.count(route, 0)
		if ctx.Err() != nil {
			return fmt.Errorf("catalog %s %s: %w", method, u, ctx.Err())
		}
		return &networkError{method: method, url: u, err: err}
	}
	defer resp.Body.Close()
	c.count(route, resp.StatusCode)
	if resp.StatusCode/100 != 2 {
		return decodeAPIError(method, u, resp)
	}
	buf := c.bodies.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledBody {
			buf.Reset()
			c.bodies.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("catalog %s %s: %w", method, u, ctx.Err())
		}
		return &networkError{method: method, url: u, err: fmt.Errorf("answer cut short: %w", err)}
	}
	if err := json.Unmarshal(buf.Bytes(), out); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) && se.Offset >= int64(buf.Len()) {
			return &networkError{method: method, url: u, err: fmt.Errorf("answer cut short: %w", err)}
		}
		return &MalformedResponseError{URL: u, Reason: "decode JSON", Err: err}
	}
	return nil
}

// maxPooledBody: larger buffers are left to the garbage collector.
const maxPooledBody = 8 << 20

func (c *Client) count(route string, code int) {
	if c.requests != nil {
		c.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	}
}

func decodeAPIError(method, u string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	ae := &APIError{Method: method, URL: u, StatusCode: resp.StatusCode}
	var eb struct {
		Error struct {
			Name    string `json:"name"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &eb) == nil && eb.Error.Name != "" {
		ae.Name, ae.Message = eb.Error.Name, eb.Error.Message
		return ae
	}
	snippet := strings.TrimSpace(string(b))
	if len(snippet) > 200 {
		snippet = snippet[:200] + "…"
	}
	ae.Message = snippet
	return ae
}
