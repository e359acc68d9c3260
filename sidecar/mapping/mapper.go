package mapping

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/itchyny/gojq"

	"github.com/portbridge/portbridge/sidecar/port"
)

// Defaults for Options.
const (
	DefaultTimeout        = time.Second
	DefaultMaxOutputBytes = 1 << 20
)

// Options tune a Mapper.
type Options struct {
	// AllowEnv makes $ENV and env visible to jq. Off by default so that a
	// mapping cannot copy the sidecar's secrets into Port.
	AllowEnv bool
	// Timeout bounds the mapping of one entity (default 1s).
	Timeout time.Duration
	// MaxOutputBytes bounds the canonical JSON of one mapped entity
	// (default 1 MiB, Port's request limit). It is checked before the
	// entity is encoded, so a value too big to encode costs nothing.
	MaxOutputBytes int
	// MemoryBudget bounds what jq may allocate for one entity (default
	// 32 MiB), checked while jq runs (see budget.go). An entity over it is
	// skipped with the reason.
	MemoryBudget int64
	// Blueprints tell which relations are many:true and which properties
	// are objects. Nil means DefaultBlueprints().
	Blueprints []port.Blueprint
}

// Mapper maps Backstage entities to Port entities. It is safe for
// concurrent use.
type Mapper struct {
	cfg       *Config
	opts      Options
	bps       blueprintIndex
	resources []*compiled
	byKind    map[string][]int // lower-case kind -> resource indexes
	star      []int            // resources with kind "*"
	kinds     []string
	finger    string
	bufs      sync.Pool
	docs      docCache
}

// docCache remembers documents parsed for object properties (API
// definitions), keyed by the hash of their text: a resync maps the same
// definitions again and again. The cached objects are shared and read-only.
type docCache struct {
	m sync.Map // uint64 -> map[string]any
	n atomic.Int64
}

const (
	docCacheEntries = 4096
	docCacheMinSize = 512 // smaller texts parse faster than they hash and look up
)

func (d *docCache) parse(s string) (map[string]any, error) {
	if len(s) < docCacheMinSize {
		return parseDocument(s)
	}
	key := xxhash.Sum64String(s)
	if v, ok := d.m.Load(key); ok {
		return v.(map[string]any), nil
	}
	obj, err := parseDocument(s)
	if err == nil && d.n.Load() < docCacheEntries {
		d.n.Add(1)
		d.m.Store(key, obj)
	}
	return obj, err
}

// Mapped is one Port entity produced by one resource from one Backstage
// entity.
type Mapped struct {
	ResourceIndex int
	Kind          string // the resource's kind as written in the mapping
	Blueprint     string
	// Identifier is the entity identifier. For a search-query identifier
	// (SearchIdentifier true) it is the query's canonical JSON.
	Identifier       string
	SearchIdentifier bool
	// Entity is the Port entity. Its values may share memory with the
	// input entity: treat both as read-only.
	Entity port.Entity
	// JSON is Entity's canonical encoding (sorted keys, as encoding/json
	// would produce for port.Entity), ready to send.
	JSON []byte
	// Hash is xxhash64 of the blueprint, a NUL byte and JSON. It does not
	// change when Backstage only reorders keys.
	Hash uint64
}

// Warning is a problem with one field of one resource's mapping. A field
// warning leaves the field null; a skip drops the entity for that resource.
// ResourceIndex is -1 for problems with the input entity itself.
type Warning struct {
	ResourceIndex int    `json:"resourceIndex"`
	Field         string `json:"field,omitempty"`
	Message       string `json:"message"`
}

// Result is what one Backstage entity mapped to.
type Result struct {
	// Ref is the entity's ref (lower-case kind:namespace/name), empty when
	// it has no kind or name; logs name the entity by it.
	Ref      string
	Entities []Mapped
	// Warnings are field errors: the field was set to null.
	Warnings []Warning
	// Skipped lists resources that produced no entity, with the reason:
	// a missing or invalid identifier or blueprint, a selector error
	// (Field "selector.query"), a time or size limit.
	Skipped []Warning
	// Unselected lists resources whose selector returned false.
	Unselected []int
}

// blueprintIndex answers schema questions about blueprints by identifier.
type blueprintIndex map[string]*port.Blueprint

func newBlueprintIndex(bps []port.Blueprint) blueprintIndex {
	idx := make(blueprintIndex, len(bps))
	for i := range bps {
		idx[bps[i].Identifier] = &bps[i]
	}
	return idx
}

func (b blueprintIndex) many(blueprint, relation string) bool {
	if bp := b[blueprint]; bp != nil {
		return bp.Relations[relation].Many
	}
	return false
}

func (b blueprintIndex) objectProperty(blueprint, prop string) bool {
	if bp := b[blueprint]; bp != nil {
		return bp.Schema.Properties[prop].Type == "object"
	}
	return false
}

// New compiles every jq expression of cfg once.
func New(cfg *Config, opts Options) (*Mapper, error) {
	if cfg == nil {
		return nil, errors.New("mapping: nil config")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxOutputBytes <= 0 {
		opts.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if opts.MemoryBudget <= 0 {
		opts.MemoryBudget = DefaultMemoryBudget
	}
	if opts.Blueprints == nil {
		opts.Blueprints = DefaultBlueprints()
	}
	m := &Mapper{cfg: cfg, opts: opts, bps: newBlueprintIndex(opts.Blueprints), byKind: map[string][]int{}}
	m.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	copts := compilerOptions(opts.AllowEnv)
	var bad []*ConfigError
	for i := range cfg.Resources {
		c, err := compileResource(cfg.Name, i, &cfg.Resources[i], m.bps, copts)
		if err != nil {
			var all ConfigErrors
			var one *ConfigError
			switch {
			case errors.As(err, &all):
				bad = append(bad, all...)
			case errors.As(err, &one):
				bad = append(bad, one)
			default:
				return nil, err
			}
			continue
		}
		m.resources = append(m.resources, c)
		if c.kindLower == "*" {
			m.star = append(m.star, i)
		} else {
			if m.byKind[c.kindLower] == nil {
				m.kinds = append(m.kinds, c.kindLower)
			}
			m.byKind[c.kindLower] = append(m.byKind[c.kindLower], i)
		}
	}
	if err := joinConfigErrors(bad); err != nil {
		return nil, err
	}
	if len(m.star) > 0 {
		m.kinds = append(m.kinds, "*")
	}
	m.finger = m.fingerprint()
	return m, nil
}

// Kinds returns the lower-case kinds the resources select, in mapping order.
// "*" means the mapping also takes every other kind.
func (m *Mapper) Kinds() []string { return slices.Clone(m.kinds) }

// Config returns the configuration the Mapper was built from.
func (m *Mapper) Config() *Config { return m.cfg }

// Fingerprint changes when the mapping, the sandbox options or the blueprint
// facts the mapping depends on (many-relations, object properties) change.
// Combine it with Hash to force a re-push after a mapping change.
func (m *Mapper) Fingerprint() string { return m.finger }

func (m *Mapper) fingerprint() string {
	h := sha256.New()
	fmt.Fprintf(h, "portbridge-mapping-v1\x00env=%t\x00max=%d\x00", m.opts.AllowEnv, m.opts.MaxOutputBytes)
	for _, c := range m.resources {
		fmt.Fprintf(h, "kind=%s\x00items=%s\x00%s\x00%t\x00", c.res.Kind, c.itemsSrc, c.res.ItemsToParseName, c.res.ItemsToParseTopLevelTransform)
		for _, s := range c.slots {
			fmt.Fprintf(h, "%s=%t:%s\x00", s.field, s.all, s.expr)
		}
		bps := []string{c.constBlueprint}
		if c.constBlueprint == "" {
			bps = sortedKeys(m.bps)
		}
		for _, bp := range bps {
			for _, r := range c.rels {
				fmt.Fprintf(h, "many %s.%s=%t\x00", bp, r.name, m.bps.many(bp, r.name))
			}
			for _, p := range c.props {
				fmt.Fprintf(h, "object %s.%s=%t\x00", bp, p.name, m.bps.objectProperty(bp, p.name))
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// ManagedBlueprints returns the blueprints the mapping writes to, as far as
// they are constants in the mapping, sorted.
func (c *Config) ManagedBlueprints() []string {
	seen := map[string]bool{}
	for i := range c.Resources {
		if bp := constString(normalizeQuotes(c.Resources[i].Mappings.Blueprint)); bp != "" {
			seen[bp] = true
		}
	}
	return sortedKeys(seen)
}

// Map maps one Backstage entity (as decoded from the catalog API's JSON) with
// every resource whose kind matches. It never panics; problems are reported
// per field and per resource in the Result.
func (m *Mapper) Map(ctx context.Context, entity map[string]any) (res Result) {
	defer func() {
		if p := recover(); p != nil {
			res.Skipped = append(res.Skipped, Warning{ResourceIndex: -1, Message: fmt.Sprintf("internal error while mapping: %v\n%s", p, debug.Stack())})
		}
	}()
	kind, _ := entity["kind"].(string)
	if kind == "" {
		res.Skipped = append(res.Skipped, Warning{ResourceIndex: -1, Field: "kind", Message: "entity has no kind"})
		return res
	}
	idxs := m.resourcesFor(kind)
	if len(idxs) == 0 {
		return res
	}
	input, err := enrich(entity, kind)
	if err != nil {
		res.Skipped = append(res.Skipped, Warning{ResourceIndex: -1, Field: "metadata", Message: err.Error()})
		return res
	}
	res.Ref, _ = input["metadata"].(map[string]any)["identifier"].(string)
	wd := newWatchdog(ctx, m.opts.Timeout, m.opts.MemoryBudget)
	defer wd.stop()
	for _, i := range idxs {
		m.runResource(wd, m.resources[i], input, &res, func(c *compiled, raw []any) {
			n := len(res.Entities)
			m.finish(c, raw, &res)
			if len(res.Entities) > n {
				_ = wd.account(2 * int64(len(res.Entities[n].JSON)))
			}
		})
	}
	return res
}

func (m *Mapper) resourcesFor(kind string) []int {
	if idx, ok := m.byKind[kind]; ok {
		return idx
	}
	lower := strings.ToLower(kind)
	if idx, ok := m.byKind[lower]; ok {
		return idx
	}
	return m.star
}

// enrich returns a shallow copy of entity with metadata.identifier set to
// lower(kind:namespace/name), as Port's Backstage integration does.
func enrich(entity map[string]any, kind string) (map[string]any, error) {
	meta, _ := entity["metadata"].(map[string]any)
	if meta == nil {
		return nil, fmt.Errorf("%s entity has no metadata", kind)
	}
	name, _ := meta["name"].(string)
	if name == "" {
		return nil, fmt.Errorf("%s entity has no metadata.name", kind)
	}
	ns, _ := meta["namespace"].(string)
	if ns == "" {
		ns = "default"
	}
	meta2 := make(map[string]any, len(meta)+1)
	for k, v := range meta {
		meta2[k] = v
	}
	meta2["identifier"] = strings.ToLower(kind + ":" + ns + "/" + name)
	out := make(map[string]any, len(entity))
	for k, v := range entity {
		out[k] = v
	}
	out["metadata"] = meta2
	return out, nil
}

// runResource runs one resource's program over the input (once per item
// with itemsToParse) and hands every raw result to emit; run failures are
// recorded as skips.
func (m *Mapper) runResource(w *watchdog, c *compiled, input map[string]any, res *Result, emit func(*compiled, []any)) {
	if c.items == nil {
		m.runOne(w, c, input, res, emit)
		return
	}
	v, err := runFirst(w, c.items, input)
	if err != nil {
		res.Skipped = append(res.Skipped, Warning{c.index, "itemsToParse", describeRunError(err, m.opts.Timeout)})
		return
	}
	items, ok := v.([]any)
	if !ok {
		res.Skipped = append(res.Skipped, Warning{c.index, "itemsToParse", "expected an array, got " + typeName(v)})
		return
	}
	parent := input
	if c.itemsDel != nil {
		if v, err := runFirst(w, c.itemsDel, input); err == nil {
			if p, ok := v.(map[string]any); ok {
				parent = p
			}
		}
	}
	for _, item := range items {
		// Each item copies the parent entity's top level.
		if err := w.account(int64(len(parent)+1) * 48); err != nil {
			res.Skipped = append(res.Skipped, Warning{c.index, "itemsToParse", describeRunError(err, m.opts.Timeout)})
			return
		}
		in := make(map[string]any, len(parent)+1)
		for k, v := range parent {
			in[k] = v
		}
		in[c.res.ItemsToParseName] = item
		m.runOne(w, c, in, res, emit)
	}
}

// runFirst runs code on input under the entity's watchdog (also handed to
// the memory guards as $__pb_w) and returns its first output.
func runFirst(w *watchdog, code *gojq.Code, input any) (any, error) {
	v, ok := code.RunWithContext(w, input, w).Next()
	if !ok {
		return nil, errors.New("no output")
	}
	if err, ok := v.(error); ok {
		return nil, err
	}
	return v, nil
}

func describeRunError(err error, limit time.Duration) string {
	var be *BudgetError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("mapping took longer than the %v limit per entity (an expression that never ends?)", limit)
	case errors.Is(err, context.Canceled):
		return "mapping cancelled"
	case errors.As(err, &be):
		return be.Error()
	}
	// An error's value can be anything jq built (halt_error, error(v)):
	// show a bounded preview, never the whole value.
	msg := err.Error
	var ve gojq.ValueError
	if errors.As(err, &ve) {
		msg = func() string {
			if _, ok := ve.Value().(string); ok {
				return clipN(err.Error(), maxErrorText)
			}
			return gojq.Preview(ve.Value())
		}
	}
	var he *gojq.HaltError
	if errors.As(err, &he) {
		return "jq halted: " + msg()
	}
	return "jq error: " + msg()
}

func (m *Mapper) runOne(w *watchdog, c *compiled, input map[string]any, res *Result, emit func(*compiled, []any)) {
	v, err := runFirst(w, c.code, input)
	if err != nil {
		res.Skipped = append(res.Skipped, Warning{c.index, "", describeRunError(err, m.opts.Timeout)})
		return
	}
	raw, _ := v.([]any)
	// Selected: fill in the natively evaluated slots (placeholders in the
	// program), running gojq for inputs the native code does not handle.
	if len(raw) == len(c.slots) {
		for _, n := range c.native {
			if out, ok := n.eval(input); ok {
				raw[n.slot] = out
				continue
			}
			if raw[n.slot], err = runFirst(w, n.fallback, input); err != nil {
				res.Skipped = append(res.Skipped, Warning{c.index, "", describeRunError(err, m.opts.Timeout)})
				return
			}
		}
	}
	emit(c, raw)
}

// finish turns one run's slot results into a Mapped entity (or a skip).
func (m *Mapper) finish(c *compiled, raw []any, res *Result) {
	if len(raw) == 0 {
		res.Skipped = append(res.Skipped, Warning{c.index, "", "internal error: mapping program returned no slots"})
		return
	}
	sel, selErr := leaf(raw[0], false)
	switch {
	case selErr != "":
		res.Skipped = append(res.Skipped, Warning{c.index, "selector.query", "jq error: " + selErr})
		return
	case sel == false:
		res.Unselected = append(res.Unselected, c.index)
		return
	case sel != true:
		res.Skipped = append(res.Skipped, Warning{c.index, "selector.query", "selector must return a boolean, got " + typeName(sel) + " " + preview(sel)})
		return
	}
	if len(raw) != len(c.slots) {
		res.Skipped = append(res.Skipped, Warning{c.index, "", "internal error: mapping program returned a wrong number of slots"})
		return
	}
	f := finisher{c: c, raw: raw, res: res}
	bpv := f.value(c.blueprint)
	bp, _ := bpv.(string)
	if bp == "" {
		res.Skipped = append(res.Skipped, Warning{c.index, "blueprint", "blueprint is " + describeEmpty(bpv)})
		return
	}
	out := Mapped{ResourceIndex: c.index, Kind: c.res.Kind, Blueprint: bp}
	idv := f.build(c.ident)
	switch id := idv.(type) {
	case string:
		if err := ValidIdentifier(id); err != nil {
			res.Skipped = append(res.Skipped, Warning{c.index, "identifier", err.Error()})
			return
		}
		out.Identifier = id
	case map[string]any:
		out.SearchIdentifier = true
	default:
		res.Skipped = append(res.Skipped, Warning{c.index, "identifier", "identifier is " + describeEmpty(idv)})
		return
	}
	e := &out.Entity
	e.Identifier = idv
	e.Title = f.str(c.title, "title")
	e.Icon = f.str(c.icon, "icon")
	if c.team != nil {
		e.Team = f.build(c.team)
	}
	if len(c.props) > 0 {
		e.Properties = make(map[string]any, len(c.props))
		for _, p := range c.props {
			v := f.value(p.slot)
			if s, ok := v.(string); ok && m.bps.objectProperty(bp, p.name) {
				v = f.parseObject(&m.docs, s, "properties."+p.name)
			}
			e.Properties[p.name] = v
		}
	}
	if len(c.rels) > 0 {
		e.Relations = make(map[string]any, len(c.rels))
		for _, r := range c.rels {
			e.Relations[r.name] = f.relation(r, m.bps.many(bp, r.name))
		}
	}
	// Measure before encoding: a value built from shared parts (jq's
	// `[., .]` doubled 40 times) is small in memory and huge as text.
	if n := entitySize(e, int64(m.opts.MaxOutputBytes)); n > int64(m.opts.MaxOutputBytes) {
		res.Skipped = append(res.Skipped, Warning{c.index, "", fmt.Sprintf("mapped entity %s is over the %d-byte limit (mapping.maxOutputBytes)%s", clip(out.Identifier), m.opts.MaxOutputBytes, largestField(e, int64(m.opts.MaxOutputBytes)))})
		return
	}
	bufp := m.bufs.Get().(*[]byte)
	defer m.bufs.Put(bufp)
	buf := append(append((*bufp)[:0], bp...), 0)
	start := len(buf)
	buf, err := appendEntity(buf, e)
	*bufp = buf
	if err != nil {
		res.Skipped = append(res.Skipped, Warning{c.index, "", "encoding the mapped entity: " + err.Error()})
		return
	}
	if n := len(buf) - start; n > m.opts.MaxOutputBytes {
		res.Skipped = append(res.Skipped, Warning{c.index, "", fmt.Sprintf("mapped entity %s is %d bytes, over the %d-byte limit (mapping.maxOutputBytes)%s", clip(out.Identifier), n, m.opts.MaxOutputBytes, largestField(e, int64(m.opts.MaxOutputBytes)))})
		return
	}
	out.Hash = xxhash.Sum64(buf)
	out.JSON = slices.Clone(buf[start:])
	if out.SearchIdentifier {
		id, _ := appendValue(nil, idv)
		out.Identifier = string(id)
	}
	res.Entities = append(res.Entities, out)
}

type finisher struct {
	c   *compiled
	raw []any
	res *Result
}

func (f *finisher) warn(slot int, msg string) {
	f.res.Warnings = append(f.res.Warnings, Warning{f.c.index, f.c.slots[slot].field, msg})
}

// value is the result of a single-valued slot (null on error, with a warning).
func (f *finisher) value(slot int) any {
	if slot < 0 {
		return nil
	}
	v, msg := leaf(f.raw[slot], f.c.slots[slot].all)
	if msg != "" {
		f.warn(slot, "jq error: "+msg)
		return nil
	}
	return v
}

func (f *finisher) str(slot int, what string) string {
	v := f.value(slot)
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	}
	f.warn(slot, what+" must be a string, got "+typeName(v))
	return ""
}

func (f *finisher) build(t *tmpl) any {
	switch {
	case t.slot >= 0:
		return f.value(t.slot)
	case t.isArr:
		out := make([]any, len(t.items))
		for i, x := range t.items {
			out[i] = f.build(x)
		}
		return out
	case t.keys != nil:
		out := make(map[string]any, len(t.keys))
		for i, k := range t.keys {
			out[k] = f.build(t.vals[i])
		}
		return out
	}
	return nil
}

// relation finishes a relation value: all outputs as an array for a many
// relation, the first output otherwise; target identifiers are validated.
func (f *finisher) relation(r relField, many bool) any {
	if r.t.slot < 0 {
		return f.build(r.t) // search query: passed to Port as is
	}
	s := r.t.slot
	v, msg := leaf(f.raw[s], f.c.slots[s].all)
	if msg != "" {
		f.warn(s, "jq error: "+msg)
		return nil
	}
	if !many {
		if f.c.slots[s].all { // collected because the blueprint was dynamic
			if outs := v.([]any); len(outs) > 0 {
				v = outs[0]
			} else {
				v = nil
			}
		}
		if id, ok := v.(string); ok {
			if err := ValidIdentifier(id); err != nil {
				f.warn(s, "relation target dropped: "+err.Error())
				return nil
			}
		}
		return v
	}
	outs, _ := v.([]any)
	if !f.c.slots[s].all { // many in Port but compiled single: cannot happen with constant blueprints
		outs = []any{v}
	}
	targets := make([]any, 0, len(outs))
	seen := make(map[string]bool, len(outs))
	addTarget := func(x any) {
		switch x := x.(type) {
		case nil:
		case string:
			if err := ValidIdentifier(x); err != nil {
				f.warn(s, "relation target dropped: "+err.Error())
				return
			}
			if !seen[x] {
				seen[x] = true
				targets = append(targets, x)
			}
		default:
			targets = append(targets, x)
		}
	}
	for _, o := range outs {
		if arr, ok := o.([]any); ok {
			for _, x := range arr {
				addTarget(x)
			}
			continue
		}
		addTarget(o)
	}
	return targets
}

// parseObject turns a JSON or YAML document in a string into an object, for a
// blueprint property of type object (API definitions).
func (f *finisher) parseObject(docs *docCache, s, field string) any {
	obj, err := docs.parse(s)
	if err != nil {
		f.res.Warnings = append(f.res.Warnings, Warning{f.c.index, field, "the blueprint property is an object and the value is not a JSON or YAML object: " + err.Error()})
		return nil
	}
	return obj
}

// leaf unpacks a slot result: [] -> null, [x] -> x (or the whole array when
// all), {"__pb_error": e} -> error message.
func leaf(raw any, all bool) (any, string) {
	switch r := raw.(type) {
	case []any:
		if all {
			return r, ""
		}
		if len(r) == 0 {
			return nil, ""
		}
		return r[0], ""
	case map[string]any:
		e := r[errKey]
		if s, ok := e.(string); ok {
			return nil, clipN(s, maxErrorText)
		}
		return nil, gojq.Preview(e)
	}
	return nil, "unexpected slot result " + typeName(raw)
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case float64, int, int64, json.Number:
		return "number"
	}
	return fmt.Sprintf("%T", v)
}

// preview shows the start of a value, however big it is.
func preview(v any) string { return gojq.Preview(v) }

// maxErrorText bounds a jq error message kept in a warning.
const maxErrorText = 1000

func clipN(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// entitySize estimates e's JSON size, stopping once it passes limit.
func entitySize(e *port.Entity, limit int64) int64 {
	n := int64(len(e.Title) + len(e.Icon) + len(e.Blueprint) + 64)
	for _, v := range []any{e.Identifier, e.Team, e.Properties, e.Relations} {
		if n > limit {
			break
		}
		size, deep := sizeOf(v, limit-n)
		if deep {
			return limit + 1
		}
		n += size
	}
	return n
}

func describeEmpty(v any) string {
	if v == nil {
		return "null (the expression gave no value)"
	}
	if s, ok := v.(string); ok && s == "" {
		return "an empty string"
	}
	return "a " + typeName(v) + " " + preview(v) + ", not a string"
}

// largestField names the biggest property, to say what made an entity too
// big; sizes are counted up to limit.
func largestField(e *port.Entity, limit int64) string {
	best, size := "", int64(0)
	for k, v := range e.Properties {
		if n, _ := sizeOf(v, limit); n > size {
			best, size = k, n
		}
	}
	switch {
	case best == "":
		return ""
	case size > limit:
		return fmt.Sprintf(" (largest property %s: over %d bytes)", clip(strconv.Quote(best)), limit)
	}
	return fmt.Sprintf(" (largest property %s: %d bytes)", clip(strconv.Quote(best)), size)
}
