package mapping

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/itchyny/gojq"

	"github.com/portbridge/portbridge/sidecar/redact"
)

// A resource's mapping is compiled into one jq program that evaluates the
// selector and then every field, so an entity costs one gojq run per
// resource. Each field is wrapped so that its errors are caught one by one:
//
//	__pb_1(f) yields [first output of f] or [] (no output)
//	__pb_n(f) yields [every output of f]     (many-relations)
//
// and either yields {"__pb_error": message} when f fails. The program yields
// [selector] when the selector is not exactly true, else
// [selector, field 1, field 2, ...] in slot order.
const (
	prelude = `def __pb_1(f): try [limit(1; f)] catch {"__pb_error": .};
def __pb_n(f): try [f] catch {"__pb_error": .};
`
	sandboxPrelude = "def env: {}; {} as $ENV | "
	errKey         = "__pb_error"
)

// slot is one jq expression in a resource's program.
type slot struct {
	field string // path in the mapping, e.g. "properties.type"
	expr  string // jq source after quote normalisation
	all   bool   // collect every output instead of the first
}

// tmpl rebuilds a field from slot results: a leaf (slot >= 0), or an object
// or array of templates (search queries).
type tmpl struct {
	slot  int
	keys  []string
	vals  []*tmpl
	items []*tmpl
	isArr bool
}

type relField struct {
	name string
	t    *tmpl
}

type propField struct {
	name string
	slot int
}

// compiled is one resource ready to run.
type compiled struct {
	index     int
	res       *Resource
	kindLower string
	code      *gojq.Code
	body      string // the program without prelude, for the jq CLI
	// native are slots evaluated in Go (see native.go); the combined
	// program has a placeholder in their place.
	native    []*nativeSlot
	items     *gojq.Code
	itemsDel  *gojq.Code
	itemsSrc  string
	slots     []slot
	ident     *tmpl
	team      *tmpl
	title     int
	blueprint int
	icon      int
	props     []propField
	rels      []relField
	// constBlueprint is the blueprint when the mapping names a constant one.
	constBlueprint string
}

func compilerOptions(allowEnv bool) []gojq.CompilerOption {
	opts := budgetOptions()
	if allowEnv {
		opts = append(opts, gojq.WithEnvironLoader(os.Environ))
	}
	// Without an environ loader gojq binds $ENV and env to {}.
	return opts
}

// compileResource checks every expression of r on its own (so errors name the
// field and column) and then compiles the combined program.
//
// Every expression is checked: the error lists all that fail (a
// ConfigErrors when there are several).
func compileResource(cfgName string, index int, r *Resource, bps blueprintIndex, opts []gojq.CompilerOption) (*compiled, error) {
	c := &compiled{index: index, res: r, kindLower: strings.ToLower(r.Kind), title: -1, blueprint: -1, icon: -1}
	var bad []*ConfigError
	add := func(field, src string, all bool) (int, error) {
		expr := normalizeQuotes(src)
		if err := checkExpr(cfgName, index, r, field, src, expr, opts); err != nil {
			bad = append(bad, err)
			expr = "null" // keep going to find the other problems
		}
		c.slots = append(c.slots, slot{field: field, expr: expr, all: all})
		return len(c.slots) - 1, nil
	}
	var err error
	if _, err = add("selector.query", r.Selector, false); err != nil {
		return nil, err
	}
	m := &r.Mappings
	if c.blueprint, err = add("blueprint", m.Blueprint, false); err != nil {
		return nil, err
	}
	c.constBlueprint = constString(c.slots[c.blueprint].expr)
	if c.ident, err = c.template("identifier", m.Identifier, false, add); err != nil {
		return nil, err
	}
	if m.Title != "" {
		if c.title, err = add("title", m.Title, false); err != nil {
			return nil, err
		}
	}
	if m.Icon != "" {
		if c.icon, err = add("icon", m.Icon, false); err != nil {
			return nil, err
		}
	}
	if m.Team != nil {
		if c.team, err = c.template("team", m.Team, false, add); err != nil {
			return nil, err
		}
	}
	for _, name := range sortedKeys(m.Properties) {
		s, err := add("properties."+name, m.Properties[name], false)
		if err != nil {
			return nil, err
		}
		c.props = append(c.props, propField{name: name, slot: s})
	}
	for _, name := range sortedKeys(m.Relations) {
		// Collect every output when the blueprint's relation is many, or
		// when the blueprint is only known per entity (decided in finish).
		all := c.constBlueprint == "" || bps.many(c.constBlueprint, name)
		t, err := c.template("relations."+name, m.Relations[name], all, add)
		if err != nil {
			return nil, err
		}
		c.rels = append(c.rels, relField{name: name, t: t})
	}
	if r.ItemsToParse != "" {
		if err := checkExpr(cfgName, index, r, "itemsToParse", r.ItemsToParse, normalizeQuotes(r.ItemsToParse), opts); err != nil {
			bad = append(bad, err)
		}
	}
	if err := joinConfigErrors(bad); err != nil {
		return nil, err
	}
	c.body = resourceBody(c.slots)
	run := c.slots
	for i := 1; i < len(c.slots); i++ { // never the selector
		ns, err := compileNative(c.slots[i], i, opts)
		if err != nil {
			return nil, &ConfigError{File: cfgName, Line: r.line, Key: fmt.Sprintf("resources[%d]", index), Msg: "compiling " + c.slots[i].field + ": " + err.Error()}
		}
		if ns != nil {
			if len(c.native) == 0 {
				run = append([]slot(nil), c.slots...)
			}
			run[i].expr = nativePlaceholder
			c.native = append(c.native, ns)
		}
	}
	code, err := compileSource(prelude+resourceBody(run), opts)
	if err != nil {
		return nil, &ConfigError{File: cfgName, Line: r.line, Key: fmt.Sprintf("resources[%d]", index),
			Msg: "compiling the combined mapping: " + err.Error()}
	}
	c.code = code
	if r.ItemsToParse != "" {
		expr := normalizeQuotes(r.ItemsToParse)
		c.itemsSrc = expr
		if c.items, err = compileSource("first(\n"+expr+"\n)", opts); err != nil {
			return nil, err
		}
		if r.ItemsToParseTopLevelTransform {
			// Not every expression is a path; then the parent keeps the array.
			c.itemsDel, _ = compileSource("delpaths([path(\n"+expr+"\n)])", opts)
		}
	}
	return c, nil
}

type addFunc func(field, src string, all bool) (int, error)

func (c *compiled) template(field string, v any, all bool, add addFunc) (*tmpl, error) {
	switch v := v.(type) {
	case string:
		s, err := add(field, v, all)
		return &tmpl{slot: s}, err
	case map[string]any:
		t := &tmpl{slot: -1}
		for _, k := range sortedKeys(v) {
			// Leaves of a search query are single values (Ocean semantics).
			sub, err := c.template(field+"."+k, v[k], false, add)
			if err != nil {
				return nil, err
			}
			t.keys = append(t.keys, k)
			t.vals = append(t.vals, sub)
		}
		return t, nil
	case []any:
		t := &tmpl{slot: -1, isArr: true}
		for i, x := range v {
			sub, err := c.template(fmt.Sprintf("%s[%d]", field, i), x, false, add)
			if err != nil {
				return nil, err
			}
			t.items = append(t.items, sub)
		}
		return t, nil
	case nil:
		return &tmpl{slot: -1, isArr: false}, nil
	}
	return nil, fmt.Errorf("%s: unsupported mapping value %T", field, v)
}

func resourceBody(slots []slot) string {
	var b strings.Builder
	b.WriteString("(__pb_1((\n")
	b.WriteString(slots[0].expr)
	b.WriteString("\n))) as $__pb_sel | if $__pb_sel == [true] then [$__pb_sel")
	for _, s := range slots[1:] {
		if s.all {
			b.WriteString(", __pb_n((\n")
		} else {
			b.WriteString(", __pb_1((\n")
		}
		b.WriteString(s.expr)
		b.WriteString("\n))")
	}
	b.WriteString("] else [$__pb_sel] end")
	return b.String()
}

// compileSource compiles a program to run on an entity: the memory guards
// of the builtins it uses (budgetPrelude) come first, and its operators are
// rewritten to reach them.
func compileSource(src string, opts []gojq.CompilerOption) (*gojq.Code, error) {
	q, err := gojq.Parse(src)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	usedNames(reflect.ValueOf(q), used)
	if guards := budgetPrelude(used); guards != "" {
		pq, err := gojq.Parse(guards + ".")
		if err != nil {
			return nil, fmt.Errorf("internal error in the memory guards: %w", err)
		}
		q.FuncDefs = append(pq.FuncDefs, q.FuncDefs...)
	}
	rewriteOperators(q)
	return gojq.Compile(q, opts...)
}

// maxQuotedExpr is how much of an expression an error shows.
const maxQuotedExpr = 200

// checkExpr parses and compiles one expression and turns a failure into a
// ConfigError pointing at the offending character's line and column in the
// YAML document.
func checkExpr(cfgName string, index int, r *Resource, field, raw, expr string, opts []gojq.CompilerOption) *ConfigError {
	key := fmt.Sprintf("resources[%d] (kind %s) %s", index, r.Kind, field)
	at := func(off int) Position { return r.ExprPosition(field, off) }
	if strings.Contains(expr, reservedPrefix) {
		pos := r.ValuePosition(field)
		return &ConfigError{File: cfgName, Line: pos.Line, Column: pos.Column, Key: key,
			Msg: fmt.Sprintf("names starting with %s are reserved for portbridge", reservedPrefix)}
	}
	q, err := gojq.Parse(expr)
	if err != nil {
		pos := r.ValuePosition(field)
		var pe *gojq.ParseError
		if errors.As(err, &pe) {
			// gojq's offset is just after the offending token.
			off := exprToRaw(raw, expr, max(pe.Offset-1, 0))
			pos = at(off)
			return &ConfigError{File: cfgName, Line: pos.Line, Column: pos.Column, Key: key,
				Msg: fmt.Sprintf("jq syntax error: %v (expression column %d: %s)", err, exprColumn(raw, off+1), redact.QuoteN(raw, maxQuotedExpr))}
		}
		return &ConfigError{File: cfgName, Line: pos.Line, Column: pos.Column, Key: key, Msg: "jq syntax error: " + err.Error()}
	}
	if _, err := gojq.Compile(q, opts...); err != nil {
		pos := r.ValuePosition(field)
		// Point at the undefined function or variable when the message
		// names one that occurs in the expression.
		if name := compileErrorName(err.Error()); name != "" {
			if i := strings.Index(raw, name); i >= 0 {
				pos = at(i)
			}
		}
		return &ConfigError{File: cfgName, Line: pos.Line, Column: pos.Column, Key: key,
			Msg: fmt.Sprintf("jq compile error: %v (in %s)", err, redact.QuoteN(raw, maxQuotedExpr))}
	}
	return nil
}

// compileErrorName extracts the undefined name from gojq's compile errors
// ("function not defined: foo/1", "variable not defined: $x").
func compileErrorName(msg string) string {
	for _, p := range []string{"function not defined: ", "variable not defined: "} {
		if i := strings.Index(msg, p); i >= 0 {
			name := msg[i+len(p):]
			if j := strings.IndexByte(name, '/'); j >= 0 {
				name = name[:j]
			}
			return strings.TrimSpace(name)
		}
	}
	return ""
}

// exprColumn is the 1-based column within its line of the byte just before
// offset (gojq reports the offset just after the offending token).
func exprColumn(src string, offset int) int {
	offset = min(max(offset, 1), len(src))
	if i := strings.LastIndexByte(src[:offset-1], '\n'); i >= 0 {
		return offset - 1 - i
	}
	return offset
}

// constString returns the value of a jq expression that is a plain string
// literal ("component"), or "".
func constString(expr string) string {
	q, err := gojq.Parse(expr)
	if err != nil {
		return ""
	}
	for q.Term != nil && q.Term.Type == gojq.TermTypeQuery && q.Left == nil && q.Right == nil &&
		len(q.FuncDefs) == 0 && len(q.Term.SuffixList) == 0 {
		q = q.Term.Query // parenthesised
	}
	if q.Term == nil || q.Left != nil || q.Right != nil || len(q.FuncDefs) > 0 ||
		q.Term.Type != gojq.TermTypeString || q.Term.Str == nil || len(q.Term.Str.Queries) > 0 ||
		len(q.Term.SuffixList) > 0 || q.Term.Format != "" {
		return ""
	}
	return q.Term.Str.Str
}

// Literal returns the value of a jq expression (as written in a mapping,
// single quotes allowed) that is a constant string, number, true, false or
// null, and whether it is one. Anything that reads the input or calls a
// function is not a literal.
func Literal(expr string) (any, bool) {
	q, err := gojq.Parse(normalizeQuotes(expr))
	if err != nil {
		return nil, false
	}
	for q.Term != nil && q.Term.Type == gojq.TermTypeQuery && q.Left == nil && q.Right == nil &&
		len(q.FuncDefs) == 0 && len(q.Term.SuffixList) == 0 {
		q = q.Term.Query // parenthesised
	}
	if q.Term == nil || q.Left != nil || q.Right != nil || len(q.FuncDefs) > 0 || len(q.Term.SuffixList) > 0 {
		return nil, false
	}
	switch q.Term.Type {
	case gojq.TermTypeNull:
		return nil, true
	case gojq.TermTypeTrue:
		return true, true
	case gojq.TermTypeFalse:
		return false, true
	case gojq.TermTypeNumber:
		f, err := strconv.ParseFloat(q.Term.Number, 64)
		return f, err == nil
	case gojq.TermTypeString:
		if q.Term.Str == nil || len(q.Term.Str.Queries) > 0 || q.Term.Format != "" {
			return nil, false
		}
		return q.Term.Str.Str, true
	}
	return nil, false
}
