package porttest

import (
	"slices"
	"strings"
	"time"
)

// matcher reports whether an entity of a blueprint matches a query.
type matcher func(bp string, r *record) bool

// compiler turns search queries into matchers. Queries reach it only after
// their route's shape accepted them, so it deals with meaning, not
// structure; now anchors date presets and timers.
type compiler struct {
	s   *store
	now time.Time
	// The properties and relations last decoded, and of which record: a
	// query's rules look at one record after the other.
	propsOf, relsOf *record
	props, rels     map[string]any
}

// properties returns r's decoded properties; the map is shared by the
// query's rules and must not be changed.
func (c *compiler) properties(r *record) map[string]any {
	if c.propsOf != r {
		c.propsOf, c.props = r, r.body.properties().decode()
	}
	return c.props
}

// relations returns r's decoded relations, as properties does.
func (c *compiler) relations(r *record) map[string]any {
	if c.relsOf != r {
		c.relsOf, c.rels = r, r.body.relations().decode()
	}
	return c.rels
}

// compile turns a rule group (or a single rule) into a matcher.
func (s *store) compile(q map[string]any, now time.Time) (matcher, *apiError) {
	return (&compiler{s: s, now: now}).node(q)
}

func (c *compiler) node(q map[string]any) (matcher, *apiError) {
	comb, isGroup := q["combinator"]
	if !isGroup {
		return c.rule(q)
	}
	rules, _ := q["rules"].([]any)
	subs := make([]matcher, 0, len(rules))
	for _, r := range rules {
		rm, ok := r.(map[string]any)
		if !ok {
			return nil, invalid("query rules must be objects")
		}
		m, err := c.node(rm)
		if err != nil {
			return nil, err
		}
		subs = append(subs, m)
	}
	switch comb {
	case "and":
		return func(bp string, r *record) bool {
			for _, m := range subs {
				if !m(bp, r) {
					return false
				}
			}
			return true
		}, nil
	case "or":
		return func(bp string, r *record) bool {
			for _, m := range subs {
				if m(bp, r) {
					return true
				}
			}
			return false
		}, nil
	}
	return nil, invalid("combinator must be and or or, not %v", comb)
}

// getter reads the value a rule compares.
type getter func(bp string, r *record) any

func (c *compiler) rule(q map[string]any) (matcher, *apiError) {
	op, _ := q["operator"].(string)
	switch {
	case op == "relatedTo":
		return c.relatedTo(q)
	case q["propertySchema"] != nil:
		return c.propertySchema(q, op)
	case op == "matchAny":
		return c.matchAny(q)
	case op == "isExpired" || op == "isNotExpired":
		return c.expired(q, op == "isExpired")
	}
	get, ae := c.subject(q)
	if ae != nil {
		return nil, ae
	}
	test, ae := c.test(op, q["value"])
	if ae != nil {
		return nil, ae
	}
	return func(bp string, r *record) bool { return test(get(bp, r)) }, nil
}

// subject returns what a rule looks at: a property or meta-property, a
// relation's targets (or their titles), or a scorecard (which the emulator
// does not model: always empty). A property taken from the requesting
// user's context is empty too: machine credentials have no user.
func (c *compiler) subject(q map[string]any) (getter, *apiError) {
	switch {
	case q["property"] != nil:
		p, ok := q["property"].(string)
		if !ok {
			return func(string, *record) any { return nil }, nil
		}
		return c.field(p), nil
	case q["relation"] != nil:
		rel, _ := q["relation"].(string)
		byTitle := q["targetProperty"] == "$title"
		return func(bp string, r *record) any {
			v := c.relations(r)[rel]
			if !byTitle || v == nil {
				return v
			}
			target := c.s.blueprints[c.s.blueprints[bp].rels[rel].target]
			title := func(id string) any {
				if target != nil && target.entities[id] != nil {
					return target.entities[id].Title
				}
				return nil
			}
			if ids, many := v.([]any); many {
				out := make([]any, 0, len(ids))
				for _, id := range targets(ids) {
					out = append(out, title(id))
				}
				return out
			}
			return title(v.(string))
		}, nil
	case q["scorecard"] != nil:
		return func(string, *record) any { return nil }, nil
	}
	return nil, invalid("a rule needs a property, a relation or a scorecard")
}

// field returns the getter of a property or $-meta-property.
func (c *compiler) field(p string) getter {
	switch p {
	case "$identifier":
		return func(_ string, r *record) any { return r.Identifier }
	case "$title":
		return func(_ string, r *record) any { return r.Title }
	case "$blueprint":
		return func(bp string, _ *record) any { return bp }
	case "$icon":
		return func(_ string, r *record) any { return r.Icon }
	case "$team":
		return func(_ string, r *record) any { return stringsToAny(r.Team) }
	case "$datasource":
		return func(_ string, r *record) any { return stringsToAny(r.DataSources) }
	case "$createdAt":
		return func(_ string, r *record) any { return r.CreatedAt.Format(time.RFC3339Nano) }
	case "$updatedAt":
		return func(_ string, r *record) any { return r.UpdatedAt.Format(time.RFC3339Nano) }
	case "$createdBy":
		return func(_ string, r *record) any { return r.CreatedBy }
	case "$updatedBy":
		return func(_ string, r *record) any { return r.UpdatedBy }
	}
	return func(_ string, r *record) any { return c.properties(r)[p] }
}

func stringsToAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// isContext reports a value taken from the requesting user's context.
func isContext(v any) bool {
	m, ok := v.(map[string]any)
	return ok && m["context"] != nil
}

// anyElem applies f to a value, or to each element of an array value.
func anyElem(f func(any) bool) func(any) bool {
	return func(v any) bool {
		if arr, ok := v.([]any); ok {
			return slices.ContainsFunc(arr, f)
		}
		return f(v)
	}
}

func not(f func(any) bool) func(any) bool { return func(v any) bool { return !f(v) } }

// test builds the test of one operator against a rule value.
func (c *compiler) test(op string, value any) (func(any) bool, *apiError) {
	if isContext(value) {
		value = nil // no user context for machine credentials
	}
	list := func() []any {
		if arr, ok := value.([]any); ok {
			return arr
		}
		return []any{value}
	}
	strTest := func(f func(a, b string) bool) func(any) bool {
		want, ok := value.(string)
		if !ok {
			return func(any) bool { return false }
		}
		return anyElem(func(v any) bool { s, ok := v.(string); return ok && f(s, want) })
	}
	switch op {
	case "=":
		if rng, ok := value.(map[string]any); ok {
			return c.dateRange(rng), nil
		}
		return anyElem(func(v any) bool { return valueEqual(v, value) }), nil
	case "!=":
		return not(anyElem(func(v any) bool { return valueEqual(v, value) })), nil
	case "contains", "doesNotContains":
		var f func(any) bool
		if wants, ok := value.([]any); ok { // every listed value is contained
			f = func(v any) bool {
				for _, w := range wants {
					ws, _ := w.(string)
					if !anyElem(func(x any) bool { s, ok := x.(string); return ok && strings.Contains(s, ws) })(v) {
						return false
					}
				}
				return len(wants) > 0
			}
		} else {
			f = strTest(strings.Contains)
		}
		if op == "contains" {
			return f, nil
		}
		return not(f), nil
	case "beginsWith":
		return strTest(strings.HasPrefix), nil
	case "doesNotBeginsWith":
		return not(strTest(strings.HasPrefix)), nil
	case "endsWith":
		return strTest(strings.HasSuffix), nil
	case "doesNotEndsWith":
		return not(strTest(strings.HasSuffix)), nil
	case "in", "notIn", "containsAny":
		vals := list()
		f := anyElem(func(v any) bool { return slices.ContainsFunc(vals, func(x any) bool { return valueEqual(v, x) }) })
		if op == "notIn" {
			return not(f), nil
		}
		return f, nil
	case ">", ">=", "<", "<=":
		return func(v any) bool {
			n, ok := compare(v, value)
			if !ok {
				return false
			}
			switch op {
			case ">":
				return n > 0
			case ">=":
				return n >= 0
			case "<":
				return n < 0
			}
			return n <= 0
		}, nil
	case "between", "notBetween":
		rng, _ := value.(map[string]any)
		f := c.dateRange(rng)
		if op == "between" {
			return f, nil
		}
		return not(f), nil
	case "isEmpty", "isNotEmpty":
		if op == "isEmpty" {
			return isEmptyValue, nil
		}
		return not(isEmptyValue), nil
	}
	return nil, invalid("operator %q is not supported", op)
}

func isEmptyValue(v any) bool {
	switch t := v.(type) {
	case nil:
		return true
	case string:
		return t == ""
	case []any:
		return len(t) == 0
	case map[string]any:
		return len(t) == 0
	}
	return false
}

// valueEqual compares a stored value with a rule value; two date-times
// are equal when they name the same instant.
func valueEqual(a, b any) bool {
	if as, ok := a.(string); ok {
		if bs, ok := b.(string); ok && as != bs {
			at, err1 := time.Parse(time.RFC3339Nano, as)
			bt, err2 := time.Parse(time.RFC3339Nano, bs)
			return err1 == nil && err2 == nil && at.Equal(bt)
		}
	}
	return jsonEqual(a, b)
}

// dateRange tests a date-time against {from, to} or {preset}; a range
// from the user's context matches nothing.
func (c *compiler) dateRange(rng map[string]any) func(any) bool {
	var from, to time.Time
	if p, ok := rng["preset"].(string); ok {
		from, to = presetRange(p, c.now)
	} else {
		fs, _ := rng["from"].(string)
		ts, _ := rng["to"].(string)
		var err1, err2 error
		from, err1 = time.Parse(time.RFC3339Nano, fs)
		to, err2 = time.Parse(time.RFC3339Nano, ts)
		if err1 != nil || err2 != nil {
			return func(any) bool { return false }
		}
	}
	return anyElem(func(v any) bool {
		s, ok := v.(string)
		if !ok {
			return false
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		return err == nil && !t.Before(from) && !t.After(to)
	})
}

// presetRange returns the interval a date preset names, relative to now
// (UTC days; "last…" presets end now).
func presetRange(p string, now time.Time) (time.Time, time.Time) {
	now = now.UTC()
	day := now.Truncate(24 * time.Hour)
	back := func(days int) (time.Time, time.Time) { return now.AddDate(0, 0, -days), now }
	switch p {
	case "today":
		return day, day.Add(24*time.Hour - time.Nanosecond)
	case "tomorrow":
		return day.Add(24 * time.Hour), day.Add(48*time.Hour - time.Nanosecond)
	case "yesterday":
		return day.Add(-24 * time.Hour), day.Add(-time.Nanosecond)
	case "lastDay":
		return back(1)
	case "lastWeek":
		return back(7)
	case "last2Weeks":
		return back(14)
	case "lastMonth":
		return back(30)
	case "last3Months":
		return back(90)
	case "last6Months":
		return back(180)
	case "last12Months":
		return back(365)
	}
	return now, now.Add(-time.Nanosecond) // unknown: an empty interval
}

// compare orders two numbers or two date-time strings.
func compare(a, b any) (int, bool) {
	if x, ok := a.(float64); ok {
		y, ok := b.(float64)
		if !ok {
			return 0, false
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	}
	as, ok1 := a.(string)
	bs, ok2 := b.(string)
	if !ok1 || !ok2 {
		return 0, false
	}
	at, err1 := time.Parse(time.RFC3339Nano, as)
	bt, err2 := time.Parse(time.RFC3339Nano, bs)
	if err1 == nil && err2 == nil {
		return at.Compare(bt), true
	}
	return strings.Compare(as, bs), true
}

// expired tests a timer property: expired once its date-time has passed;
// without a date-time it is neither expired nor unexpired.
func (c *compiler) expired(q map[string]any, want bool) (matcher, *apiError) {
	p, _ := q["property"].(string)
	get := c.field(p)
	return func(bp string, r *record) bool {
		s, ok := get(bp, r).(string)
		if !ok {
			return false
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return false
		}
		return !t.After(c.now) == want
	}, nil
}

// propertySchema matches entities with a property of the given type (and
// format, and item type) whose value passes the operator.
func (c *compiler) propertySchema(q map[string]any, op string) (matcher, *apiError) {
	ps, _ := q["propertySchema"].(map[string]any)
	test, ae := c.test(op, q["value"])
	if ae != nil {
		return nil, ae
	}
	fits := func(def map[string]any) bool {
		if def["type"] != ps["type"] {
			return false
		}
		if f, ok := ps["format"]; ok && def["format"] != f {
			return false
		}
		if it, ok := ps["items"].(map[string]any); ok {
			di, _ := def["items"].(map[string]any)
			if di["type"] != it["type"] {
				return false
			}
			if f, ok := it["format"]; ok && di["format"] != f {
				return false
			}
		}
		return true
	}
	return func(bp string, r *record) bool {
		bs := c.s.blueprints[bp]
		for _, name := range sortedKeys(anyMap(bs.props)) {
			if fits(bs.props[name]) && test(c.properties(r)[name]) {
				return true
			}
		}
		return false
	}, nil
}

func anyMap(m map[string]map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// matchAny matches entities related through a path of relations: without
// fromBlueprint the path starts at the entity and the value names the
// entities at its end; with fromBlueprint it starts at the named entities
// of that blueprint and the entity must be at its end. A plain property
// instead matches when its value is one of the given values.
func (c *compiler) matchAny(q map[string]any) (matcher, *apiError) {
	var vals []string
	switch v := q["value"].(type) {
	case string:
		vals = []string{v}
	case []any:
		vals = targets(v)
	}
	pm, isPath := q["property"].(map[string]any)
	if !isPath || pm["path"] == nil {
		get, ae := c.subject(q)
		if ae != nil {
			return nil, ae
		}
		return func(bp string, r *record) bool {
			return anyElem(func(x any) bool { s, ok := x.(string); return ok && slices.Contains(vals, s) })(get(bp, r))
		}, nil
	}
	hops, _ := pm["path"].([]any)
	from, _ := pm["fromBlueprint"].(string)
	if from == "" {
		return func(bp string, r *record) bool {
			for k := range c.follow([]refKey{{bp, r.Identifier}}, hops) {
				if slices.Contains(vals, k.id) {
					return true
				}
			}
			return false
		}, nil
	}
	starts := make([]refKey, 0, len(vals))
	for _, id := range vals {
		starts = append(starts, refKey{from, id})
	}
	ends := c.follow(starts, hops)
	return func(bp string, r *record) bool { return ends[refKey{bp, r.Identifier}] }, nil
}

// follow walks relation hops from the start entities; a hop
// {relation, maxHops} may be taken one to maxHops times (any relation
// when it names none).
func (c *compiler) follow(start []refKey, hops []any) map[refKey]bool {
	cur := map[refKey]bool{}
	for _, k := range start {
		cur[k] = true
	}
	step := func(from map[refKey]bool, rel string) map[refKey]bool {
		next := map[refKey]bool{}
		for k := range from {
			bs := c.s.blueprints[k.bp]
			if bs == nil || bs.entities[k.id] == nil {
				continue
			}
			for name, v := range c.relations(bs.entities[k.id]) {
				if rel != "" && name != rel {
					continue
				}
				for _, t := range targets(v) {
					next[refKey{bs.rels[name].target, t}] = true
				}
			}
		}
		return next
	}
	for _, h := range hops {
		rel, times := "", 1
		switch t := h.(type) {
		case string:
			rel = t
		case map[string]any:
			rel, _ = t["relation"].(string)
			if n, ok := t["maxHops"].(float64); ok {
				times = int(n)
			}
		}
		reached := map[refKey]bool{}
		frontier := cur
		for range times {
			frontier = step(frontier, rel)
			for k := range frontier {
				reached[k] = true
			}
		}
		cur = reached
	}
	return cur
}

// relatedTo matches entities connected by relations to the given
// entities: "upstream" follows the given entities' relations outwards (what
// they point at), "downstream" finds what points at them, no direction
// means either; required limits the walk to required relations.
func (c *compiler) relatedTo(q map[string]any) (matcher, *apiError) {
	bp, _ := q["blueprint"].(string)
	var ids []string
	switch v := q["value"].(type) {
	case string:
		ids = []string{v}
	case []any:
		ids = targets(v)
	}
	dir, _ := q["direction"].(string)
	reqOnly, _ := q["required"].(bool)
	related := map[refKey]bool{}
	if dir != "downstream" {
		c.s.walk(bp, ids, reqOnly, true, related)
	}
	if dir != "upstream" {
		c.s.walk(bp, ids, reqOnly, false, related)
	}
	return func(bp string, r *record) bool { return related[refKey{bp, r.Identifier}] }, nil
}

// walk collects the entities reachable from the start entities along
// relations, outwards (out=true) or inwards.
func (s *store) walk(bp string, ids []string, reqOnly, out bool, seen map[refKey]bool) {
	queue := make([]refKey, 0, len(ids))
	for _, id := range ids {
		queue = append(queue, refKey{bp, id})
	}
	visited := map[refKey]bool{}
	for len(queue) > 0 {
		k := queue[0]
		queue = queue[1:]
		if visited[k] {
			continue
		}
		visited[k] = true
		var next []refKey
		if out {
			bs := s.blueprints[k.bp]
			if bs == nil || bs.entities[k.id] == nil {
				continue
			}
			for name, v := range bs.entities[k.id].body.relations().decode() {
				def := bs.rels[name]
				if reqOnly && !def.required {
					continue
				}
				for _, t := range targets(v) {
					next = append(next, refKey{def.target, t})
				}
			}
		} else {
			req, opt := s.dependents(k.bp, k.id)
			next = append(next, req...)
			if !reqOnly {
				next = append(next, opt...)
			}
		}
		for _, n := range next {
			if !visited[n] {
				seen[n] = true
				queue = append(queue, n)
			}
		}
	}
}

// matchQuery returns up to limit identifiers of bp's entities matching a
// query an entity write uses (its identifier, a relation value, its team).
func (s *store) matchQuery(bp string, q map[string]any, limit int) ([]string, *apiError) {
	bs := s.blueprints[bp]
	if bs == nil {
		return nil, notFoundBlueprint(bp)
	}
	m, err := s.compile(q, time.Now().UTC())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range bs.ids() {
		if m(bp, bs.entities[id]) {
			out = append(out, id)
			if len(out) >= limit {
				break
			}
		}
	}
	return out, nil
}
