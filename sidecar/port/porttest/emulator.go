// Package porttest is an in-memory emulator of Port's REST API for tests,
// benchmarks and `portbridge dev`. An *Emulator is an http.Handler: mount
// it with httptest.NewServer or serve it as a process. It accepts what
// Port's published API reference accepts and refuses the rest with Port's
// status and error envelope (contract.go, CONTRACT.md, the contract table
// in testdata/contract.txt); where the reference is silent it follows
// Port's observed behaviour, else the stricter answer. It covers
// blueprints, entities, search, data sources and integrations (resync
// requests and state, examples), records the User-Agent of every entity
// write as the entity's data source, and has test hooks (Go methods and
// non-/v1 admin routes under /_emulator/) for request counts, fault
// injection, rate budgets per bucket, direct edits, the UI's resync button
// and mapping edits, reset and dumps.
package porttest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	DefaultClientID     = "porttest-client"
	DefaultClientSecret = "porttest-secret"
	DefaultTokenTTL     = 3 * time.Hour
	// MaxBodyBytes is Port's request body limit (1 MiB).
	MaxBodyBytes = 1 << 20
)

// Options configures an Emulator.
type Options struct {
	ClientID     string        // accepted client id, default DefaultClientID
	ClientSecret string        // accepted client secret, default DefaultClientSecret
	TokenTTL     time.Duration // lifetime of access tokens (expiresIn), default 3 h
	PersistFile  string        // optional JSON file: loaded by Open, written by Save
	Logger       *slog.Logger  // optional
	// RateLimit and RatePeriod are the x-ratelimit-limit and -period the
	// emulator reports while no budget is enforced (see SetRateBudget);
	// defaults 1,000,000 per 5 minutes, so that clients never slow down
	// unless a test asks for it.
	RateLimit  int
	RatePeriod time.Duration
}

// Emulator emulates Port's REST API. It is safe for concurrent use.
type Emulator struct {
	opts Options
	log  *slog.Logger

	mu         sync.RWMutex // guards the fields below
	st         *store
	tokens     map[string]time.Time
	migrations map[string]map[string]any
	changed    bool // state changed since the last Save

	ctl     sync.Mutex // guards counts, faults and the rate windows
	counts  RequestCounts
	faults  []*activeFault
	buckets map[string]*rateBucket

	traceSeq    atomic.Uint64
	tracePrefix string
	saveMu      sync.Mutex
}

// New returns an emulator with an empty catalog (plus the system
// blueprints _user and _team). With opts.PersistFile set it loads that file
// when it exists; if loading fails it logs the error and starts empty
// without ever writing the file. Use Open to get the error instead.
func New(opts Options) *Emulator {
	e, err := Open(opts)
	if err != nil {
		e.log.Error("porttest: cannot load the persisted state; starting empty and not persisting", "file", opts.PersistFile, "err", err)
		e.opts.PersistFile = ""
	}
	return e
}

// Open is New, returning the error of loading opts.PersistFile. The
// returned emulator is usable (empty) even when err is not nil.
func Open(opts Options) (*Emulator, error) {
	if opts.ClientID == "" {
		opts.ClientID = DefaultClientID
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = DefaultClientSecret
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = DefaultTokenTTL
	}
	if opts.RateLimit <= 0 {
		opts.RateLimit = 1_000_000
	}
	if opts.RatePeriod < time.Second {
		opts.RatePeriod = 5 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	var p [4]byte
	_, _ = rand.Read(p[:])
	e := &Emulator{opts: opts, log: opts.Logger, st: newStore(), tokens: map[string]time.Time{},
		migrations: map[string]map[string]any{}, buckets: map[string]*rateBucket{}, tracePrefix: hex.EncodeToString(p[:])}
	e.counts = newCounts()
	if opts.PersistFile != "" {
		if err := e.load(); err != nil {
			e.st = newStore()
			return e, err
		}
	}
	return e, nil
}

// ClientID returns the client id the emulator accepts.
func (e *Emulator) ClientID() string { return e.opts.ClientID }

// ClientSecret returns the client secret the emulator accepts.
func (e *Emulator) ClientSecret() string { return e.opts.ClientSecret }

// reqCtx is one request being served.
type reqCtx struct {
	r      *http.Request
	params []string
	query  url.Values
	body   []byte
	doc    any    // the decoded JSON body, when the route takes one
	actor  string // User-Agent
	user   string // client id of the token
	now    time.Time
}

func (rc *reqCtx) flag(name string) bool { return rc.query.Get(name) == "true" }

// object returns the decoded body as an object (the route's shape has
// already made sure it is one when present).
func (rc *reqCtx) object() map[string]any {
	m, _ := rc.doc.(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	return m
}

// handler serves one route; it returns a status and a JSON body, or an
// *apiError.
type handler func(e *Emulator, rc *reqCtx) (int, any)

// Rate-limit buckets: Port counts its entities API apart from the rest.
const (
	BucketEntities = "entities"
	BucketOther    = "other"
)

type route struct {
	method   string
	pattern  string // "/v1/blueprints/{b}/entities"
	segs     []string
	write    bool
	bucket   string
	params   map[string]param // declared query parameters
	body     *shape           // what the body must look like; nil: no body is read
	optional bool             // an empty body stands for {}
	nonEmpty bool             // path parameters must not be empty
	h        handler
}

func newRoute(method, pattern string, h handler) route {
	return route{method: method, pattern: pattern, segs: strings.Split(strings.TrimPrefix(pattern, "/"), "/"), bucket: BucketOther, h: h}
}

// writes marks a route that changes state.
func (rt route) writes() route { rt.write = true; return rt }

// entities puts a route in the entities rate-limit bucket; its path
// parameters must not be empty.
func (rt route) entities() route { rt.bucket, rt.nonEmpty = BucketEntities, true; return rt }

func (rt route) query(p map[string]param) route { rt.params = p; return rt }

// takes declares the body's shape.
func (rt route) takes(s *shape) route { rt.body = s; return rt }

// takesOptional declares the body's shape; an empty body counts as {}.
func (rt route) takesOptional(s *shape) route { rt.body, rt.optional = s, true; return rt }

func (rt route) name() string { return rt.method + " " + rt.pattern }

// routes lists the /v1 routes; literal routes come before patterns that
// could also match them.
var routes = append(catalogRoutes, integrationRoutes...)

var catalogRoutes = []route{
	newRoute("POST", "/v1/auth/access_token", handleToken).takes(tokenBody),
	newRoute("GET", "/v1/organization", handleOrganization),
	newRoute("POST", "/v1/entities/search", handleSearchAll).entities().query(entityListParams).takes(globalQuery),
	newRoute("POST", "/v1/blueprints/entities/datasource-entities", handleDatasourceEntities).entities().
		query(map[string]param{"include": arrayParam, "exclude": arrayParam}).takes(datasourceBody),
	newRoute("GET", "/v1/migrations/{id}", handleGetMigration),
	newRoute("GET", "/v1/blueprints", handleListBlueprints),
	newRoute("POST", "/v1/blueprints", handleCreateBlueprint).writes().query(map[string]param{"create_catalog_page": boolParam}).takes(createBlueprintBody),
	newRoute("GET", "/v1/blueprints/{b}", handleGetBlueprint),
	newRoute("PUT", "/v1/blueprints/{b}", handlePutBlueprint).writes().takes(putBlueprintBody),
	newRoute("PATCH", "/v1/blueprints/{b}", handlePatchBlueprint).writes().takesOptional(patchBlueprintBody),
	newRoute("DELETE", "/v1/blueprints/{b}", handleDeleteBlueprint).writes().query(map[string]param{"delete_actions": boolParam}),
	newRoute("DELETE", "/v1/blueprints/{b}/all-entities", handleDeleteAllEntities).writes().entities().query(deleteAllParams),
	newRoute("GET", "/v1/blueprints/{b}/entities", handleListEntities).entities().query(entityListParams),
	newRoute("POST", "/v1/blueprints/{b}/entities", handleUpsertEntity).writes().entities().query(entityWriteParams).takes(createEntityBody),
	newRoute("GET", "/v1/blueprints/{b}/entities-count", handleCountEntities).entities(),
	newRoute("POST", "/v1/blueprints/{b}/entities/bulk", handleBulkUpsert).writes().entities().query(entityWriteParams).takes(bulkBody),
	newRoute("POST", "/v1/blueprints/{b}/entities/search", handleSearchBlueprint).entities().takes(blueprintSearchBody),
	newRoute("POST", "/v1/blueprints/{b}/bulk/entities/delete", handleBulkDelete).writes().entities().query(entityDeleteParams).takes(bulkDeleteBody),
	newRoute("GET", "/v1/blueprints/{b}/entities/{id}", handleGetEntity).entities().query(entityReadParams),
	newRoute("PATCH", "/v1/blueprints/{b}/entities/{id}", handleUpdateEntity(modePatch)).writes().entities().query(entityUpdateParams).takes(patchEntityBody),
	newRoute("PUT", "/v1/blueprints/{b}/entities/{id}", handleUpdateEntity(modePut)).writes().entities().query(entityUpdateParams).takes(putEntityBody),
	newRoute("DELETE", "/v1/blueprints/{b}/entities/{id}", handleDeleteEntity).writes().entities().query(entityDeleteParams),
}

// match finds the route of a request and its decoded path parameters. The
// path is split on its escaped form, so %2F stays inside a segment, and a
// literal '+' stays a '+'.
func match(method, escapedPath string) (*route, []string, *apiError) {
	raw := strings.Split(strings.TrimPrefix(escapedPath, "/"), "/")
	segs := make([]string, len(raw))
	for i, s := range raw {
		d, err := url.PathUnescape(s)
		if err != nil {
			return nil, nil, errf(400, "bad_request", "path segment %q is not valid", s)
		}
		segs[i] = d
	}
	for i := range routes {
		rt := &routes[i]
		if len(rt.segs) != len(segs) {
			continue
		}
		var params []string
		ok := true
		for j, p := range rt.segs {
			if strings.HasPrefix(p, "{") {
				params = append(params, segs[j])
			} else if p != segs[j] {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if rt.method == method {
			return rt, params, nil
		}
	}
	return nil, nil, notFound("route %s:%s was not found", method, escapedPath)
}

// ServeHTTP implements http.Handler.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Trace-Id", fmt.Sprintf("%s%012x", e.tracePrefix, e.traceSeq.Add(1)))
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	path := r.URL.EscapedPath()
	if strings.HasPrefix(path, "/_emulator/") {
		e.serveAdmin(w, r)
		return
	}
	rt, params, merr := match(r.Method, path)
	name, write, bucket := "unknown "+r.Method, false, BucketOther
	if rt != nil {
		name, write, bucket = rt.name(), rt.write, rt.bucket
	}
	now := time.Now()
	fault, over := e.admit(name, bucket, write, now, w.Header())
	if fault != nil {
		if fault.Latency > 0 {
			select {
			case <-time.After(fault.Latency):
			case <-r.Context().Done():
				return
			}
		}
		if fault.ExpireToken {
			e.ExpireTokens()
		}
	}
	switch {
	case over > 0:
		w.Header().Set("Retry-After", strconv.Itoa(int((over+time.Second-1)/time.Second)))
		e.reply(w, errf(429, "rate_limited", "the request budget of this window is spent"))
		return
	case fault != nil && fault.Status != 0:
		if fault.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int((fault.RetryAfter+time.Second-1)/time.Second)))
		}
		e.reply(w, errf(fault.Status, faultCode(fault.Status), "injected fault"))
		return
	case merr != nil:
		e.reply(w, merr)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	body, err := readAll(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			e.reply(w, errf(413, "bad_request", "Request body is too large (limit is 1MiB)"))
			return
		}
		e.reply(w, errf(400, "bad_request", "reading the body: %v", err))
		return
	}
	rc := &reqCtx{r: r, params: params, query: r.URL.Query(), body: body, actor: r.UserAgent(), now: now.UTC()}
	if rt.pattern != "/v1/auth/access_token" {
		user, aerr := e.authenticate(r, now)
		if aerr != nil {
			e.reply(w, aerr)
			return
		}
		rc.user = user
	}
	if ae := rt.validate(rc); ae != nil {
		e.reply(w, ae)
		return
	}
	status, out := rt.h(e, rc)
	if ae, ok := out.(*apiError); ok {
		e.reply(w, ae)
		return
	}
	e.writeJSON(w, status, out)
}

// validate checks what the route's schema constrains: non-empty path
// parameters, the declared query parameters and the body's shape; it
// decodes the body into rc.doc.
func (rt *route) validate(rc *reqCtx) *apiError {
	if rt.nonEmpty {
		for i, p := range rc.params {
			if p == "" {
				return invalid("params/%d must NOT have fewer than 1 characters", i)
			}
		}
	}
	if ae := checkQuery(rt.params, rc.query); ae != nil {
		return ae
	}
	if rt.body == nil {
		return nil
	}
	if len(bytes.TrimSpace(rc.body)) == 0 {
		if !rt.optional {
			return invalid("body must be object")
		}
		rc.doc = map[string]any{}
		return nil
	}
	if err := json.Unmarshal(rc.body, &rc.doc); err != nil {
		return errf(400, "bad_request", "the body is not valid JSON: %v", err)
	}
	return checkBody(rt.body, rc.doc)
}

func faultCode(status int) string {
	switch {
	case status == 429:
		return "rate_limited"
	case status == 401:
		return "unauthorized"
	case status >= 500:
		return "internal_error"
	}
	return "bad_request"
}

func readAll(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	return io.ReadAll(r.Body)
}

func (e *Emulator) reply(w http.ResponseWriter, ae *apiError) {
	e.writeJSON(w, ae.status, map[string]any{"ok": false, "error": ae.code, "message": ae.msg})
}

func (e *Emulator) writeJSON(w http.ResponseWriter, status int, body any) {
	data, err := json.Marshal(body)
	if err != nil {
		status = 500
		data = []byte(`{"ok":false,"error":"internal_error","message":"encoding the answer failed"}`)
	}
	w.WriteHeader(status)
	_, _ = w.Write(data)
	e.ctl.Lock()
	e.counts.ByStatus[status]++
	e.ctl.Unlock()
}

// authenticate checks the bearer token and returns the client id.
func (e *Emulator) authenticate(r *http.Request, now time.Time) (string, *apiError) {
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || tok == "" {
		return "", errf(401, "unauthorized", "missing bearer token")
	}
	e.mu.RLock()
	exp, known := e.tokens[tok]
	e.mu.RUnlock()
	if !known || !now.Before(exp) {
		return "", errf(401, "unauthorized", "the token is invalid or expired")
	}
	return e.opts.ClientID, nil
}

func handleToken(e *Emulator, rc *reqCtx) (int, any) {
	body := rc.object()
	id, secret := body["clientId"].(string), body["clientSecret"].(string)
	if id != e.opts.ClientID || secret != e.opts.ClientSecret {
		return 0, errf(401, "unauthorized", "bad client credentials")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for tok, exp := range e.tokens {
		if rc.now.Before(exp) {
			return 200, map[string]any{"ok": true, "accessToken": tok, "expiresIn": exp.Sub(rc.now).Seconds(), "tokenType": "Bearer"}
		}
		delete(e.tokens, tok)
	}
	exp := rc.now.Add(e.opts.TokenTTL)
	tok := newToken(id, exp)
	e.tokens[tok] = exp
	return 200, map[string]any{"ok": true, "accessToken": tok, "expiresIn": e.opts.TokenTTL.Seconds(), "tokenType": "Bearer"}
}

// newToken returns a JWT-shaped opaque token.
func newToken(clientID string, exp time.Time) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	claims, _ := json.Marshal(map[string]any{"sub": clientID, "isMachine": true, "exp": exp.Unix()})
	var sig [24]byte
	_, _ = rand.Read(sig[:])
	return head + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString(sig[:])
}

func handleOrganization(e *Emulator, rc *reqCtx) (int, any) {
	return 200, map[string]any{"ok": true, "organization": map[string]any{"id": "org_porttest", "name": "porttest", "featureFlags": []any{}}}
}
