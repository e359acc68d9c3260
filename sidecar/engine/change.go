package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/plan"
	"github.com/portbridge/portbridge/sidecar/registry"
	"github.com/portbridge/portbridge/sidecar/state"
)

// changeOutcome is how applying one ref's newest change ended.
type changeOutcome struct {
	// failures are the changes Port (or the registry) did not carry out.
	failures []registry.Failure
	// err is a failure before Port was asked (catalog re-check, state
	// read): always retried.
	err error
}

func (o changeOutcome) ok() bool { return o.err == nil && len(o.failures) == 0 }

// permanent reports a refusal that trying again cannot fix.
func (o changeOutcome) permanent() bool {
	if o.err != nil || len(o.failures) == 0 {
		return false
	}
	for _, f := range o.failures {
		if !f.Permanent {
			return false
		}
	}
	return true
}

func (o changeOutcome) errorText(extra error) string {
	var parts []string
	if o.err != nil {
		parts = append(parts, o.err.Error())
	}
	for _, f := range o.failures {
		parts = append(parts, f.Err.Error())
	}
	if extra != nil {
		parts = append(parts, extra.Error())
	}
	return strings.Join(parts, "; ")
}

// applyChange applies the newest queued observation of ref: it maps the
// entity (or, for a deletion still confirmed by the catalog, nothing),
// plans against the ref's ownership, filters the plan through the policy
// and the guard, and hands it to the registry.
func (e *Engine) applyChange(ctx context.Context, ref string, newest state.QueueRef, attempt int, release func()) changeOutcome {
	recs, err := e.reg.Records([]string{ref})
	if err != nil {
		return changeOutcome{err: err}
	}
	prev, had := recs[ref]
	if had && prev.ObservedAt.After(newest.ObservedAt) {
		e.metrics.stale.Inc()
		return changeOutcome{} // an older observation never overwrites a newer one
	}
	qc, ok, err := e.opts.Store.QueueGet(newest.Seq)
	switch {
	case errors.Is(err, state.ErrQuarantined):
		e.metrics.quarantined.Inc()
		e.log.Error("queued change cannot be decoded; moved to the quarantine", "ref", ref, "seq", newest.Seq, "error", err)
		return changeOutcome{}
	case err != nil:
		return changeOutcome{err: err}
	case !ok:
		return changeOutcome{} // acknowledged meanwhile
	}
	gone := false
	var entity map[string]any
	if newest.Deleted {
		// Backstage drops and re-adds entities while it reprocesses them:
		// delete only if the catalog still says it is gone.
		got, err := e.opts.Catalog.EntitiesByRefs(ctx, []string{ref}, nil)
		e.notePeer(&e.catalogPeer, err)
		if err != nil {
			return changeOutcome{err: fmt.Errorf("re-check %s in the catalog before deleting: %w", ref, err)}
		}
		if len(got) == 1 && got[0] != nil {
			entity = got[0]
			e.log.Info("deletion cancelled: the entity is back in the catalog", "ref", ref)
		} else {
			gone = true
		}
	} else if err := json.Unmarshal(qc.Entity, &entity); err != nil || entity == nil {
		e.quarantine(newest.Seq, ref, fmt.Sprintf("the stored entity cannot be decoded: %v", err))
		return changeOutcome{}
	}
	var res mapping.Result
	if !gone {
		res, err = e.mapSafely(ctx, entity)
		if err != nil {
			e.quarantine(newest.Seq, ref, err.Error())
			return changeOutcome{}
		}
		e.countMapping(ref, res)
		e.recent.add(entity)
	}
	release()

	var rec *state.RefRecord
	if had {
		rec = &prev
	}
	pr := refInput(ref, newest.ObservedAt, res, rec, gone)
	pr.Record = true
	if !gone {
		pr.Version = e.contentVersion(entity)
	} else {
		e.recent.drop(ref)
	}
	ch, err := e.planRefs([]plan.Ref{pr}, plan.StaleDelete)
	if err != nil {
		return changeOutcome{err: err}
	}
	ch = e.policy.Apply(ch)
	ch = e.guardChange(ref, ch)
	e.noteChanges("change", nil, ch)
	out := e.applyWait(ctx, ch, registry.ApplyOptions{})
	for _, c := range ch.Writes() {
		e.log.Debug("change applied", "ref", ref, "action", c.Action, "blueprint", c.Blueprint, "identifier", c.Identifier)
	}
	e.failed("change", out.Failures, attempt)
	if len(ch.Handover) > 0 {
		e.refresh(ctx, ch.Handover)
	}
	return changeOutcome{failures: out.Failures}
}

// failed records failures for status, logs and metrics.
func (e *Engine) failed(path string, fs []registry.Failure, attempt int) {
	for _, f := range fs {
		kind := "transient"
		if f.Permanent {
			kind = "permanent"
		}
		e.metrics.failures.WithLabelValues(path, kind).Inc()
		e.events.fail(path, f, attempt, e.log)
	}
}

// mapSafely maps one entity; a panic in the mapping is an error (the
// change is quarantined), never the end of the process.
func (e *Engine) mapSafely(ctx context.Context, entity map[string]any) (res mapping.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mapping the entity panicked: %v", r)
		}
	}()
	return e.mapperNow().Map(ctx, entity), nil
}

// quarantine moves a stored change that cannot be applied aside.
func (e *Engine) quarantine(seq uint64, ref, reason string) {
	e.metrics.quarantined.Inc()
	if err := e.opts.Store.Quarantine(seq, reason); err != nil {
		e.events.setErr(err)
		e.log.Error("cannot quarantine a queued change", "ref", ref, "seq", seq, "error", err)
		return
	}
	e.log.Error("queued change moved to the quarantine", "ref", ref, "seq", seq, "reason", reason)
}

// refInput is the plan input for one mapped (or gone) entity.
func refInput(ref string, observed time.Time, res mapping.Result, rec *state.RefRecord, gone bool) plan.Ref {
	r := plan.Ref{Ref: ref, Kind: kindOf(ref), ObservedAt: observed, Gone: gone, Partial: len(res.Skipped) > 0}
	for _, m := range res.Entities {
		r.Desired = append(r.Desired, plan.Desired{Key: plan.Key{Blueprint: m.Blueprint, Identifier: m.Identifier}, Hash: m.Hash, Entity: m.Entity})
	}
	if rec != nil {
		r.Owned = registry.Owned(ref, *rec)
		r.OwnedVersion = rec.Version
	} else {
		r.Record = true // a new entity: remember its observation even if it maps to nothing
	}
	return r
}

// planRefs computes the plan of refs, with the other owners of every key
// that is not simply unchanged.
func (e *Engine) planRefs(refs []plan.Ref, stale plan.StaleMode) (*plan.Changes, error) {
	in := map[string]bool{}
	for _, r := range refs {
		in[r.Ref] = true
	}
	var keys []plan.Key
	for _, r := range refs {
		owned := map[plan.Key]uint64{}
		for _, o := range r.Owned {
			owned[o.Key] = o.Hash
		}
		for _, d := range r.Desired {
			if h, ok := owned[d.Key]; !ok || h != d.Hash {
				keys = append(keys, d.Key)
			}
			delete(owned, d.Key)
		}
		if stale == plan.StaleDelete || r.Gone {
			for k := range owned {
				keys = append(keys, k)
			}
		}
	}
	others, err := e.reg.Others(keys, in)
	if err != nil {
		return nil, err
	}
	dropOrphans(others)
	return plan.Compute(plan.Input{Refs: refs, Others: others, Stale: stale}), nil
}

// guardChange weighs a change-path plan's deletions against the owned
// entities, counting the window's deletions and those announced in the
// queue.
func (e *Engine) guardChange(ref string, ch *plan.Changes) *plan.Changes {
	if len(ch.Delete) == 0 {
		return ch
	}
	owned, err := e.ownedCounts()
	if err != nil {
		// Without the counts the share cannot be judged: refuse.
		ch.Refusal = &plan.Refusal{Reason: plan.RefusedThreshold, Message: "not deleting: cannot read the owned counts: " + err.Error()}
		ch.RefusedDeletes, ch.Delete = append(ch.RefusedDeletes, ch.Delete...), nil
		return ch
	}
	e.guard.changeMu.Lock()
	defer e.guard.changeMu.Unlock()
	scope := plan.Scope{Path: "change", Owned: owned, Recent: e.guard.recent(), Pending: e.queue.pendingDeletions(ref, e.guard.inWindow), OwnershipUnknown: e.ownershipUnknown()}
	planned := append(ch.Delete[:0:0], ch.Delete...)
	ch = e.guard.check(ch, scope)
	e.guard.add(planned)
	return ch
}

func (e *Engine) ownedCounts() (map[string]int, error) {
	c, err := e.opts.Store.OwnedCounts()
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(c))
	for k, v := range c {
		out[k] = int(v)
	}
	return out, nil
}

// applyWait applies ch and waits for Port's verdict.
func (e *Engine) applyWait(ctx context.Context, ch *plan.Changes, o registry.ApplyOptions) registry.Outcome {
	done := make(chan registry.Outcome, 1)
	e.reg.Apply(ctx, ch, o, func(out registry.Outcome) { done <- out })
	return <-done
}

// park records refs Port refused for good: the change path stops trying
// them; the next resync or mapping change tries again.
func (e *Engine) park(ref string, failures []registry.Failure) {
	if err := e.reg.Park(ref, failures[0]); err != nil {
		e.events.setErr(err)
		e.log.Error("cannot park an entity Port refused", "ref", ref, "error", err)
		return
	}
	e.log.Warn("entity parked: Port refused it; the next resync or mapping change tries again", "ref", ref,
		"blueprint", failures[0].Key.Blueprint, "identifier", failures[0].Key.Identifier, "status", failures[0].Status, "port_message", failures[0].Message)
}

// refresh sends refs through the change path again with their current
// catalog content (an entity that now alone claims a Port entity another
// ref released writes its own content).
func (e *Engine) refresh(ctx context.Context, refs []string) {
	got, err := e.opts.Catalog.EntitiesByRefs(ctx, refs, nil)
	if err != nil {
		e.log.Warn("cannot refresh entities that took over a Port entity; the next resync writes them", "refs", refs, "error", err)
		return
	}
	var changes []state.Change
	now := time.Now()
	for i, ent := range got {
		if ent == nil {
			continue
		}
		b, err := json.Marshal(ent)
		if err != nil {
			continue
		}
		changes = append(changes, state.Change{Ref: refs[i], ObservedAt: now, Entity: b})
	}
	if len(changes) == 0 {
		return
	}
	if _, err := e.Publish(ctx, changes, false); err != nil {
		e.log.Warn("cannot queue the refresh of entities that took over a Port entity", "refs", refs, "error", err)
	}
}

func (e *Engine) countMapping(ref string, res mapping.Result) {
	kind := kindOf(ref)
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
		e.log.Warn("mapping skipped an entity", "ref", ref, "kind", kind, "resource", s.ResourceIndex, "field", s.Field, "reason", s.Message)
	}
}

// kindOf returns the kind of a canonical ref.
func kindOf(ref string) string {
	if i := strings.IndexByte(ref, ':'); i > 0 {
		return ref[:i]
	}
	return ""
}

// contentVersion identifies an entity's content under the mapping in use:
// a hash of its metadata.etag (which Backstage changes whenever the
// entity's stitched output changes, relations included) and the mapping's
// fingerprint. 0 when the entity has no etag.
func (e *Engine) contentVersion(entity map[string]any) uint64 {
	meta, _ := entity["metadata"].(map[string]any)
	etag, _ := meta["etag"].(string)
	return e.versionOf(etag)
}

// versionOf is contentVersion for a known etag.
func (e *Engine) versionOf(etag string) uint64 {
	if etag == "" {
		return 0
	}
	d := xxhash.New()
	_, _ = d.WriteString(etag)
	_, _ = d.Write([]byte{0})
	_, _ = d.WriteString(e.mapperNow().Fingerprint())
	if v := d.Sum64(); v != 0 {
		return v
	}
	return 1
}
