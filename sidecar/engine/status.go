package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/sidecar/mapping"
)

// ErrNoPreviewMapping is returned by PreviewMapping when a request brings its
// own mapping and the engine was built without CompileMapping.
var ErrNoPreviewMapping = fmt.Errorf("this sidecar cannot compile mappings given in a request")

// Status reports the engine's state for the GetStatus RPC.
func (e *Engine) Status(context.Context) (*portbridgev1.GetStatusResponse, error) {
	e.mu.Lock()
	e.updateQueueGauges()
	cur, last, lastVerify := e.current, e.last, e.lastVerify
	resp := &portbridgev1.GetStatusResponse{
		Version:   e.opts.Version,
		StartedAt: timestamppb.New(e.started),
		LastError: e.lastErr,
		Queue:     &portbridgev1.QueueStatus{Depth: e.opts.Store.QueueDepth(), Retrying: uint64(e.retrying), PendingDeletions: uint64(e.deletions)},
		Port:      peerStatus(e.portPeer, e.opts.PortURL),
		Backstage: peerStatus(e.catalogPeer, e.opts.CatalogURL),
	}
	e.mu.Unlock()
	if oldest, ok := e.opts.Store.QueueOldest(); ok {
		resp.Queue.OldestAge = durationpb.New(time.Since(oldest))
	}
	if cur != nil {
		resp.CurrentResync = reportStatus(cur)
	}
	if last != nil {
		resp.LastResync = reportStatus(last)
	}
	if lastVerify != nil {
		resp.LastVerify = reportStatus(lastVerify)
	}
	rl := e.opts.Port.RateLimit()
	resp.PortRateLimit = &portbridgev1.RateLimitStatus{Remaining: int64(rl.Remaining), Waited: durationpb.New(rl.TotalWait), Throttled: uint64(rl.Throttled)}
	if !rl.Reset.IsZero() {
		resp.PortRateLimit.ResetAt = timestamppb.New(rl.Reset)
	}
	owned, err := e.opts.Store.OwnedCounts()
	if err != nil {
		return nil, fmt.Errorf("count owned entities: %w", err)
	}
	resp.OwnedEntities = owned
	return resp, nil
}

func peerStatus(p peer, url string) *portbridgev1.PeerStatus {
	ps := &portbridgev1.PeerStatus{Reachable: p.ok, LastError: p.lastErr, Url: url}
	if !p.lastSuccess.IsZero() {
		ps.LastSuccess = timestamppb.New(p.lastSuccess)
	}
	return ps
}

func counts(c Counts) *portbridgev1.SyncCounts {
	return &portbridgev1.SyncCounts{Seen: c.Seen, Pushed: c.Pushed, Unchanged: c.Unchanged, Skipped: c.Skipped, Deleted: c.Deleted, Failed: c.Failed}
}

func reportStatus(r *ResyncReport) *portbridgev1.ResyncStatus {
	s := r.Snapshot()
	rs := &portbridgev1.ResyncStatus{Id: s.ID, Trigger: s.Trigger, State: s.State, Error: s.Err, Totals: counts(s.Totals),
		PerKind: map[string]*portbridgev1.SyncCounts{}, DeletionsSkippedReason: s.DeletionsSkipped}
	if !s.Started.IsZero() {
		rs.StartedAt = timestamppb.New(s.Started)
	}
	if !s.Finished.IsZero() {
		rs.FinishedAt = timestamppb.New(s.Finished)
	}
	for k, c := range s.PerKind {
		if k == "" {
			k = "unknown"
		}
		rs.PerKind[k] = counts(*c)
	}
	return rs
}

// PreviewMapping maps one entity with the configured mapping, or with
// mappingYAML when given, and writes nothing.
func (e *Engine) PreviewMapping(ctx context.Context, entity map[string]any, mappingYAML string) (*portbridgev1.PreviewMappingResponse, error) {
	m := e.mapperNow()
	if mappingYAML != "" {
		if e.opts.CompileMapping == nil {
			return nil, ErrNoPreviewMapping
		}
		var err error
		if m, err = e.opts.CompileMapping([]byte(mappingYAML)); err != nil {
			return nil, err
		}
	}
	return PreviewResponse(m.Map(ctx, entity))
}

// PreviewResponse converts a mapping result to the RPC's answer.
func PreviewResponse(res mapping.Result) (*portbridgev1.PreviewMappingResponse, error) {
	out := &portbridgev1.PreviewMappingResponse{}
	for _, m := range res.Entities {
		st, err := entityStruct(m)
		if err != nil {
			return nil, err
		}
		out.Entities = append(out.Entities, &portbridgev1.MappedEntity{ResourceIndex: uint32(m.ResourceIndex), Blueprint: m.Blueprint, Identifier: m.Identifier,
			Entity: st, Hash: fmt.Sprintf("%016x", m.Hash)})
	}
	for _, w := range res.Warnings {
		out.Warnings = append(out.Warnings, &portbridgev1.MappingWarning{ResourceIndex: uint32(w.ResourceIndex), Field: w.Field, Message: w.Message})
	}
	for _, w := range res.Skipped {
		out.Skipped = append(out.Skipped, &portbridgev1.MappingWarning{ResourceIndex: uint32(w.ResourceIndex), Field: w.Field, Message: w.Message})
	}
	return out, nil
}

func entityStruct(m mapping.Mapped) (*structpb.Struct, error) {
	b, err := json.Marshal(m.Entity)
	if err != nil {
		return nil, fmt.Errorf("encode mapped entity %s/%s: %w", m.Blueprint, m.Identifier, err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, err
	}
	return structpb.NewStruct(obj)
}
