package porttest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"
)

// Integrations, as Port's own integrations (Ocean) use them: an
// integration holds its mapping in config; editing the mapping in Port's UI
// (PATCH .../config), an empty PATCH, or the UI's resync button creates a
// resync request that polling integrations read from .../resync-request;
// integrations report their resync state and raw examples per kind.

// integration is one stored integration with the emulator's bookkeeping.
type integration struct {
	Identifier                  string         `json:"identifier"`
	Title                       *string        `json:"title"`
	InstallationAppType         string         `json:"installationAppType,omitempty"`
	Version                     string         `json:"version,omitempty"`
	Config                      map[string]any `json:"config"`
	ChangelogDestination        map[string]any `json:"changelogDestination,omitempty"`
	ActionsProcessingEnabled    bool           `json:"actionsProcessingEnabled"`
	IncrementalSyncEnabled      bool           `json:"incrementalSyncEnabled"`
	CreatePortResourcesOrigin   string         `json:"createPortResourcesOrigin,omitempty"`
	ArePortResourcesInitialized bool           `json:"arePortResourcesInitialized"`
	ProcessingMode              string         `json:"processingMode,omitempty"`
	Spec                        map[string]any `json:"spec,omitempty"`
	ResyncState                 map[string]any `json:"resyncState,omitempty"`
	LogIngestID                 string         `json:"logIngestId"`
	CreatedAt                   time.Time      `json:"createdAt"`
	CreatedBy                   string         `json:"createdBy"`
	UpdatedAt                   time.Time      `json:"updatedAt"`
	UpdatedBy                   string         `json:"updatedBy"`

	// Bookkeeping the admin API shows.
	ResyncRequests []ResyncRequest             `json:"resyncRequests,omitempty"` // oldest first; the last is current
	StateHistory   []map[string]any            `json:"resyncStateHistory,omitempty"`
	Examples       map[string][]map[string]any `json:"examples,omitempty"`     // latest batch per kind
	ExamplePosts   map[string]int              `json:"examplePosts,omitempty"` // batches received per kind
	Logs           []any                       `json:"logs,omitempty"`
}

// ResyncRequest is a request to resync an integration, as Port's UI makes
// one.
type ResyncRequest struct {
	ID        string    `json:"id"`
	UpdatedAt time.Time `json:"updatedAt"`
	Reason    string    `json:"reason"` // "config", "patch", "admin"
}

// Resync-state statuses Ocean reports.
var resyncStatuses = []any{"running", "completed", "failed", "aborted"}

// maxLogs bounds the log lines kept per integration.
const maxLogs = 1000

// Integration bodies: config follows the port-app-config shape (resources
// with kind, selector and port.entity.mappings); create follows the
// published 2024 contract plus the keys Ocean sends.
var (
	integrationConfig = func() *shape {
		mapping := object(map[string]*shape{
			"identifier": oneOf(str(), closedObject(map[string]*shape{"combinator": str(), "rules": arrayOf(typed("object"))}, "combinator", "rules")),
			"title":      str(), "blueprint": str(), "properties": typed("object"), "relations": typed("object"),
		}, "identifier", "blueprint")
		resource := object(map[string]*shape{
			"kind":     str(),
			"selector": object(map[string]*shape{"query": str()}),
			"port": object(map[string]*shape{"entity": object(map[string]*shape{
				"mappings": oneOf(arrayOf(mapping), mapping)}, "mappings")}, "entity"),
		}, "kind", "selector", "port")
		return &shape{types: []string{"object", "null"}, props: map[string]*shape{
			"deleteDependentEntities": boolean(), "createMissingRelatedEntities": boolean(), "resources": arrayOf(resource)}}
	}()
	changelogDest = &shape{types: []string{"object"}, props: map[string]*shape{"type": strEnum("WEBHOOK", "KAFKA")}, oneOf: []*shape{
		closedObject(map[string]*shape{"type": strEnum("KAFKA")}, "type"),
		closedObject(map[string]*shape{"type": strEnum("WEBHOOK"), "agent": boolean(), "url": {types: []string{"string"}, format: "uri"}}, "url", "type"),
	}}
	createIntegrationBody = closedObject(map[string]*shape{
		"installationId": {types: []string{"string"}, minLen: 1}, "title": str(), "version": str(),
		"installationAppType": str(), "changelogDestination": changelogDest, "config": integrationConfig,
		"actionsProcessingEnabled": boolean(), "incrementalSyncEnabled": boolean(),
		"createPortResourcesOrigin": strEnum("Port", "Ocean"),
	}, "installationId")
	patchIntegrationBody = object(map[string]*shape{
		"title": typed("string", "null"), "installationAppType": str(), "version": str(), "spec": typed("object"),
		"actionsProcessingEnabled": boolean(), "config": integrationConfig,
		"changelogDestination":   {types: []string{"object"}, oneOf: []*shape{closedObject(nil), changelogDest}},
		"incrementalSyncEnabled": boolean(), "arePortResourcesInitialized": boolean(), "processingMode": str(),
	})
	integrationConfigBody = closedObject(map[string]*shape{"config": integrationConfig}, "config")
	resyncStateBody       = closedObject(map[string]*shape{
		"status":            oneOfValues(resyncStatuses...),
		"lastResyncStart":   {types: []string{"string", "null"}, format: "date-time"},
		"lastResyncEnd":     {types: []string{"string", "null"}, format: "date-time"},
		"nextResync":        {types: []string{"string", "null"}, format: "date-time"},
		"intervalInMinuets": {types: []string{"number", "null"}, min: fptr(0)},
	}, "status")
	examplesBody = closedObject(map[string]*shape{"examples": arrayOf(typed("object"))}, "examples")
	logsBody     = object(map[string]*shape{"logs": arrayOf(anyValue())}, "logs")
)

var integrationRoutes = []route{
	newRoute("GET", "/v1/integration", handleListIntegrations).query(map[string]param{"actionsProcessingEnabled": boolParam}),
	newRoute("POST", "/v1/integration", handleCreateIntegration).writes().query(map[string]param{"upsert": boolParam}).takes(createIntegrationBody),
	newRoute("GET", "/v1/integration/{id}", handleGetIntegration).
		query(map[string]param{"byField": {kind: "enum", values: []string{"installationId", "logIngestId"}}}),
	newRoute("PATCH", "/v1/integration/{id}", handlePatchIntegration).writes().takesOptional(patchIntegrationBody),
	newRoute("DELETE", "/v1/integration/{id}", handleDeleteIntegration).writes(),
	newRoute("PATCH", "/v1/integration/{id}/config", handlePatchIntegrationConfig).writes().takes(integrationConfigBody),
	newRoute("GET", "/v1/integration/{id}/resync-request", handleGetResyncRequest),
	newRoute("PATCH", "/v1/integration/{id}/resync-state", handlePatchResyncState).writes().takes(resyncStateBody),
	newRoute("POST", "/v1/integration/{id}/kinds/{kind}/examples", handlePostExamples).writes().takes(examplesBody),
	newRoute("GET", "/v1/integration/{id}/kinds", handleGetKinds),
	newRoute("GET", "/v1/integration/{id}/logs", handleGetLogs).query(map[string]param{
		"limit": {kind: "number", min: fptr(0), max: fptr(300)}, "timestamp": stringParam, "log_id": stringParam,
		"direction": {kind: "enum", values: []string{"up", "down"}}, "eventId": stringParam,
		"level": {kind: "array", values: []string{"DEBUG", "INFO", "WARNING", "ERROR", "FATAL"}}}),
}

func notFoundIntegration(id string) *apiError {
	return notFound("an integration with identifier %q was not found", id)
}

func randomID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// toJSON renders an integration as Port answers it; base is the
// emulator's own URL, where its log and metric sinks live.
func (in *integration) toJSON(base string) map[string]any {
	cfg := in.Config
	if cfg == nil {
		cfg = map[string]any{}
	}
	m := map[string]any{
		"identifier": in.Identifier, "installationId": in.Identifier, "title": in.Title,
		"installationAppType": in.InstallationAppType, "version": in.Version, "installationType": "OnPrem",
		"config": cfg, "actionsProcessingEnabled": in.ActionsProcessingEnabled, "incrementalSyncEnabled": in.IncrementalSyncEnabled,
		"arePortResourcesInitialized": in.ArePortResourcesInitialized,
		"_id":                         "int_" + in.LogIngestID, "_orgId": "org_porttest", "clientId": "",
		"logAttributes":    map[string]any{"ingestId": in.LogIngestID, "ingestUrl": base + "/_emulator/ingest/logs/" + in.Identifier},
		"metricAttributes": map[string]any{"ingestId": in.LogIngestID, "ingestUrl": base + "/_emulator/ingest/metrics/" + in.Identifier},
		"ingestAttributes": map[string]any{"ingestUrl": base + "/_emulator/ingest/data/" + in.Identifier},
		"createdAt":        in.CreatedAt.Format(time.RFC3339Nano), "createdBy": in.CreatedBy,
		"updatedAt": in.UpdatedAt.Format(time.RFC3339Nano), "updatedBy": in.UpdatedBy,
	}
	for k, v := range map[string]any{"changelogDestination": in.ChangelogDestination, "spec": in.Spec, "resyncState": in.ResyncState} {
		if v.(map[string]any) != nil {
			m[k] = v
		}
	}
	if in.CreatePortResourcesOrigin != "" {
		m["createPortResourcesOrigin"] = in.CreatePortResourcesOrigin
	}
	if in.ProcessingMode != "" {
		m["processingMode"] = in.ProcessingMode
	}
	return m
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// requestResyncLocked creates a resync request; its updatedAt is always
// later than the previous one's.
func (in *integration) requestResyncLocked(now time.Time, reason string) ResyncRequest {
	now = now.Truncate(time.Millisecond)
	if n := len(in.ResyncRequests); n > 0 && !now.After(in.ResyncRequests[n-1].UpdatedAt) {
		now = in.ResyncRequests[n-1].UpdatedAt.Add(time.Millisecond)
	}
	rr := ResyncRequest{ID: randomID("rr_"), UpdatedAt: now, Reason: reason}
	in.ResyncRequests = append(in.ResyncRequests, rr)
	return rr
}

func (in *integration) touch(now time.Time, user string) { in.UpdatedAt, in.UpdatedBy = now, user }

// applyIntegration copies the fields of a create or patch body.
func (in *integration) apply(body map[string]any) {
	for k, v := range body {
		switch k {
		case "title":
			if s, ok := v.(string); ok {
				in.Title = &s
			} else {
				in.Title = nil
			}
		case "installationAppType":
			in.InstallationAppType = v.(string)
		case "version":
			in.Version = v.(string)
		case "config":
			in.Config, _ = deepCopy(v).(map[string]any)
		case "changelogDestination":
			in.ChangelogDestination, _ = deepCopy(v).(map[string]any)
		case "actionsProcessingEnabled":
			in.ActionsProcessingEnabled = v.(bool)
		case "incrementalSyncEnabled":
			in.IncrementalSyncEnabled = v.(bool)
		case "createPortResourcesOrigin":
			in.CreatePortResourcesOrigin = v.(string)
		case "arePortResourcesInitialized":
			in.ArePortResourcesInitialized = v.(bool)
		case "processingMode":
			in.ProcessingMode, _ = v.(string)
		case "spec":
			in.Spec, _ = deepCopy(v).(map[string]any)
		}
	}
}

func handleListIntegrations(e *Emulator, rc *reqCtx) (int, any) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := []any{}
	for _, id := range slices.Sorted(maps.Keys(e.st.integrations)) {
		in := e.st.integrations[id]
		if v := rc.query.Get("actionsProcessingEnabled"); v != "" && (v == "true") != in.ActionsProcessingEnabled {
			continue
		}
		out = append(out, in.toJSON(baseURL(rc.r)))
	}
	return 200, ok("integrations", out)
}

func handleCreateIntegration(e *Emulator, rc *reqCtx) (int, any) {
	body := rc.object()
	id := body["installationId"].(string)
	e.mu.Lock()
	defer e.mu.Unlock()
	in := e.st.integrations[id]
	switch {
	case in != nil && !rc.flag("upsert"):
		return 0, errf(409, "identifier_taken", "an integration with identifier %q already exists", id)
	case in == nil:
		in = &integration{Identifier: id, LogIngestID: randomID(""), CreatedAt: rc.now, CreatedBy: rc.user}
		e.st.integrations[id] = in
	}
	in.apply(body)
	in.touch(rc.now, rc.user)
	e.changed = true
	return 200, ok("integration", in.toJSON(baseURL(rc.r)))
}

// lookupIntegration finds an integration by identifier, or by its log
// ingest id when byField asks so.
func (e *Emulator) lookupIntegration(rc *reqCtx) (*integration, *apiError) {
	id := rc.params[0]
	if rc.query.Get("byField") == "logIngestId" {
		for _, in := range e.st.integrations {
			if in.LogIngestID == id {
				return in, nil
			}
		}
		return nil, notFoundIntegration(id)
	}
	in := e.st.integrations[id]
	if in == nil {
		return nil, notFoundIntegration(id)
	}
	return in, nil
}

func handleGetIntegration(e *Emulator, rc *reqCtx) (int, any) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	in, ae := e.lookupIntegration(rc)
	if ae != nil {
		return 0, ae
	}
	return 200, ok("integration", in.toJSON(baseURL(rc.r)))
}

// handlePatchIntegration merges the body; an empty body asks for a resync,
// and so does a changed config (unless x-skip-resync: true).
func handlePatchIntegration(e *Emulator, rc *reqCtx) (int, any) {
	body := rc.object()
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ae := e.lookupIntegration(rc)
	if ae != nil {
		return 0, ae
	}
	_, hasConfig := body["config"]
	changed := hasConfig && !jsonEqual(toAny(in.Config), body["config"])
	in.apply(body)
	in.touch(rc.now, rc.user)
	switch {
	case len(body) == 0:
		in.requestResyncLocked(rc.now, "patch")
	case changed && rc.r.Header.Get("x-skip-resync") != "true":
		in.requestResyncLocked(rc.now, "config")
	}
	e.changed = true
	return 200, ok("integration", in.toJSON(baseURL(rc.r)))
}

// toAny turns a nil map into a nil interface, so that it compares equal
// to a JSON null.
func toAny(m map[string]any) any {
	if m == nil {
		return nil
	}
	return m
}

func handlePatchIntegrationConfig(e *Emulator, rc *reqCtx) (int, any) {
	cfg := rc.object()["config"]
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ae := e.lookupIntegration(rc)
	if ae != nil {
		return 0, ae
	}
	changed := !jsonEqual(toAny(in.Config), cfg)
	in.Config, _ = deepCopy(cfg).(map[string]any)
	in.touch(rc.now, rc.user)
	if changed && rc.r.Header.Get("x-skip-resync") != "true" {
		in.requestResyncLocked(rc.now, "config")
	}
	e.changed = true
	return 200, ok("integration", in.toJSON(baseURL(rc.r)))
}

func handleDeleteIntegration(e *Emulator, rc *reqCtx) (int, any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ae := e.lookupIntegration(rc)
	if ae != nil {
		return 0, ae
	}
	delete(e.st.integrations, in.Identifier)
	e.changed = true
	return 200, map[string]any{"ok": true}
}

func handleGetResyncRequest(e *Emulator, rc *reqCtx) (int, any) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	in, ae := e.lookupIntegration(rc)
	if ae != nil {
		return 0, ae
	}
	if len(in.ResyncRequests) == 0 {
		return 200, map[string]any{"ok": true, "request": nil}
	}
	rr := in.ResyncRequests[len(in.ResyncRequests)-1]
	return 200, ok("request", map[string]any{"id": rr.ID, "updatedAt": rr.UpdatedAt.Format(time.RFC3339Nano)})
}

// handlePatchResyncState stores the state with a fresh updatedAt, which
// also becomes the integration's updatedAt (Ocean tells its own state
// updates from other changes by the two being equal).
func handlePatchResyncState(e *Emulator, rc *reqCtx) (int, any) {
	body := rc.object()
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ae := e.lookupIntegration(rc)
	if ae != nil {
		return 0, ae
	}
	state := map[string]any{}
	if in.ResyncState != nil {
		state = maps.Clone(in.ResyncState)
	}
	for k, v := range body {
		state[k] = v
	}
	state["updatedAt"] = rc.now.Format(time.RFC3339Nano)
	in.ResyncState = state
	in.StateHistory = append(in.StateHistory, maps.Clone(state))
	in.touch(rc.now, rc.user)
	e.changed = true
	return 200, ok("integration", in.toJSON(baseURL(rc.r)))
}

func handlePostExamples(e *Emulator, rc *reqCtx) (int, any) {
	list, _ := rc.object()["examples"].([]any)
	kind := rc.params[1]
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ae := e.lookupIntegration(rc)
	if ae != nil {
		return 0, ae
	}
	batch := make([]map[string]any, len(list))
	for i, x := range list {
		batch[i] = deepCopy(x).(map[string]any)
	}
	if in.Examples == nil {
		in.Examples, in.ExamplePosts = map[string][]map[string]any{}, map[string]int{}
	}
	in.Examples[kind] = batch
	in.ExamplePosts[kind]++
	e.changed = true
	return 200, map[string]any{"ok": true}
}

func handleGetKinds(e *Emulator, rc *reqCtx) (int, any) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	in, ae := e.lookupIntegration(rc)
	if ae != nil {
		return 0, ae
	}
	data := map[string]any{}
	for kind, batch := range in.Examples {
		ex := make([]any, len(batch))
		for i, x := range batch {
			ex[i] = map[string]any{"_id": fmt.Sprintf("%s-%d", kind, i), "data": x}
		}
		data[kind] = map[string]any{"examples": ex}
	}
	return 200, ok("data", data)
}

func handleGetLogs(e *Emulator, rc *reqCtx) (int, any) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	in, ae := e.lookupIntegration(rc)
	if ae != nil {
		return 0, ae
	}
	limit := 100
	if v := rc.query.Get("limit"); v != "" {
		fmt.Sscan(v, &limit)
	}
	logs := in.Logs
	if len(logs) > limit {
		logs = logs[len(logs)-limit:]
	}
	return 200, ok("data", map[string]any{"logs": slices.Clone(logs)})
}

// ingestLogs is the log sink an integration's logAttributes.ingestUrl
// points at: it keeps the last maxLogs lines.
func (e *Emulator) ingestLogs(id string, body []byte) *apiError {
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		return errf(400, "bad_request", "the body is not valid JSON: %v", err)
	}
	if ae := checkBody(logsBody, doc); ae != nil {
		return ae
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	in := e.st.integrations[id]
	if in == nil {
		return notFoundIntegration(id)
	}
	in.Logs = append(in.Logs, doc.(map[string]any)["logs"].([]any)...)
	if len(in.Logs) > maxLogs {
		in.Logs = in.Logs[len(in.Logs)-maxLogs:]
	}
	return nil
}

// IntegrationRecord is a stored integration with the emulator's
// bookkeeping, for tests.
type IntegrationRecord struct {
	Identifier          string                      `json:"identifier"`
	Title               string                      `json:"title"`
	Version             string                      `json:"version"`
	InstallationAppType string                      `json:"installationAppType"`
	Config              map[string]any              `json:"config"`
	ResyncState         map[string]any              `json:"resyncState"`        // the last reported state, with updatedAt
	ResyncStateHistory  []map[string]any            `json:"resyncStateHistory"` // every reported state, oldest first
	ResyncRequests      []ResyncRequest             `json:"resyncRequests"`     // oldest first; the last is the current one
	Examples            map[string][]map[string]any `json:"examples"`           // the latest batch per kind
	ExamplePosts        map[string]int              `json:"examplePosts"`       // batches received per kind
	Logs                []any                       `json:"logs"`
	CreatedAt           time.Time                   `json:"createdAt"`
	UpdatedAt           time.Time                   `json:"updatedAt"`
}

func (in *integration) export() IntegrationRecord {
	r := IntegrationRecord{Identifier: in.Identifier, Version: in.Version, InstallationAppType: in.InstallationAppType,
		CreatedAt: in.CreatedAt, UpdatedAt: in.UpdatedAt, ExamplePosts: maps.Clone(in.ExamplePosts),
		ResyncRequests: slices.Clone(in.ResyncRequests), Logs: slices.Clone(in.Logs)}
	if in.Title != nil {
		r.Title = *in.Title
	}
	r.Config, _ = deepCopy(in.Config).(map[string]any)
	r.ResyncState, _ = deepCopy(in.ResyncState).(map[string]any)
	for _, s := range in.StateHistory {
		r.ResyncStateHistory = append(r.ResyncStateHistory, maps.Clone(s))
	}
	if in.Examples != nil {
		r.Examples = map[string][]map[string]any{}
		for k, v := range in.Examples {
			r.Examples[k] = slices.Clone(v)
		}
	}
	return r
}

// Integration returns a stored integration.
func (e *Emulator) Integration(id string) (IntegrationRecord, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	in := e.st.integrations[id]
	if in == nil {
		return IntegrationRecord{}, false
	}
	return in.export(), true
}

// PutIntegration creates or replaces an integration directly, with the
// same validation as POST /v1/integration (the body's installationId
// names it).
func (e *Emulator) PutIntegration(body map[string]any) error {
	if ae := checkBody(createIntegrationBody, body); ae != nil {
		return fmt.Errorf("putting integration %v: %w", body["installationId"], ae)
	}
	now := time.Now().UTC()
	e.mu.Lock()
	defer e.mu.Unlock()
	id := body["installationId"].(string)
	in := &integration{Identifier: id, LogIngestID: randomID(""), CreatedAt: now, CreatedBy: "porttest", UpdatedAt: now, UpdatedBy: "porttest"}
	in.apply(body)
	e.st.integrations[id] = in
	e.changed = true
	return nil
}

// RequestResync creates a resync request for an integration, as the resync
// button of Port's UI does.
func (e *Emulator) RequestResync(id string) (ResyncRequest, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in := e.st.integrations[id]
	if in == nil {
		return ResyncRequest{}, notFoundIntegration(id)
	}
	e.changed = true
	return in.requestResyncLocked(time.Now().UTC(), "admin"), nil
}

// EditIntegrationConfig replaces an integration's config as a user editing
// the mapping in Port's UI does: validated like PATCH .../config, and a
// resync request follows.
func (e *Emulator) EditIntegrationConfig(id string, config map[string]any) (ResyncRequest, error) {
	if ae := checkBody(integrationConfig, config); ae != nil || config == nil {
		if ae == nil {
			ae = invalid("body must be object")
		}
		return ResyncRequest{}, fmt.Errorf("editing the config of integration %q: %w", id, ae)
	}
	now := time.Now().UTC()
	e.mu.Lock()
	defer e.mu.Unlock()
	in := e.st.integrations[id]
	if in == nil {
		return ResyncRequest{}, notFoundIntegration(id)
	}
	in.Config, _ = deepCopy(config).(map[string]any)
	in.touch(now, "porttest-ui")
	e.changed = true
	return in.requestResyncLocked(now, "config"), nil
}

// Integrations returns every stored integration, ordered by identifier.
func (e *Emulator) Integrations() []IntegrationRecord {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]IntegrationRecord, 0, len(e.st.integrations))
	for _, id := range slices.Sorted(maps.Keys(e.st.integrations)) {
		out = append(out, e.st.integrations[id].export())
	}
	return out
}

// serveIntegrationAdmin serves the admin routes of integrations (segs
// follow /_emulator/); it reports whether it handled the request.
func (e *Emulator) serveIntegrationAdmin(w http.ResponseWriter, r *http.Request, segs []string, body []byte) bool {
	reply := func(v any, err error) {
		if err != nil {
			e.replyErr(w, err)
			return
		}
		e.writeJSON(w, 200, v)
	}
	decode := func() (map[string]any, error) {
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil || m == nil {
			return nil, invalid("the body must be a JSON object")
		}
		return m, nil
	}
	switch {
	case segs[0] == "ingest" && len(segs) >= 3 && r.Method == "POST" && segs[1] == "logs":
		if ae := e.ingestLogs(segs[2], body); ae != nil {
			e.reply(w, ae)
			return true
		}
		reply(map[string]any{"ok": true}, nil)
	case segs[0] == "ingest" && len(segs) >= 3 && (r.Method == "POST" || r.Method == "PUT"):
		reply(map[string]any{"ok": true}, nil) // metrics and raw data are accepted and dropped
	case segs[0] != "integrations":
		return false
	case r.Method == "GET" && len(segs) == 1:
		reply(map[string]any{"ok": true, "integrations": e.Integrations()}, nil)
	case r.Method == "GET" && len(segs) == 2:
		rec, found := e.Integration(segs[1])
		if !found {
			e.reply(w, notFoundIntegration(segs[1]))
			return true
		}
		reply(map[string]any{"ok": true, "integration": rec}, nil)
	case r.Method == "PUT" && len(segs) == 2:
		m, err := decode()
		if err == nil {
			m["installationId"] = segs[1]
			err = e.PutIntegration(m)
		}
		reply(map[string]any{"ok": true}, err)
	case r.Method == "POST" && len(segs) == 3 && segs[2] == "resync":
		rr, err := e.RequestResync(segs[1])
		reply(map[string]any{"ok": true, "request": rr}, err)
	case r.Method == "PUT" && len(segs) == 3 && segs[2] == "config":
		m, err := decode()
		var rr ResyncRequest
		if err == nil {
			rr, err = e.EditIntegrationConfig(segs[1], m)
		}
		reply(map[string]any{"ok": true, "request": rr}, err)
	default:
		return false
	}
	return true
}
