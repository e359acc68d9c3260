package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/state"
)

// maxInflightRefs bounds how many entities the change path works on at once.
const maxInflightRefs = 512

// pendingRef is the in-memory index entry of one Backstage ref with queued
// changes. The bodies stay in the state file.
type pendingRef struct {
	ref      string
	seqs     []uint64
	newest   state.QueueRef
	due      time.Time
	busy     bool // being applied
	queued   bool // in e.ready
	attempts int
}

// Publish stores a validated batch durably, then indexes it for the
// workers. It implements the server's backend.
func (e *Engine) Publish(ctx context.Context, changes []*portbridgev1.Change, fullSnapshot bool, source string) (uint64, error) {
	refs, depth, err := e.opts.Store.Enqueue(ctx, changes, fullSnapshot, source)
	if err != nil {
		e.setErr(err)
		return 0, err
	}
	e.metrics.received.Add(float64(len(changes)))
	e.index(refs)
	if fullSnapshot {
		// The publisher has no earlier view: deletions it missed are only
		// found by a full resync.
		e.requestResync("snapshot", false)
	}
	return depth, nil
}

func (e *Engine) loadQueue() error {
	var refs []state.QueueRef
	err := e.opts.Store.QueueScan(func(qc state.QueuedChange) error {
		refs = append(refs, state.QueueRef{Seq: qc.Seq, Ref: qc.Change.GetEntityRef(), ObservedAt: qc.Change.GetObservedAt().AsTime(),
			ReceivedAt: qc.ReceivedAt, Deleted: qc.Change.GetDeleted() != nil})
		return nil
	})
	if err != nil {
		return fmt.Errorf("load the queue from %s: %w", e.opts.Store.Path(), err)
	}
	if len(refs) > 0 {
		e.log.Info("replaying queued changes from the state file", "changes", len(refs))
	}
	e.index(refs)
	return nil
}

// index adds stored changes to the in-memory index. Among changes of one
// ref the newest observation wins; ties go to the later stored one.
func (e *Engine) index(refs []state.QueueRef) {
	e.mu.Lock()
	for _, r := range refs {
		p := e.pending[r.Ref]
		if p == nil {
			p = &pendingRef{ref: r.Ref}
			e.pending[r.Ref] = p
		}
		p.seqs = append(p.seqs, r.Seq)
		if len(p.seqs) == 1 || !r.ObservedAt.Before(p.newest.ObservedAt) {
			p.newest = r
			p.attempts = 0
			p.due = time.Time{}
			if r.Deleted {
				p.due = r.ReceivedAt.Add(e.opts.DeleteGracePeriod)
			}
		}
		e.schedule(p, time.Now())
	}
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// schedule puts p in the ready queue when it is due, or in the delayed set;
// e.mu must be held. Busy refs are scheduled again when they finish.
func (e *Engine) schedule(p *pendingRef, now time.Time) {
	if p.busy || p.queued {
		return
	}
	if p.due.After(now) {
		e.delayed[p.ref] = p
		if e.delayScanAt.IsZero() || p.due.Before(e.delayScanAt) {
			e.delayScanAt = p.due
		}
		return
	}
	delete(e.delayed, p.ref)
	p.queued = true
	e.ready = append(e.ready, p)
}

// updateQueueGauges refreshes status counters; e.mu must be held. It walks
// the index, so it runs on a timer and for status, not per change.
func (e *Engine) updateQueueGauges() {
	retrying, deletions := 0, 0
	for _, p := range e.pending {
		if p.attempts > 0 {
			retrying++
		}
		if p.newest.Deleted {
			deletions++
		}
	}
	e.retrying, e.deletions = retrying, deletions
	e.metrics.queueDepth.Set(float64(e.opts.Store.QueueDepth()))
	e.metrics.retrying.Set(float64(retrying))
}

func (e *Engine) hasPending(ref string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.pending[ref]
	return ok
}

// dispatch hands due refs to workers, oldest first, until ctx ends. Ready
// refs wait in a FIFO queue; refs due later (deletions in their grace
// period, retries) wait in a delayed set that is checked when the earliest
// of them is due, so a burst of 100,000 changes costs O(1) per change.
func (e *Engine) dispatch(ctx context.Context) {
	if !e.waitPrepared(ctx) {
		return
	}
	sem := make(chan struct{}, e.opts.Workers)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	gauges := time.NewTicker(time.Second)
	defer gauges.Stop()
	for {
		now := time.Now()
		next := time.Duration(0)
		var launch []*pendingRef
		e.mu.Lock()
		// The delayed set is walked only when its earliest entry is due.
		if !e.delayScanAt.IsZero() && !now.Before(e.delayScanAt) {
			e.delayScanAt = time.Time{}
			for _, p := range e.delayed {
				if p.due.After(now) {
					if e.delayScanAt.IsZero() || p.due.Before(e.delayScanAt) {
						e.delayScanAt = p.due
					}
					continue
				}
				e.schedule(p, now)
			}
		}
		if !e.delayScanAt.IsZero() {
			next = max(e.delayScanAt.Sub(now), time.Millisecond)
		}
		for len(e.ready) > 0 && e.inflight+len(launch) < maxInflightRefs {
			p := e.ready[0]
			e.ready[0] = nil
			e.ready = e.ready[1:]
			p.queued = false
			if p.busy || e.pending[p.ref] != p {
				continue
			}
			p.busy = true
			launch = append(launch, p)
		}
		e.inflight += len(launch)
		e.mu.Unlock()
		for _, p := range launch {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go e.apply(ctx, p, sem)
		}
		if next <= 0 {
			next = time.Hour
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-timer.C:
		case <-gauges.C:
			e.mu.Lock()
			e.updateQueueGauges()
			e.mu.Unlock()
		}
	}
}

// apply works on one ref: it maps and pushes the newest queued observation
// (or deletes after the grace period), then records the result and
// acknowledges the queued changes it covered. The semaphore slot is held
// only while mapping.
func (e *Engine) apply(ctx context.Context, p *pendingRef, sem chan struct{}) {
	released := false
	release := func() {
		if !released {
			released = true
			<-sem
		}
	}
	defer release()

	e.mu.Lock()
	seqs := slices.Clone(p.seqs)
	newest := p.newest
	e.mu.Unlock()

	err := e.locks.lock(ctx, p.ref)
	if err != nil {
		e.finish(p, seqs, err)
		return
	}
	defer e.locks.unlock(p.ref)
	start := time.Now()
	err = e.applyRef(ctx, p.ref, newest, release)
	if err == nil {
		e.metrics.applySeconds.Observe(time.Since(start).Seconds())
	}
	e.finish(p, seqs, err)
}

// finish acknowledges seqs on success, or schedules a retry.
func (e *Engine) finish(p *pendingRef, seqs []uint64, err error) {
	if err == nil {
		if ackErr := e.opts.Store.QueueAck(seqs...); ackErr != nil {
			err = ackErr
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inflight--
	p.busy = false
	if err != nil {
		p.attempts++
		p.due = time.Now().Add(e.backoff(p.attempts))
		e.lastErr = err.Error()
		e.log.Warn("change not applied; will retry", "ref", p.ref, "attempt", p.attempts, "retry_in", time.Until(p.due).Round(time.Millisecond), "error", err)
		e.schedule(p, time.Now())
	} else {
		p.seqs = slices.DeleteFunc(p.seqs, func(s uint64) bool { return slices.Contains(seqs, s) })
		p.attempts = 0
		if len(p.seqs) == 0 {
			delete(e.pending, p.ref)
			delete(e.delayed, p.ref)
		} else {
			e.schedule(p, time.Now())
		}
	}
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) applyRef(ctx context.Context, ref string, newest state.QueueRef, release func()) error {
	recs, found, err := e.opts.Store.Refs([]string{ref})
	if err != nil {
		return err
	}
	var prev *state.RefRecord
	if found[0] {
		prev = &recs[0]
		if prev.ObservedAt.After(newest.ObservedAt) {
			e.metrics.stale.Inc()
			return nil // an older observation never overwrites a newer one
		}
	}
	qc, ok, err := e.opts.Store.QueueGet(newest.Seq)
	if err != nil {
		return err
	}
	if !ok {
		return nil // acknowledged meanwhile (e.g. by an earlier run of this ref)
	}
	var entity map[string]any
	if newest.Deleted {
		// Backstage drops and re-adds entities while it reprocesses them:
		// delete only if the catalog still says it is gone.
		got, err := e.opts.Catalog.EntitiesByRefs(ctx, []string{ref}, nil)
		e.notePeer(&e.catalogPeer, err)
		if err != nil {
			return fmt.Errorf("re-check %s in the catalog before deleting: %w", ref, err)
		}
		if len(got) == 1 && got[0] != nil {
			entity = got[0]
			e.log.Info("deletion cancelled: the entity is back in the catalog", "ref", ref)
		} else {
			release()
			return e.deleteRef(ctx, ref, prev)
		}
	} else {
		entity = qc.Change.GetUpserted().GetEntity().AsMap()
	}
	res := e.mapperNow().Map(ctx, entity)
	release()
	return e.upsertRef(ctx, ref, newest.ObservedAt, res, prev)
}

// upsertRef pushes the changed outputs of one entity, deletes what it
// produced before but produces no more, and records the result.
func (e *Engine) upsertRef(ctx context.Context, ref string, observed time.Time, res mapping.Result, prev *state.RefRecord) error {
	kind := kindOf(ref)
	e.countMapping(kind, res)
	outputs := make([]state.Output, len(res.Entities))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	var items []pushItem
	now := time.Now()
	for i, m := range res.Entities {
		key := state.Key{Blueprint: m.Blueprint, Identifier: m.Identifier}
		old, had := prev.Output(key)
		if had && (old.Hash == m.Hash || e.opts.Policy == PolicyCreateOnly) {
			e.metrics.skips.WithLabelValues(m.Blueprint).Inc()
			outputs[i] = old
			continue
		}
		outputs[i] = state.Output{Key: key, Hash: m.Hash, PushedAt: now}
		wg.Add(1)
		items = append(items, pushItem{key: key, hash: m.Hash, ref: ref, kind: kind, entity: m.Entity, done: func(_ bool, err error) {
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
			wg.Done()
		}})
	}
	if len(items) > 0 {
		e.pusher.add(ctx, items...)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		// What Port confirmed is recorded (the pusher did it); the rest is
		// retried with the queued change.
		return err
	}
	// Outputs this entity produced before and no longer does (its selector
	// stopped matching, or its identifier changed) are deleted.
	var gone []state.Output
	if prev != nil {
		for _, o := range prev.Outputs {
			if !slices.ContainsFunc(outputs, func(n state.Output) bool { return n.Key == o.Key }) {
				gone = append(gone, o)
			}
		}
	}
	if len(gone) > 0 && e.opts.Policy == PolicySync {
		if _, err := e.bulkDelete(ctx, targetsOf(ref, gone)); err != nil {
			return err
		}
	} else if len(gone) > 0 {
		// Not deleted (policy), but still ours: keep them recorded.
		outputs = append(outputs, gone...)
	}
	return e.opts.Store.Commit(state.Write{PutRefs: map[string]state.RefRecord{ref: {ObservedAt: observed, Outputs: outputs}}})
}

// deleteRef removes from Port what ref produced (the record holds only what
// we own), if the policy allows deleting.
func (e *Engine) deleteRef(ctx context.Context, ref string, prev *state.RefRecord) error {
	if prev == nil {
		return nil // we never wrote anything for it
	}
	if e.opts.Policy != PolicySync {
		e.log.Info("not deleting from Port: policy forbids deletes", "ref", ref, "policy", e.opts.Policy)
		return nil
	}
	if _, err := e.bulkDelete(ctx, targetsOf(ref, prev.Outputs)); err != nil {
		return err
	}
	return e.opts.Store.Commit(state.Write{DeleteRefs: []string{ref}})
}

// target is an owned Port entity to delete, with the ref that produced it.
type target struct {
	key state.Key
	ref string
}

func targetsOf(ref string, outs []state.Output) []target {
	t := make([]target, len(outs))
	for i, o := range outs {
		t[i] = target{o.Key, ref}
	}
	return t
}

// bulkDelete deletes owned Port entities per blueprint and forgets what Port
// confirmed (or, when the call succeeded, already did not have). It returns
// how many Port reported deleted.
func (e *Engine) bulkDelete(ctx context.Context, targets []target) (int, error) {
	byBP := map[string][]target{}
	for _, t := range targets {
		byBP[t.key.Blueprint] = append(byBP[t.key.Blueprint], t)
	}
	var errs []error
	n := 0
	for bp, ts := range byBP {
		ids := make([]string, len(ts))
		for i, t := range ts {
			ids[i] = t.key.Identifier
		}
		deleted, err := e.opts.Port.BulkDelete(ctx, bp, ids, e.opts.DeleteDependents)
		e.notePeer(&e.portPeer, err)
		gone := map[string]bool{}
		for _, id := range deleted {
			gone[id] = true
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("delete %d entities of blueprint %s: %w", len(ids), bp, err))
		} else {
			// Port lists what it deleted; ids it did not list were
			// already gone, so forget them too.
			for _, id := range ids {
				gone[id] = true
			}
		}
		w := state.Write{Remove: map[string][]state.Key{}}
		for _, t := range ts {
			if gone[t.key.Identifier] {
				w.Remove[t.ref] = append(w.Remove[t.ref], t.key)
			}
		}
		if cerr := e.opts.Store.Commit(w); cerr != nil {
			errs = append(errs, cerr)
		}
		n += len(deleted)
		e.metrics.deletes.WithLabelValues(bp).Add(float64(len(deleted)))
	}
	return n, errors.Join(errs...)
}

func (e *Engine) countMapping(kind string, res mapping.Result) {
	if len(res.Warnings) > 0 {
		e.metrics.mappingWarnings.WithLabelValues(kind).Add(float64(len(res.Warnings)))
	}
	if len(res.Skipped) > 0 {
		e.metrics.mappingSkips.WithLabelValues(kind).Add(float64(len(res.Skipped)))
	}
	// Every skip (time or memory budget, output size, identifier,
	// blueprint, selector) is logged with the entity and the reason; the
	// process logger rate-limits repeated messages.
	for _, s := range res.Skipped {
		e.log.Warn("mapping skipped an entity", "ref", res.Ref, "kind", kind, "resource", s.ResourceIndex, "field", s.Field, "reason", s.Message)
	}
}

// kindOf returns the kind of a canonical ref.
func kindOf(ref string) string {
	if i := strings.IndexByte(ref, ':'); i > 0 {
		return ref[:i]
	}
	return ""
}
