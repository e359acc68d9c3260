package porttest

import (
	"slices"
	"time"

	"github.com/portbridge/portbridge/sidecar/port"
)

// writeMode is how an entity write treats an existing entity.
type writeMode int

const (
	modeCreate  writeMode = iota // POST without upsert: 409 if it exists
	modeReplace                  // POST upsert=true: replace
	modeMerge                    // POST upsert=true&merge=true: merge key by key
	modePatch                    // PATCH: merge, must exist
	modePut                      // PUT: replace, must exist
)

type writeOpts struct {
	mode           writeMode
	createMissing  bool
	validationOnly bool
	pathID         string // the identifier in the URL (PATCH, PUT)
	actor          string // the writer's User-Agent
	user           string // the writer's client id
}

// write validates and applies one entity write to blueprint bp. It returns
// the record as stored (or as it would be, with validationOnly) and whether
// it was created.
func (s *store) write(bp string, in map[string]any, o writeOpts, now time.Time) (*record, bool, *apiError) {
	bs := s.blueprints[bp]
	if bs == nil {
		return nil, false, notFoundBlueprint(bp)
	}
	id, idErr := s.resolveIdentifier(bp, in, o)
	if idErr != nil {
		return nil, false, idErr
	}
	var existing *record
	switch o.mode {
	case modePatch, modePut:
		existing = bs.entities[o.pathID]
		if existing == nil {
			return nil, false, notFound("%s was not found", describe(bp, o.pathID))
		}
		if id != o.pathID && bs.entities[id] != nil {
			return nil, false, errf(409, "identifier_taken", "%s already exists", describe(bp, id))
		}
	default:
		existing = bs.entities[id]
		if existing != nil && o.mode == modeCreate {
			return nil, false, errf(409, "identifier_taken", "%s already exists", describe(bp, id))
		}
	}

	title, err := optString(in, "title")
	if err != nil {
		return nil, false, err
	}
	icon, err := optString(in, "icon")
	if err != nil {
		return nil, false, err
	}
	props, err := optObject(in, "properties")
	if err != nil {
		return nil, false, err
	}
	rels, err := optObject(in, "relations")
	if err != nil {
		return nil, false, err
	}
	team, teamGiven, err := s.parseTeam(bs, in)
	if err != nil {
		return nil, false, err
	}

	merge := existing != nil && (o.mode == modeMerge || o.mode == modePatch)
	var r *record
	rprops, rrels := map[string]any{}, map[string]any{}
	if merge {
		r = existing.clone()
		if _, ok := in["title"]; ok {
			r.Title = title
		}
		if _, ok := in["icon"]; ok {
			r.Icon = icon
		}
		if teamGiven {
			r.Team = team
		}
		p, rl := existing.body.objects()
		rprops, rrels = p.decode(), rl.decode()
	} else {
		r = &record{Title: title, meta: &meta{Icon: icon, Team: team}}
		if existing != nil {
			r.CreatedAt, r.CreatedBy, r.DataSources = existing.CreatedAt, existing.CreatedBy, existing.DataSources
		}
	}
	r.Identifier = id

	for k, v := range props {
		def, ok := bs.props[k]
		if !ok {
			return nil, false, mismatch("property %q is not defined on blueprint %q", k, bp)
		}
		if err := checkValue("properties."+k, def, v); err != nil {
			return nil, false, err
		}
		rprops[k] = v
	}
	if existing == nil {
		for k, def := range bs.props {
			if _, ok := rprops[k]; !ok {
				if d, ok := def["default"]; ok {
					rprops[k] = d
				}
			}
		}
	}
	for _, k := range bs.required {
		if rprops[k] == nil {
			return nil, false, mismatch("required property %q is missing", k)
		}
	}

	var missing []refKey
	for name, v := range rels {
		def, ok := bs.rels[name]
		if !ok {
			return nil, false, notFound("relation %q is not defined on blueprint %q", name, bp)
		}
		val, ids, err := s.relationValue(name, def, v)
		if err != nil {
			return nil, false, err
		}
		for _, t := range ids {
			if def.target == bp && t == id {
				continue
			}
			tbs := s.blueprints[def.target]
			if tbs != nil && tbs.entities[t] != nil {
				continue
			}
			if !o.createMissing || tbs == nil || def.target == "_user" || def.target == "_team" {
				return nil, false, notFound("relation %q: target %s was not found", name, describe(def.target, t))
			}
			missing = append(missing, refKey{def.target, t})
		}
		rrels[name] = val
	}
	for name, def := range bs.rels {
		if def.required && len(targets(rrels[name])) == 0 {
			return nil, false, errf(422, "required_relation", "relation %q is required", name)
		}
	}
	encProps, encErr := encodeObject(rprops)
	var encRels jsonObject
	if encErr == nil {
		encRels, encErr = encodeObject(rrels)
	}
	if encErr != nil { // values decoded from JSON always encode
		return nil, false, errf(500, "internal_error", "encoding %s: %v", describe(bp, id), encErr)
	}
	r.body = newBody(encProps, encRels)

	if r.CreatedAt.IsZero() {
		r.CreatedAt, r.CreatedBy = now, o.user
	}
	r.UpdatedAt, r.UpdatedBy = now, o.user
	if o.actor != "" && !slices.Contains(r.DataSources, o.actor) {
		r.DataSources = append(r.DataSources, o.actor)
	}
	if o.validationOnly {
		return r, existing == nil, nil
	}
	for _, m := range missing {
		if s.blueprints[m.bp].entities[m.id] != nil {
			continue
		}
		s.save(m.bp, &record{Identifier: m.id, Title: m.id, CreatedAt: now, UpdatedAt: now,
			meta: &meta{CreatedBy: o.user, UpdatedBy: o.user, DataSources: []string{o.actor}}})
	}
	if existing != nil && existing.Identifier != id {
		s.rename(bp, existing.Identifier, id, now, o.user)
	}
	s.save(bp, r)
	return r, existing == nil, nil
}

// resolveIdentifier returns the identifier a write addresses.
func (s *store) resolveIdentifier(bp string, in map[string]any, o writeOpts) (string, *apiError) {
	switch v := in["identifier"].(type) {
	case nil:
		if o.mode == modePatch || o.mode == modePut {
			return o.pathID, nil
		}
		return generateID(), nil
	case string:
		if err := port.ValidateIdentifier(v); err != nil {
			return "", invalid("%v", err)
		}
		return v, nil
	case map[string]any:
		ids, err := s.matchQuery(bp, v, 2)
		if err != nil {
			return "", err
		}
		switch len(ids) {
		case 0:
			return "", notFound("no entity of blueprint %q matches the identifier query", bp)
		case 1:
			return ids[0], nil
		}
		return "", invalid("the identifier query matches more than one entity of blueprint %q", bp)
	}
	return "", invalid("identifier must be a string or a search query")
}

// relationValue normalises a relation value and returns its targets.
func (s *store) relationValue(name string, def relDef, v any) (any, []string, *apiError) {
	switch t := v.(type) {
	case nil:
		if def.many {
			return []any{}, nil, nil
		}
		return nil, nil, nil
	case string:
		if def.many {
			return nil, nil, mismatch("relation %q is many-valued and takes an array", name)
		}
		if err := port.ValidateIdentifier(t); err != nil {
			return nil, nil, invalid("relation %q: %v", name, err)
		}
		return t, []string{t}, nil
	case []any:
		if !def.many {
			return nil, nil, errf(422, "relation_many_violation", "relation %q cannot contain more than one entity", name)
		}
		ids := make([]string, 0, len(t))
		for _, x := range t {
			s, ok := x.(string)
			if !ok {
				return nil, nil, invalid("relation %q: items must be identifiers", name)
			}
			if err := port.ValidateIdentifier(s); err != nil {
				return nil, nil, invalid("relation %q: %v", name, err)
			}
			ids = append(ids, s)
		}
		return slices.Clone(t), ids, nil
	case map[string]any:
		ids, err := s.matchQuery(def.target, t, 101)
		if err != nil {
			return nil, nil, err
		}
		if len(ids) > 100 {
			return nil, nil, invalid("relation %q: the query matches more than 100 entities", name)
		}
		if def.many {
			out := make([]any, len(ids))
			for i, id := range ids {
				out[i] = id
			}
			return out, ids, nil
		}
		switch len(ids) {
		case 0:
			return nil, nil, nil
		case 1:
			return ids[0], ids, nil
		}
		return nil, nil, errf(422, "relation_many_violation", "relation %q: the query matches more than one entity", name)
	}
	return nil, nil, invalid("relation %q must be an identifier, an array, null or a query", name)
}

func (s *store) parseTeam(bs *bpState, in map[string]any) ([]string, bool, *apiError) {
	raw, given := in["team"]
	var team []string
	switch t := raw.(type) {
	case nil:
	case string:
		team = []string{t}
	case []any:
		for _, x := range t {
			s, ok := x.(string)
			if !ok {
				return nil, false, invalid("team must be a string or an array of strings")
			}
			team = append(team, s)
		}
	case map[string]any:
		ids, err := s.matchQuery("_team", t, 101)
		if err != nil {
			return nil, false, err
		}
		team = ids
	default:
		return nil, false, invalid("team must be a string or an array of strings")
	}
	if len(team) > 0 && bs.inherits {
		return nil, false, errf(422, "team_inheritance_enabled", "blueprint %q inherits its team through a relation", bs.raw["identifier"])
	}
	teams := s.blueprints["_team"]
	for _, t := range team {
		if teams.entities[t] == nil {
			return nil, false, notFound("team %q was not found", t)
		}
	}
	return team, given, nil
}

// rename moves the references to (bp, from) over to (bp, to) and drops
// the old record.
func (s *store) rename(bp, from, to string, now time.Time, user string) {
	in := s.incoming[refKey{bp, from}]
	for _, src := range in.sources() {
		sbs := s.blueprints[src.bp]
		old := sbs.entities[src.id]
		rels := old.body.relations().decode()
		for name, v := range rels {
			if sbs.rels[name].target != bp {
				continue
			}
			switch t := v.(type) {
			case string:
				if t == from {
					rels[name] = to
				}
			case []any:
				for i, x := range t {
					if x == from {
						t[i] = to
					}
				}
			}
		}
		s.resave(src.bp, old, rels, now, user)
	}
	s.drop(bp, from)
}

func optString(in map[string]any, key string) (string, *apiError) {
	switch v := in[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	}
	return "", invalid("%s must be a string", key)
}

func optObject(in map[string]any, key string) (map[string]any, *apiError) {
	switch v := in[key].(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return v, nil
	}
	return nil, invalid("%s must be an object", key)
}
