package engine

import (
	"context"
	"fmt"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/state"
)

// metaVersionsFingerprint is the mapping fingerprint under which the last
// complete scan recorded content versions.
const metaVersionsFingerprint = "versions-fingerprint"

// twoPhase reports whether a resync lists versions first and reads only
// the bodies of what changed. It does when the records' content versions
// were made under the mapping in force (fingerprint): with an empty
// registry, after a mapping change or after an ownership rebuild nearly
// every entity must be read, and one scan of whole entities is half the
// requests of a listing plus reads by ref.
func (e *Engine) twoPhase(fingerprint string) bool {
	counts, err := e.opts.Store.OwnedCounts()
	if err != nil {
		return true
	}
	owned := false
	for _, n := range counts {
		owned = owned || n > 0
	}
	if !owned {
		return false
	}
	fp, err := e.opts.Store.GetMeta(metaVersionsFingerprint)
	return err != nil || string(fp) == fingerprint
}

// scannedUnder records that a complete scan recorded versions under
// fingerprint (refs whose writes failed have none, and are read again).
func (e *Engine) scannedUnder(fingerprint string) {
	if err := e.opts.Store.PutMeta(metaVersionsFingerprint, []byte(fingerprint)); err != nil {
		e.log.Warn("cannot record the mapping fingerprint of the scan", "error", err)
	}
}

// scanEntities is the one-phase scan: whole entities, page by page, each
// page mapped, planned and applied.
func (e *Engine) scanEntities(ctx context.Context, sc *scan, stats *catalog.ScanResult) error {
	rep := sc.rep
	page := make([]catalog.Entity, 0, e.opts.PageSize)
	// An entity over the input limits is skipped by the catalog client:
	// what it owns is kept, and it counts as read for the completeness
	// proof.
	onSkip := func(ref string) {
		sc.keepRef(ref)
		rep.count(kindOf(ref), Counts{Seen: 1, Skipped: 1})
	}
	for ent, err := range e.opts.Catalog.Entities(ctx, catalog.Query{Stats: stats, OnSkip: onSkip}) {
		if err != nil {
			return err
		}
		if page = append(page, ent); len(page) == cap(page) {
			rep.setTotal(stats.TotalItems)
			e.resyncPage(ctx, sc, page)
			page = page[:0]
		}
	}
	if len(page) > 0 {
		e.resyncPage(ctx, sc, page)
	}
	rep.setTotal(stats.TotalItems)
	return nil
}

// scanVersions is the two-phase scan. A field-limited listing gives each
// entity's ref and etag; an entity whose content version (etag under the
// mapping in force) equals the one recorded at its last confirmed push is
// neither read in full nor mapped: what it owns counts as seen. The bodies
// of the others are read by ref, a page at a time, and go through
// resyncPage as in the one-phase scan. The verify pass still reads and
// compares everything. Raw examples come from the entities the engine read
// in full (see settleExamples).
func (e *Engine) scanVersions(ctx context.Context, sc *scan, stats *catalog.ScanResult) error {
	rep := sc.rep
	list := make([]catalog.Version, 0, e.opts.PageSize)
	var fetch []string
	watch := newExampleWatch(e.recent.refs(), e.storedExampleRefs())
	fetchBodies := func() error {
		if len(fetch) == 0 {
			return nil
		}
		page := make([]catalog.Entity, 0, len(fetch))
		for f, err := range e.opts.Catalog.FetchByRefs(ctx, fetch, nil) {
			if err != nil {
				return fmt.Errorf("read %d changed entities by ref: %w", len(fetch), err)
			}
			if f.Entity == nil {
				// Over the input limits (the client logged it), or deleted
				// since the listing: what it owns stays until the change
				// path or the next resync knows more.
				sc.keepRef(f.Ref)
				rep.count(kindOf(f.Ref), Counts{Seen: 1, Skipped: 1})
				continue
			}
			page = append(page, f.Entity)
		}
		fetch = fetch[:0]
		e.resyncPage(ctx, sc, page)
		return nil
	}
	handle := func() error {
		refs := make([]string, len(list))
		for i, v := range list {
			refs[i] = v.Ref
		}
		defer func() { list = list[:0] }()
		recs, err := e.reg.Records(refs)
		if err != nil {
			e.abandon(sc, refs, err)
			return nil
		}
		byBlueprint := map[string]int{}
		defer func() {
			for bp, n := range byBlueprint {
				e.metrics.skips.WithLabelValues(bp).Add(float64(n))
			}
		}()
		for _, v := range list {
			if rec, ok := recs[v.Ref]; ok && e.unchanged(sc, v, rec, byBlueprint) {
				continue
			}
			if fetch = append(fetch, v.Ref); len(fetch) == e.opts.PageSize {
				if err := fetchBodies(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for v, err := range e.opts.Catalog.Versions(ctx, catalog.Query{Stats: stats}) {
		if err != nil {
			return err
		}
		watch.listed(v.Ref)
		if list = append(list, v); len(list) == cap(list) {
			if stats.Pages == 1 && stats.TotalItems > 0 {
				sc.seen.grow(stats.TotalItems + stats.TotalItems/64)
			}
			rep.setTotal(stats.TotalItems)
			if err := handle(); err != nil {
				return err
			}
		}
	}
	if err := handle(); err != nil {
		return err
	}
	if err := fetchBodies(); err != nil {
		return err
	}
	rep.setTotal(stats.TotalItems)
	e.settleExamples(ctx, sc, watch)
	return nil
}

// unchanged decides, from the listing alone, that a ref needs nothing: its
// content version is the recorded one, every output was confirmed by a
// push, and no notification about it waits. Its outputs then count as
// seen and unchanged.
func (e *Engine) unchanged(sc *scan, v catalog.Version, rec state.RefRecord, byBlueprint map[string]int) bool {
	ver := e.versionOf(v.Etag)
	if ver == 0 || rec.Version != ver {
		return false
	}
	for _, o := range rec.Outputs {
		if o.Hash == 0 { // claimed, never pushed
			return false
		}
	}
	if e.queue.hasPending(v.Ref) {
		return false
	}
	sc.seen.addAll(v.Ref)
	sc.rep.count(kindOf(v.Ref), Counts{Seen: 1, Unchanged: uint64(len(rec.Outputs))})
	for _, o := range rec.Outputs {
		byBlueprint[o.Key.Blueprint]++
	}
	return true
}
