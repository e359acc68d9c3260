package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/state"
)

// Counts counts what a pass did.
type Counts struct {
	Seen, Pushed, Unchanged, Skipped, Deleted, Failed uint64
}

func (c *Counts) add(o Counts) {
	c.Seen += o.Seen
	c.Pushed += o.Pushed
	c.Unchanged += o.Unchanged
	c.Skipped += o.Skipped
	c.Deleted += o.Deleted
	c.Failed += o.Failed
}

// ResyncReport describes one resync or verify pass. Read it through
// Snapshot while the pass runs.
type ResyncReport struct {
	ID, Trigger string
	Verify      bool
	DryRun      bool
	Started     time.Time
	Finished    time.Time
	State       string // running, succeeded, failed
	Err         string
	Totals      Counts
	PerKind     map[string]*Counts
	// DeletionsSkipped says why planned deletions were not applied.
	DeletionsSkipped string
	// Plan lists what the pass would do (dry run) or did.
	Plan Plan

	mu sync.Mutex
}

func newReport(trigger string, verify, dryRun bool) *ResyncReport {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "resync-"
	if verify {
		prefix = "verify-"
	}
	return &ResyncReport{ID: prefix + time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b), Trigger: trigger, Verify: verify, DryRun: dryRun,
		State: "pending", PerKind: map[string]*Counts{}}
}

func (r *ResyncReport) count(kind string, c Counts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Totals.add(c)
	k := r.PerKind[kind]
	if k == nil {
		k = &Counts{}
		r.PerKind[kind] = k
	}
	k.add(c)
}

func (r *ResyncReport) plan(action Action, item PlanItem) {
	r.mu.Lock()
	defer r.mu.Unlock()
	item.Action = action
	r.Plan.Items = append(r.Plan.Items, item)
}

// Snapshot returns a copy safe to read while the pass runs.
func (r *ResyncReport) Snapshot() *ResyncReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &ResyncReport{ID: r.ID, Trigger: r.Trigger, Verify: r.Verify, DryRun: r.DryRun, Started: r.Started, Finished: r.Finished, State: r.State, Err: r.Err,
		Totals: r.Totals, PerKind: map[string]*Counts{}, DeletionsSkipped: r.DeletionsSkipped, Plan: Plan{Items: slices.Clone(r.Plan.Items)}}
	for k, v := range r.PerKind {
		vv := *v
		c.PerKind[k] = &vv
	}
	return c
}

type resyncRequest struct {
	report *ResyncReport
}

// TriggerResync starts a resync (and a verify pass after it when verify is
// set), or reports the one that is running or already requested.
func (e *Engine) TriggerResync(_ context.Context, reason string, verify bool) (string, bool, error) {
	if reason == "" {
		reason = "rpc"
	}
	id, already := e.requestResync(reason, verify)
	return id, already, nil
}

func (e *Engine) requestResync(trigger string, verify bool) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.current != nil && !e.current.Verify {
		return e.current.ID, true
	}
	if verify {
		e.verifyAfter = true
	}
	if e.queued != nil {
		// One is already waiting to start: it covers this request.
		return e.queued.ID, true
	}
	rep := newReport(trigger, false, false)
	select {
	case e.resyncReq <- resyncRequest{report: rep}:
		e.queued = rep
	default:
		return "", true
	}
	return rep.ID, false
}

// scheduleResyncs runs resyncs and verify passes one at a time: at start,
// on the intervals, and on request.
func (e *Engine) scheduleResyncs(ctx context.Context) {
	if !e.waitPrepared(ctx) {
		return
	}
	if e.opts.ResyncOnStart {
		e.requestResync("start", false)
	}
	resyncTick := newTicker(e.opts.ResyncInterval)
	verifyTick := newTicker(e.opts.VerifyInterval)
	defer resyncTick.stop()
	defer verifyTick.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-e.resyncReq:
			if req.report.Trigger == "snapshot" {
				// A publisher's full snapshot is in the queue: apply it
				// first, so the resync compares against it instead of
				// skipping every entity that has a queued notification.
				e.waitQueueDrained(ctx, 5*time.Minute)
			}
			_, _ = e.runResync(ctx, req.report)
			e.mu.Lock()
			verify := e.verifyAfter
			e.verifyAfter = false
			e.mu.Unlock()
			if verify {
				_, _ = e.runVerify(ctx, newReport("rpc", true, false))
			}
		case <-resyncTick.c():
			e.requestResync("interval", false)
		case <-verifyTick.c():
			_, _ = e.runVerify(ctx, newReport("interval", true, false))
		}
	}
}

type ticker struct{ t *time.Ticker }

func newTicker(d time.Duration) ticker {
	if d <= 0 {
		return ticker{}
	}
	return ticker{time.NewTicker(d)}
}

func (t ticker) c() <-chan time.Time {
	if t.t == nil {
		return nil
	}
	return t.t.C
}

func (t ticker) stop() {
	if t.t != nil {
		t.t.Stop()
	}
}

// Resync runs one full resync now and returns its report; with dryRun it
// only plans (no Port writes, no state writes). It is what
// `portbridge sync --once` calls.
func (e *Engine) Resync(ctx context.Context, trigger string, dryRun bool) (*ResyncReport, error) {
	return e.runResync(ctx, newReport(trigger, false, dryRun))
}

func (e *Engine) runResync(ctx context.Context, rep *ResyncReport) (*ResyncReport, error) {
	rep.Started = time.Now()
	rep.State = "running"
	e.mu.Lock()
	e.current = rep
	if e.queued == rep {
		e.queued = nil
	}
	e.mu.Unlock()
	log := e.log.With("resync", rep.ID, "trigger", rep.Trigger, "dry_run", rep.DryRun)
	log.Info("resync started")

	err := e.resync(ctx, rep, log)

	rep.mu.Lock()
	rep.Finished = time.Now()
	if err != nil {
		rep.State, rep.Err = "failed", err.Error()
	} else {
		rep.State = "succeeded"
	}
	rep.mu.Unlock()
	e.mu.Lock()
	e.current = nil
	if !rep.DryRun {
		e.last = rep
	}
	e.mu.Unlock()
	e.metrics.observeResync(rep)
	snap := rep.Snapshot()
	attrs := []any{"seconds", snap.Finished.Sub(snap.Started).Seconds(), "seen", snap.Totals.Seen, "pushed", snap.Totals.Pushed,
		"unchanged", snap.Totals.Unchanged, "skipped", snap.Totals.Skipped, "deleted", snap.Totals.Deleted, "failed", snap.Totals.Failed}
	if snap.DeletionsSkipped != "" {
		log.Warn("resync did not delete", "reason", snap.DeletionsSkipped)
	}
	if err != nil {
		e.setErr(err)
		log.Error("resync failed", append(attrs, "error", err)...)
	} else {
		log.Info("resync finished", attrs...)
	}
	return rep, err
}

// scan is the state of one resync's catalog scan.
type scan struct {
	rep     *ResyncReport
	started time.Time
	mu      sync.Mutex
	// seen holds hashes of the outputs produced in this scan, and
	// seenRefs hashes of the refs mapped in it: 8 bytes an entry instead of
	// the strings. A collision can only make a key look seen, which keeps
	// an entity that should have been deleted (until the next resync),
	// never deletes one that should stay.
	seen     map[uint64]struct{}
	keepRefs map[string]struct{} // refs whose earlier outputs must be kept
	seenRefs map[uint64]struct{}
	failed   int
	// deferred holds changed entities by kind when pushes go in dependency
	// order (createMissingRelatedEntities off).
	deferred map[string][]pushItem
	// pushWG tracks the scan's pushes: pages do not wait for them, so
	// partial batches fill up across pages.
	pushWG sync.WaitGroup
	// slots bounds the pushes in flight (backpressure).
	slots chan struct{}
	// refs are ref records waiting to be committed (their refs locked).
	refs map[string]state.RefRecord
}

func (e *Engine) resync(ctx context.Context, rep *ResyncReport, log interface {
	Info(string, ...any)
}) error {
	sc := &scan{rep: rep, started: rep.Started, seen: map[uint64]struct{}{}, keepRefs: map[string]struct{}{}, seenRefs: map[uint64]struct{}{},
		deferred: map[string][]pushItem{}, slots: make(chan struct{}, maxResyncInflight), refs: map[string]state.RefRecord{}}
	var scanErr error
	page := make([]catalog.Entity, 0, e.opts.PageSize)
	lastLog := time.Now()
	for ent, err := range e.opts.Catalog.Entities(ctx, catalog.Query{}) {
		if err != nil {
			scanErr = err
			break
		}
		page = append(page, ent)
		if len(page) == cap(page) {
			e.resyncPage(ctx, sc, page)
			page = page[:0]
			if time.Since(lastLog) > 5*time.Second {
				t := rep.Snapshot().Totals
				log.Info("resync progress", "seen", t.Seen, "pushed", t.Pushed, "unchanged", t.Unchanged, "failed", t.Failed)
				lastLog = time.Now()
			}
		}
	}
	e.notePeer(&e.catalogPeer, scanErr)
	if len(page) > 0 && scanErr == nil {
		e.resyncPage(ctx, sc, page)
	}
	// What the pages found is in lazy batches: send the partial ones, push
	// what waits for dependency order, and wait for every push of the scan.
	e.pusher.flushLazy(ctx)
	if scanErr == nil {
		e.pushInOrder(ctx, sc)
	} else {
		// A failed scan pushes nothing it deferred.
		for _, items := range sc.deferred {
			for _, it := range items {
				it.done(false, fmt.Errorf("not pushed: the catalog scan did not complete"))
			}
		}
	}
	sc.pushWG.Wait()
	e.flushRefs(sc)
	if scanErr != nil {
		rep.mu.Lock()
		rep.DeletionsSkipped = "the catalog scan did not complete: " + scanErr.Error()
		rep.mu.Unlock()
		return fmt.Errorf("catalog scan: %w", scanErr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if sc.failed > 0 {
		rep.mu.Lock()
		rep.DeletionsSkipped = fmt.Sprintf("%d entities failed in this resync; deletions wait for a resync with no failures", sc.failed)
		rep.mu.Unlock()
		return fmt.Errorf("%d entities failed to map or push", sc.failed)
	}
	return e.planDeletions(ctx, sc)
}

type mapped struct {
	ref  string
	kind string
	res  mapping.Result
}

// resyncPage maps a page on all cores, compares with the state file in one
// read, and hands what differs to the pusher (lazily: the scan waits for
// all its pushes at the end).
func (e *Engine) resyncPage(ctx context.Context, sc *scan, page []catalog.Entity) {
	pageTime := time.Now()
	out := make([]mapped, len(page))
	var wg sync.WaitGroup
	workers := min(runtime.GOMAXPROCS(0), len(page))
	next := make(chan int, len(page))
	for i := range page {
		next <- i
	}
	close(next)
	for range workers {
		wg.Go(func() {
			for i := range next {
				out[i] = e.mapForResync(ctx, sc, page[i])
			}
		})
	}
	wg.Wait()

	refs := make([]string, 0, len(out))
	for _, m := range out {
		if m.ref != "" {
			refs = append(refs, m.ref)
		}
	}
	prevs, prevFound, err := e.opts.Store.Refs(refs)
	if err != nil {
		e.abandonPage(sc, refs, err)
		return
	}
	prevByRef := make(map[string]*state.RefRecord, len(refs))
	for i, r := range refs {
		if prevFound[i] {
			prevByRef[r] = &prevs[i]
		}
	}
	for _, m := range out {
		if m.ref == "" {
			continue
		}
		e.resyncRef(ctx, sc, m, prevByRef[m.ref], pageTime)
	}
}

// abandonPage counts a page the state file could not be read for as failed
// and releases its refs.
func (e *Engine) abandonPage(sc *scan, refs []string, err error) {
	sc.mu.Lock()
	sc.failed += len(refs)
	sc.mu.Unlock()
	e.setErr(err)
	if !sc.rep.DryRun {
		for _, r := range refs {
			e.locks.unlock(r)
		}
	}
}

// mapForResync maps one catalog entity unless the change path owns it now.
func (e *Engine) mapForResync(ctx context.Context, sc *scan, ent catalog.Entity) mapped {
	ref, err := catalog.RefOf(ent)
	if err != nil {
		sc.rep.count("", Counts{Seen: 1, Failed: 1})
		sc.mu.Lock()
		sc.failed++
		sc.mu.Unlock()
		e.log.Warn("resync: catalog entity without a valid ref", "error", err)
		return mapped{}
	}
	r := ref.String()
	m := mapped{ref: r, kind: ref.Kind}
	// A queued notification is newer information than this snapshot, or
	// will be checked against it: leave the entity to the change path.
	if e.hasPending(r) || (!sc.rep.DryRun && !e.locks.tryLock(r)) {
		sc.mu.Lock()
		sc.keepRefs[r] = struct{}{}
		sc.mu.Unlock()
		sc.rep.count(m.kind, Counts{Seen: 1, Skipped: 1})
		return mapped{}
	}
	m.res = e.mapperNow().Map(ctx, ent)
	e.countMapping(m.kind, m.res)
	return m
}

func (e *Engine) resyncRef(ctx context.Context, sc *scan, m mapped, prev *state.RefRecord, pageTime time.Time) {
	c := Counts{Seen: 1}
	locked := !sc.rep.DryRun
	if prev != nil && prev.ObservedAt.After(pageTime) {
		// The change path applied a newer observation meanwhile.
		sc.mu.Lock()
		sc.keepRefs[m.ref] = struct{}{}
		sc.mu.Unlock()
		c.Skipped = 1
		sc.rep.count(m.kind, c)
		if locked {
			e.locks.unlock(m.ref)
		}
		return
	}
	if len(m.res.Skipped) > 0 {
		// A mapping that failed for this entity must not make the resync
		// delete what it produced before.
		sc.mu.Lock()
		sc.keepRefs[m.ref] = struct{}{}
		sc.mu.Unlock()
		c.Skipped = uint64(len(m.res.Skipped))
	}
	keys := make([]state.Key, len(m.res.Entities))
	for i, me := range m.res.Entities {
		keys[i] = state.Key{Blueprint: me.Blueprint, Identifier: me.Identifier}
	}
	sc.mu.Lock()
	sc.seenRefs[xxhash.Sum64String(m.ref)] = struct{}{}
	for _, k := range keys {
		sc.seen[keyHash(k)] = struct{}{}
	}
	sc.mu.Unlock()

	var toPush []pushItem
	outputs := make([]state.Output, len(keys))
	now := time.Now()
	for i, me := range m.res.Entities {
		old, had := prev.Output(keys[i])
		if had && (old.Hash == me.Hash || e.opts.Policy == PolicyCreateOnly) {
			c.Unchanged++
			outputs[i] = old
			continue
		}
		outputs[i] = state.Output{Key: keys[i], Hash: me.Hash, PushedAt: now}
		action, reason := ActionCreate, "not in the state file"
		if had {
			action, reason = ActionUpdate, "mapped output changed"
		}
		if sc.rep.DryRun {
			sc.rep.plan(action, PlanItem{Blueprint: me.Blueprint, Identifier: me.Identifier, Ref: m.ref, Reason: reason})
			c.Pushed++
			continue
		}
		toPush = append(toPush, pushItem{key: keys[i], hash: me.Hash, ref: m.ref, kind: m.kind, entity: me.Entity})
	}
	// Outputs no longer produced stay in the record until the deletion
	// planning at the end of the scan removes them (or keeps them, when it
	// may not delete).
	var stale []state.Output
	if prev != nil {
		for _, o := range prev.Outputs {
			if !slices.Contains(keys, o.Key) {
				stale = append(stale, o)
			}
		}
	}
	changedKeys := prev == nil || len(stale) > 0 || !slices.Equal(prev.Keys(), keys)
	rec := state.RefRecord{ObservedAt: pageTime, Outputs: append(outputs, stale...)}
	switch {
	case sc.rep.DryRun:
		sc.rep.count(m.kind, c)
		return
	case len(toPush) == 0:
		sc.rep.count(m.kind, c)
		if changedKeys {
			e.recordRef(sc, m.ref, rec)
		} else {
			e.locks.unlock(m.ref)
		}
		return
	}
	// The ref is recorded (and unlocked) once Port confirmed all its
	// outputs; the last confirmation does it, no goroutine waits.
	left := int32(len(toPush))
	var failures atomic.Int32
	deferred := !e.opts.CreateMissingRelatedEntities
	for i := range toPush {
		toPush[i].lazy = true
		toPush[i].done = func(_ bool, err error) {
			if err != nil {
				failures.Add(1)
			}
			if atomic.AddInt32(&left, -1) == 0 {
				f := failures.Load()
				c.Pushed, c.Failed = uint64(int32(len(toPush))-f), uint64(f)
				sc.rep.count(m.kind, c)
				if f > 0 {
					sc.mu.Lock()
					sc.failed += int(f)
					sc.mu.Unlock()
					e.locks.unlock(m.ref)
				} else {
					e.recordRef(sc, m.ref, rec)
				}
			}
			if !deferred {
				<-sc.slots
			}
			sc.pushWG.Done()
		}
	}
	sc.pushWG.Add(len(toPush))
	if deferred {
		// Pushed in dependency order at the end of the scan.
		sc.mu.Lock()
		sc.deferred[m.kind] = append(sc.deferred[m.kind], toPush...)
		sc.mu.Unlock()
		return
	}
	// Backpressure: a slow Port slows the scan instead of piling up
	// mapped entities in memory.
	for range toPush {
		sc.slots <- struct{}{}
	}
	e.pusher.add(ctx, toPush...)
}

// recordRef buffers a ref's record; the buffer is committed in one
// transaction every refBatch refs (and at the end of the scan), and the refs
// stay locked until their record is on disk, so a newer notification
// applied meanwhile is never overwritten by this older snapshot.
func (e *Engine) recordRef(sc *scan, ref string, rec state.RefRecord) {
	sc.mu.Lock()
	sc.refs[ref] = rec
	var flush map[string]state.RefRecord
	if len(sc.refs) >= refBatch {
		flush, sc.refs = sc.refs, map[string]state.RefRecord{}
	}
	sc.mu.Unlock()
	if flush != nil {
		e.commitRefs(flush)
	}
}

func (e *Engine) flushRefs(sc *scan) {
	sc.mu.Lock()
	flush := sc.refs
	sc.refs = map[string]state.RefRecord{}
	sc.mu.Unlock()
	e.commitRefs(flush)
}

func (e *Engine) commitRefs(recs map[string]state.RefRecord) {
	if len(recs) == 0 {
		return
	}
	if err := e.opts.Store.Commit(state.Write{PutRefs: recs}); err != nil {
		e.setErr(err)
	}
	for ref := range recs {
		e.locks.unlock(ref)
	}
}

// keyHash identifies a Port key in a scan's seen set.
func keyHash(k state.Key) uint64 {
	d := xxhash.New()
	_, _ = d.WriteString(k.Blueprint)
	_, _ = d.Write([]byte{0})
	_, _ = d.WriteString(k.Identifier)
	return d.Sum64()
}

// refBatch is how many ref records a resync commits per transaction.
const refBatch = 1000

// maxResyncInflight bounds the entities a resync has handed to the pusher
// and not yet seen confirmed. It must exceed 19 × the number of blueprints
// (the partial lazy batches), or the scan could wait for itself.
const maxResyncInflight = 1000

// kindOrder is the order in which kinds are written when Port must not
// create missing related entities: targets before the entities that point
// at them.
var kindOrder = []string{"user", "group", "domain", "system", "resource", "api", "component"}

// pushInOrder pushes deferred entities kind by kind (targets before the
// entities pointing at them), waiting for each kind. Entities Port refuses
// because a relation target is still missing (404) — a subcomponent pushed
// before its parent, a child group before its parent — are pushed again in
// further waves while each wave makes progress, as Port's integration
// retries in dependency order.
func (e *Engine) pushInOrder(ctx context.Context, sc *scan) {
	if len(sc.deferred) == 0 {
		return
	}
	kinds := make([]string, 0, len(sc.deferred))
	for k := range sc.deferred {
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
	var retry []pushItem
	for _, k := range kinds {
		retry = append(retry, e.pushWave(ctx, sc.deferred[k])...)
	}
	for len(retry) > 0 && ctx.Err() == nil {
		left := e.pushWave(ctx, retry)
		if len(left) == len(retry) {
			for _, it := range left {
				it.done(false, it.lastErr)
			}
			return
		}
		retry = left
	}
}

// pushWave pushes items and waits; it returns the items that failed with
// not_found (a missing relation target) without reporting them yet.
func (e *Engine) pushWave(ctx context.Context, items []pushItem) []pushItem {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var notFound []pushItem
	wave := make([]pushItem, len(items))
	for i, it := range items {
		orig := it
		it.lazy = false
		it.done = func(created bool, err error) {
			if err != nil && port.IsNotFound(err) {
				orig.lastErr = err
				mu.Lock()
				notFound = append(notFound, orig)
				mu.Unlock()
			} else {
				orig.done(created, err)
			}
			wg.Done()
		}
		wave[i] = it
	}
	wg.Add(len(wave))
	e.pusher.add(ctx, wave...)
	wg.Wait()
	return notFound
}

// planDeletions deletes owned Port entities that this complete, failure-free
// scan did not produce, within the policy and the deletion threshold.
func (e *Engine) planDeletions(ctx context.Context, sc *scan) error {
	var cands []target
	owned := 0
	err := e.opts.Store.ForEachEntity(func(k state.Key, rec state.EntityRecord) error {
		owned++
		if _, ok := sc.seen[keyHash(k)]; ok {
			return nil
		}
		if _, keep := sc.keepRefs[rec.Ref]; keep {
			return nil
		}
		// Written after the resync started: the change path knows better.
		if !rec.PushedAt.Before(sc.started.Truncate(time.Millisecond)) {
			return nil
		}
		cands = append(cands, target{k, rec.Ref})
		return nil
	})
	if err != nil {
		return fmt.Errorf("plan deletions: %w", err)
	}
	// Drop candidates whose entity got a notification meanwhile.
	cands = slices.DeleteFunc(cands, func(c target) bool { return e.hasPending(c.ref) })
	if len(cands) == 0 {
		return nil
	}
	rep := sc.rep
	skip := func(reason string) error {
		rep.mu.Lock()
		rep.DeletionsSkipped = reason
		rep.mu.Unlock()
		for _, c := range cands {
			rep.plan(ActionDelete, PlanItem{Blueprint: c.key.Blueprint, Identifier: c.key.Identifier, Ref: c.ref, Reason: "not in the catalog (not applied: " + reason + ")"})
		}
		return nil
	}
	if share := float64(len(cands)) / float64(owned); share > e.opts.DeletionThreshold {
		e.metrics.deletionsRefused.Inc()
		return skip(fmt.Sprintf("refusing to delete %d of %d owned entities (%.0f%%): more than entityDeletionThreshold %.0f%%; check the catalog, then raise the threshold or reset if intended",
			len(cands), owned, share*100, e.opts.DeletionThreshold*100))
	}
	if e.opts.Policy != PolicySync {
		return skip(fmt.Sprintf("policy %s never deletes", e.opts.Policy))
	}
	refsGone := map[string]struct{}{}
	for _, c := range cands {
		rep.plan(ActionDelete, PlanItem{Blueprint: c.key.Blueprint, Identifier: c.key.Identifier, Ref: c.ref, Reason: "not in the catalog"})
		refsGone[c.ref] = struct{}{}
	}
	if rep.DryRun {
		return nil
	}
	n, err := e.bulkDelete(ctx, cands)
	if err == nil {
		for _, c := range cands {
			rep.count(kindOf(c.ref), Counts{Deleted: 1})
		}
	} else {
		rep.count("", Counts{Deleted: uint64(n)})
	}
	// Forget refs that are no longer in the catalog once nothing they
	// produced is left in Port (a failed delete keeps the ownership).
	var gone []string
	for r := range refsGone {
		_, seen := sc.seenRefs[xxhash.Sum64String(r)]
		_, keep := sc.keepRefs[r]
		if !seen && !keep {
			gone = append(gone, r)
		}
	}
	recs, found, rerr := e.opts.Store.Refs(gone)
	if rerr != nil {
		return errors.Join(err, rerr)
	}
	var drop []string
	for i, r := range gone {
		if found[i] && len(recs[i].Outputs) == 0 {
			drop = append(drop, r)
		}
	}
	if cerr := e.opts.Store.Commit(state.Write{DeleteRefs: drop}); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}

// RunOnce runs one resync with its own pusher and returns when its writes
// are done: the one-shot mode (`portbridge sync --once`). Do not call it
// while Run is running.
func (e *Engine) RunOnce(ctx context.Context, dryRun bool) (*ResyncReport, error) {
	if e.opts.Prepare != nil {
		m, err := e.opts.Prepare(ctx)
		if err != nil {
			return nil, fmt.Errorf("setup: %w", err)
		}
		if m != nil {
			e.mapper.Store(&mapperBox{m})
		}
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		e.pusher.run(pctx)
		close(done)
	}()
	rep, err := e.Resync(ctx, "once", dryRun)
	cancel()
	<-done
	return rep, err
}

// waitQueueDrained waits until no change is queued, ctx ends or max passes.
func (e *Engine) waitQueueDrained(ctx context.Context, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		e.mu.Lock()
		n := len(e.pending)
		e.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}
