package porttest

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/portbridge/portbridge/sidecar/port"
)

// record is one stored entity. Records in the store are never changed in
// place: a change saves a new record (clone gives it a meta of its own).
type record struct {
	Identifier string
	Title      string
	body       body // properties and relations
	CreatedAt  time.Time
	UpdatedAt  time.Time
	*meta      // never nil; shared between stored records (interner.meta)
}

// meta is what the records of one writer have in common: in a synthetic
// catalog, every record has the same.
type meta struct {
	Icon        string
	Team        []string
	CreatedBy   string
	UpdatedBy   string
	DataSources []string
}

// recordJSON is a record as the dump and the state file hold it.
type recordJSON struct {
	Identifier  string     `json:"identifier"`
	Title       string     `json:"title,omitempty"`
	Icon        string     `json:"icon,omitempty"`
	Team        []string   `json:"team"`
	Properties  jsonObject `json:"properties"`
	Relations   jsonObject `json:"relations"`
	CreatedAt   time.Time  `json:"createdAt"`
	CreatedBy   string     `json:"createdBy"`
	UpdatedAt   time.Time  `json:"updatedAt"`
	UpdatedBy   string     `json:"updatedBy"`
	DataSources []string   `json:"datasources"`
}

func (r *record) MarshalJSON() ([]byte, error) {
	props, rels := r.body.objects()
	return json.Marshal(recordJSON{Identifier: r.Identifier, Title: r.Title, Icon: r.Icon, Team: r.Team,
		Properties: props, Relations: rels, CreatedAt: r.CreatedAt, CreatedBy: r.CreatedBy,
		UpdatedAt: r.UpdatedAt, UpdatedBy: r.UpdatedBy, DataSources: r.DataSources})
}

func (r *record) UnmarshalJSON(b []byte) error {
	var j recordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err // unwrapped: encoding/json adds the field's path to its own error type only
	}
	*r = record{Identifier: j.Identifier, Title: j.Title, body: newBody(j.Properties, j.Relations),
		CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt,
		meta: &meta{Icon: j.Icon, Team: j.Team, CreatedBy: j.CreatedBy, UpdatedBy: j.UpdatedBy, DataSources: j.DataSources}}
	return nil
}

// bpState is a blueprint with its entities.
type bpState struct {
	id       string
	raw      map[string]any // the blueprint as Port returns it
	props    map[string]map[string]any
	required []string
	rels     map[string]relDef
	inherits bool // ownership is inherited: entities may not set team
	entities map[string]*record
	codec    *codec   // packs the bodies of entities, from the first one big enough
	sorted   []string // identifiers in order, rebuilt when dirty
	dirty    bool
}

func newBPState(raw map[string]any) *bpState {
	id, _ := raw["identifier"].(string)
	bs := &bpState{id: id, raw: raw, entities: map[string]*record{}}
	bs.reparse()
	return bs
}

// reparse derives the parsed schema from raw.
func (bs *bpState) reparse() {
	schema, _ := bs.raw["schema"].(map[string]any)
	props, _ := schema["properties"].(map[string]any)
	bs.props = map[string]map[string]any{}
	for k, v := range props {
		bs.props[k], _ = v.(map[string]any)
	}
	bs.required = nil
	if req, ok := schema["required"].([]any); ok {
		for _, r := range req {
			bs.required = append(bs.required, r.(string))
		}
	}
	bs.rels = parseRelations(bs.raw)
	own, _ := bs.raw["ownership"].(map[string]any)
	_, ti := bs.raw["teamInheritance"].(map[string]any)
	bs.inherits = own["type"] == "Inherited" || ti
}

func (bs *bpState) ids() []string {
	if bs.dirty || len(bs.sorted) != len(bs.entities) {
		bs.sorted = slices.Sorted(maps.Keys(bs.entities))
		bs.dirty = false
	}
	return bs.sorted
}

func (bs *bpState) put(r *record) {
	if _, ok := bs.entities[r.Identifier]; !ok {
		bs.dirty = true
	}
	bs.entities[r.Identifier] = r
}

func (bs *bpState) remove(id string) {
	delete(bs.entities, id)
	bs.dirty = true
}

// refKey names an entity across blueprints.
type refKey struct{ bp, id string }

// store is the emulator's catalog; the Emulator's mutex guards it.
type store struct {
	blueprints map[string]*bpState
	// incoming maps a target entity to the entities whose relations point
	// at it.
	incoming map[refKey]inSet
	// integrations by identifier (installationId).
	integrations map[string]*integration
	intern       *interner
}

func newStore() *store {
	s := &store{blueprints: map[string]*bpState{}, incoming: map[refKey]inSet{}, integrations: map[string]*integration{},
		intern: newInterner()}
	now := time.Now().UTC()
	for _, sys := range []struct{ id, title string }{{"_user", "User"}, {"_team", "Team"}} {
		raw := map[string]any{"identifier": sys.id, "title": sys.title,
			"schema": map[string]any{"properties": map[string]any{}, "required": []any{}}}
		stamp(raw, now, "port", true)
		s.blueprints[sys.id] = newBPState(raw)
	}
	return s
}

// stamp sets the bookkeeping fields of a blueprint and the empty defaults.
func stamp(raw map[string]any, now time.Time, actor string, created bool) {
	ts := now.Format(time.RFC3339Nano)
	if created {
		raw["createdAt"], raw["createdBy"] = ts, actor
	}
	raw["updatedAt"], raw["updatedBy"] = ts, actor
	for _, k := range []string{"relations", "mirrorProperties", "calculationProperties", "aggregationProperties"} {
		if raw[k] == nil {
			raw[k] = map[string]any{}
		}
	}
}

// targets returns the identifiers a relation value points at.
func targets(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []any:
		out := make([]string, 0, len(t))
		for _, x := range t {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// link adds (delta 1) or removes (-1) r's relation values to or from the
// reverse index. Its keys use the identifiers of the stored records, so
// that the index holds no copies of them.
func (s *store) link(bp string, r *record, delta int) {
	bs := s.blueprints[bp]
	src := refKey{bs.id, r.Identifier}
	for name, v := range r.body.relations().decode() {
		def, ok := bs.rels[name]
		if !ok {
			continue
		}
		tbs := s.blueprints[def.target]
		for _, t := range targets(v) {
			k := refKey{def.target, t}
			switch {
			case tbs != nil && tbs.entities[t] != nil:
				k = refKey{tbs.id, tbs.entities[t].Identifier}
			case def.target == bp && t == r.Identifier:
				k = src
			}
			in := s.incoming[k]
			if delta > 0 {
				in.add(src)
			} else {
				in.remove(src)
			}
			if in.empty() {
				delete(s.incoming, k)
			} else {
				s.incoming[k] = in
			}
		}
	}
}

// save stores r in bp, replacing any previous version, and keeps the
// reverse index. r keeps the identifier string of the record it replaces,
// shares its meta with other records and has its body packed.
func (s *store) save(bp string, r *record) {
	bs := s.blueprints[bp]
	if old, ok := bs.entities[r.Identifier]; ok {
		s.link(bp, old, -1)
		r.Identifier = old.Identifier
	}
	r.meta = s.intern.meta(r.meta)
	s.link(bp, r, 1) // before packing: reads the relations
	if bs.codec == nil && r.body.c == nil && len(r.body.s) >= codecMinDict {
		bs.codec = newCodec(r.body.s)
	}
	if bs.codec != nil {
		r.body = bs.codec.pack(r.body)
	}
	bs.put(r)
}

func (s *store) drop(bp, id string) {
	bs := s.blueprints[bp]
	if old, ok := bs.entities[id]; ok {
		s.link(bp, old, -1)
		bs.remove(id)
	}
}

// dependents returns the entities with a relation to (bp, id), split by
// whether the relation is required.
func (s *store) dependents(bp, id string) (required, optional []refKey) {
	in := s.incoming[refKey{bp, id}]
	for _, src := range in.sources() {
		sbs := s.blueprints[src.bp]
		r := sbs.entities[src.id]
		isReq := false
		for name, v := range r.body.relations().decode() {
			def := sbs.rels[name]
			if def.target == bp && def.required && slices.Contains(targets(v), id) {
				isReq = true
			}
		}
		if isReq {
			required = append(required, src)
		} else {
			optional = append(optional, src)
		}
	}
	sortKeys(required)
	sortKeys(optional)
	return required, optional
}

func sortKeys(ks []refKey) {
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].bp != ks[j].bp {
			return ks[i].bp < ks[j].bp
		}
		return ks[i].id < ks[j].id
	})
}

// deleteEntity deletes an entity; without cascade it refuses when entities
// with a required relation point at it. Optional relations pointing at it
// are cleared. It returns the deleted keys.
func (s *store) deleteEntity(bp, id string, cascade bool, now time.Time, actor string) ([]refKey, *apiError) {
	bs := s.blueprints[bp]
	if _, ok := bs.entities[id]; !ok {
		return nil, notFound("an entity with identifier %q was not found in blueprint %q", id, bp)
	}
	req, _ := s.dependents(bp, id)
	if len(req) > 0 && !cascade {
		return nil, errf(403, "has_dependents", "entity %q of blueprint %q has dependent entities (e.g. %q of %q); use delete_dependents=true", id, bp, req[0].id, req[0].bp)
	}
	var deleted []refKey
	s.cascadeDelete(refKey{bp, id}, now, actor, &deleted)
	return deleted, nil
}

func (s *store) cascadeDelete(k refKey, now time.Time, actor string, deleted *[]refKey) {
	bs := s.blueprints[k.bp]
	if _, ok := bs.entities[k.id]; !ok {
		return
	}
	req, opt := s.dependents(k.bp, k.id)
	s.drop(k.bp, k.id)
	*deleted = append(*deleted, k)
	for _, d := range req {
		s.cascadeDelete(d, now, actor, deleted)
	}
	for _, d := range opt {
		s.clearRelation(d, k, now, actor)
	}
}

// clearRelation removes target from every relation of src that points at it.
func (s *store) clearRelation(src, target refKey, now time.Time, actor string) {
	sbs := s.blueprints[src.bp]
	old, ok := sbs.entities[src.id]
	if !ok {
		return
	}
	rels := old.body.relations().decode()
	for name, v := range rels {
		if sbs.rels[name].target != target.bp {
			continue
		}
		switch t := v.(type) {
		case string:
			if t == target.id {
				rels[name] = nil
			}
		case []any:
			rels[name] = slices.DeleteFunc(t, func(x any) bool { return x == target.id })
		}
	}
	s.resave(src.bp, old, rels, now, actor)
}

// resave saves a copy of old with the relations rels, updated by actor:
// what clearing or renaming a relation target does to the entities that
// point at it.
func (s *store) resave(bp string, old *record, rels map[string]any, now time.Time, actor string) {
	r := old.clone()
	enc, err := encodeObject(rels)
	if err != nil { // cannot happen: rels was decoded from JSON and lost values only
		panic(fmt.Sprintf("porttest: encoding the relations of %s: %v", describe(bp, old.Identifier), err))
	}
	r.body = newBody(old.body.properties(), enc)
	r.UpdatedAt, r.UpdatedBy = now, actor
	s.save(bp, r)
}

// clone returns a copy of r that shares nothing changeable with it.
func (r *record) clone() *record {
	c := *r
	m := *r.meta
	m.Team = slices.Clone(m.Team)
	c.meta = &m
	return &c
}

// toEntity converts a record to the shared entity type.
func (r *record) toEntity(bp string) port.Entity {
	props, rels := r.body.objects()
	e := port.Entity{Identifier: r.Identifier, Title: r.Title, Icon: r.Icon, Blueprint: bp,
		Properties: props.decode(), Relations: rels.decode()}
	if len(r.Team) > 0 {
		team := make([]any, len(r.Team))
		for i, t := range r.Team {
			team[i] = t
		}
		e.Team = team
	}
	return e
}

// toJSON renders a record the way Port returns an entity; properties and
// relations are their encoding (jsonObject), to be decoded by whoever
// looks into them.
func (r *record) toJSON(bp string) map[string]any {
	props, rels := r.body.objects()
	team := r.Team
	if team == nil {
		team = []string{}
	}
	m := map[string]any{
		"identifier": r.Identifier, "title": r.Title, "blueprint": bp, "team": team,
		"properties": props, "relations": rels,
		"createdAt": r.CreatedAt.Format(time.RFC3339Nano), "createdBy": r.CreatedBy,
		"updatedAt": r.UpdatedAt.Format(time.RFC3339Nano), "updatedBy": r.UpdatedBy,
	}
	if r.Icon != "" {
		m["icon"] = r.Icon
	}
	return m
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// generateID returns a Port-style generated identifier: e_ + 16 letters
// and digits.
func generateID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	out := make([]byte, 0, 18)
	out = append(out, 'e', '_')
	for _, x := range b {
		out = append(out, idAlphabet[int(x)%len(idAlphabet)])
	}
	return string(out)
}

func notFoundBlueprint(bp string) *apiError {
	return notFound("a blueprint with identifier %q was not found", bp)
}

func describe(bp, id string) string { return fmt.Sprintf("entity %q of blueprint %q", id, bp) }
