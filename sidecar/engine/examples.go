package engine

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sync"

	"github.com/portbridge/portbridge/sidecar/catalog"
)

// metaExampleRefs records, per kind, the refs of the raw examples the last
// resync handed on (and Port's integration sent): a new process then knows
// whether Port's examples still name entities of the catalog without
// reading any of them.
const metaExampleRefs = "example-refs"

// recentExamples keeps, per kind, the last ExamplesPerKind raw entities
// the engine read in full — on the change path and in resyncs — newest
// first, one per ref: the raw examples of a pass event.
type recentExamples struct {
	mu     sync.Mutex
	byKind map[string][]catalog.Entity
}

func exampleRef(e catalog.Entity) string {
	ref, err := catalog.RefOf(e)
	if err != nil {
		return ""
	}
	return ref.String()
}

func (r *recentExamples) add(ent catalog.Entity) {
	ref := exampleRef(ent)
	if ref == "" {
		return
	}
	k := kindOf(ref)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byKind == nil {
		r.byKind = map[string][]catalog.Entity{}
	}
	list := slices.DeleteFunc(r.byKind[k], func(e catalog.Entity) bool { return exampleRef(e) == ref })
	list = append([]catalog.Entity{ent}, list...)
	r.byKind[k] = list[:min(len(list), ExamplesPerKind)]
}

// drop forgets ref (deleted from the catalog).
func (r *recentExamples) drop(ref string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := kindOf(ref)
	if len(r.byKind[k]) > 0 {
		r.byKind[k] = slices.DeleteFunc(r.byKind[k], func(e catalog.Entity) bool { return exampleRef(e) == ref })
	}
}

// refs returns the refs held, per kind.
func (r *recentExamples) refs() map[string][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]string{}
	for k, l := range r.byKind {
		for _, e := range l {
			out[k] = append(out[k], exampleRef(e))
		}
	}
	return out
}

// snapshot returns the examples per kind (new lists).
func (r *recentExamples) snapshot() map[string][]catalog.Entity {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]catalog.Entity, len(r.byKind))
	for k, l := range r.byKind {
		out[k] = slices.Clone(l)
	}
	return out
}

// exampleWatch follows, during a two-phase listing, what decides the raw
// examples without reading entities: how many entities each kind has,
// whether the refs of the examples held (in memory, and as last handed on)
// are still listed, and a few refs per kind to read if examples are short.
type exampleWatch struct {
	count     map[string]int
	watched   map[string]bool // ref → listed
	stored    map[string][]string
	candidate map[string][]string
}

func newExampleWatch(recent, stored map[string][]string) *exampleWatch {
	w := &exampleWatch{count: map[string]int{}, watched: map[string]bool{}, stored: stored, candidate: map[string][]string{}}
	for _, l := range [](map[string][]string){recent, stored} {
		for _, refs := range l {
			for _, r := range refs {
				w.watched[r] = false
			}
		}
	}
	return w
}

func (w *exampleWatch) listed(ref string) {
	k := kindOf(ref)
	w.count[k]++
	if _, ok := w.watched[ref]; ok {
		w.watched[ref] = true
	} else if len(w.candidate[k]) < ExamplesPerKind {
		w.candidate[k] = append(w.candidate[k], ref)
	}
}

// storedListed is how many of kind's last handed-on examples are listed.
func (w *exampleWatch) storedListed(kind string) int {
	n := 0
	for _, r := range w.stored[kind] {
		if w.watched[r] {
			n++
		}
	}
	return n
}

// settleExamples ends a two-phase scan's examples: examples of entities
// that are no longer listed are dropped; a kind with fewer examples than
// it can have is topped up by reading a few of its entities by ref (one
// request for all kinds) unless the examples last handed on are all still
// listed, in which case Port's are current and the kind is left out of
// the pass's examples (so that fewer never replace more).
func (e *Engine) settleExamples(ctx context.Context, sc *scan, w *exampleWatch) {
	for ref, listed := range w.watched {
		if !listed {
			e.recent.drop(ref)
		}
	}
	have := e.recent.refs()
	var fetch []string
	for kind, n := range w.count {
		want := min(ExamplesPerKind, n)
		if len(have[kind]) >= want {
			continue
		}
		if w.storedListed(kind) >= want {
			sc.examplesSkip = append(sc.examplesSkip, kind)
			continue
		}
		fetch = append(fetch, w.candidate[kind][:min(len(w.candidate[kind]), want-len(have[kind]))]...)
	}
	if len(fetch) == 0 || sc.rep.DryRun {
		return
	}
	for f, err := range e.opts.Catalog.FetchByRefs(ctx, fetch, nil) {
		if err != nil {
			e.log.Warn("resync: cannot read raw examples", "refs", len(fetch), "error", err)
			return
		}
		if f.Entity != nil {
			e.recent.add(f.Entity)
		}
	}
}

// passExamples returns a resync's raw examples and records their refs.
func (e *Engine) passExamples(sc *scan) map[string][]catalog.Entity {
	for _, l := range sc.examples {
		for i := len(l) - 1; i >= 0; i-- { // the scan's first stays first
			e.recent.add(l[i])
		}
	}
	out := e.recent.snapshot()
	stored := e.storedExampleRefs()
	refs := map[string][]string{}
	for k, l := range out {
		for _, ent := range l {
			refs[k] = append(refs[k], exampleRef(ent))
		}
	}
	for _, k := range sc.examplesSkip {
		delete(out, k)
		refs[k] = stored[k]
	}
	if !sc.rep.DryRun && !maps.EqualFunc(refs, stored, slices.Equal) {
		if b, err := json.Marshal(refs); err == nil {
			if err := e.opts.Store.PutMeta(metaExampleRefs, b); err != nil {
				e.log.Warn("cannot record the raw examples' refs", "error", err)
			}
		}
	}
	return out
}

// storedExampleRefs reads what passExamples recorded (nothing on error).
func (e *Engine) storedExampleRefs() map[string][]string {
	out := map[string][]string{}
	if b, err := e.opts.Store.GetMeta(metaExampleRefs); err == nil && b != nil {
		_ = json.Unmarshal(b, &out)
	}
	return out
}
