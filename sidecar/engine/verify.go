package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/plan"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/registry"
	"github.com/portbridge/portbridge/sidecar/state"
)

// verify reads Port's entities of the managed blueprints in large pages,
// maps the catalog again, and re-writes every owned entity whose content in
// Port differs from the mapped one (update) or that is missing in Port
// (create): someone edited or deleted it there. A resync trusts its hashes;
// this pass does not. Its writes go through the policy like any other.
func (e *Engine) verify(ctx context.Context, rep *Report, _ *slog.Logger) error {
	owned, err := e.ownedCounts()
	if err != nil {
		return err
	}
	blueprints := slices.Clone(e.settingsNow().ManagedBlueprints)
	for bp := range owned {
		if !slices.Contains(blueprints, bp) {
			blueprints = append(blueprints, bp)
		}
	}
	inPort := map[plan.Key]uint64{}
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
			inPort[plan.Key{Blueprint: bp, Identifier: id}] = contentHash(ent)
		}
	}
	e.notePeer(&e.portPeer, nil)

	var wg sync.WaitGroup
	apply := func(refs []string, ch *plan.Changes) {
		ch = e.policy.Apply(ch)
		e.noteChanges("verify", rep, ch)
		touched := registry.Refs(ch)
		for _, r := range refs {
			if _, ok := slices.BinarySearch(touched, r); !ok {
				e.locks.unlock(r)
			}
		}
		wg.Add(len(touched))
		e.reg.Apply(ctx, ch, registry.ApplyOptions{Lazy: true, OnRef: func(o registry.RefOutcome) {
			rep.count(o.Kind, Counts{Pushed: uint64(o.Written), Failed: uint64(len(o.Failures))})
			e.failed("verify", o.Failures, 1)
			e.locks.unlock(o.Ref)
			wg.Done()
		}}, nil)
	}
	var scanErr error
	var batch []string
	ch := &plan.Changes{}
	for ent, err := range e.opts.Catalog.Entities(ctx, catalog.Query{}) {
		if err != nil {
			scanErr = err
			break
		}
		ref, rerr := catalog.RefOf(ent)
		if rerr != nil {
			continue
		}
		r := ref.String()
		if e.queue.hasPending(r) || !e.locks.tryLock(r) {
			continue // the change path is on it
		}
		res, merr := e.mapSafely(ctx, ent)
		recs, lerr := e.reg.Records([]string{r})
		if merr != nil || lerr != nil {
			e.locks.unlock(r)
			continue
		}
		rec, had := recs[r]
		if !had {
			e.locks.unlock(r)
			continue // not ours (yet): the resync's business
		}
		batch = append(batch, r)
		for _, m := range res.Entities {
			k := plan.Key{Blueprint: m.Blueprint, Identifier: m.Identifier}
			o, ours := rec.Output(state.Key(k))
			if !ours || o.Hash == 0 {
				continue // not ours, or another ref writes it
			}
			have, present := inPort[k]
			if present && have == contentHash(m.Entity) {
				rep.count(ref.Kind, Counts{Seen: 1, Unchanged: 1})
				continue
			}
			rep.count(ref.Kind, Counts{Seen: 1})
			c := plan.Change{Action: plan.Update, Key: k, Ref: r, Kind: ref.Kind, Hash: m.Hash, OldHash: o.Hash, Entity: m.Entity, Reason: "edited in Port"}
			if !present {
				c.Action, c.Reason = plan.Create, "missing in Port"
				ch.Create = append(ch.Create, c)
			} else {
				ch.Update = append(ch.Update, c)
			}
		}
		if len(batch) >= e.opts.PageSize {
			apply(batch, ch)
			batch, ch = nil, &plan.Changes{}
		}
	}
	if len(batch) > 0 {
		apply(batch, ch)
	}
	e.reg.Flush(ctx)
	wg.Wait()
	if scanErr != nil {
		return fmt.Errorf("catalog scan: %w", scanErr)
	}
	if f := rep.Snapshot().Totals.Failed; f > 0 {
		return fmt.Errorf("%d repairs failed; see the recent failures", f)
	}
	return nil
}

// contentHash hashes the parts of a Port entity that a mapping sets, in a
// normal form, so that an entity read back from Port compares equal to the
// one we sent: nulls and empty values dropped (Port treats them as unset),
// team as a sorted list, relation lists sorted.
func contentHash(e port.Entity) uint64 {
	b, err := json.Marshal(normalEntity(e))
	if err != nil {
		return 0
	}
	return xxhash.Sum64(b)
}

// normalEntity is e as a JSON object in the normal form contentHash hashes
// and the dry run compares.
func normalEntity(e port.Entity) map[string]any {
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
	return n
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
