package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/state"
)

// Verify runs one verify pass now: it reads Port's entities of the managed
// blueprints in large pages, maps the catalog again, and re-pushes every
// owned entity whose content in Port differs from the mapped one or that
// is missing in Port (someone edited or deleted it there).
func (e *Engine) Verify(ctx context.Context, trigger string) (*ResyncReport, error) {
	return e.runVerify(ctx, newReport(trigger, true, false))
}

func (e *Engine) runVerify(ctx context.Context, rep *ResyncReport) (*ResyncReport, error) {
	rep.Started, rep.State = time.Now(), "running"
	e.mu.Lock()
	e.current = rep
	e.mu.Unlock()
	err := e.verify(ctx, rep)
	rep.mu.Lock()
	rep.Finished = time.Now()
	rep.State = "succeeded"
	if err != nil {
		rep.State, rep.Err = "failed", err.Error()
	}
	rep.mu.Unlock()
	e.mu.Lock()
	e.current = nil
	e.lastVerify = rep
	e.mu.Unlock()
	snap := rep.Snapshot()
	if err != nil {
		e.setErr(err)
		e.log.Error("verify failed", "verify", rep.ID, "error", err)
	} else {
		e.log.Info("verify finished", "verify", rep.ID, "checked", snap.Totals.Seen, "repaired", snap.Totals.Pushed, "in_sync", snap.Totals.Unchanged, "failed", snap.Totals.Failed)
	}
	e.metrics.observeResync(rep)
	return rep, err
}

func (e *Engine) verify(ctx context.Context, rep *ResyncReport) error {
	// What Port holds now, per owned key, as a content hash.
	owned := map[string]bool{}
	if err := e.opts.Store.ForEachEntity(func(k state.Key, _ state.EntityRecord) error {
		owned[k.Blueprint] = true
		return nil
	}); err != nil {
		return err
	}
	blueprints := slices.Clone(e.opts.ManagedBlueprints)
	for bp := range owned {
		if !slices.Contains(blueprints, bp) {
			blueprints = append(blueprints, bp)
		}
	}
	inPort := map[state.Key]uint64{}
	for _, bp := range blueprints {
		for ent, err := range e.opts.Port.SearchEntities(ctx, bp, port.SearchRequest{Limit: port.MaxSearchLimit}) {
			if err != nil {
				if port.IsNotFound(err) {
					break // the blueprint does not exist (yet)
				}
				e.notePeer(&e.portPeer, err)
				return fmt.Errorf("read blueprint %s from Port: %w", bp, err)
			}
			id, _ := ent.Identifier.(string)
			inPort[state.Key{Blueprint: bp, Identifier: id}] = contentHash(ent)
		}
	}
	e.notePeer(&e.portPeer, nil)

	var wg sync.WaitGroup
	for ent, err := range e.opts.Catalog.Entities(ctx, catalog.Query{}) {
		if err != nil {
			e.pusher.flushLazy(ctx)
			wg.Wait()
			return fmt.Errorf("catalog scan: %w", err)
		}
		ref, rerr := catalog.RefOf(ent)
		if rerr != nil {
			continue
		}
		r := ref.String()
		if e.hasPending(r) || !e.locks.tryLock(r) {
			continue // the change path is on it
		}
		res := e.mapperNow().Map(ctx, ent)
		keys := make([]state.Key, len(res.Entities))
		for i, m := range res.Entities {
			keys[i] = state.Key{Blueprint: m.Blueprint, Identifier: m.Identifier}
		}
		recs, found, lerr := e.opts.Store.Refs([]string{r})
		if lerr != nil {
			e.locks.unlock(r)
			e.pusher.flushLazy(ctx)
			wg.Wait()
			return lerr
		}
		var prev *state.RefRecord
		if found[0] {
			prev = &recs[0]
		}
		var items []pushItem
		var refWG sync.WaitGroup
		for i, m := range res.Entities {
			if _, ours := prev.Output(keys[i]); !ours {
				continue // not ours (yet): the resync's business
			}
			have, present := inPort[keys[i]]
			if present && have == contentHash(m.Entity) {
				rep.count(ref.Kind, Counts{Seen: 1, Unchanged: 1})
				continue
			}
			reason := "edited in Port"
			if !present {
				reason = "missing in Port"
			}
			rep.plan(ActionUpdate, PlanItem{Blueprint: m.Blueprint, Identifier: m.Identifier, Ref: r, Reason: reason})
			kind := ref.Kind
			wg.Add(1)
			refWG.Add(1)
			items = append(items, pushItem{key: keys[i], hash: m.Hash, ref: r, kind: kind, entity: m.Entity, lazy: true, done: func(_ bool, err error) {
				if err != nil {
					rep.count(kind, Counts{Seen: 1, Failed: 1})
				} else {
					rep.count(kind, Counts{Seen: 1, Pushed: 1})
				}
				refWG.Done()
				wg.Done()
			}})
		}
		if len(items) == 0 {
			e.locks.unlock(r)
			continue
		}
		e.pusher.add(ctx, items...)
		// Hold the ref until its repairs are confirmed, so a newer change
		// is never overwritten by this pass.
		wg.Add(1)
		go func() {
			defer wg.Done()
			refWG.Wait()
			e.locks.unlock(r)
		}()
	}
	e.pusher.flushLazy(ctx)
	wg.Wait()
	if f := rep.Snapshot().Totals.Failed; f > 0 {
		return fmt.Errorf("%d repairs failed", f)
	}
	return nil
}

// contentHash hashes the parts of a Port entity that a mapping sets, in a
// normal form, so that an entity read back from Port compares equal to the
// one we sent: nulls and empty values dropped (Port treats them as unset),
// team as a sorted list, relation lists sorted.
func contentHash(e port.Entity) uint64 {
	n := map[string]any{"identifier": e.Identifier}
	if e.Title != "" {
		n["title"] = e.Title
	}
	if e.Icon != "" {
		n["icon"] = e.Icon
	}
	switch t := e.Team.(type) {
	case string:
		if t != "" {
			n["team"] = []string{t}
		}
	case []any:
		var ts []string
		for _, v := range t {
			if s, ok := v.(string); ok {
				ts = append(ts, s)
			}
		}
		if len(ts) > 0 {
			slices.Sort(ts)
			n["team"] = ts
		}
	case []string:
		if len(t) > 0 {
			ts := slices.Clone(t)
			slices.Sort(ts)
			n["team"] = ts
		}
	}
	if p := prune(e.Properties, false); len(p) > 0 {
		n["properties"] = p
	}
	if r := prune(e.Relations, true); len(r) > 0 {
		n["relations"] = r
	}
	b, err := json.Marshal(n)
	if err != nil {
		return 0
	}
	return xxhash.Sum64(b)
}

func prune(m map[string]any, sortLists bool) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		switch t := v.(type) {
		case nil:
			continue
		case []any:
			if len(t) == 0 {
				continue
			}
			if sortLists {
				strs := make([]string, 0, len(t))
				for _, x := range t {
					if s, ok := x.(string); ok {
						strs = append(strs, s)
					}
				}
				if len(strs) == len(t) {
					slices.Sort(strs)
					out[k] = strs
					continue
				}
			}
		case map[string]any:
			if len(t) == 0 {
				continue
			}
		case string:
			if t == "" {
				continue
			}
		}
		out[k] = v
	}
	return out
}
