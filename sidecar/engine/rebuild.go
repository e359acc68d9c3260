package engine

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/plan"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/state"
)

// Ownership from Port: the state file is a cache of what the sidecar owns,
// not the only record. Port records the User-Agent of every write as the
// entity's data source; when the state file has no ownership records (new,
// lost, or moved away because it was damaged), they are rebuilt from Port's
// listing of this installation's data source before the first resync.

// OrphanKind is the kind of the placeholder refs that own Port entities of
// this installation's data source which no catalog entity produces any
// more: the resync's deletion plan removes them, through the guard.
const OrphanKind = "~orphan"

// orphanRef is the placeholder ref that owns k.
func orphanRef(k plan.Key) string { return OrphanKind + ":" + k.Blueprint + "/" + k.Identifier }

func isOrphan(ref string) bool { return strings.HasPrefix(ref, OrphanKind+":") }

// dropOrphans removes placeholder owners from a plan's other owners: a
// placeholder wants nothing, so a catalog entity that produces its key
// writes it (the placeholder's claim is released at the next resync).
func dropOrphans(others map[plan.Key][]plan.Owned) {
	for k, os := range others {
		others[k] = slices.DeleteFunc(os, func(o plan.Owned) bool { return isOrphan(o.Ref) })
	}
}

// metaRebuildPending marks a rebuild that started and did not finish: it
// runs again at the next start even though records exist.
const metaRebuildPending = "ownership-rebuild-pending"

// OwnershipState says where the sidecar's knowledge of what it owns comes
// from.
type OwnershipState struct {
	// State is "recorded" (the state file's records), "rebuilt" (rebuilt
	// from Port in this process), "unknown" (rebuild needed and failed:
	// no deletions until it succeeds) or "off" (no listing configured).
	State  string
	Detail string
	At     time.Time
	// Adopted counts the Port entities recorded for catalog entities,
	// Changed those of them whose content in Port differs from the
	// mapping (the next resync writes them), Orphans those no catalog
	// entity produces (the next resync deletes them), Bare those no catalog
	// entity produces that hold no properties or relations (relation
	// targets Port created, which the sidecar never owns: left alone).
	Adopted, Changed, Orphans, Bare int
}

type ownership struct {
	mu sync.Mutex
	st OwnershipState
}

func (o *ownership) set(st OwnershipState) {
	o.mu.Lock()
	o.st = st
	o.mu.Unlock()
}

func (o *ownership) get() OwnershipState {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.st
}

// Ownership reports where the engine's ownership records come from.
func (e *Engine) Ownership() OwnershipState {
	st := e.ownership.get()
	if st.State == "" {
		st.State = "recorded"
		if e.opts.OwnedInPort == nil {
			st.State = "off"
		}
	}
	return st
}

// ownershipUnknown is why ownership is not known, or "".
func (e *Engine) ownershipUnknown() string {
	if st := e.ownership.get(); st.State == "unknown" {
		return st.Detail
	}
	return ""
}

// rebuildIfNeeded rebuilds ownership from Port when the state file has no
// ownership records (or a rebuild was interrupted). A failure leaves
// ownership unknown: deletions are refused and the rebuild is tried again
// before each resync. A dry run rebuilds only into a temporary state file.
func (e *Engine) rebuildIfNeeded(ctx context.Context, dryRun bool) {
	if e.opts.OwnedInPort == nil || (dryRun && !e.opts.EphemeralState) {
		return
	}
	need, err := e.needsRebuild()
	if err != nil {
		e.ownership.set(OwnershipState{State: "unknown", At: time.Now(), Detail: "cannot read the state file: " + err.Error()})
		e.log.Error("cannot tell whether ownership must be rebuilt from Port; no deletions until it can", "error", err)
		return
	}
	if !need {
		return
	}
	e.log.Info("the state file has no ownership records: rebuilding them from Port's data-source listing before the first resync",
		"path", e.opts.Store.Path())
	st, err := e.rebuildOwnership(ctx)
	if err != nil {
		e.metrics.ownershipRebuilt.WithLabelValues("failed").Inc()
		e.events.setErr(err)
		e.ownership.set(OwnershipState{State: "unknown", At: time.Now(), Detail: err.Error()})
		e.log.Error("ownership rebuild from Port failed: no deletions until it succeeds (tried again before each resync)", "error", err)
		return
	}
	e.metrics.ownershipRebuilt.WithLabelValues("ok").Inc()
	e.ownership.set(st)
	e.log.Info("ownership rebuilt from Port", "adopted", st.Adopted, "changed", st.Changed, "orphans", st.Orphans, "bare_relation_targets", st.Bare)
}

// retryRebuild tries a failed rebuild again before a resync; if it still
// fails, the resync's report says so and its deletions are refused.
func (e *Engine) retryRebuild(ctx context.Context, rep *Report, log *slog.Logger) {
	if e.ownershipUnknown() == "" {
		return
	}
	e.rebuildIfNeeded(ctx, rep.DryRun)
	if why := e.ownershipUnknown(); why != "" {
		log.Warn("ownership still unknown: this resync writes but deletes nothing", "reason", why)
		msg := "ownership is not known: " + why
		rep.mu.Lock()
		rep.Refusal = &Refusal{At: time.Now(), Path: "resync", Reason: string(plan.RefusedOwnershipUnknown), Message: msg}
		rep.mu.Unlock()
		rep.skipDeletions(msg)
	}
}

func (e *Engine) needsRebuild() (bool, error) {
	v, err := e.opts.Store.GetMeta(metaRebuildPending)
	if err != nil {
		return false, err
	}
	if v != nil {
		return true, nil
	}
	owned, err := e.opts.Store.OwnedCounts()
	if err != nil {
		return false, err
	}
	return len(owned) == 0, nil
}

// claim is one catalog entity producing a Port entity of our data source.
type claim struct {
	ref     string
	hash    uint64 // the mapped output's hash
	content uint64 // contentHash of the mapped entity
}

// rebuildOwnership lists this installation's entities in Port, maps the
// whole catalog, and records each listed entity as the output of the
// catalog entity producing it — with the mapped output's hash when Port's
// content equals it (so an unchanged catalog costs no write), else a hash
// that makes the next resync write it. Listed entities nobody produces are
// recorded under placeholder refs, so the resync deletes them through the
// guard. Entities already owned by a record are left alone.
func (e *Engine) rebuildOwnership(ctx context.Context) (OwnershipState, error) {
	if err := e.opts.Store.PutMeta(metaRebuildPending, []byte{1}); err != nil {
		return OwnershipState{}, fmt.Errorf("mark the ownership rebuild in the state file: %w", err)
	}
	// Rebuilt records carry no content versions: the next resync reads
	// everything in one scan.
	if err := e.opts.Store.PutMeta(metaVersionsFingerprint, nil); err != nil {
		return OwnershipState{}, fmt.Errorf("clear the scan fingerprint in the state file: %w", err)
	}
	inPort, err := e.listOwned(ctx)
	if err != nil {
		return OwnershipState{}, err
	}
	keys := make([]plan.Key, 0, len(inPort))
	for k := range inPort {
		keys = append(keys, k)
	}
	owned, err := e.reg.Others(keys, nil)
	if err != nil {
		return OwnershipState{}, fmt.Errorf("rebuild ownership: %w", err)
	}
	for k, os := range owned {
		if len(os) > 0 {
			delete(inPort, k) // already recorded (written since the state file was lost)
		}
	}
	var claims map[plan.Key][]claim
	if len(inPort) > 0 { // nothing of ours in Port (a first start): no need to read the catalog
		if claims, err = e.claimsInCatalog(ctx, inPort); err != nil {
			return OwnershipState{}, err
		}
	}
	now := time.Now().Truncate(time.Millisecond)
	outputs := map[string][]state.Output{}
	st := OwnershipState{State: "rebuilt", At: now}
	// When Port took them is unknown: the epoch, so that a resync that is
	// already running counts them as owned before it started.
	pushed := time.UnixMilli(0)
	for k, have := range inPort {
		cs := claims[k]
		if len(cs) == 0 && have.bare {
			// A bare entity nobody produces: a relation target Port created
			// (createMissingRelatedEntities), which the sidecar never owns.
			st.Bare++
			continue
		}
		if len(cs) == 0 {
			outputs[orphanRef(k)] = []state.Output{{Key: state.Key(k), Hash: nonZero(have.hash), PushedAt: pushed}}
			st.Orphans++
			e.log.Debug("ownership rebuild: no catalog entity produces this Port entity of ours; the next resync deletes it", "blueprint", k.Blueprint, "identifier", k.Identifier)
			continue
		}
		slices.SortFunc(cs, func(a, b claim) int { return strings.Compare(a.ref, b.ref) })
		for i, c := range cs {
			o := state.Output{Key: state.Key(k), PushedAt: pushed} // losers of a conflict only claim it (hash 0)
			if i == 0 {
				o.Hash = c.hash
				if c.content != have.hash {
					o.Hash = differentHash(have.hash, c.hash)
					st.Changed++
				}
				st.Adopted++
			}
			outputs[c.ref] = append(outputs[c.ref], o)
		}
	}
	if err := e.reg.Adopt(outputs); err != nil {
		return OwnershipState{}, err
	}
	if err := e.opts.Store.PutMeta(metaRebuildPending, nil); err != nil {
		return OwnershipState{}, fmt.Errorf("clear the ownership rebuild mark in the state file: %w", err)
	}
	st.Detail = fmt.Sprintf("%d Port entities of this data source adopted (%d to be rewritten), %d orphans to be deleted, %d bare relation targets left alone",
		st.Adopted, st.Changed, st.Orphans, st.Bare)
	return st, nil
}

// ported is what the rebuild knows of one Port entity of ours.
type ported struct {
	hash uint64 // contentHash of what Port holds
	bare bool   // no property or relation values
}

func portedOf(ent port.Entity) ported {
	n := normalEntity(ent)
	_, props := n["properties"]
	_, rels := n["relations"]
	return ported{hash: contentHash(ent), bare: !props && !rels}
}

// listOwned reads this installation's entities from Port with the content
// hash of each. Where the listing carries no content (neither properties
// nor relations), the blueprint is read through the search API instead.
func (e *Engine) listOwned(ctx context.Context) (map[plan.Key]ported, error) {
	inPort := map[plan.Key]ported{}
	bare := map[string]bool{}
	for ent, err := range e.opts.OwnedInPort(ctx) {
		if err != nil {
			e.notePeer(&e.portPeer, err)
			return nil, fmt.Errorf("list this installation's entities in Port (data source %s): %w", port.DatasourcePrefix()+"…", err)
		}
		id, _ := ent.Identifier.(string)
		if id == "" || ent.Blueprint == "" {
			continue
		}
		k := plan.Key{Blueprint: ent.Blueprint, Identifier: id}
		inPort[k] = portedOf(ent)
		if ent.Properties == nil && ent.Relations == nil {
			bare[ent.Blueprint] = true
		}
	}
	e.notePeer(&e.portPeer, nil)
	for _, bp := range slices.Sorted(maps.Keys(bare)) {
		for ent, err := range e.opts.Port.SearchEntities(ctx, bp, port.SearchRequest{Limit: port.MaxSearchLimit}) {
			if err != nil {
				return nil, fmt.Errorf("read blueprint %s from Port for the ownership rebuild: %w", bp, err)
			}
			id, _ := ent.Identifier.(string)
			k := plan.Key{Blueprint: bp, Identifier: id}
			if _, ours := inPort[k]; ours {
				inPort[k] = portedOf(ent)
			}
		}
	}
	return inPort, nil
}

// claimsInCatalog maps the whole catalog and returns, for every key of
// inPort, the catalog entities producing it. The scan must be complete.
func (e *Engine) claimsInCatalog(ctx context.Context, inPort map[plan.Key]ported) (map[plan.Key][]claim, error) {
	claims := map[plan.Key][]claim{}
	var stats catalog.ScanResult
	receivedBefore := e.received()
	page := make([]catalog.Entity, 0, e.opts.PageSize)
	flush := func() {
		for i, res := range e.mapPage(ctx, page) {
			ref, err := catalog.RefOf(page[i])
			if err != nil {
				continue
			}
			for _, m := range res.Entities {
				k := plan.Key{Blueprint: m.Blueprint, Identifier: m.Identifier}
				if _, ours := inPort[k]; ours {
					claims[k] = append(claims[k], claim{ref: ref.String(), hash: m.Hash, content: contentHash(m.Entity)})
				}
			}
		}
		page = page[:0]
	}
	for ent, err := range e.opts.Catalog.Entities(ctx, catalog.Query{Stats: &stats}) {
		if err != nil {
			e.notePeer(&e.catalogPeer, err)
			return nil, fmt.Errorf("read the catalog for the ownership rebuild: %w", err)
		}
		if page = append(page, ent); len(page) == cap(page) {
			flush()
		}
	}
	flush()
	proof := plan.ScanProof{Seen: stats.Seen + stats.Skipped, Total: stats.TotalItems, Tolerance: int(e.received() - receivedBefore)}
	if ok, why := proof.Complete(); !ok {
		return nil, fmt.Errorf("read the catalog for the ownership rebuild: %s", why)
	}
	return claims, nil
}

// mapPage maps entities on all cores; an entity that fails to map gives an
// empty result.
func (e *Engine) mapPage(ctx context.Context, page []catalog.Entity) []mapping.Result {
	out := make([]mapping.Result, len(page))
	next := make(chan int, len(page))
	for i := range page {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(page)) {
		wg.Go(func() {
			for i := range next {
				if res, err := e.mapSafely(ctx, page[i]); err == nil {
					out[i] = res
				}
			}
		})
	}
	wg.Wait()
	return out
}

// nonZero keeps a hash off 0, which means "claimed, not written".
func nonZero(h uint64) uint64 {
	if h == 0 {
		return 1
	}
	return h
}

// differentHash is a non-zero hash other than mapped, recorded for an
// entity whose content in Port differs from the mapping: the next resync
// sees a changed output and writes it.
func differentHash(have, mapped uint64) uint64 {
	h := nonZero(have)
	if h == mapped {
		h = nonZero(^mapped)
	}
	return h
}

func lower(s string) string { return strings.ToLower(s) }
