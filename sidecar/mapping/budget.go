package mapping

// The memory budget of one entity's jq runs. gojq has no allocation hook, so
// the budget is kept in three ways, all checked while jq runs:
//
//  1. Builtins that can build a value far larger than their inputs in one
//     step (tostring, tojson and every @format, string interpolation, add,
//     join, flatten, +, *, /, split, explode, transpose, indices, global
//     regular-expression matches, setpath and assignments to a far array
//     index, ...) are shadowed by jq definitions that first ask a Go guard
//     to estimate the result. The estimate walks the inputs and stops as
//     soon as it passes the budget, so a value of 2^40 shared leaves costs
//     no more than the budget to reject. Over budget, the entity fails.
//  2. Every estimate, and every jq instruction (counted when gojq asks the
//     watchdog's Done before each one), is added to the entity's running
//     account of what it may have allocated.
//  3. Each time the account grows by an eighth of the budget, the watchdog
//     reads the process's heap size from runtime/metrics (cheap, no
//     stop-the-world); if the heap grew by more than the budget since the
//     entity's first check, the entity fails. The account only decides when
//     to look; the heap decides, so a loop that allocates and drops garbage
//     is not stopped while one that keeps what it builds is.
//
// A failure cancels the entity's watchdog context, which gojq checks before
// its next instruction, so `try` cannot catch it; Map reports the entity as
// skipped with the reason. Other entities and the process go on.

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"regexp"
	"runtime/metrics"
	"strings"
	"unicode/utf8"

	"github.com/itchyny/gojq"
)

// DefaultMemoryBudget is Options.MemoryBudget when it is 0.
const DefaultMemoryBudget = 32 << 20

// budgetVar is the jq variable that carries an entity's watchdog to the
// guard; user expressions may not name it (see reservedPrefix).
const budgetVar = "$__pb_w"

// reservedPrefix starts every name the mapping adds to user programs.
const reservedPrefix = "__pb_"

// stepCost is what one jq instruction adds to the account: about what
// collecting one more value into an array allocates.
const stepCost = 32

// maxValueDepth bounds how deeply a value a guarded builtin works on may
// nest; gojq and this package walk values recursively.
const maxValueDepth = 10000

// maxIntBits bounds the integers jq may build (gojq's integers have
// arbitrary precision): one multiplication of two such integers takes
// milliseconds, and a single step of jq cannot be interrupted.
const maxIntBits = 1 << 20

// heapMetric is the bytes of heap memory occupied by objects, live or not
// yet swept.
const heapMetric = "/memory/classes/heap/objects:bytes"

// BudgetError ends an entity whose jq went over the memory budget.
type BudgetError struct {
	Budget int64
	Reason string
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("jq went over the memory budget of %s per entity (mapping.memoryBudget): %s", byteSize(e.Budget), e.Reason)
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// charge adds an estimate of what a builtin is about to allocate to the
// account. It returns an error, after cancelling the watchdog, when the
// estimate alone is over the budget or the heap check finds the budget
// spent.
func (w *watchdog) charge(est int64, what string) error {
	if est > w.budget {
		if strings.HasPrefix(what, "an integer") {
			return w.overBudget(what)
		}
		return w.overBudget(fmt.Sprintf("%s would need more than %s", what, byteSize(w.budget)))
	}
	w.used += est
	if w.used >= w.nextCheck {
		w.checkHeap()
	}
	return w.Err()
}

// account adds n bytes that the mapping allocates outside jq (copies of the
// entity per itemsToParse element, mapped results) to the account.
func (w *watchdog) account(n int64) error {
	w.used += n
	if w.used >= w.nextCheck {
		w.checkHeap()
	}
	return w.Err()
}

// checkHeap compares the process's heap with the one at the entity's first
// check.
func (w *watchdog) checkHeap() {
	w.nextCheck = w.used + max(w.budget/8, 1)
	metrics.Read(w.heap[:])
	if w.heap[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	now := w.heap[0].Value.Uint64()
	if w.heapStart == 0 {
		w.heapStart = now
		return
	}
	if now > w.heapStart && int64(now-w.heapStart) > w.budget {
		_ = w.overBudget(fmt.Sprintf("the heap grew by %s while it ran", byteSize(int64(now-w.heapStart))))
	}
}

func (w *watchdog) overBudget(reason string) error {
	err := &BudgetError{Budget: w.budget, Reason: reason}
	w.fire(err)
	return err
}

// guard is the Go side of the shadowing definitions: __pb_g($__pb_w; kind;
// args...) returns its input after charging the estimate of what the
// builtin named by kind will allocate for it, or an error.
func guard(v any, args []any) any {
	w, ok := args[0].(*watchdog)
	if !ok {
		return errors.New("the memory guard was called without its state")
	}
	kind, _ := args[1].(string)
	est, what := estimate(kind, v, args[2:], w.budget)
	if err := w.charge(est, what); err != nil {
		return err
	}
	return v
}

// estimate returns how many bytes the builtin kind may allocate for input v
// and its arguments, stopping early (with a result above limit) when that is
// over limit, and what it is called in errors.
func estimate(kind string, v any, args []any, limit int64) (int64, string) {
	switch kind {
	case "json", "json2", "json3", "json4", "json6":
		factor := int64(1)
		if len(kind) > 4 {
			factor = int64(kind[4] - '0')
		}
		if s, ok := v.(string); ok {
			return int64(len(s)) * factor, "formatting a string"
		}
		n, deep := sizeOf(v, limit/factor)
		if deep {
			return limit + 1, fmt.Sprintf("a value nested deeper than %d levels", maxValueDepth)
		}
		return n * factor, "the JSON text of a value"
	case "str":
		if s, ok := v.(string); ok {
			return int64(len(s)), "changing a string"
		}
	case "fromjson":
		if s, ok := v.(string); ok {
			return int64(len(s)) * 12, "parsing a JSON text"
		}
	case "explode":
		if s, ok := v.(string); ok {
			return int64(utf8.RuneCountInString(s)) * 24, "exploding a string"
		}
	case "implode", "arr":
		switch x := v.(type) {
		case []any:
			return int64(len(x)) * 16, "copying an array"
		case map[string]any:
			return int64(len(x)) * 48, "copying an object"
		case string:
			return int64(len(x)), "copying a string"
		}
	case "add":
		return addSize(v, limit), "adding the elements"
	case "join":
		sep, _ := args[0].(string)
		return joinSize(v, sep, limit), "joining the elements"
	case "flatten":
		depth := math.MaxInt
		if len(args) > 0 {
			if f, ok := toFloat(args[0]); ok && f >= 0 && f < float64(maxValueDepth) {
				depth = int(f)
			}
		}
		n := int64(0)
		leaves(v, depth, &n, limit/16, 0)
		return n * 16, "flattening an array"
	case "split":
		s, _ := v.(string)
		sep, _ := args[0].(string)
		return splitSize(s, sep), "splitting a string"
	case "divide":
		s, ok1 := args[0].(string)
		sep, ok2 := args[1].(string)
		if ok1 && ok2 {
			return splitSize(s, sep), "splitting a string"
		}
	case "add2", "mul2":
		if bits(args[0])+bits(args[1]) > maxIntBits {
			return limit + 1, fmt.Sprintf("an integer of more than %d bits", maxIntBits)
		}
		if kind == "add2" {
			return add2Size(args[0], args[1]), "adding two values"
		}
		return mul2Size(args[0], args[1], limit), "multiplying two values"
	case "transpose":
		rows, _ := v.([]any)
		longest := 0
		for _, r := range rows {
			if a, ok := r.([]any); ok {
				longest = max(longest, len(a))
			}
		}
		return int64(len(rows)) * int64(longest) * 16, "transposing an array"
	case "indices":
		s, ok1 := v.(string)
		sub, ok2 := args[0].(string)
		if ok1 && ok2 {
			n := int64(len(s)) + 1
			if sub != "" {
				n = int64(strings.Count(s, sub))
			}
			return n * 24, "listing the indices"
		}
		if a, ok := v.([]any); ok {
			return int64(len(a)) * 24, "listing the indices"
		}
	case "paths":
		return pathsSize(args[0], limit), "setting a path with a far array index"
	case "event":
		if e, ok := v.([]any); ok && len(e) > 0 {
			return pathsSize([]any{e[0]}, limit), "setting a path with a far array index"
		}
	case "match":
		return matchSize(v, args, limit), "matching a regular expression"
	}
	return 0, kind
}

// sizeOf estimates v's size as JSON, counting shared values every time they
// appear (as an encoder writes them). It stops once the size passes limit
// and reports whether v nests deeper than maxValueDepth.
func sizeOf(v any, limit int64) (int64, bool) {
	var n int64
	deep := false
	var walk func(v any, depth int) bool
	walk = func(v any, depth int) bool {
		if depth > maxValueDepth {
			deep = true
			return false
		}
		switch x := v.(type) {
		case string:
			n += int64(len(x)) + 2
		case map[string]any:
			n += 2
			for k, e := range x {
				n += int64(len(k)) + 4
				if n > limit || !walk(e, depth+1) {
					return false
				}
			}
		case []any:
			n += 2
			for _, e := range x {
				n++
				if n > limit || !walk(e, depth+1) {
					return false
				}
			}
		case *big.Int:
			n += int64(x.BitLen())/3 + 2
		default:
			n += 8
		}
		return n <= limit
	}
	walk(v, 0)
	return n, deep
}

// leaves counts the values flatten would produce, up to limit.
func leaves(v any, depth int, n *int64, limit int64, level int) {
	a, ok := v.([]any)
	if !ok || level > depth || level > maxValueDepth {
		*n++
		return
	}
	for _, e := range a {
		if *n > limit {
			return
		}
		leaves(e, depth, n, limit, level+1)
	}
}

func addSize(v any, limit int64) int64 {
	var elems []any
	switch x := v.(type) {
	case []any:
		elems = x
	case map[string]any:
		for _, e := range x {
			elems = append(elems, e)
		}
	}
	var n int64
	for _, e := range elems {
		switch x := e.(type) {
		case string:
			n += int64(len(x))
		case []any:
			n += int64(len(x)) * 16
		case map[string]any:
			n += int64(len(x)) * 48
		case *big.Int:
			n += int64(x.BitLen()) / 8
		}
		if n > limit {
			break
		}
	}
	return n
}

func joinSize(v any, sep string, limit int64) int64 {
	a, _ := v.([]any)
	var n int64
	for _, e := range a {
		n += int64(len(sep))
		switch x := e.(type) {
		case string:
			n += int64(len(x))
		case nil:
		default:
			n += 24
		}
		if n > limit {
			break
		}
	}
	return n
}

func splitSize(s, sep string) int64 {
	n := int64(utf8.RuneCountInString(s))
	if sep != "" {
		n = int64(strings.Count(s, sep)) + 1
	}
	return n * 32
}

func add2Size(a, b any) int64 {
	switch x := a.(type) {
	case string:
		if y, ok := b.(string); ok {
			return int64(len(x) + len(y))
		}
	case []any:
		if y, ok := b.([]any); ok {
			return int64(len(x)+len(y)) * 16
		}
	case map[string]any:
		if y, ok := b.(map[string]any); ok {
			return int64(len(x)+len(y)) * 48
		}
	}
	return (bits(a) + bits(b)) / 8
}

func mul2Size(a, b any, limit int64) int64 {
	if s, ok := a.(string); ok {
		if f, ok := toFloat(b); ok && f > 0 {
			return int64(math.Min(float64(len(s))*math.Ceil(f), float64(math.MaxInt64/2)))
		}
		return 0
	}
	if s, ok := b.(string); ok {
		return mul2Size(s, a, limit)
	}
	_, ok1 := a.(map[string]any)
	_, ok2 := b.(map[string]any)
	if ok1 && ok2 {
		x, _ := sizeOf(a, limit)
		y, _ := sizeOf(b, limit)
		return x + y
	}
	return (bits(a) + bits(b)) / 8
}

// bits is the size of an integer in bits (0 for anything else): products
// of big integers are as long as their factors together.
func bits(v any) int64 {
	switch x := v.(type) {
	case *big.Int:
		return int64(x.BitLen())
	case int:
		return 64
	}
	return 0
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case float64:
		return x, true
	case *big.Int:
		f, _ := new(big.Float).SetInt(x).Float64()
		return f, true
	}
	return 0, false
}

// pathsSize is over limit when a path in paths (a list of paths) indexes an
// array so far out that setting it would allocate more than limit.
func pathsSize(paths any, limit int64) int64 {
	ps, _ := paths.([]any)
	var worst int64
	for _, p := range ps {
		steps, _ := p.([]any)
		for _, s := range steps {
			if f, ok := toFloat(s); ok && f > 0 {
				worst = max(worst, int64(math.Min(f, float64(limit)))*16)
			}
		}
	}
	return worst
}

// matchSize estimates the matches of a regular expression: one match for a
// single match, and for a global one on a long string the counted matches
// (jq's match objects take about 160 bytes each).
func matchSize(v any, args []any, limit int64) int64 {
	s, ok := v.(string)
	if !ok || len(args) < 3 {
		return 0
	}
	re, flags := args[0], args[1]
	if a, ok := re.([]any); ok && len(a) > 0 {
		re = a[0]
		if len(a) > 1 {
			flags = a[1]
		}
	}
	pattern, _ := re.(string)
	fl, _ := flags.(string)
	global, _ := args[2].(bool)
	const perMatch = 160
	if !global && !strings.ContainsRune(fl, 'g') {
		return perMatch
	}
	worst := (int64(len(s)) + 1) * perMatch
	if worst <= limit/8 {
		return worst // short strings: not worth compiling the expression
	}
	if strings.ContainsRune(fl, 'i') {
		pattern = "(?i)" + pattern
	}
	if strings.ContainsRune(fl, 'm') {
		pattern = "(?s)" + pattern
	}
	r, err := regexp.Compile(pattern)
	if err != nil {
		return 0 // gojq reports the error
	}
	most := int(limit/perMatch) + 1
	// jq also reports an empty match right after a non-empty one, which
	// the standard library skips: at most twice as many.
	return int64(len(r.FindAllStringIndex(s, most))) * 2 * perMatch
}

// guarded lists the builtins shadowed by a guard: name, parameters as the
// definition declares them, and the estimate kind with the extra guard
// arguments. Definitions with closure parameters pass them through.
var guarded = []struct {
	name, params, kind, args string
}{
	{"tostring", "", "json", ""},
	{"tojson", "", "json", ""},
	{"_tohtml", "", "json6", ""},
	{"_touri", "", "json3", ""},
	{"_tourid", "", "json", ""},
	{"_tocsv", "", "json2", ""},
	{"_totsv", "", "json2", ""},
	{"_tosh", "", "json4", ""},
	{"_tobase64", "", "json2", ""},
	{"_tobase64d", "", "json", ""},
	{"format", "$f", "json6", ""},
	{"ascii_downcase", "", "str", ""},
	{"ascii_upcase", "", "str", ""},
	{"fromjson", "", "fromjson", ""},
	{"explode", "", "explode", ""},
	{"implode", "", "implode", ""},
	{"add", "", "add", ""},
	{"join", "$s", "join", "$s"},
	{"flatten", "", "flatten", ""},
	{"flatten", "$d", "flatten", "$d"},
	{"split", "$s", "split", "$s"},
	{"transpose", "", "transpose", ""},
	{"indices", "$i", "indices", "$i"},
	{"sort", "", "arr", ""},
	{"keys", "", "arr", ""},
	{"unique", "", "arr", ""},
	{"reverse", "", "arr", ""},
	{"to_entries", "", "arr", ""},
	{"setpath", "$p; $v", "paths", "[$p]"},
	{"pick", "f", "paths", "[path(f)]"},
	{"_assign", "p; $x", "paths", "[path(p)]"},
	{"_modify", "p; f", "paths", "[path(p)]"},
	{"match", "$re", "match", "$re; null; false"},
	{"match", "$re; $flags", "match", "$re; $flags; false"},
	{"capture", "$re", "match", "$re; null; false"},
	{"capture", "$re; $flags", "match", "$re; $flags; false"},
	{"scan", "$re", "match", "$re; null; true"},
	{"scan", "$re; $flags", "match", "$re; $flags; true"},
	{"splits", "$re", "match", "$re; null; true"},
	{"splits", "$re; $flags", "match", "$re; $flags; true"},
	{"split", "$re; $flags", "match", "$re; $flags; true"},
	{"sub", "$re; str", "match", "$re; null; false"},
	{"sub", "$re; str; $flags", "match", "$re; $flags; false"},
	{"gsub", "$re; str", "match", "$re; null; true"},
	{"gsub", "$re; str; $flags", "match", "$re; $flags; true"},
}

// budgetPrelude is the jq text that shadows the guarded builtins the names
// in used refer to. For each, a capture (__pb_o_NAME_ARITY) defined before
// the shadow still refers to the builtin. The binary operators +, *, / and
// = are rewritten into calls of _add, _multiply, _divide and _assign (see
// rewriteOperators), which this prelude shadows too, as it does fromstream,
// add/1 and INDEX, whose builtin definitions would call the unguarded
// builtins. Only what a program uses is defined, so that a mapping that
// uses none of them compiles and runs as before.
func budgetPrelude(used map[string]bool) string {
	var b strings.Builder
	def := func(name, params, body string) {
		b.WriteString("def " + name)
		if params != "" {
			b.WriteString("(" + params + ")")
		}
		b.WriteString(": " + body + ";\n")
	}
	if used["INDEX"] {
		used["setpath"], used["tostring"] = true, true
	}
	for _, g := range guarded {
		if !used[g.name] {
			continue
		}
		var call []string
		if g.params != "" {
			call = strings.Split(g.params, "; ")
		}
		args := ""
		if len(call) > 0 {
			args = "(" + strings.Join(call, "; ") + ")"
		}
		orig := fmt.Sprintf("%so_%s_%d", reservedPrefix, strings.TrimPrefix(g.name, "_"), len(call))
		def(orig, g.params, g.name+args)
		check := fmt.Sprintf("%sg(%s; %q", reservedPrefix, budgetVar, g.kind)
		if g.args != "" {
			check += "; " + g.args
		}
		def(g.name, g.params, check+") | "+orig+args)
	}
	for _, op := range []struct{ name, kind string }{{"_add", "add2"}, {"_multiply", "mul2"}, {"_divide", "divide"}} {
		if !used[op.name] {
			continue
		}
		orig := reservedPrefix + "o" + op.name
		def(orig, "a; b", op.name+"(a; b)")
		// jq evaluates the right operand in the outer loop.
		def(op.name, "a; b", fmt.Sprintf("b as $__pb_b | a as $__pb_a | %sg(%s; %q; $__pb_a; $__pb_b) | %s($__pb_a; $__pb_b)", reservedPrefix, budgetVar, op.kind, orig))
	}
	if used["fromstream"] {
		def(reservedPrefix+"o_fromstream", "f", "fromstream(f)")
		def("fromstream", "f", fmt.Sprintf("%so_fromstream(f | %sg(%s; \"event\"))", reservedPrefix, reservedPrefix, budgetVar))
	}
	if used["add"] {
		def("add", "f", "[f] | add")
	}
	if used["INDEX"] {
		def("INDEX", "stream; idx_expr", "reduce stream as $__pb_row ({}; setpath([$__pb_row | idx_expr | tostring]; $__pb_row))")
		def("INDEX", "idx_expr", "INDEX(.[]; idx_expr)")
	}
	return b.String()
}

// formatFuncs are the builtins gojq calls for @formats.
var formatFuncs = map[string]string{
	"@text": "tostring", "@json": "tojson", "@html": "_tohtml", "@uri": "_touri", "@urid": "_tourid", "@csv": "_tocsv",
	"@tsv": "_totsv", "@sh": "_tosh", "@base64": "_tobase64", "@base64d": "_tobase64d",
}

// updateFuncs are the operator functions update-assignments call.
var updateFuncs = map[gojq.Operator]string{
	gojq.OpUpdateAdd: "_add", gojq.OpUpdateMul: "_multiply", gojq.OpUpdateDiv: "_divide",
}

// usedNames collects the function names a query calls, directly or through
// operators, @formats and string interpolation.
func usedNames(v reflect.Value, used map[string]bool) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return
		}
		switch x := v.Interface().(type) {
		case *gojq.Func:
			used[x.Name] = true
		case *gojq.Term:
			if x.Format != "" {
				if f, ok := formatFuncs[x.Format]; ok {
					used[f] = true
				} else {
					used["format"] = true
				}
			}
		case *gojq.String:
			if len(x.Queries) > 0 {
				used["tostring"] = true
			}
		case *gojq.Query:
			if f, ok := operatorFuncs[x.Op]; ok {
				used[f] = true
			}
			switch x.Op {
			case gojq.OpModify, gojq.OpUpdateAdd, gojq.OpUpdateSub, gojq.OpUpdateMul, gojq.OpUpdateDiv, gojq.OpUpdateMod, gojq.OpUpdateAlt:
				used["_modify"] = true
				used[updateFuncs[x.Op]] = true
			}
		}
		usedNames(v.Elem(), used)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				usedNames(v.Field(i), used)
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			usedNames(v.Index(i), used)
		}
	}
}

// budgetOptions are the compiler options of a guarded program.
func budgetOptions() []gojq.CompilerOption {
	return []gojq.CompilerOption{
		gojq.WithVariables([]string{budgetVar}),
		gojq.WithFunction(reservedPrefix+"g", 2, 6, guard),
	}
}

// operatorFuncs are the binary operators that become calls of their
// (shadowed) builtin names.
var operatorFuncs = map[gojq.Operator]string{
	gojq.OpAdd: "_add", gojq.OpMul: "_multiply", gojq.OpDiv: "_divide", gojq.OpAssign: "_assign",
}

var queryType = reflect.TypeFor[*gojq.Query]()

// rewriteOperators turns `a + b`, `a * b`, `a / b` and `a = b` in q, outside
// the definitions at its top level (the preludes), into calls of _add,
// _multiply, _divide and _assign, so that the guarded definitions apply:
// gojq compiles these operators straight to its internal functions (and
// `=` with a constant path straight to setpath), never through a name a
// definition could shadow. The update operators (+=, *=, |=, ...) already
// compile through _modify and the operator names.
func rewriteOperators(q *gojq.Query) {
	walkQueries(reflect.ValueOf(q.Term))
	walkQueries(reflect.ValueOf(q.Left))
	walkQueries(reflect.ValueOf(q.Right))
	rewriteQuery(q)
}

func walkQueries(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return
		}
		walkQueries(v.Elem())
		if v.Type() == queryType {
			rewriteQuery(v.Interface().(*gojq.Query))
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				walkQueries(v.Field(i))
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			walkQueries(v.Index(i))
		}
	}
}

func rewriteQuery(q *gojq.Query) {
	name, ok := operatorFuncs[q.Op]
	if !ok || q.Term != nil || q.Left == nil || q.Right == nil {
		return
	}
	q.Term = &gojq.Term{Type: gojq.TermTypeFunc, Func: &gojq.Func{Name: name, Args: []*gojq.Query{q.Left, q.Right}}}
	q.Left, q.Right, q.Op = nil, nil, 0
}
