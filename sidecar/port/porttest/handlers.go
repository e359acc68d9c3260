package porttest

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"math"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

func urlUnescape(s string) (string, error) { return url.PathUnescape(s) }

func ok(key string, v any) map[string]any { return map[string]any{"ok": true, key: v} }

// --- blueprints ---

func handleListBlueprints(e *Emulator, rc *reqCtx) (int, any) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]any, 0, len(e.st.blueprints))
	for _, id := range slices.Sorted(maps.Keys(e.st.blueprints)) {
		out = append(out, e.st.blueprints[id].raw)
	}
	return 200, ok("blueprints", out)
}

func handleGetBlueprint(e *Emulator, rc *reqCtx) (int, any) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	bs := e.st.blueprints[rc.params[0]]
	if bs == nil {
		return 0, notFoundBlueprint(rc.params[0])
	}
	return 200, ok("blueprint", bs.raw)
}

func handleCreateBlueprint(e *Emulator, rc *reqCtx) (int, any) {
	raw := deepCopy(rc.object()).(map[string]any)
	e.mu.Lock()
	defer e.mu.Unlock()
	id, _ := raw["identifier"].(string)
	if e.st.blueprints[id] != nil {
		return 0, errf(409, "identifier_taken", "a blueprint with identifier %q already exists", id)
	}
	if ae := e.putBlueprintLocked(raw, rc.now, rc.user); ae != nil {
		return 0, ae
	}
	return 201, ok("blueprint", e.st.blueprints[id].raw)
}

// putBlueprintLocked checks what the shape of a blueprint body cannot
// (relation targets, property types that may not change) and stores it,
// keeping the entities and createdAt of an existing blueprint.
func (e *Emulator) putBlueprintLocked(raw map[string]any, now time.Time, user string) *apiError {
	for _, k := range []string{"createdAt", "createdBy", "updatedAt", "updatedBy"} {
		delete(raw, k)
	}
	if ae := checkBlueprint(raw, func(id string) bool { return e.st.blueprints[id] != nil }); ae != nil {
		return ae
	}
	id := raw["identifier"].(string)
	old := e.st.blueprints[id]
	if old != nil {
		schema := raw["schema"].(map[string]any)
		props := schema["properties"].(map[string]any)
		for name, p := range props {
			if def, ok := old.props[name]; ok && def["type"] != p.(map[string]any)["type"] {
				return invalid("blueprint %q: the type of property %q cannot change", id, name)
			}
		}
		raw["createdAt"], raw["createdBy"] = old.raw["createdAt"], old.raw["createdBy"]
		stamp(raw, now, user, false)
		old.raw = raw
		old.reparse()
	} else {
		stamp(raw, now, user, true)
		e.st.blueprints[id] = newBPState(raw)
	}
	e.changed = true
	return nil
}

func handlePutBlueprint(e *Emulator, rc *reqCtx) (int, any) {
	raw := deepCopy(rc.object()).(map[string]any)
	id := rc.params[0]
	if bid, given := raw["identifier"]; given && bid != id {
		return 0, invalid("the body identifier %v differs from the path %q", bid, id)
	}
	raw["identifier"] = id
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.st.blueprints[id] == nil {
		return 0, notFoundBlueprint(id)
	}
	if ae := e.putBlueprintLocked(raw, rc.now, rc.user); ae != nil {
		return 0, ae
	}
	return 200, ok("blueprint", e.st.blueprints[id].raw)
}

// handlePatchBlueprint merges the body into the blueprint: top-level keys
// are replaced, except relations and the mirror, calculation and
// aggregation properties, which merge key by key (null removes a key);
// a property definition without a type keeps the type it has.
func handlePatchBlueprint(e *Emulator, rc *reqCtx) (int, any) {
	patch := rc.object()
	id := rc.params[0]
	e.mu.Lock()
	defer e.mu.Unlock()
	bs := e.st.blueprints[id]
	if bs == nil {
		return 0, notFoundBlueprint(id)
	}
	if bid, given := patch["identifier"]; given && bid != id {
		return 0, invalid("renaming blueprints is not emulated")
	}
	raw := deepCopy(bs.raw).(map[string]any)
	for k, v := range deepCopy(patch).(map[string]any) {
		switch k {
		case "relations", "mirrorProperties", "calculationProperties", "aggregationProperties":
			vm, isMap := v.(map[string]any)
			cur, _ := raw[k].(map[string]any)
			if !isMap || cur == nil {
				raw[k] = v
				continue
			}
			for kk, vv := range vm {
				if vv == nil {
					delete(cur, kk)
				} else {
					cur[kk] = vv
				}
			}
		case "schema":
			sm := v.(map[string]any)
			for name, p := range sm["properties"].(map[string]any) {
				pm := p.(map[string]any)
				if _, typed := pm["type"]; !typed && bs.props[name] != nil {
					merged := deepCopy(bs.props[name]).(map[string]any)
					for kk, vv := range pm {
						merged[kk] = vv
					}
					sm["properties"].(map[string]any)[name] = merged
				}
			}
			raw[k] = sm
		default:
			raw[k] = v
		}
	}
	if ae := e.putBlueprintLocked(raw, rc.now, rc.user); ae != nil {
		return 0, ae
	}
	return 200, ok("blueprint", e.st.blueprints[id].raw)
}

func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, x := range t {
			m[k] = deepCopy(x)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, x := range t {
			s[i] = deepCopy(x)
		}
		return s
	}
	return v
}

func handleDeleteBlueprint(e *Emulator, rc *reqCtx) (int, any) {
	id := rc.params[0]
	e.mu.Lock()
	defer e.mu.Unlock()
	bs := e.st.blueprints[id]
	if bs == nil {
		return 0, notFoundBlueprint(id)
	}
	if id == "_user" || id == "_team" {
		return 0, errf(403, "missing_permissions", "blueprint %q is protected", id)
	}
	if len(bs.entities) > 0 {
		return 0, errf(403, "has_dependents", "blueprint %q still has %d entities", id, len(bs.entities))
	}
	for oid, other := range e.st.blueprints {
		for name, def := range other.rels {
			if def.target == id && oid != id {
				return 0, invalid("blueprint %q is the target of relation %q of blueprint %q", id, name, oid)
			}
		}
	}
	delete(e.st.blueprints, id)
	e.changed = true
	return 200, map[string]any{"ok": true}
}

func handleDeleteAllEntities(e *Emulator, rc *reqCtx) (int, any) {
	id := rc.params[0]
	e.mu.Lock()
	defer e.mu.Unlock()
	bs := e.st.blueprints[id]
	if bs == nil {
		return 0, notFoundBlueprint(id)
	}
	for name, def := range bs.rels {
		if def.required {
			return 0, invalid("blueprint %q has the required relation %q; delete-all is not allowed", id, name)
		}
	}
	deleted := 0
	for _, eid := range slices.Clone(bs.ids()) {
		keys, _ := e.st.deleteEntity(id, eid, true, rc.now, rc.user)
		deleted += len(keys)
	}
	if rc.flag("delete_blueprint") {
		delete(e.st.blueprints, id)
	}
	mid := "mig_" + generateID()[2:]
	e.migrations[mid] = map[string]any{"id": mid, "status": "COMPLETED", "actor": rc.user, "sourceBlueprint": id,
		"deleteBlueprint": rc.flag("delete_blueprint"), "deleteEntities": true, "successCount": deleted, "failureCount": 0}
	e.changed = true
	return 200, ok("migrationId", mid)
}

func handleGetMigration(e *Emulator, rc *reqCtx) (int, any) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	m := e.migrations[rc.params[0]]
	if m == nil {
		return 0, notFound("migration %q was not found", rc.params[0])
	}
	return 200, ok("migration", m)
}

// --- entities ---

func upsertMode(rc *reqCtx) writeMode {
	switch {
	case !rc.flag("upsert"):
		return modeCreate
	case rc.flag("merge"):
		return modeMerge
	}
	return modeReplace
}

func (rc *reqCtx) writeOpts(mode writeMode) writeOpts {
	return writeOpts{mode: mode, createMissing: rc.flag("create_missing_related_entities"),
		validationOnly: rc.flag("validation_only"), actor: rc.actor, user: rc.user}
}

func handleUpsertEntity(e *Emulator, rc *reqCtx) (int, any) {
	return e.writeOne(rc, rc.object(), rc.writeOpts(upsertMode(rc)))
}

func (e *Emulator) writeOne(rc *reqCtx, in map[string]any, o writeOpts) (int, any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, created, ae := e.st.write(rc.params[0], in, o, rc.now)
	if ae != nil {
		return 0, ae
	}
	if !o.validationOnly {
		e.changed = true
	}
	status := 200
	if created && o.mode != modePatch && o.mode != modePut {
		status = 201
	}
	return status, ok("entity", r.toJSON(rc.params[0]))
}

// handleUpdateEntity serves PATCH (mode modePatch) and PUT (modePut) of
// /v1/blueprints/{b}/entities/{id}.
func handleUpdateEntity(mode writeMode) func(e *Emulator, rc *reqCtx) (int, any) {
	return func(e *Emulator, rc *reqCtx) (int, any) {
		o := rc.writeOpts(mode)
		o.pathID = rc.params[1]
		return e.writeOne(rc, rc.object(), o)
	}
}

// handleBulkUpsert writes each entity with the single-upsert rules. The
// body as a whole has already matched the route's shape (one malformed
// entity rejects the request with 422 and nothing is written); what fails
// against the data model fails per entity: 207 with the failures in
// errors, ok false when no entity was written.
func handleBulkUpsert(e *Emulator, rc *reqCtx) (int, any) {
	items, _ := rc.object()["entities"].([]any)
	bp := rc.params[0]
	o := rc.writeOpts(upsertMode(rc))
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.st.blueprints[bp] == nil {
		return 0, notFoundBlueprint(bp)
	}
	okList := []any{}
	errList := []any{}
	for i, item := range items {
		in := item.(map[string]any)
		r, created, ae := e.st.write(bp, in, o, rc.now)
		if ae != nil {
			ident, isStr := in["identifier"].(string)
			if !isStr {
				ident = "unknown"
			}
			errList = append(errList, map[string]any{"identifier": ident, "index": i, "statusCode": ae.status, "error": ae.code, "message": ae.msg})
			continue
		}
		okList = append(okList, map[string]any{"created": created, "identifier": r.Identifier, "index": i, "additionalData": map[string]any{}})
	}
	if len(okList) > 0 && !o.validationOnly {
		e.changed = true
	}
	status := 200
	if len(errList) > 0 {
		status = 207
	}
	return status, map[string]any{"ok": len(okList) > 0, "entities": okList, "errors": errList}
}

func handleGetEntity(e *Emulator, rc *reqCtx) (int, any) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	bp, id := rc.params[0], rc.params[1]
	bs := e.st.blueprints[bp]
	if bs == nil {
		return 0, notFoundBlueprint(bp)
	}
	r := bs.entities[id]
	if r == nil {
		return 0, notFound("%s was not found", describe(bp, id))
	}
	return 200, ok("entity", e.render(rc, bp, r, rc.query["include"], rc.query["exclude"]))
}

func handleListEntities(e *Emulator, rc *reqCtx) (int, any) {
	e.mu.Lock() // ids() may rebuild the order
	defer e.mu.Unlock()
	bp := rc.params[0]
	bs := e.st.blueprints[bp]
	if bs == nil {
		return 0, notFoundBlueprint(bp)
	}
	out := make([]any, 0, len(bs.entities))
	for _, id := range bs.ids() {
		out = append(out, e.render(rc, bp, bs.entities[id], rc.query["include"], rc.query["exclude"]))
	}
	return 200, ok("entities", out)
}

func handleCountEntities(e *Emulator, rc *reqCtx) (int, any) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	bs := e.st.blueprints[rc.params[0]]
	if bs == nil {
		return 0, notFoundBlueprint(rc.params[0])
	}
	return 200, ok("count", len(bs.entities))
}

// render returns an entity as JSON, with GET-style include/exclude paths
// ("identifier", "properties.x") and attach_title_to_relation.
func (e *Emulator) render(rc *reqCtx, bp string, r *record, include, exclude []string) map[string]any {
	m := r.toJSON(bp)
	if rc.flag("attach_title_to_relation") {
		rels := map[string]any{}
		bs := e.st.blueprints[bp]
		for name, v := range r.body.relations().decode() {
			target := e.st.blueprints[bs.rels[name].target]
			attach := func(id string) any {
				title := any(nil)
				if target != nil && target.entities[id] != nil {
					title = target.entities[id].Title
				}
				return map[string]any{"identifier": id, "title": title}
			}
			switch t := v.(type) {
			case string:
				rels[name] = attach(t)
			case []any:
				list := make([]any, 0, len(t))
				for _, id := range targets(t) {
					list = append(list, attach(id))
				}
				rels[name] = list
			default:
				rels[name] = v
			}
		}
		m["relations"] = rels
	}
	return project(m, include, exclude)
}

// project keeps the include paths (all when empty) and drops the exclude
// paths; a path is "key" or "key.sub".
func project(m map[string]any, include, exclude []string) map[string]any {
	if len(include) > 0 {
		out := map[string]any{}
		for _, p := range include {
			top, sub, nested := strings.Cut(p, ".")
			v, ok := m[top]
			if !ok {
				continue
			}
			if !nested {
				out[top] = v
				continue
			}
			if o, encoded := v.(jsonObject); encoded {
				v = o.decode() // once for all the paths into it
				m[top] = v
			}
			src, _ := v.(map[string]any)
			if _, has := src[sub]; !has {
				continue
			}
			dst, _ := out[top].(map[string]any)
			if dst == nil {
				dst = map[string]any{}
				out[top] = dst
			}
			dst[sub] = src[sub]
		}
		m = out
	}
	for _, p := range exclude {
		top, sub, nested := strings.Cut(p, ".")
		if !nested {
			delete(m, top)
			continue
		}
		switch src := m[top].(type) {
		case map[string]any:
			c := maps.Clone(src)
			delete(c, sub)
			m[top] = c
		case jsonObject:
			c := src.decode()
			delete(c, sub)
			m[top] = c
		}
	}
	return m
}

// searchPaths maps search-body include/exclude names ($identifier, bare
// property or relation ids) to render paths.
func searchPaths(bs *bpState, names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if meta, ok := strings.CutPrefix(n, "$"); ok {
			out = append(out, meta)
			continue
		}
		if _, isRel := bs.rels[n]; isRel {
			out = append(out, "relations."+n)
		} else {
			out = append(out, "properties."+n)
		}
	}
	return out
}

func handleDeleteEntity(e *Emulator, rc *reqCtx) (int, any) {
	bp, id := rc.params[0], rc.params[1]
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.st.blueprints[bp] == nil {
		return 0, notFoundBlueprint(bp)
	}
	if _, ae := e.st.deleteEntity(bp, id, rc.flag("delete_dependents"), rc.now, rc.user); ae != nil {
		return 0, ae
	}
	e.changed = true
	return 200, map[string]any{"ok": true}
}

func handleBulkDelete(e *Emulator, rc *reqCtx) (int, any) {
	var body struct {
		Entities []string `json:"entities"`
	}
	_ = json.Unmarshal(rc.body, &body)
	bp := rc.params[0]
	cascade := rc.flag("delete_dependents")
	e.mu.Lock()
	defer e.mu.Unlock()
	bs := e.st.blueprints[bp]
	if bs == nil {
		return 0, notFoundBlueprint(bp)
	}
	if !cascade {
		for _, id := range body.Entities {
			if bs.entities[id] == nil {
				continue
			}
			req, _ := e.st.dependents(bp, id)
			for _, d := range req {
				if d.bp != bp || !slices.Contains(body.Entities, d.id) {
					return 0, errf(403, "has_dependents", "%s has dependent entities (e.g. %s); nothing was deleted", describe(bp, id), describe(d.bp, d.id))
				}
			}
		}
	}
	deleted := []string{}
	for _, id := range body.Entities {
		if bs.entities[id] == nil {
			continue
		}
		if _, ae := e.st.deleteEntity(bp, id, true, rc.now, rc.user); ae == nil {
			deleted = append(deleted, id)
		}
	}
	if len(deleted) > 0 {
		e.changed = true
	}
	return 200, ok("deletedEntities", deleted)
}

// --- search ---

func handleSearchBlueprint(e *Emulator, rc *reqCtx) (int, any) {
	var body struct {
		Query   map[string]any `json:"query"`
		Include []string       `json:"include"`
		Exclude []string       `json:"exclude"`
		Limit   *float64       `json:"limit"`
		From    string         `json:"from"`
	}
	_ = json.Unmarshal(rc.body, &body) // the route's shape has checked it
	limit := 200
	if body.Limit != nil {
		// The contract asks for a number from 1 to 1000, not an integer;
		// a fraction is rounded down.
		limit = int(math.Floor(*body.Limit))
	}
	after := ""
	if body.From != "" {
		b, err := base64.RawURLEncoding.DecodeString(body.From)
		if err != nil {
			return 0, invalid("from is not a token this server issued")
		}
		after = string(b)
	}
	bp := rc.params[0]
	e.mu.Lock()
	defer e.mu.Unlock()
	bs := e.st.blueprints[bp]
	if bs == nil {
		return 0, notFoundBlueprint(bp)
	}
	m := func(string, *record) bool { return true }
	if body.Query != nil {
		var ae *apiError
		if m, ae = e.st.compile(body.Query, rc.now); ae != nil {
			return 0, ae
		}
	}
	ids := bs.ids()
	start := 0
	if body.From != "" {
		start = sort.SearchStrings(ids, after)
		if start < len(ids) && ids[start] == after {
			start++
		}
	}
	inc, exc := searchPaths(bs, body.Include), searchPaths(bs, body.Exclude)
	out := []any{}
	next, last := "", ""
	for _, id := range ids[start:] {
		r := bs.entities[id]
		if !m(bp, r) {
			continue
		}
		if len(out) == limit {
			next = base64.RawURLEncoding.EncodeToString([]byte(last))
			break
		}
		out = append(out, e.render(rc, bp, r, inc, exc))
		last = id
	}
	res := map[string]any{"ok": true, "entities": out}
	if next != "" {
		res["next"] = next
	}
	return 200, res
}

func handleSearchAll(e *Emulator, rc *reqCtx) (int, any) {
	q := rc.object()
	e.mu.Lock()
	defer e.mu.Unlock()
	m, ae := e.st.compile(q, rc.now)
	if ae != nil {
		return 0, ae
	}
	out := []any{}
	matching := []any{}
	for _, bp := range slices.Sorted(maps.Keys(e.st.blueprints)) {
		bs := e.st.blueprints[bp]
		found := false
		for _, id := range bs.ids() {
			if r := bs.entities[id]; m(bp, r) {
				out = append(out, e.render(rc, bp, r, rc.query["include"], rc.query["exclude"]))
				found = true
			}
		}
		if found {
			matching = append(matching, bp)
		}
	}
	return 200, map[string]any{"ok": true, "matchingBlueprints": matching, "failedBlueprints": []any{}, "entities": out}
}

func handleDatasourceEntities(e *Emulator, rc *reqCtx) (int, any) {
	var body struct {
		Prefix string   `json:"datasource_prefix"`
		Suffix string   `json:"datasource_suffix"`
		Limit  *float64 `json:"limit"`
		From   string   `json:"from"`
		Before string   `json:"before"`
	}
	_ = json.Unmarshal(rc.body, &body) // the route's shape has checked it
	limit := 5000
	if body.Limit != nil {
		limit = int(math.Floor(*body.Limit))
	}
	var before time.Time
	if body.Before != "" {
		before, _ = time.Parse(time.RFC3339Nano, body.Before)
	}
	after := refKey{}
	if body.From != "" {
		b, err := base64.RawURLEncoding.DecodeString(body.From)
		bp, id, found := strings.Cut(string(b), "\x00")
		if err != nil || !found {
			return 0, invalid("from is not a token this server issued")
		}
		after = refKey{bp, id}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := []any{}
	var next any
	last := refKey{}
	for _, bp := range slices.Sorted(maps.Keys(e.st.blueprints)) {
		if body.From != "" && bp < after.bp {
			continue
		}
		bs := e.st.blueprints[bp]
		ids := bs.ids()
		if body.From != "" && bp == after.bp {
			// keyset: start after the token's identifier, not from the top
			ids = ids[sort.Search(len(ids), func(i int) bool { return ids[i] > after.id }):]
		}
		for _, id := range ids {
			r := bs.entities[id]
			if !before.IsZero() && !r.UpdatedAt.Before(before) {
				continue
			}
			if !slices.ContainsFunc(r.DataSources, func(ds string) bool {
				return strings.HasPrefix(ds, body.Prefix) && strings.HasSuffix(ds, body.Suffix)
			}) {
				continue
			}
			if len(out) == limit {
				next = base64.RawURLEncoding.EncodeToString([]byte(last.bp + "\x00" + last.id))
				return 200, map[string]any{"ok": true, "entities": out, "next": next}
			}
			out = append(out, r.toJSON(bp))
			last = refKey{bp, id}
		}
	}
	return 200, map[string]any{"ok": true, "entities": out, "next": next}
}
