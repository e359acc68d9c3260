package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/server"
	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/integration"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/redact"
	"github.com/portbridge/portbridge/sidecar/state"
)

// backend adapts the engine to the server: it converts the API's wire
// types to the engine's and back, so neither the engine nor the state
// store sees generated proto types.
type backend struct {
	eng   *engine.Engine
	integ *integration.Loop // nil when the integration is not registered
	// sc completes the status with what only the wiring knows and redacts
	// it; nil in tests that wire an engine alone.
	sc *sidecar
}

var _ server.Backend = backend{}

// Publish stores a validated batch.
func (b backend) Publish(ctx context.Context, changes []*portbridgev1.Change, fullSnapshot bool, _ string) (uint64, error) {
	out := make([]state.Change, len(changes))
	for i, c := range changes {
		sc := state.Change{Ref: c.GetEntityRef(), UID: c.GetUid(), Etag: c.GetEtag(), ObservedAt: c.GetObservedAt().AsTime(), Deleted: c.GetDeleted() != nil}
		if !sc.Deleted {
			body, err := protojson.Marshal(c.GetUpserted().GetEntity())
			if err != nil {
				return 0, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("changes[%d].upserted.entity: %w", i, err))
			}
			sc.Entity = body
		}
		out[i] = sc
	}
	depth, err := b.eng.Publish(ctx, out, fullSnapshot)
	if errors.Is(err, engine.ErrNotReady) {
		return 0, connect.NewError(connect.CodeUnavailable, err)
	}
	return depth, err
}

// TriggerResync starts a resync.
func (b backend) TriggerResync(ctx context.Context, reason string, verify bool) (string, bool, error) {
	return b.eng.TriggerResync(ctx, reason, verify)
}

// Ready reports readiness.
func (b backend) Ready(ctx context.Context) error { return b.eng.Ready(ctx) }

// PreviewMapping maps one entity; an invalid mapping in the request is the
// caller's error.
func (b backend) PreviewMapping(ctx context.Context, entity map[string]any, mappingYAML string) (*portbridgev1.PreviewMappingResponse, error) {
	res, err := b.eng.PreviewMapping(ctx, entity, mappingYAML)
	switch {
	case errors.Is(err, engine.ErrInvalidMapping):
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, engine.ErrNoPreviewMapping):
		return nil, fmt.Errorf("%w: %w", server.ErrUnimplemented, err)
	case err != nil:
		return nil, err
	}
	return previewResponse(res)
}

// previewResponse converts a mapping result to the RPC's answer.
func previewResponse(res mapping.Result) (*portbridgev1.PreviewMappingResponse, error) {
	out := &portbridgev1.PreviewMappingResponse{}
	for _, m := range res.Entities {
		b, err := json.Marshal(m.Entity)
		if err != nil {
			return nil, fmt.Errorf("encode mapped entity %s/%s: %w", m.Blueprint, m.Identifier, err)
		}
		var obj map[string]any
		if err := json.Unmarshal(b, &obj); err != nil {
			return nil, err
		}
		st, err := structpb.NewStruct(obj)
		if err != nil {
			return nil, fmt.Errorf("encode mapped entity %s/%s: %w", m.Blueprint, m.Identifier, err)
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

// Status converts the engine's status.
func (b backend) Status(ctx context.Context) (*portbridgev1.GetStatusResponse, error) {
	st, err := b.eng.Status(ctx)
	if err != nil {
		return nil, err
	}
	resp := &portbridgev1.GetStatusResponse{
		Version:   st.Version,
		StartedAt: timestamppb.New(st.StartedAt),
		LastError: st.LastError,
		Policy:    st.Policy,
		Queue: &portbridgev1.QueueStatus{Depth: st.Queue.Depth, Retrying: uint64(st.Queue.Retrying), PendingDeletions: uint64(st.Queue.PendingDeletions),
			Quarantined: uint64(st.Queue.Quarantined)},
		Port:          peerStatus(st.Port),
		Backstage:     peerStatus(st.Backstage),
		OwnedEntities: st.Owned,
		Parked:        &portbridgev1.ParkedStatus{Count: uint64(st.Parked)},
	}
	if !st.LastErrorAt.IsZero() {
		resp.LastErrorAt = timestamppb.New(st.LastErrorAt)
	}
	if st.Queue.OldestAge > 0 {
		resp.Queue.OldestAge = durationpb.New(st.Queue.OldestAge)
	}
	for _, q := range st.Queue.QuarantineRecent {
		resp.Queue.RecentQuarantined = append(resp.Queue.RecentQuarantined, &portbridgev1.QuarantinedChange{Seq: q.Seq, At: timestamppb.New(q.At), Reason: q.Reason, Size: uint64(q.Size)})
	}
	for ref, p := range st.ParkedRecent {
		resp.Parked.Recent = append(resp.Parked.Recent, &portbridgev1.ParkedEntity{EntityRef: ref, At: timestamppb.New(p.At), Blueprint: p.Blueprint,
			Identifier: p.Identifier, PortStatus: int32(p.Status), Message: p.Message})
	}
	for _, f := range st.Failures {
		resp.RecentFailures = append(resp.RecentFailures, &portbridgev1.EntityFailure{At: timestamppb.New(f.At), Path: f.Path, EntityRef: f.Ref, Blueprint: f.Blueprint,
			Identifier: f.Identifier, Action: f.Action, PortStatus: int32(f.Status), PortCode: f.Code, Message: f.Message, Permanent: f.Permanent, Attempt: uint32(f.Attempt)})
	}
	for _, c := range st.Conflicts {
		resp.RecentConflicts = append(resp.RecentConflicts, &portbridgev1.EntityConflict{At: timestamppb.New(c.At), Path: c.Path, Blueprint: c.Blueprint,
			Identifier: c.Identifier, EntityRefs: c.Refs, Winner: c.Winner})
	}
	resp.DeletionGuard = &portbridgev1.DeletionGuardStatus{Threshold: st.Guard.Threshold, Window: durationpb.New(st.Guard.Window), Refused: st.Guard.Refused}
	if r := st.Guard.Last; r != nil {
		resp.DeletionGuard.LastRefusal = refusal(r)
	}
	rl := st.RateLimit
	resp.PortRateLimit = &portbridgev1.RateLimitStatus{Remaining: int64(rl.Remaining), Waited: durationpb.New(rl.TotalWait), Throttled: uint64(rl.Throttled),
		Waiting: uint32(rl.Waiting), Capped: uint64(rl.Capped)}
	if !rl.Reset.IsZero() {
		resp.PortRateLimit.ResetAt = timestamppb.New(rl.Reset)
	}
	if !rl.WaitingUntil.IsZero() {
		resp.PortRateLimit.WaitingUntil = timestamppb.New(rl.WaitingUntil)
		resp.PortRateLimit.WaitReason = rl.WaitReason
	}
	if st.Current != nil {
		resp.CurrentResync = passStatus(st.Current)
	}
	if st.Last != nil {
		resp.LastResync = passStatus(st.Last)
	}
	if st.LastVerify != nil {
		resp.LastVerify = passStatus(st.LastVerify)
	}
	for _, p := range b.eng.Passes() {
		pr := &portbridgev1.PassResult{Pass: passStatus(p), Type: p.Type(), Follows: p.Follows}
		if !p.Finished.IsZero() {
			pr.ExitCode = int32(p.ExitCode())
		}
		resp.RecentPasses = append(resp.RecentPasses, pr)
	}
	resp.Ownership = ownershipStatus(b.eng.Ownership())
	if b.integ != nil {
		resp.PortIntegration = integrationStatus(b.integ.Status())
	}
	if b.sc != nil {
		// No URL user info or secret reaches a caller, whatever text an
		// error carried.
		redactStrings(resp.ProtoReflect(), b.sc.redactor)
	}
	return resp, nil
}

// redactStrings redacts every string field of m and of the messages in it.
func redactStrings(m protoreflect.Message, r *redact.Redactor) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					redactStrings(mv.Message(), r)
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := range v.List().Len() {
					redactStrings(v.List().Get(i).Message(), r)
				}
			} else if fd.Kind() == protoreflect.StringKind {
				l := v.List()
				for i := range l.Len() {
					if s := r.String(l.Get(i).String()); s != l.Get(i).String() {
						l.Set(i, protoreflect.ValueOfString(s))
					}
				}
			}
		case fd.Message() != nil:
			redactStrings(v.Message(), r)
		case fd.Kind() == protoreflect.StringKind:
			if s := r.String(v.String()); s != v.String() {
				m.Set(fd, protoreflect.ValueOfString(s))
			}
		}
		return true
	})
}

func ownershipStatus(o engine.OwnershipState) *portbridgev1.OwnershipStatus {
	out := &portbridgev1.OwnershipStatus{State: o.State, Detail: o.Detail, Adopted: uint64(o.Adopted), Changed: uint64(o.Changed),
		Orphans: uint64(o.Orphans), Bare: uint64(o.Bare)}
	out.At = stampOrNil(o.At)
	return out
}

func integrationStatus(s integration.Status) *portbridgev1.PortIntegrationStatus {
	src := "file"
	if s.MappingFromPort {
		src = "port"
	}
	return &portbridgev1.PortIntegrationStatus{Identifier: s.Identifier, Registered: s.Registered, RegisteredAt: stampOrNil(s.RegisteredAt),
		RegistrationError: s.RegistrationError, MappingSource: src, MappingFingerprint: s.MappingFingerprint, MappingAppliedAt: stampOrNil(s.MappingAppliedAt),
		MappingError: s.MappingError, LastPoll: stampOrNil(s.LastPoll), LastPollError: s.LastPollError, LastResyncRequest: stampOrNil(s.LastResyncRequest),
		LastReportError: s.LastReportError, ExampleKinds: s.ExampleKinds}
}

// stampOrNil converts a time, leaving the zero time unset.
func stampOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func refusal(r *engine.Refusal) *portbridgev1.DeletionRefusal {
	return &portbridgev1.DeletionRefusal{At: timestamppb.New(r.At), Path: r.Path, Reason: r.Reason, Message: r.Message, Refused: uint64(r.Refused),
		Planned: uint64(r.Planned), Owned: uint64(r.Owned)}
}

func peerStatus(p engine.PeerStatus) *portbridgev1.PeerStatus {
	ps := &portbridgev1.PeerStatus{Reachable: p.Reachable, LastError: p.LastError, Url: p.URL}
	if !p.LastSuccess.IsZero() {
		ps.LastSuccess = timestamppb.New(p.LastSuccess)
	}
	return ps
}

func syncCounts(c engine.Counts) *portbridgev1.SyncCounts {
	return &portbridgev1.SyncCounts{Seen: c.Seen, Pushed: c.Pushed, Unchanged: c.Unchanged, Skipped: c.Skipped, Deleted: c.Deleted, Failed: c.Failed}
}

func passStatus(s *engine.Report) *portbridgev1.ResyncStatus {
	rs := &portbridgev1.ResyncStatus{Id: s.ID, Trigger: s.Trigger, State: s.State, Error: s.Err, Totals: syncCounts(s.Totals),
		PerKind: map[string]*portbridgev1.SyncCounts{}, DeletionsSkippedReason: s.DeletionsSkipped, RefusedDeletions: uint64(s.Refused),
		Conflicts: uint64(s.ConflictCount), Suppressed: uint64(s.Suppressed), TotalItems: int64(s.Total)}
	if s.Refusal != nil {
		rs.RefusalReason = s.Refusal.Reason
	}
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
		rs.PerKind[k] = syncCounts(*c)
	}
	return rs
}
