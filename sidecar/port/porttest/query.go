package porttest

import (
	"slices"
	"strings"
	"time"
)

// matcher reports whether an entity of a blueprint matches a query.
type matcher func(bp string, r *record) bool

var allOperators = []string{"=", "!=", "contains", "doesNotContains", "containsAny", "beginsWith", "doesNotBeginsWith",
	"endsWith", "doesNotEndsWith", "in", "notIn", ">", ">=", "<", "<=", "between", "notBetween", "isEmpty", "isNotEmpty", "relatedTo"}

// compile turns a rule group into a matcher; allowed limits the operators
// (nil = all).
func (s *store) compile(q map[string]any, allowed []string) (matcher, *apiError) {
	comb, hasComb := q["combinator"]
	if !hasComb {
		return s.compileRule(q, allowed)
	}
	for k := range q {
		if k != "combinator" && k != "rules" {
			return nil, invalid("query group has an unknown key %q", k)
		}
	}
	rules, ok := q["rules"].([]any)
	if !ok {
		return nil, invalid("query group needs rules")
	}
	var subs []matcher
	for _, r := range rules {
		rm, ok := r.(map[string]any)
		if !ok {
			return nil, invalid("query rules must be objects")
		}
		m, err := s.compile(rm, allowed)
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

func (s *store) compileRule(q map[string]any, allowed []string) (matcher, *apiError) {
	op, _ := q["operator"].(string)
	if !slices.Contains(allOperators, op) || (allowed != nil && !slices.Contains(allowed, op)) {
		return nil, invalid("operator %q is not supported here", q["operator"])
	}
	value := q["value"]
	if op == "relatedTo" {
		return s.compileRelatedTo(q)
	}
	var get func(bp string, r *record) any
	switch {
	case q["property"] != nil:
		p, ok := q["property"].(string)
		if !ok {
			return nil, invalid("rule property must be a string")
		}
		get = fieldGetter(p)
	case q["relation"] != nil:
		rel, ok := q["relation"].(string)
		if !ok {
			return nil, invalid("rule relation must be a string")
		}
		get = func(_ string, r *record) any { return r.Relations.decode()[rel] }
	default:
		return nil, invalid("a rule needs a property or a relation")
	}
	test, err := operatorTest(op, value)
	if err != nil {
		return nil, err
	}
	return func(bp string, r *record) bool { return test(get(bp, r)) }, nil
}

// fieldGetter returns the value of a property or $-meta-property.
func fieldGetter(p string) func(bp string, r *record) any {
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
	return func(_ string, r *record) any { return r.Properties.decode()[p] }
}

func stringsToAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// operatorTest builds the test of one operator against a rule value.
func operatorTest(op string, value any) (func(any) bool, *apiError) {
	anyElem := func(f func(any) bool) func(any) bool {
		return func(v any) bool {
			if arr, ok := v.([]any); ok {
				return slices.ContainsFunc(arr, f)
			}
			return f(v)
		}
	}
	not := func(f func(any) bool) func(any) bool { return func(v any) bool { return !f(v) } }
	str := func(f func(a, b string) bool) (func(any) bool, *apiError) {
		want, ok := value.(string)
		if !ok {
			return nil, invalid("operator %q needs a string value", op)
		}
		return anyElem(func(v any) bool { s, ok := v.(string); return ok && f(s, want) }), nil
	}
	list := func() ([]any, *apiError) {
		arr, ok := value.([]any)
		if !ok {
			return nil, invalid("operator %q needs an array value", op)
		}
		return arr, nil
	}
	switch op {
	case "=":
		if rng, ok := value.(map[string]any); ok {
			return betweenTest(rng)
		}
		return anyElem(func(v any) bool { return jsonEqual(v, value) }), nil
	case "!=":
		return not(anyElem(func(v any) bool { return jsonEqual(v, value) })), nil
	case "contains":
		return str(strings.Contains)
	case "doesNotContains":
		f, err := str(strings.Contains)
		if err != nil {
			return nil, err
		}
		return not(f), nil
	case "beginsWith", "doesNotBeginsWith":
		f, err := str(strings.HasPrefix)
		if err != nil || op == "beginsWith" {
			return f, err
		}
		return not(f), nil
	case "endsWith", "doesNotEndsWith":
		f, err := str(strings.HasSuffix)
		if err != nil || op == "endsWith" {
			return f, err
		}
		return not(f), nil
	case "in", "notIn", "containsAny":
		arr, err := list()
		if err != nil {
			return nil, err
		}
		f := anyElem(func(v any) bool { return slices.ContainsFunc(arr, func(x any) bool { return jsonEqual(x, v) }) })
		if op == "notIn" {
			return not(f), nil
		}
		return f, nil
	case ">", ">=", "<", "<=":
		return func(v any) bool {
			c, ok := compare(v, value)
			if !ok {
				return false
			}
			switch op {
			case ">":
				return c > 0
			case ">=":
				return c >= 0
			case "<":
				return c < 0
			}
			return c <= 0
		}, nil
	case "between", "notBetween":
		rng, ok := value.(map[string]any)
		if !ok {
			return nil, invalid("operator %q needs {from, to}", op)
		}
		f, err := betweenTest(rng)
		if err != nil || op == "between" {
			return f, err
		}
		return not(f), nil
	case "isEmpty", "isNotEmpty":
		empty := func(v any) bool {
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
		if op == "isEmpty" {
			return empty, nil
		}
		return not(empty), nil
	}
	return nil, invalid("operator %q is not supported", op)
}

func betweenTest(rng map[string]any) (func(any) bool, *apiError) {
	from, ok1 := rng["from"]
	to, ok2 := rng["to"]
	if !ok1 || !ok2 {
		return nil, invalid("a date range needs from and to (presets are not emulated)")
	}
	return func(v any) bool {
		a, ok := compare(v, from)
		b, ok2 := compare(v, to)
		return ok && ok2 && a >= 0 && b <= 0
	}, nil
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
	at, err1 := time.Parse(time.RFC3339, as)
	bt, err2 := time.Parse(time.RFC3339, bs)
	if err1 == nil && err2 == nil {
		return at.Compare(bt), true
	}
	return strings.Compare(as, bs), true
}

// compileRelatedTo matches entities connected by relations to the given
// entities: "upstream" follows the given entities' relations outwards (what
// they point at), "downstream" finds what points at them, no direction
// means either; required limits the walk to required relations.
func (s *store) compileRelatedTo(q map[string]any) (matcher, *apiError) {
	bp, ok := q["blueprint"].(string)
	if !ok {
		return nil, invalid("relatedTo needs a blueprint")
	}
	var ids []string
	switch v := q["value"].(type) {
	case string:
		ids = []string{v}
	case []any:
		ids = targets(v)
	default:
		return nil, invalid("relatedTo needs an identifier or a list of them")
	}
	dir, _ := q["direction"].(string)
	if dir != "" && dir != "upstream" && dir != "downstream" {
		return nil, invalid("direction must be upstream or downstream")
	}
	reqOnly, _ := q["required"].(bool)
	related := map[refKey]bool{}
	if dir != "downstream" {
		s.walk(bp, ids, reqOnly, true, related)
	}
	if dir != "upstream" {
		s.walk(bp, ids, reqOnly, false, related)
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
			for name, v := range bs.entities[k.id].Relations.decode() {
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

// matchQuery returns up to limit identifiers of bp's entities matching q.
func (s *store) matchQuery(bp string, q map[string]any, allowed []string, limit int) ([]string, *apiError) {
	bs := s.blueprints[bp]
	if bs == nil {
		return nil, notFoundBlueprint(bp)
	}
	m, err := s.compile(q, allowed)
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
