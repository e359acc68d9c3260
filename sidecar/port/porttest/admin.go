package porttest

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/portbridge/portbridge/sidecar/port"
)

// RequestCounts counts the /v1 requests the emulator received.
type RequestCounts struct {
	Total  int // every /v1 request
	Writes int // requests to routes that change blueprints, entities or integrations, whatever their outcome
	// EntityWrites counts the requests to routes that change entities
	// (upserts, bulk upserts, patches, replacements, deletes), whatever
	// their outcome: what "Port writes" means for a sync.
	EntityWrites int
	Throttled    int            // 429 answers (budget or injected)
	OverBudget   int            // requests refused because the rate budget was spent
	Faulted      int            // requests that an injected fault answered, delayed or expired a token for
	ByRoute      map[string]int // "POST /v1/blueprints/{b}/entities/bulk" -> count
	ByStatus     map[int]int    // answers by HTTP status
	ByBucket     map[string]int // requests per rate-limit bucket (BucketEntities, BucketOther)
}

func newCounts() RequestCounts {
	return RequestCounts{ByRoute: map[string]int{}, ByStatus: map[int]int{}, ByBucket: map[string]int{}}
}

// FaultSpec describes injected faults. A fault applies to the next Count
// matching requests, or to every matching request during For, or, with
// Share, to that share (0..1) of matching requests (evenly spread, not
// random), within Count or For when those are set too. With none of Count,
// For and Share it applies to the next request only.
type FaultSpec struct {
	Status      int           `json:"status,omitempty"`      // answer with this status (429, 500, 502, 503, 504, 401...) and Port's envelope
	RetryAfter  time.Duration `json:"retryAfter,omitempty"`  // Retry-After header on the answer (rounded up to seconds)
	Latency     time.Duration `json:"latency,omitempty"`     // delay before answering
	ExpireToken bool          `json:"expireToken,omitempty"` // expire every token first (the request then gets a 401)
	Count       int           `json:"count,omitempty"`
	For         time.Duration `json:"for,omitempty"`
	Share       float64       `json:"share,omitempty"`
	// Route limits the fault to one route ("POST /v1/blueprints/{b}/entities/bulk")
	// or to routes starting with it; empty means every /v1 route except
	// the token route.
	Route string `json:"route,omitempty"`
}

type activeFault struct {
	FaultSpec
	left  int // requests left, -1 = unlimited
	until time.Time
	acc   float64
}

// InjectFaults adds faults; they are checked in the order added and the
// first that applies to a request wins.
func (e *Emulator) InjectFaults(specs ...FaultSpec) {
	now := time.Now()
	e.ctl.Lock()
	defer e.ctl.Unlock()
	for _, s := range specs {
		f := &activeFault{FaultSpec: s, left: -1}
		if s.Count > 0 {
			f.left = s.Count
		}
		if s.For > 0 {
			f.until = now.Add(s.For)
		}
		if s.Count <= 0 && s.For <= 0 && s.Share <= 0 {
			f.left = 1
		}
		e.faults = append(e.faults, f)
	}
}

// ClearFaults removes every injected fault.
func (e *Emulator) ClearFaults() {
	e.ctl.Lock()
	e.faults = nil
	e.ctl.Unlock()
}

// Port's documented request budgets per organisation and 5-minute window:
// the entities API and everything else are counted apart.
const (
	PortEntitiesRateLimit = 35_000
	PortOtherRateLimit    = 15_000
	PortRatePeriod        = 5 * time.Minute
)

// rateBucket is the request window of one rate-limit bucket.
type rateBucket struct {
	budget   int // enforced limit per period, 0 = not enforced
	period   time.Duration
	winStart time.Time
	winCount int
}

// SetRateBudget enforces a budget of limit requests per period on every
// bucket (each counted apart; windows aligned to the period since the Unix
// epoch, reported in the x-ratelimit-* headers); requests beyond it get
// 429 with Retry-After and are counted in RequestCounts.OverBudget.
// limit <= 0 turns enforcement off. period is rounded to whole seconds (at
// least one).
func (e *Emulator) SetRateBudget(limit int, period time.Duration) {
	e.SetBucketBudget(BucketEntities, limit, period)
	e.SetBucketBudget(BucketOther, limit, period)
}

// SetBucketBudget is SetRateBudget for one bucket: BucketEntities (entity
// and search routes) or BucketOther (blueprints, integrations, the rest).
func (e *Emulator) SetBucketBudget(bucket string, limit int, period time.Duration) {
	e.ctl.Lock()
	defer e.ctl.Unlock()
	e.buckets[bucket] = &rateBucket{budget: max(limit, 0), period: max(period.Round(time.Second), time.Second)}
}

// UsePortRateLimits enforces Port's documented budgets: 35,000 requests to
// the entities API and 15,000 to the other routes per 5 minutes.
func (e *Emulator) UsePortRateLimits() {
	e.SetBucketBudget(BucketEntities, PortEntitiesRateLimit, PortRatePeriod)
	e.SetBucketBudget(BucketOther, PortOtherRateLimit, PortRatePeriod)
}

// admit counts a request, applies its bucket's rate window and picks a
// fault. It returns the fault to apply (or nil) and, when the budget is
// spent, how long until the window resets.
func (e *Emulator) admit(route, bucket string, write bool, now time.Time, h http.Header) (*FaultSpec, time.Duration) {
	e.ctl.Lock()
	defer e.ctl.Unlock()
	e.counts.Total++
	e.counts.ByRoute[route]++
	e.counts.ByBucket[bucket]++
	if write {
		e.counts.Writes++
		if bucket == BucketEntities {
			e.counts.EntityWrites++
		}
	}
	b := e.buckets[bucket]
	if b == nil {
		b = &rateBucket{}
		e.buckets[bucket] = b
	}
	limit, period := e.opts.RateLimit, e.opts.RatePeriod
	if b.budget > 0 {
		limit, period = b.budget, b.period
	}
	start := time.Unix(0, now.UnixNano()/int64(period)*int64(period))
	if !start.Equal(b.winStart) {
		b.winStart, b.winCount = start, 0
	}
	end := start.Add(period)
	var over time.Duration
	if b.budget > 0 && b.winCount >= b.budget {
		over = end.Sub(now)
		e.counts.OverBudget++
		e.counts.Throttled++
	} else {
		b.winCount++
	}
	h.Set("X-Ratelimit-Period", fmt.Sprint(int(period/time.Second)))
	h.Set("X-Ratelimit-Limit", fmt.Sprint(limit))
	h.Set("X-Ratelimit-Remaining", fmt.Sprint(max(limit-b.winCount, 0)))
	h.Set("X-Ratelimit-Reset", fmt.Sprint(end.Unix()))
	if over > 0 {
		return nil, over
	}
	f := e.pickFault(route, now)
	if f != nil {
		e.counts.Faulted++
		if f.Status == 429 {
			e.counts.Throttled++
		}
	}
	return f, 0
}

func (e *Emulator) pickFault(route string, now time.Time) *FaultSpec {
	e.faults = slices.DeleteFunc(e.faults, func(f *activeFault) bool {
		return f.left == 0 || (!f.until.IsZero() && !now.Before(f.until))
	})
	for _, f := range e.faults {
		if f.Route == "" && route == "POST /v1/auth/access_token" {
			continue
		}
		if f.Route != "" && !strings.HasPrefix(route, f.Route) {
			continue
		}
		if f.Share > 0 {
			f.acc += f.Share
			if f.acc < 1 {
				continue
			}
			f.acc--
		}
		if f.left > 0 {
			f.left--
		}
		spec := f.FaultSpec
		return &spec
	}
	return nil
}

// Requests returns a copy of the request counts.
func (e *Emulator) Requests() RequestCounts {
	e.ctl.Lock()
	defer e.ctl.Unlock()
	c := e.counts
	c.ByRoute = maps.Clone(c.ByRoute)
	c.ByStatus = maps.Clone(c.ByStatus)
	c.ByBucket = maps.Clone(c.ByBucket)
	return c
}

// ResetRequests zeroes the request counts.
func (e *Emulator) ResetRequests() {
	e.ctl.Lock()
	e.counts = newCounts()
	e.ctl.Unlock()
}

// ExpireTokens invalidates every issued access token.
func (e *Emulator) ExpireTokens() {
	e.mu.Lock()
	clear(e.tokens)
	e.mu.Unlock()
}

// Reset empties the catalog, tokens, counts, faults and budget.
func (e *Emulator) Reset() {
	e.mu.Lock()
	e.st = newStore()
	clear(e.tokens)
	clear(e.migrations)
	e.changed = true
	e.mu.Unlock()
	e.ctl.Lock()
	e.counts = newCounts()
	e.faults = nil
	clear(e.buckets)
	e.ctl.Unlock()
}

// Record is a stored entity with Port's bookkeeping.
type Record struct {
	Entity      port.Entity
	DataSources []string // User-Agents of every writer, in order of first write
	CreatedAt   time.Time
	CreatedBy   string
	UpdatedAt   time.Time
	UpdatedBy   string
}

func (r *record) export(bp string) Record {
	return Record{Entity: r.toEntity(bp), DataSources: slices.Clone(r.DataSources),
		CreatedAt: r.CreatedAt, CreatedBy: r.CreatedBy, UpdatedAt: r.UpdatedAt, UpdatedBy: r.UpdatedBy}
}

// Entities returns the entities of a blueprint, ordered by identifier
// (nil for an unknown blueprint). Use Records for data sources.
func (e *Emulator) Entities(blueprint string) []port.Entity {
	recs := e.Records(blueprint)
	out := make([]port.Entity, len(recs))
	for i, r := range recs {
		out[i] = r.Entity
	}
	return out
}

// Records returns the entities of a blueprint with their data sources and
// timestamps, ordered by identifier.
func (e *Emulator) Records(blueprint string) []Record {
	e.mu.Lock()
	defer e.mu.Unlock()
	bs := e.st.blueprints[blueprint]
	if bs == nil {
		return nil
	}
	out := make([]Record, 0, len(bs.entities))
	for _, id := range bs.ids() {
		out = append(out, bs.entities[id].export(blueprint))
	}
	return out
}

// Entity returns one stored entity.
func (e *Emulator) Entity(blueprint, id string) (Record, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	bs := e.st.blueprints[blueprint]
	if bs == nil || bs.entities[id] == nil {
		return Record{}, false
	}
	return bs.entities[id].export(blueprint), true
}

// Blueprint returns a stored blueprint.
func (e *Emulator) Blueprint(id string) (port.Blueprint, bool) {
	e.mu.RLock()
	bs := e.st.blueprints[id]
	var data []byte
	if bs != nil {
		data, _ = json.Marshal(bs.raw)
	}
	e.mu.RUnlock()
	var bp port.Blueprint
	if data == nil || json.Unmarshal(data, &bp) != nil {
		return port.Blueprint{}, false
	}
	return bp, true
}

// PutBlueprint creates or replaces a blueprint directly, with the same
// validation as the API (relation targets must exist).
func (e *Emulator) PutBlueprint(bp port.Blueprint) error {
	raw, err := toMap(bp)
	if err != nil {
		return err
	}
	if ae := checkBody(createBlueprintBody, raw); ae != nil {
		return fmt.Errorf("putting blueprint %q: %w", bp.Identifier, ae)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if ae := e.putBlueprintLocked(raw, time.Now().UTC(), "porttest"); ae != nil {
		return fmt.Errorf("putting blueprint %q: %w", bp.Identifier, ae)
	}
	return nil
}

// PutEntity writes an entity directly, as another data source would (a
// user in Port's UI, another integration): the same validation as the API,
// replace or merge, dataSource recorded like a User-Agent. Nothing is
// counted as a request.
func (e *Emulator) PutEntity(blueprint string, ent port.Entity, dataSource string, merge bool) (port.Entity, error) {
	ent.Blueprint = ""
	in, err := toMap(ent)
	if err != nil {
		return port.Entity{}, err
	}
	if ae := checkBody(createEntityBody, in); ae != nil {
		return port.Entity{}, fmt.Errorf("putting entity %v of blueprint %q: %w", ent.Identifier, blueprint, ae)
	}
	mode := modeReplace
	if merge {
		mode = modeMerge
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	r, _, ae := e.st.write(blueprint, in, writeOpts{mode: mode, actor: dataSource, user: dataSource}, time.Now().UTC())
	if ae != nil {
		return port.Entity{}, fmt.Errorf("putting entity %v of blueprint %q: %w", ent.Identifier, blueprint, ae)
	}
	e.changed = true
	return r.toEntity(blueprint), nil
}

// DeleteEntity deletes an entity directly (and its required dependents);
// optional relations pointing at it are cleared.
func (e *Emulator) DeleteEntity(blueprint, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.st.blueprints[blueprint] == nil {
		return notFoundBlueprint(blueprint)
	}
	if _, ae := e.st.deleteEntity(blueprint, id, true, time.Now().UTC(), "porttest"); ae != nil {
		return ae
	}
	e.changed = true
	return nil
}

// Snapshot is the whole state of the emulator, as Dump returns it and as
// the persistence file holds it.
type Snapshot struct {
	Blueprints   []map[string]any        `json:"blueprints"`
	Entities     map[string][]*record    `json:"entities"`
	Integrations map[string]*integration `json:"integrations,omitempty"`
}

// Dump returns the catalog as JSON (blueprints, and entities per blueprint
// with data sources and timestamps).
func (e *Emulator) Dump() ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return json.Marshal(e.snapshotLocked())
}

func (e *Emulator) snapshotLocked() Snapshot {
	snap := Snapshot{Entities: map[string][]*record{}, Integrations: e.st.integrations}
	for _, id := range slices.Sorted(maps.Keys(e.st.blueprints)) {
		bs := e.st.blueprints[id]
		snap.Blueprints = append(snap.Blueprints, bs.raw)
		recs := make([]*record, 0, len(bs.entities))
		for _, eid := range bs.ids() {
			recs = append(recs, bs.entities[eid])
		}
		snap.Entities[id] = recs
	}
	return snap
}

func toMap(v any) (map[string]any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	err = json.Unmarshal(data, &m)
	return m, err
}

// serveAdmin serves the test hooks under /_emulator/:
//
//	POST   /_emulator/reset                 Reset
//	GET    /_emulator/dump                  Dump
//	GET    /_emulator/requests              Requests;  DELETE resets the counts
//	POST   /_emulator/faults                InjectFaults (a FaultSpec or a list; durations in Go syntax, e.g. "30s");  DELETE clears
//	PUT    /_emulator/rate-budget           {"limit": 100, "period": "1s", "bucket": "entities"|"other"}; limit 0 turns it off; no bucket: both
//	POST   /_emulator/expire-tokens         ExpireTokens
//	PUT    /_emulator/entities/{b}?datasource=NAME&merge=true   PutEntity (body: the entity)
//	DELETE /_emulator/entities/{b}/{id}     DeleteEntity
//	POST   /_emulator/save                  Save
//	GET    /_emulator/integrations          Integrations (with resync-state history, resync requests, examples per kind, logs)
//	GET    /_emulator/integrations/{id}     Integration
//	PUT    /_emulator/integrations/{id}     PutIntegration (body as POST /v1/integration; installationId from the path)
//	POST   /_emulator/integrations/{id}/resync   RequestResync: the resync button of Port's UI
//	PUT    /_emulator/integrations/{id}/config   EditIntegrationConfig (body: the config): a user editing the mapping in Port's UI
//	POST   /_emulator/ingest/logs/{id}      the log sink of logAttributes.ingestUrl ({logs: [...]}); metrics and data sinks accept and drop
func (e *Emulator) serveAdmin(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/_emulator/")
	segs := strings.Split(rest, "/")
	for i, s := range segs {
		segs[i], _ = urlUnescape(s)
	}
	body, err := readAll(r)
	if err != nil {
		e.reply(w, errf(400, "bad_request", "reading the body: %v", err))
		return
	}
	ok := map[string]any{"ok": true}
	if e.serveIntegrationAdmin(w, r, segs, body) {
		return
	}
	switch {
	case r.Method == "POST" && rest == "reset":
		e.Reset()
		e.writeJSON(w, 200, ok)
	case r.Method == "GET" && rest == "dump":
		data, err := e.Dump()
		if err != nil {
			e.reply(w, errf(500, "internal_error", "%v", err))
			return
		}
		w.WriteHeader(200)
		_, _ = w.Write(data)
	case r.Method == "GET" && rest == "requests":
		e.writeJSON(w, 200, e.Requests())
	case r.Method == "DELETE" && rest == "requests":
		e.ResetRequests()
		e.writeJSON(w, 200, ok)
	case r.Method == "POST" && rest == "faults":
		specs, err := decodeFaults(body)
		if err != nil {
			e.reply(w, invalid("%v", err))
			return
		}
		e.InjectFaults(specs...)
		e.writeJSON(w, 200, ok)
	case r.Method == "DELETE" && rest == "faults":
		e.ClearFaults()
		e.writeJSON(w, 200, ok)
	case r.Method == "PUT" && rest == "rate-budget":
		var b struct {
			Limit  int    `json:"limit"`
			Period string `json:"period"`
			Bucket string `json:"bucket"` // entities, other; empty: both
		}
		if err := json.Unmarshal(body, &b); err != nil {
			e.reply(w, invalid("%v", err))
			return
		}
		p, err := time.ParseDuration(b.Period)
		if b.Period == "" {
			p, err = time.Second, nil
		}
		if err != nil {
			e.reply(w, invalid("period: %v", err))
			return
		}
		switch b.Bucket {
		case "":
			e.SetRateBudget(b.Limit, p)
		case BucketEntities, BucketOther:
			e.SetBucketBudget(b.Bucket, b.Limit, p)
		default:
			e.reply(w, invalid("bucket must be %q, %q or empty, not %q", BucketEntities, BucketOther, b.Bucket))
			return
		}
		e.writeJSON(w, 200, ok)
	case r.Method == "POST" && rest == "expire-tokens":
		e.ExpireTokens()
		e.writeJSON(w, 200, ok)
	case r.Method == "PUT" && len(segs) == 2 && segs[0] == "entities":
		var ent port.Entity
		if err := json.Unmarshal(body, &ent); err != nil {
			e.reply(w, invalid("%v", err))
			return
		}
		ds := r.URL.Query().Get("datasource")
		if ds == "" {
			ds = "porttest-admin"
		}
		out, err := e.PutEntity(segs[1], ent, ds, r.URL.Query().Get("merge") == "true")
		if err != nil {
			e.replyErr(w, err)
			return
		}
		e.writeJSON(w, 200, map[string]any{"ok": true, "entity": out})
	case r.Method == "DELETE" && len(segs) == 3 && segs[0] == "entities":
		if err := e.DeleteEntity(segs[1], segs[2]); err != nil {
			e.replyErr(w, err)
			return
		}
		e.writeJSON(w, 200, ok)
	case r.Method == "POST" && rest == "save":
		if err := e.Save(); err != nil {
			e.reply(w, errf(500, "internal_error", "%v", err))
			return
		}
		e.writeJSON(w, 200, ok)
	default:
		e.reply(w, notFound("admin route %s /_emulator/%s was not found", r.Method, rest))
	}
}

func (e *Emulator) replyErr(w http.ResponseWriter, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		e.reply(w, ae)
		return
	}
	e.reply(w, errf(500, "internal_error", "%v", err))
}

// faultJSON is FaultSpec with durations as strings.
type faultJSON struct {
	Status      int     `json:"status"`
	RetryAfter  string  `json:"retryAfter"`
	Latency     string  `json:"latency"`
	ExpireToken bool    `json:"expireToken"`
	Count       int     `json:"count"`
	For         string  `json:"for"`
	Share       float64 `json:"share"`
	Route       string  `json:"route"`
}

func decodeFaults(body []byte) ([]FaultSpec, error) {
	var list []faultJSON
	if err := json.Unmarshal(body, &list); err != nil {
		var one faultJSON
		if err := json.Unmarshal(body, &one); err != nil {
			return nil, fmt.Errorf("the body must be a fault or a list of faults: %w", err)
		}
		list = []faultJSON{one}
	}
	out := make([]FaultSpec, 0, len(list))
	for _, f := range list {
		spec := FaultSpec{Status: f.Status, ExpireToken: f.ExpireToken, Count: f.Count, Share: f.Share, Route: f.Route}
		for _, d := range []struct {
			s   string
			dst *time.Duration
		}{{f.RetryAfter, &spec.RetryAfter}, {f.Latency, &spec.Latency}, {f.For, &spec.For}} {
			if d.s == "" {
				continue
			}
			v, err := time.ParseDuration(d.s)
			if err != nil {
				return nil, fmt.Errorf("duration %q: %w", d.s, err)
			}
			*d.dst = v
		}
		out = append(out, spec)
	}
	return out, nil
}
