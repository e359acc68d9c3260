package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/plan"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/state"
)

// Status is the engine's state for GetStatus and `portbridge status`.
type Status struct {
	Version     string
	StartedAt   time.Time
	LastError   string
	LastErrorAt time.Time

	Queue     QueueStatus
	Port      PeerStatus
	Backstage PeerStatus
	RateLimit port.RateLimitState

	Current, Last, LastVerify *Report
	Owned                     map[string]uint64

	Parked       int
	ParkedRecent map[string]state.Parked
	Failures     []Failure  // newest first
	Conflicts    []Conflict // newest first
	Guard        GuardStatus
	Policy       string
}

// QueueStatus describes the durable change queue.
type QueueStatus struct {
	Depth            uint64
	OldestAge        time.Duration // 0 when empty
	Retrying         int
	PendingDeletions int
	Quarantined      int
	QuarantineRecent []state.Quarantined
}

// PeerStatus describes a remote API.
type PeerStatus struct {
	Known, Reachable bool
	LastSuccess      time.Time
	LastError        string
	URL              string
}

// GuardStatus describes the deletion guard.
type GuardStatus struct {
	Threshold float64
	Window    time.Duration
	Last      *Refusal
	// Refused counts entities whose deletion was refused, per path.
	Refused map[string]uint64
}

// Status reports the engine's state. It reads counters, not the records.
func (e *Engine) Status(context.Context) (*Status, error) {
	retrying, deletions := e.queue.gauges()
	st := &Status{Version: e.opts.Version, StartedAt: e.started, Policy: e.policy.Name(),
		Queue: QueueStatus{Depth: e.opts.Store.QueueDepth(), Retrying: retrying, PendingDeletions: deletions}, RateLimit: e.opts.Port.RateLimit()}
	if oldest, ok := e.opts.Store.QueueOldest(); ok {
		st.Queue.OldestAge = time.Since(oldest)
	}
	var err error
	if st.Queue.Quarantined, err = e.opts.Store.QuarantineCount(); err != nil {
		return nil, fmt.Errorf("count quarantined changes: %w", err)
	}
	if st.Queue.Quarantined > 0 {
		if st.Queue.QuarantineRecent, err = e.opts.Store.QuarantineList(5); err != nil {
			return nil, fmt.Errorf("list quarantined changes: %w", err)
		}
	}
	e.metrics.quarantinedNow.Set(float64(st.Queue.Quarantined))
	if st.Parked, err = e.opts.Store.ParkedCount(); err != nil {
		return nil, fmt.Errorf("count parked entities: %w", err)
	}
	e.metrics.parked.Set(float64(st.Parked))
	if st.Parked > 0 {
		if st.ParkedRecent, err = e.opts.Store.ParkedRefs(10); err != nil {
			return nil, fmt.Errorf("list parked entities: %w", err)
		}
	}
	if st.Owned, err = e.opts.Store.OwnedCounts(); err != nil {
		return nil, fmt.Errorf("count owned entities: %w", err)
	}
	e.mu.Lock()
	st.Port = peerStatus(e.portPeer, e.opts.PortURL)
	st.Backstage = peerStatus(e.catalogPeer, e.opts.CatalogURL)
	e.mu.Unlock()

	v := e.events
	v.mu.Lock()
	st.LastError, st.LastErrorAt = v.lastErr, v.lastErrAt
	st.Failures = slices.Clone(v.failures)
	slices.Reverse(st.Failures)
	st.Conflicts = slices.Clone(v.conflicts)
	slices.Reverse(st.Conflicts)
	st.Guard = GuardStatus{Threshold: e.settingsNow().DeletionThreshold, Window: e.opts.DeletionWindow, Refused: map[string]uint64{}}
	for k, n := range v.refused {
		st.Guard.Refused[k] = n
	}
	if v.refusal != nil {
		r := *v.refusal
		st.Guard.Last = &r
	}
	v.mu.Unlock()

	r := e.passes
	r.mu.Lock()
	for dst, src := range map[**Report]*Report{&st.Current: r.current, &st.Last: r.last, &st.LastVerify: r.lastVerify} {
		if src != nil {
			*dst = src.Snapshot()
		}
	}
	r.mu.Unlock()
	return st, nil
}

func peerStatus(p peer, url string) PeerStatus {
	return PeerStatus{Known: p.known, Reachable: p.ok, LastSuccess: p.lastSuccess, LastError: p.lastErr, URL: url}
}

// ErrInvalidMapping is wrapped by PreviewMapping's error for a mapping given
// in the request that does not load or compile.
var ErrInvalidMapping = errors.New("invalid mapping")

// ErrNoPreviewMapping is returned by PreviewMapping when a request brings its
// own mapping and the engine was built without CompileMapping.
var ErrNoPreviewMapping = errors.New("this sidecar cannot compile mappings given in a request")

// PreviewMapping maps one entity with the configured mapping, or with
// mappingYAML when given, and writes nothing.
func (e *Engine) PreviewMapping(ctx context.Context, entity map[string]any, mappingYAML string) (res mapping.Result, err error) {
	m := e.mapperNow()
	if mappingYAML != "" {
		if e.opts.CompileMapping == nil {
			return mapping.Result{}, ErrNoPreviewMapping
		}
		if m, err = e.opts.CompileMapping([]byte(mappingYAML)); err != nil {
			return mapping.Result{}, fmt.Errorf("%w: %w", ErrInvalidMapping, err)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mapping the entity panicked: %v", r)
		}
	}()
	return m.Map(ctx, entity), nil
}

// describeUpdates fills in the changed fields of a dry run's updates,
// reading what Port holds now (a dry run can afford the reads; a real run
// does not need them).
func (e *Engine) describeUpdates(ctx context.Context, ch *plan.Changes) error {
	byBP := map[string][]int{}
	for i, c := range ch.Update {
		byBP[c.Blueprint] = append(byBP[c.Blueprint], i)
	}
	for bp, idx := range byBP {
		for start := 0; start < len(idx); start += 100 {
			part := idx[start:min(start+100, len(idx))]
			ids := make([]any, len(part))
			for j, i := range part {
				ids[j] = ch.Update[i].Identifier
			}
			q := port.SearchRequest{Query: map[string]any{"combinator": "and", "rules": []any{map[string]any{"property": "$identifier", "operator": "in", "value": ids}}}}
			have := map[string]map[string]any{}
			for ent, err := range e.opts.Port.SearchEntities(ctx, bp, q) {
				if err != nil {
					return fmt.Errorf("read %d entities of blueprint %s from Port: %w", len(ids), bp, err)
				}
				id, _ := ent.Identifier.(string)
				have[id] = jsonObject(normalEntity(ent))
			}
			for _, i := range part {
				c := &ch.Update[i]
				newEnt, _ := c.Entity.(port.Entity)
				old, ok := have[c.Identifier]
				if !ok {
					c.Reason += " (missing in Port)"
				}
				c.Fields = plan.FieldChanges(old, jsonObject(normalEntity(newEnt)))
			}
		}
	}
	return nil
}

// jsonObject round-trips v through JSON, so values compare as they would
// after Port stored them.
func jsonObject(v any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// ExitCode is what `portbridge sync --once` exits with after this pass:
// 0 all done; 1 the pass failed (catalog scan, setup); 4 deletions refused
// by the guard (threshold, threshold 0, incomplete scan); 3 entities Port
// did not take; 5 conflicts (several Backstage entities map to one Port
// entity). The first that applies, in that order.
func (r *Report) ExitCode() int {
	s := r.Snapshot()
	switch {
	case s.Refusal != nil:
		return ExitRefused
	case s.State == "failed" && s.Totals.Failed == 0:
		return ExitFailed
	case s.Totals.Failed > 0:
		return ExitEntityFailures
	case s.ConflictCount > 0:
		return ExitConflicts
	case s.State == "failed":
		return ExitFailed
	}
	return 0
}

// The exit codes of a pass.
const (
	ExitFailed         = 1
	ExitEntityFailures = 3
	ExitRefused        = 4
	ExitConflicts      = 5
)
