// Package poller watches a Backstage catalog for changes by polling it
// (uid/etag diff against the previous poll) and publishes them to the
// sidecar. It is the Go twin of the Backstage module in client/backstage,
// used by `portbridge dev` and by tests that need the module's behaviour
// without a Backstage process.
package poller

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/sidecar/catalog"
)

// Catalog is what the poller reads.
type Catalog interface {
	Entities(ctx context.Context, q catalog.Query) iter.Seq2[catalog.Entity, error]
	EntitiesByRefs(ctx context.Context, refs []string, fields []string) ([]catalog.Entity, error)
}

// Publisher is where changes go (a *client.Client).
type Publisher interface {
	PublishChanges(ctx context.Context, req *portbridgev1.PublishChangesRequest) (*portbridgev1.PublishChangesResponse, error)
}

type view struct{ uid, etag string }

// Poller keeps the previous view of the catalog; it is not safe for
// concurrent Poll calls.
type Poller struct {
	cat       Catalog
	pub       Publisher
	log       *slog.Logger
	batchSize int
	prev      map[string]view
}

// New returns a poller. batchSize bounds the changes per publish (default
// 100).
func New(cat Catalog, pub Publisher, batchSize int, log *slog.Logger) *Poller {
	if batchSize <= 0 {
		batchSize = 100
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Poller{cat: cat, pub: pub, log: log, batchSize: batchSize}
}

var viewFields = []string{"kind", "metadata.namespace", "metadata.name", "metadata.uid", "metadata.etag"}

// Poll lists the catalog (only the fields that identify a version), diffs it
// with the previous poll, fetches full bodies of what changed and publishes
// them. The new view is kept only after the sidecar acknowledged every
// batch. The first poll sends everything with full_snapshot set.
func (p *Poller) Poll(ctx context.Context) (int, error) {
	cur := map[string]view{}
	for ent, err := range p.cat.Entities(ctx, catalog.Query{Fields: viewFields}) {
		if err != nil {
			return 0, fmt.Errorf("list the catalog: %w", err)
		}
		ref, err := catalog.RefOf(ent)
		if err != nil {
			continue
		}
		md, _ := ent["metadata"].(map[string]any)
		uid, _ := md["uid"].(string)
		etag, _ := md["etag"].(string)
		cur[ref.String()] = view{uid, etag}
	}
	now := timestamppb.New(time.Now())
	var changed []string
	for ref, v := range cur {
		if old, ok := p.prev[ref]; !ok || old != v {
			changed = append(changed, ref)
		}
	}
	var changes []*portbridgev1.Change
	for start := 0; start < len(changed); start += 500 {
		chunk := changed[start:min(start+500, len(changed))]
		bodies, err := p.cat.EntitiesByRefs(ctx, chunk, nil)
		var over *catalog.LimitError
		switch {
		case errors.As(err, &over):
			// The others are valid; entities over the input limits exist
			// but cannot be published: keep the last view of them, so
			// they are neither published nor taken for deleted.
			for _, ref := range over.Refs {
				if old, ok := p.prev[ref]; ok {
					cur[ref] = old
				} else {
					delete(cur, ref)
				}
			}
		case err != nil:
			return 0, fmt.Errorf("fetch %d changed entities: %w", len(chunk), err)
		}
		for i, body := range bodies {
			if body == nil {
				if over != nil && slices.Contains(over.Refs, chunk[i]) {
					continue
				}
				delete(cur, chunk[i]) // gone between list and fetch: next poll sees it
				continue
			}
			st, err := structpb.NewStruct(body)
			if err != nil {
				return 0, fmt.Errorf("encode %s: %w", chunk[i], err)
			}
			v := cur[chunk[i]]
			changes = append(changes, &portbridgev1.Change{EntityRef: chunk[i], Uid: v.uid, Etag: v.etag, ObservedAt: now,
				Change: &portbridgev1.Change_Upserted{Upserted: &portbridgev1.Upserted{Entity: st}}})
		}
	}
	for ref, old := range p.prev {
		if _, ok := cur[ref]; !ok {
			changes = append(changes, &portbridgev1.Change{EntityRef: ref, Uid: old.uid, ObservedAt: now,
				Change: &portbridgev1.Change_Deleted{Deleted: &portbridgev1.Deleted{}}})
		}
	}
	first := p.prev == nil
	for start := 0; start < len(changes); start += p.batchSize {
		batch := changes[start:min(start+p.batchSize, len(changes))]
		if _, err := p.pub.PublishChanges(ctx, &portbridgev1.PublishChangesRequest{Changes: batch, FullSnapshot: first, Source: "portbridge-poller"}); err != nil {
			return 0, fmt.Errorf("publish %d changes: %w", len(batch), err)
		}
	}
	p.prev = cur
	return len(changes), nil
}

// Run polls every interval until ctx ends, logging failures once per outage.
func (p *Poller) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		n, err := p.Poll(ctx)
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
				p.log.Info("published catalog changes", "changes", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
