// Package poller watches a Backstage catalog for changes by polling it
// (uid/etag diff against the view the sidecar acknowledged) and publishes
// them to the sidecar. It is the Go twin of the Backstage module in
// client/backstage, used by `portbridge dev` and by tests that need the
// module's behaviour without a Backstage process.
package poller

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/sidecar/catalog"
)

// Catalog is what the poller reads: a cheap listing of versions and bodies
// by ref (a *catalog.Client).
type Catalog interface {
	Versions(ctx context.Context, q catalog.Query) iter.Seq2[catalog.Version, error]
	FetchByRefs(ctx context.Context, refs []string, fields []string) iter.Seq2[catalog.Fetched, error]
}

// Publisher is where changes go (a *client.Client).
type Publisher interface {
	PublishChanges(ctx context.Context, req *portbridgev1.PublishChangesRequest) (*portbridgev1.PublishChangesResponse, error)
	TriggerResync(ctx context.Context, req *portbridgev1.TriggerResyncRequest) (*portbridgev1.TriggerResyncResponse, error)
}

// entry is an acknowledged entity version; seen is the number of the last
// poll that listed it.
type entry struct {
	uid, etag string
	seen      uint64
}

// DefaultMaxBusy is the share of the time a poller may spend polling by
// default: Run waits at least interval, and longer when polls are slow.
const DefaultMaxBusy = 0.02

// Options tunes a Poller.
type Options struct {
	// BatchSize bounds the changes per publish (default 100).
	BatchSize int
	// MaxBusy bounds the share of wall time Run spends listing: after a
	// listing that took d it waits at least d·(1/MaxBusy − 1), so a large
	// catalog is listed less often than every interval. 0 means
	// DefaultMaxBusy; 1 or more means only the interval counts.
	MaxBusy float64
	Logger  *slog.Logger
	// Source names the publisher in the sidecar's logs (default
	// "portbridge-poller").
	Source string
	// Baseline makes the first poll record the listing as acknowledged
	// without publishing bodies, and ask the sidecar for a resync instead
	// (which reconciles anything the listing does not carry). For a poller
	// started next to a sidecar that has just resynced (`portbridge dev`):
	// it saves sending the whole catalog through the change path.
	Baseline bool
}

// Poller keeps the view of the catalog the sidecar acknowledged; it is not
// safe for concurrent Poll calls.
type Poller struct {
	cat   Catalog
	pub   Publisher
	opts  Options
	log   *slog.Logger
	view  map[string]*entry
	polls uint64
	acked bool // a full snapshot was acknowledged
	// listTook is how long the last poll's listing took: what every poll
	// costs even when nothing changed.
	listTook time.Duration
}

// New returns a poller.
func New(cat Catalog, pub Publisher, opts Options) *Poller {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 100
	}
	if opts.MaxBusy <= 0 {
		opts.MaxBusy = DefaultMaxBusy
	}
	if opts.Source == "" {
		opts.Source = "portbridge-poller"
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Poller{cat: cat, pub: pub, opts: opts, log: log, view: map[string]*entry{}}
}

// Poll lists the catalog's versions (ref, uid, etag: the cheap listing),
// diffs them with the acknowledged view, fetches full bodies only of what
// was added or changed, and publishes them and the deletions. A change
// enters the view only after the sidecar acknowledged its batch. Until a
// full snapshot was acknowledged, the last batch of a poll carries
// full_snapshot (with nothing to send, a resync is requested instead). It
// returns the number of changes published.
func (p *Poller) Poll(ctx context.Context) (int, error) {
	p.polls++
	gen := p.polls
	listStart := time.Now()
	var changed []string
	listed := map[string]catalog.Version{} // only the changed ones
	for v, err := range p.cat.Versions(ctx, catalog.Query{ExcludeTotal: true}) {
		if err != nil {
			return 0, fmt.Errorf("list the catalog: %w", err)
		}
		if e := p.view[v.Ref]; e != nil {
			e.seen = gen
			if e.uid == v.UID && e.etag == v.Etag {
				continue
			}
		}
		if p.opts.Baseline && !p.acked {
			p.view[v.Ref] = &entry{uid: v.UID, etag: v.Etag, seen: gen}
			continue
		}
		changed = append(changed, v.Ref)
		listed[v.Ref] = v
	}
	p.listTook = time.Since(listStart)

	sent := 0
	var batch []*portbridgev1.Change
	var pending []func() // view updates of the batch, applied once acknowledged
	flush := func(last bool) error {
		if len(batch) == 0 {
			return nil
		}
		snapshot := last && !p.acked
		if _, err := p.pub.PublishChanges(ctx, &portbridgev1.PublishChangesRequest{Changes: batch, FullSnapshot: snapshot, Source: p.opts.Source}); err != nil {
			return fmt.Errorf("publish %d changes: %w", len(batch), err)
		}
		for _, apply := range pending {
			apply()
		}
		sent += len(batch)
		batch, pending = batch[:0], pending[:0]
		if snapshot {
			p.acked = true
		}
		return nil
	}
	add := func(c *portbridgev1.Change, apply func()) error {
		if len(batch) == p.opts.BatchSize {
			if err := flush(false); err != nil {
				return err
			}
		}
		batch, pending = append(batch, c), append(pending, apply)
		return nil
	}

	now := timestamppb.New(time.Now())
	for f, err := range p.cat.FetchByRefs(ctx, changed, nil) {
		if err != nil {
			return sent, fmt.Errorf("fetch %d changed entities: %w", len(changed), err)
		}
		v := listed[f.Ref]
		if f.Skipped != "" {
			// over the input limits: it exists but cannot be published;
			// the last view of it stays, so it is neither published nor
			// taken for deleted (the catalog client logged and counted it)
			continue
		}
		if f.Entity == nil {
			// gone between listing and fetching: absent for this poll
			if e := p.view[f.Ref]; e != nil {
				e.seen = gen - 1
			}
			continue
		}
		st, err := structpb.NewStruct(f.Entity)
		if err != nil {
			return sent, fmt.Errorf("encode %s: %w", f.Ref, err)
		}
		c := &portbridgev1.Change{EntityRef: f.Ref, Uid: v.UID, Etag: v.Etag, ObservedAt: now,
			Change: &portbridgev1.Change_Upserted{Upserted: &portbridgev1.Upserted{Entity: st}}}
		if err := add(c, func() { p.view[v.Ref] = &entry{uid: v.UID, etag: v.Etag, seen: gen} }); err != nil {
			return sent, err
		}
	}
	for ref, e := range p.view {
		if e.seen == gen {
			continue
		}
		c := &portbridgev1.Change{EntityRef: ref, Uid: e.uid, ObservedAt: now,
			Change: &portbridgev1.Change_Deleted{Deleted: &portbridgev1.Deleted{}}}
		if err := add(c, func() { delete(p.view, ref) }); err != nil {
			return sent, err
		}
	}
	if err := flush(true); err != nil {
		return sent, err
	}
	if !p.acked {
		// nothing carried the flag (or the baseline was taken): ask for
		// the reconciliation directly
		if _, err := p.pub.TriggerResync(ctx, &portbridgev1.TriggerResyncRequest{Reason: "poller full snapshot"}); err != nil {
			return sent, fmt.Errorf("ask for a resync in place of a snapshot: %w", err)
		}
		p.acked = true
	}
	return sent, nil
}

// Run polls until ctx ends, logging failures once per outage. It waits at
// least interval between the starts of two polls, and more when listing
// the catalog is slow (see Options.MaxBusy), so a large catalog costs a
// bounded share of a core however short the interval.
func (p *Poller) Run(ctx context.Context, interval time.Duration) {
	failing := false
	for {
		start := time.Now()
		n, err := p.Poll(ctx)
		took := time.Since(start)
		// Pace by the listing, which every poll repeats; publishing a
		// burst of changes is not repeated.
		pace := min(took, p.listTook)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			p.log.Warn("poll failed; retrying every interval", "error", err)
			failing = true
		case err == nil:
			if failing {
				p.log.Info("poll recovered")
			}
			failing = false
			if n > 0 {
				p.log.Info("published catalog changes", "changes", n, "took", took.Round(time.Millisecond))
			}
		}
		t := time.NewTimer(p.wait(interval, pace))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// wait is the pause after a poll that took took: what is left of interval,
// or the pause that keeps polling at MaxBusy of the time.
func (p *Poller) wait(interval, took time.Duration) time.Duration {
	w := interval - took
	if p.opts.MaxBusy < 1 {
		w = max(w, time.Duration(float64(took)*(1/p.opts.MaxBusy-1)))
	}
	return max(w, 0)
}
