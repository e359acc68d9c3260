// Package catalogtest is an in-process emulator of Backstage's catalog REST
// API for tests and for `portbridge dev`: it loads catalog YAML, applies
// Backstage's processing that consumers see (default namespace, uid, etag,
// location annotations, relations in both directions), serves by-query,
// by-refs, by-name and by-uid with Backstage's errors and auth, and offers
// mutation hooks (Go and HTTP) and a synthetic catalog generator. Entities
// are stored as encoded JSON, or, when generated (AddGenerated), as their
// index alone, so a million entities stay cheap; by-query pages by key
// (sort value and uid), so a page costs O(page + log N).
package catalogtest

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/portbridge/portbridge/sidecar/catalog"
)

// Options configures an Emulator.
type Options struct {
	Token  string // static token; empty means no auth
	Logger *slog.Logger
	// Seed makes uids deterministic; 0 means random.
	Seed uint64
}

// Emulator is an in-memory Backstage catalog. It implements http.Handler,
// serving /api/catalog/... and the admin routes under /_emulator/.
type Emulator struct {
	opts Options
	log  *slog.Logger

	mu     sync.RWMutex
	rng    *rand.Rand
	nodes  map[string]*node
	g      graph
	byUID  map[string]*record
	sorted []*record // by uid, except while unsorted
	// unsorted: records were appended to sorted during a batch
	unsorted bool
	// version counts mutations; cached query views of an older version
	// are rebuilt.
	version uint64

	vmu   sync.Mutex
	views map[string]*view // query views by filters and order

	// work counts records a query touched (compared, scanned or
	// rendered): the cost of a page, independent of machine speed.
	work atomic.Int64

	fmu      sync.Mutex
	requests map[string]int
	failN    int // requests to serve before failing; <0: never
	failCode int
	failBody string
	unavail  int // status answered to every API request while non-zero
}

// New returns an empty emulator.
func New(opts Options) *Emulator {
	seed := opts.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Emulator{
		opts:     opts,
		log:      log,
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		nodes:    map[string]*node{},
		byUID:    map[string]*record{},
		views:    map[string]*view{},
		requests: map[string]int{},
		failN:    -1,
	}
}

func (e *Emulator) newUID() string {
	var b [16]byte
	for i := range 2 {
		v := e.rng.Uint64()
		for j := range 8 {
			b[i*8+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Upsert adds or replaces entities (matched by kind, namespace and name) and
// recomputes the relations and etags of every affected peer. Entities are
// deep-copied; server-owned fields (uid, etag, relations, status) are
// ignored. Nothing is stored if any entity is invalid.
func (e *Emulator) Upsert(entities ...catalog.Entity) error {
	return e.UpsertAll(slices.Values(entities))
}

// UpsertAll is Upsert for a sequence, e.g. Generate's; it holds one decoded
// entity at a time. Entities before an invalid one are stored.
func (e *Emulator) UpsertAll(entities iter.Seq[catalog.Entity]) error {
	return e.upsertSeq(entities, false, nil)
}

// AddGenerated adds the n entities of Generate(n, seed) without keeping
// their JSON: each is rendered from its index when it is read, and only its
// relations, uid and etag are stored. Reads cost a rendering each; the
// content, uids and etags are the same as UpsertAll(Generate(n, seed))
// gives. An entity later replaced by Upsert is stored as usual.
func (e *Emulator) AddGenerated(n int, seed int64) error {
	if n < 0 {
		return fmt.Errorf("add %d generated entities: must not be negative", n)
	}
	l := newLayout(n, seed)
	e.mu.Lock()
	defer e.mu.Unlock()
	dirty := make(map[*node]struct{}, n)
	defer e.restitch(dirty)
	for i := range n {
		if err := e.upsertLocked(l.entity(i), dirty, l, i); err != nil {
			return fmt.Errorf("add generated entity %d: %w", i, err)
		}
	}
	// appends left spare capacity in every relation list: give it back
	for nd := range dirty {
		nd.rels, nd.out = slices.Clone(nd.rels), slices.Clone(nd.out)
	}
	return nil
}

// upsertSeq stores entities; with keepGoing it skips invalid ones and
// returns all their errors joined. name names entity i in errors.
func (e *Emulator) upsertSeq(entities iter.Seq[catalog.Entity], keepGoing bool, name func(i int) string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	dirty := map[*node]struct{}{}
	defer e.restitch(dirty)
	var errs []error
	i := 0
	for ent := range entities {
		if err := e.upsertLocked(deepCopy(ent), dirty, nil, 0); err != nil {
			where := fmt.Sprintf("entity %d", i)
			if name != nil {
				where = name(i)
			}
			errs = append(errs, fmt.Errorf("upsert %s: %w", where, err))
			if !keepGoing {
				break
			}
		}
		i++
	}
	return errors.Join(errs...)
}

// upsertLocked stores one entity: encoded, or generated entity idx of gen
// when gen is not nil.
func (e *Emulator) upsertLocked(ent catalog.Entity, dirty map[*node]struct{}, gen *layout, idx int) error {
	ref, edges, err := process(ent)
	if err != nil {
		return err
	}
	e.version++
	key := ref.String()
	n := e.node(key)
	uid := ""
	if n.rec != nil {
		uid = n.rec.uid
	} else {
		uid = e.newUID()
	}
	var rec *record
	if gen != nil {
		rec = &record{uid: uid, gen: gen, index: int32(idx)}
	} else {
		if rec, err = encodeRecord(ent, uid); err != nil {
			return fmt.Errorf("entity %s: %w", key, err)
		}
		meta := ent["metadata"].(map[string]any)
		rec.ident = &identity{apiVersion: ent["apiVersion"].(string), kind: ent["kind"].(string),
			namespace: meta["namespace"].(string), name: meta["name"].(string)}
	}
	e.dropEmitted(n, dirty)
	for _, ed := range edges {
		src, dst := e.node(ed.source), e.node(ed.target)
		src.rels = append(src.rels, rel{typ: ed.typ, target: dst.id, origin: n.id})
		if !slices.Contains(n.out, src.id) {
			n.out = append(n.out, src.id)
		}
		dirty[src] = struct{}{}
	}
	rec.node = n
	if old := n.rec; old != nil && e.unsorted {
		e.sortRecords()
	}
	if old := n.rec; old != nil {
		// keep the old etag until re-stitched
		if rec.gen != nil {
			_, _ = hex.Decode(rec.sum[:], []byte(old.etag()))
		} else {
			copy(rec.body[rec.etagOff:], old.etag())
		}
		e.byUID[uid] = rec
		i, _ := slices.BinarySearchFunc(e.sorted, uid, cmpUID)
		e.sorted[i] = rec
	} else {
		e.byUID[uid] = rec
		e.sorted = append(e.sorted, rec)
		e.unsorted = true
	}
	n.rec = rec
	dirty[n] = struct{}{}
	return nil
}

func (e *Emulator) sortRecords() {
	slices.SortFunc(e.sorted, func(a, b *record) int { return strings.Compare(a.uid, b.uid) })
	e.unsorted = false
}

func cmpUID(r *record, uid string) int { return strings.Compare(r.uid, uid) }

func (e *Emulator) node(ref string) *node {
	n := e.nodes[ref]
	if n == nil {
		n = &node{g: &e.g, id: nodeID(len(e.g.byID)), ref: ref}
		e.nodes[ref] = n
		e.g.byID = append(e.g.byID, n)
	}
	return n
}

// dropEmitted removes every relation n's entity emitted.
func (e *Emulator) dropEmitted(n *node, dirty map[*node]struct{}) {
	for _, id := range n.out {
		src := e.g.byID[id]
		src.rels = slices.DeleteFunc(src.rels, func(r rel) bool { return r.origin == n.id })
		dirty[src] = struct{}{}
	}
	n.out = n.out[:0]
}

// restitch re-stitches dirty nodes that hold an entity and forgets nodes
// nothing refers to any more.
func (e *Emulator) restitch(dirty map[*node]struct{}) {
	if e.unsorted {
		e.sortRecords()
	}
	for n := range dirty {
		if n.rec != nil {
			n.rec.stitch()
		}
	}
	for n := range dirty {
		e.gc(n)
	}
}

// gc forgets a node without entity and relations. Backstage emits every
// relation in both directions, so a node no relation starts from is also
// no relation's target.
func (e *Emulator) gc(n *node) {
	if n.rec == nil && len(n.rels) == 0 && len(n.out) == 0 && e.g.byID[n.id] == n {
		delete(e.nodes, n.ref)
		e.g.byID[n.id] = nil
	}
}

// Delete removes entities by ref (any form with a kind). Relations they
// emitted disappear from their peers; relations others emit towards them
// stay (dangling), as in Backstage.
func (e *Emulator) Delete(refs ...string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	dirty := map[*node]struct{}{}
	defer e.restitch(dirty)
	e.version++
	for _, s := range refs {
		ref, err := catalog.ParseRef(s, "")
		if err != nil {
			return fmt.Errorf("delete entity: %w", err)
		}
		n := e.nodes[ref.String()]
		if n == nil || n.rec == nil {
			return fmt.Errorf("delete entity %s: %w", ref, ErrNoEntity)
		}
		if e.unsorted {
			e.sortRecords()
		}
		e.dropEmitted(n, dirty)
		rec := n.rec
		n.rec = nil
		delete(e.byUID, rec.uid)
		if i, ok := slices.BinarySearchFunc(e.sorted, rec.uid, cmpUID); ok {
			e.sorted = slices.Delete(e.sorted, i, i+1)
		}
		dirty[n] = struct{}{}
	}
	return nil
}

// ErrNoEntity is returned by Delete for a ref that has no entity.
var ErrNoEntity = errors.New("no such entity")

// Get returns the stitched entity (with uid, etag and relations).
func (e *Emulator) Get(ref string) (catalog.Entity, bool) {
	r, err := catalog.ParseRef(ref, "")
	if err != nil {
		return nil, false
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	n := e.nodes[r.String()]
	if n == nil || n.rec == nil {
		return nil, false
	}
	var out catalog.Entity
	if err := json.Unmarshal(n.rec.final(), &out); err != nil {
		return nil, false
	}
	return out, true
}

// Len is the number of stored entities.
func (e *Emulator) Len() int {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return len(e.sorted)
}

// Refs returns every stored entity's canonical ref, sorted.
func (e *Emulator) Refs() []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]string, 0, len(e.sorted))
	for _, r := range e.sorted {
		out = append(out, r.node.ref)
	}
	slices.Sort(out)
	return out
}

// Requests returns how many /api/catalog requests each route got, e.g.
// "by-query", "by-refs", "by-name", "by-uid".
func (e *Emulator) Requests() map[string]int {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	return maps.Clone(e.requests)
}

// ResetRequests zeroes the request counters and the work counter.
func (e *Emulator) ResetRequests() {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	clear(e.requests)
	e.work.Store(0)
}

// Work returns how many records catalog API requests touched (compared in
// a search, scanned, filtered or rendered) since the start or the last
// ResetRequests: the cost of serving, counted rather than timed.
func (e *Emulator) Work() int64 { return e.work.Load() }

// FailAfter serves the next n catalog API requests normally and answers
// every later one with status and Backstage's error body for it. A status of
// 0 turns failing off.
func (e *Emulator) FailAfter(n int, status int) {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	e.failN, e.failCode, e.failBody = n, status, ""
	if status == 0 {
		e.failN = -1
	}
}

// GarbleAfter serves the next n catalog API requests normally and answers
// every later one with 200 and body as it is (e.g. truncated or malformed
// JSON).
func (e *Emulator) GarbleAfter(n int, body string) {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	e.failN, e.failCode, e.failBody = n, 200, body
}

// SetUnavailable makes every catalog API request answer status, as a
// starting Backstage does: 503 with a ServiceUnavailableError body, or 404
// with an empty body (the catalog plugin not mounted yet). 0 serves again.
func (e *Emulator) SetUnavailable(status int) {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	e.unavail = status
}

func deepCopy(v catalog.Entity) catalog.Entity {
	return deepCopyValue(v).(map[string]any)
}

func deepCopyValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, val := range x {
			m[k] = deepCopyValue(val)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, val := range x {
			l[i] = deepCopyValue(val)
		}
		return l
	default:
		return v
	}
}
