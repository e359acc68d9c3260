package engine

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/plan"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/registry"
	"github.com/portbridge/portbridge/sidecar/state"
)

// maxResyncInflight bounds the writes a resync has handed to the registry
// and not yet seen confirmed. It must exceed 19 × the number of blueprints
// (the partial lazy batches), or the scan could wait for itself.
const maxResyncInflight = 1000

// scan is the state of one resync.
type scan struct {
	rep     *Report
	started time.Time
	seen    seenSet
	slots   chan struct{}
	refsWG  sync.WaitGroup

	mu sync.Mutex
	// keep holds refs whose owned entities must stay whatever the scan
	// saw: a queued notification or a newer write owns them now, their
	// mapping failed, or Port did not take their new content.
	keep map[string]struct{}
	// transient counts refs whose writes failed for a passing reason:
	// Port is not healthy, so the resync deletes nothing.
	transient int
	// deferred holds the writes of the whole scan when they go in
	// dependency order (createMissingRelatedEntities off).
	deferred *plan.Changes
	// locked are the refs the scan holds (dependency order).
	locked []string
	// examplesSkip are kinds whose examples in Port are current and that
	// the pass leaves out.
	examplesSkip []string
	// examples are the first raw entities per kind (read by the scan's
	// goroutine only).
	examples examples
}

func (sc *scan) keepRef(ref string) {
	sc.mu.Lock()
	sc.keep[ref] = struct{}{}
	sc.mu.Unlock()
}

// resync reads the whole catalog page by page, maps it, plans each page
// against the registry and applies it (lazily: partial batches fill across
// pages), then — only after a scan proven complete — plans and applies the
// deletions, through the policy and the guard.
func (e *Engine) resync(ctx context.Context, rep *Report, log *slog.Logger) error {
	sc := &scan{rep: rep, started: rep.Started, slots: make(chan struct{}, maxResyncInflight), keep: map[string]struct{}{}}
	if !e.settingsNow().CreateMissingRelatedEntities {
		sc.deferred = &plan.Changes{}
	}
	e.retryRebuild(ctx, rep, log)
	sc.examples = examples{}
	defer func() {
		rep.mu.Lock()
		rep.examples = e.passExamples(sc)
		rep.mu.Unlock()
	}()
	var stats catalog.ScanResult
	receivedBefore := e.received()
	var scanErr error
	fingerprint := e.mapperNow().Fingerprint()
	if e.twoPhase(fingerprint) {
		scanErr = e.scanVersions(ctx, sc, &stats)
	} else {
		scanErr = e.scanEntities(ctx, sc, &stats)
	}
	e.notePeer(&e.catalogPeer, scanErr)
	if scanErr == nil && ctx.Err() == nil && !rep.DryRun {
		e.scannedUnder(fingerprint)
	}
	// What the pages found is in lazy batches: send the partial ones, write
	// what waits for dependency order, and wait for every ref of the scan.
	e.reg.Flush(ctx)
	if sc.deferred != nil {
		if scanErr == nil && !rep.DryRun {
			e.pushInOrder(ctx, sc)
		}
		for _, r := range sc.locked {
			e.locks.unlock(r)
		}
	}
	sc.refsWG.Wait()

	proof := plan.ScanProof{Seen: stats.Seen + stats.Skipped, Total: stats.TotalItems, Tolerance: int(e.received() - receivedBefore)}
	if scanErr != nil {
		rep.skipDeletions("the catalog scan did not complete: " + scanErr.Error())
		return fmt.Errorf("catalog scan: %w", scanErr)
	}
	if err := ctx.Err(); err != nil {
		rep.skipDeletions("the resync was cancelled")
		return err
	}
	complete, why := proof.Complete()
	if sc.transient > 0 && complete {
		rep.skipDeletions(fmt.Sprintf("%d entities could not be written (Port did not answer in time); deletions wait for a resync without such failures", sc.transient))
		return fmt.Errorf("%d entities could not be written; see the recent failures", sc.transient)
	}
	if err := e.resyncDeletions(ctx, sc, proof); err != nil {
		return err
	}
	if !complete {
		return fmt.Errorf("catalog scan incomplete: %s", why)
	}
	if !rep.DryRun {
		if err := e.opts.Store.SnapshotDone(sc.started); err != nil {
			log.Warn("cannot clear the snapshot flag", "error", err)
		}
	}
	return nil
}

// received is how many notifications were stored so far.
func (e *Engine) received() uint64 {
	return e.receivedN.Load()
}

type mappedEnt struct {
	ref     string
	kind    string
	res     mapping.Result
	version uint64 // content version (etag under the mapping in use)
	ok      bool
}

// resyncPage maps a page on all cores, plans it against the registry in
// one read, and hands what differs to the registry.
func (e *Engine) resyncPage(ctx context.Context, sc *scan, page []catalog.Entity) {
	pageTime := time.Now()
	for _, ent := range page {
		sc.examples.add(ent)
	}
	out := make([]mappedEnt, len(page))
	var wg sync.WaitGroup
	next := make(chan int, len(page))
	for i := range page {
		next <- i
	}
	close(next)
	for range min(runtime.GOMAXPROCS(0), len(page)) {
		wg.Go(func() {
			for i := range next {
				out[i] = e.mapForResync(ctx, sc, page[i])
			}
		})
	}
	wg.Wait()

	refs := make([]string, 0, len(out))
	for _, m := range out {
		if m.ok {
			refs = append(refs, m.ref)
		}
	}
	unlock := func(rs ...string) {
		if !sc.rep.DryRun {
			for _, r := range rs {
				e.locks.unlock(r)
			}
		}
	}
	recs, err := e.reg.Records(refs)
	if err != nil {
		e.abandon(sc, refs, err)
		unlock(refs...)
		return
	}
	var prs []plan.Ref
	for _, m := range out {
		if !m.ok {
			continue
		}
		c := Counts{Seen: 1, Skipped: uint64(len(m.res.Skipped))}
		rec, had := recs[m.ref]
		if had && rec.ObservedAt.After(pageTime) {
			// The change path applied a newer observation meanwhile.
			sc.keepRef(m.ref)
			c.Skipped++
			sc.rep.count(m.kind, c)
			unlock(m.ref)
			continue
		}
		sc.rep.count(m.kind, c)
		var rp *state.RefRecord
		if had {
			rp = &rec
		}
		pr := refInput(m.ref, pageTime, m.res, rp, false)
		pr.Version = m.version
		if pr.Partial {
			// A mapping that failed for this entity must not make the
			// resync delete what it produced before.
			sc.keepRef(m.ref)
		}
		if had {
			// Only what was owned before the scan can be taken for gone:
			// whatever the scan (or the change path meanwhile) writes is
			// confirmed after it started, which resyncDeletions leaves
			// alone. A first resync's seen set stays empty.
			keys := make([]plan.Key, len(pr.Desired))
			for i, d := range pr.Desired {
				keys[i] = d.Key
			}
			sc.seen.add(m.ref, keys)
		}
		prs = append(prs, pr)
	}
	ch, err := e.planRefs(prs, plan.StaleDefer)
	if err != nil {
		pending := make([]string, len(prs))
		for i, p := range prs {
			pending[i] = p.Ref
		}
		e.abandon(sc, pending, err)
		unlock(pending...)
		return
	}
	ch = e.policy.Apply(ch)
	e.noteChanges("resync", sc.rep, ch)
	for kind, n := range ch.Unchanged {
		sc.rep.count(kind, Counts{Unchanged: uint64(n)})
	}
	for bp, n := range ch.UnchangedByBlueprint {
		e.metrics.skips.WithLabelValues(bp).Add(float64(n))
	}
	if sc.rep.DryRun {
		for _, c := range ch.Writes() {
			sc.rep.count(c.Kind, Counts{Pushed: 1})
		}
		return
	}
	touched := registry.Refs(ch)
	for _, p := range prs {
		if _, ok := slices.BinarySearch(touched, p.Ref); !ok {
			unlock(p.Ref)
		}
	}
	if sc.deferred != nil {
		sc.deferred.Merge(ch)
		sc.locked = append(sc.locked, touched...)
		return
	}
	sc.refsWG.Add(len(touched))
	e.reg.Apply(ctx, ch, registry.ApplyOptions{Lazy: true, Slots: sc.slots, OnRef: func(o registry.RefOutcome) {
		e.resyncRefDone(sc, o)
		unlock(o.Ref)
		sc.refsWG.Done()
	}}, nil)
}

// resyncRefDone counts one ref's outcome and keeps what Port did not take.
func (e *Engine) resyncRefDone(sc *scan, o registry.RefOutcome) {
	sc.rep.count(o.Kind, Counts{Pushed: uint64(o.Written), Failed: uint64(len(o.Failures))})
	if len(o.Failures) == 0 {
		return
	}
	sc.keepRef(o.Ref)
	e.failed("resync", o.Failures, 1)
	permanent := true
	for _, f := range o.Failures {
		permanent = permanent && f.Permanent
	}
	if permanent {
		e.park(o.Ref, o.Failures)
		return
	}
	sc.mu.Lock()
	sc.transient++
	sc.mu.Unlock()
}

// abandon counts refs the registry could not be read for as failed.
func (e *Engine) abandon(sc *scan, refs []string, err error) {
	e.events.setErr(err)
	e.log.Error("resync: cannot read ownership records; these entities are skipped", "refs", len(refs), "error", err)
	sc.mu.Lock()
	sc.transient += len(refs)
	for _, r := range refs {
		sc.keep[r] = struct{}{}
	}
	sc.mu.Unlock()
	for _, r := range refs {
		sc.rep.count(kindOf(r), Counts{Failed: 1})
	}
}

// mapForResync maps one catalog entity unless the change path owns it now.
func (e *Engine) mapForResync(ctx context.Context, sc *scan, ent catalog.Entity) mappedEnt {
	ref, err := catalog.RefOf(ent)
	if err != nil {
		sc.rep.count("", Counts{Seen: 1, Skipped: 1})
		e.log.Warn("resync: catalog entity without a valid ref; skipped", "error", err)
		return mappedEnt{}
	}
	r := ref.String()
	m := mappedEnt{ref: r, kind: ref.Kind}
	// A queued notification is newer information than this snapshot, or
	// will be checked against it: leave the entity to the change path.
	if e.queue.hasPending(r) || (!sc.rep.DryRun && !e.locks.tryLock(r)) {
		sc.keepRef(r)
		sc.rep.count(m.kind, Counts{Seen: 1, Skipped: 1})
		return mappedEnt{}
	}
	res, err := e.mapSafely(ctx, ent)
	if err != nil {
		sc.keepRef(r)
		sc.rep.count(m.kind, Counts{Seen: 1, Failed: 1})
		e.log.Error("resync: mapping failed", "ref", r, "error", err)
		if !sc.rep.DryRun {
			e.locks.unlock(r)
		}
		return mappedEnt{}
	}
	e.countMapping(r, res)
	m.res, m.version, m.ok = res, e.contentVersion(ent), true
	return m
}

// kindOrder is the order in which kinds are written when Port must not
// create missing related entities: targets before the entities that point
// at them.
var kindOrder = []string{"user", "group", "domain", "system", "resource", "api", "component"}

// pushInOrder writes the scan's deferred plan kind by kind (targets before
// the entities pointing at them), waiting for each kind. Entities Port
// refuses because a relation target is still missing (404) — a
// subcomponent written before its parent, a child group before its parent —
// are written again in further waves while each wave makes progress, as
// Port's integration retries in dependency order.
func (e *Engine) pushInOrder(ctx context.Context, sc *scan) {
	byKind := splitByKind(sc.deferred)
	kinds := make([]string, 0, len(byKind))
	for k := range byKind {
		kinds = append(kinds, k)
	}
	rank := func(k string) int {
		if i := slices.Index(kindOrder, k); i >= 0 {
			return i
		}
		return len(kindOrder)
	}
	slices.SortFunc(kinds, func(a, b string) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	retry := &plan.Changes{}
	var final []registry.RefOutcome
	wave := func(ch *plan.Changes) (again *plan.Changes, progress bool) {
		again = &plan.Changes{}
		var mu sync.Mutex
		var notFound []string
		e.applyWait(ctx, ch, registry.ApplyOptions{OnRef: func(o registry.RefOutcome) {
			mu.Lock()
			defer mu.Unlock()
			if o.Written > 0 {
				progress = true
			}
			if len(o.Failures) > 0 && allNotFound(o.Failures) {
				notFound = append(notFound, o.Ref)
				sc.rep.count(o.Kind, Counts{Pushed: uint64(o.Written)})
				return
			}
			final = append(final, o)
		}})
		again = subset(ch, notFound)
		return again, progress
	}
	for _, k := range kinds {
		left, _ := wave(byKind[k])
		retry.Merge(left)
	}
	for !retry.Empty() && ctx.Err() == nil {
		left, progress := wave(retry)
		if !progress {
			// No wave made progress: what is left fails for good.
			e.applyWaitFailed(sc, left, &final)
			break
		}
		retry = left
	}
	for _, o := range final {
		e.resyncRefDone(sc, o)
	}
}

// applyWaitFailed reports the refs of ch as failed with not_found, the
// answer of their last wave.
func (e *Engine) applyWaitFailed(sc *scan, ch *plan.Changes, final *[]registry.RefOutcome) {
	byRef := map[string]*registry.RefOutcome{}
	for _, c := range ch.Writes() {
		o := byRef[c.Ref]
		if o == nil {
			o = &registry.RefOutcome{Ref: c.Ref, Kind: c.Kind}
			byRef[c.Ref] = o
		}
		o.Failures = append(o.Failures, registry.Failure{Ref: c.Ref, Kind: c.Kind, Key: c.Key, Action: c.Action, Permanent: true, Status: 404, Code: port.CodeNotFound,
			Err:     fmt.Errorf("upsert %s to blueprint %s (for %s): a related entity is missing in Port and no wave created it", c.Identifier, c.Blueprint, c.Ref),
			Message: "a related entity is missing in Port (createMissingRelatedEntities is off)"})
	}
	for _, o := range byRef {
		*final = append(*final, *o)
	}
}

func allNotFound(fs []registry.Failure) bool {
	for _, f := range fs {
		if !port.IsNotFound(f.Err) {
			return false
		}
	}
	return true
}

// splitByKind splits a plan into one plan per Backstage kind (a ref has one
// kind, so each ref's part stays whole).
func splitByKind(ch *plan.Changes) map[string]*plan.Changes {
	out := map[string]*plan.Changes{}
	get := func(kind string) *plan.Changes {
		if out[kind] == nil {
			out[kind] = &plan.Changes{Observed: map[string]time.Time{}}
		}
		return out[kind]
	}
	for _, c := range ch.Create {
		get(c.Kind).Create = append(get(c.Kind).Create, c)
	}
	for _, c := range ch.Update {
		get(c.Kind).Update = append(get(c.Kind).Update, c)
	}
	for _, c := range ch.Claim {
		get(c.Kind).Claim = append(get(c.Kind).Claim, c)
	}
	for r, t := range ch.Observed {
		get(kindOf(r)).Observed[r] = t
	}
	return out
}

// subset is the part of ch that belongs to refs: their writes and
// observations (the claims were recorded by the first attempt).
func subset(ch *plan.Changes, refs []string) *plan.Changes {
	out := &plan.Changes{Observed: map[string]time.Time{}}
	for _, c := range ch.Create {
		if slices.Contains(refs, c.Ref) {
			out.Create = append(out.Create, c)
		}
	}
	for _, c := range ch.Update {
		if slices.Contains(refs, c.Ref) {
			out.Update = append(out.Update, c)
		}
	}
	for _, r := range refs {
		if t, ok := ch.Observed[r]; ok {
			out.Observed[r] = t
		}
	}
	return out
}

// resyncDeletions plans the deletions of a resync: every owned entity the
// scan did not see produced by its ref, unless the ref is kept or was
// written after the scan started. Keys another ref still produces are
// released, not deleted. The plan goes through the policy and the guard,
// which refuses everything after an incomplete scan.
func (e *Engine) resyncDeletions(ctx context.Context, sc *scan, proof plan.ScanProof) error {
	sc.seen.freeze()
	started := sc.started.Truncate(time.Millisecond)
	var refs []plan.Ref
	var keys []plan.Key
	err := e.opts.Store.ForEachRef(func(ref string, rec state.RefRecord) error {
		if _, keep := sc.keep[ref]; keep {
			return nil
		}
		unchanged := sc.seen.hasAll(ref)
		read := unchanged || sc.seen.has(ref, plan.Key{})
		pr := plan.Ref{Ref: ref, Kind: kindOf(ref), ObservedAt: rec.ObservedAt, Gone: !read}
		if !read && rec.ObservedAt.Before(started) {
			e.recent.drop(ref) // gone from the catalog
		}
		for _, o := range rec.Outputs {
			k := plan.Key(o.Key)
			if unchanged || sc.seen.has(ref, k) || !o.PushedAt.Before(started) {
				continue
			}
			pr.Owned = append(pr.Owned, plan.Owned{Key: k, Ref: ref, Hash: o.Hash, PushedAt: o.PushedAt})
			keys = append(keys, k)
		}
		switch {
		case len(pr.Owned) > 0:
		case !read && len(rec.Outputs) == 0 && rec.ObservedAt.Before(started):
			// A record of an entity that mapped to nothing and is gone.
		default:
			return nil
		}
		if e.queue.hasPending(ref) {
			return nil // a notification about it is on its way
		}
		refs = append(refs, pr)
		return nil
	})
	if err != nil {
		return fmt.Errorf("plan deletions: %w", err)
	}
	if len(refs) == 0 {
		return nil
	}
	// Owners that still produce a candidate key keep it: their claim was
	// seen in this scan, or they are kept.
	all, err := e.reg.Others(keys, nil)
	if err != nil {
		return fmt.Errorf("plan deletions: %w", err)
	}
	others := map[plan.Key][]plan.Owned{}
	for k, os := range all {
		for _, o := range os {
			if _, keep := sc.keep[o.Ref]; keep || sc.seen.has(o.Ref, k) || sc.seen.hasAll(o.Ref) || !o.PushedAt.Before(started) {
				others[k] = append(others[k], o)
			}
		}
	}
	ch := plan.Compute(plan.Input{Refs: refs, Others: others, Stale: plan.StaleDelete})
	ch = e.policy.Apply(ch)
	owned, err := e.ownedCounts()
	if err != nil {
		return fmt.Errorf("plan deletions: %w", err)
	}
	ch = e.guard.check(ch, plan.Scope{Path: "resync", Owned: owned, Scan: &proof, OwnershipUnknown: e.ownershipUnknown()})
	if ok, _ := proof.Complete(); !ok {
		// Nothing of an incomplete scan's deletion plan is applied, not even
		// releases: an unseen ref may be on a page that was never read.
		ch.Release, ch.Forget, ch.Handover = nil, nil, nil
	}
	e.noteChanges("resync", sc.rep, ch)
	if sc.rep.DryRun || (len(ch.Delete)+len(ch.Release)+len(ch.Forget) == 0) {
		return nil
	}
	var mu sync.Mutex
	var failures []registry.Failure
	out := e.applyWait(ctx, ch, registry.ApplyOptions{OnRef: func(o registry.RefOutcome) {
		sc.rep.count(o.Kind, Counts{Deleted: uint64(o.Deleted), Failed: uint64(len(o.Failures))})
		mu.Lock()
		failures = append(failures, o.Failures...)
		mu.Unlock()
	}})
	e.failed("resync", failures, 1)
	if len(ch.Handover) > 0 {
		e.refresh(ctx, ch.Handover)
	}
	if len(out.Failures) > 0 {
		return fmt.Errorf("%d of %d deletions failed; see the recent failures", len(out.Failures), len(ch.Delete))
	}
	return nil
}
