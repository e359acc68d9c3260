package integration

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/port"
)

// onPass queues a pass event; the reporter sends it (the engine must not
// wait for Port).
func (l *Loop) onPass(ev engine.PassEvent) {
	l.mu.Lock()
	l.queue = append(l.queue, ev)
	l.mu.Unlock()
	select {
	case l.events <- struct{}{}:
	default:
	}
}

// reportLoop reports queued pass events in order until ctx ends, then
// what is left within a few seconds (a resync cut short by a shutdown
// reports its end).
func (l *Loop) reportLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownFlush)
			defer cancel()
			l.Flush(fctx)
			return
		case <-l.events:
		}
		l.Flush(ctx)
	}
}

// shutdownFlush bounds the reports sent after the loop was told to stop.
const shutdownFlush = 5 * time.Second

// Flush reports every queued pass event now (a one-shot run calls it
// before it exits).
func (l *Loop) Flush(ctx context.Context) {
	for {
		l.mu.Lock()
		if len(l.queue) == 0 {
			l.mu.Unlock()
			return
		}
		ev := l.queue[0]
		l.queue = l.queue[1:]
		registered := l.st.registered
		l.mu.Unlock()
		if registered {
			l.report(ctx, ev)
		}
	}
}

// report tells Port about one pass: its resync state (running at the
// start; completed or failed at the end, with the next scheduled resync),
// a summary line in the event log, and the raw examples.
func (l *Loop) report(ctx context.Context, ev engine.PassEvent) {
	r := ev.Report
	started := r.Started
	u := port.ResyncStateUpdate{Status: port.ResyncRunning, LastResyncStart: &started, Interval: ev.Interval}
	if !ev.Next.IsZero() {
		next := ev.Next
		u.NextResync = &next
	}
	if !ev.Finished {
		l.reportState(ctx, u)
		return
	}
	finished := r.Finished
	u.LastResyncEnd = &finished
	u.Status = port.ResyncCompleted
	level := "INFO"
	if r.State != "succeeded" {
		u.Status, level = port.ResyncFailed, "ERROR"
	} else if r.DeletionsSkipped != "" || r.Totals.Failed > 0 || r.ConflictCount > 0 {
		level = "WARNING"
	}
	l.reportState(ctx, u)
	l.logToPort(ctx, port.LogLine{Level: level, Message: summary(r), Extra: map[string]any{"resyncId": r.ID, "trigger": r.Trigger,
		"seen": r.Totals.Seen, "pushed": r.Totals.Pushed, "unchanged": r.Totals.Unchanged, "deleted": r.Totals.Deleted, "failed": r.Totals.Failed}})
	if l.opts.SendExamples {
		l.sendExamples(ctx, ev.Examples)
	}
}

// summary is the event-log line of a finished resync.
func summary(r *engine.Report) string {
	t := r.Totals
	s := fmt.Sprintf("resync %s (%s) %s in %s: seen %d, pushed %d, unchanged %d, skipped %d, deleted %d, failed %d", r.ID, r.Trigger, r.State,
		r.Finished.Sub(r.Started).Round(time.Millisecond), t.Seen, t.Pushed, t.Unchanged, t.Skipped, t.Deleted, t.Failed)
	if r.Err != "" {
		s += "; error: " + r.Err
	}
	if r.DeletionsSkipped != "" {
		s += "; deletions not applied: " + r.DeletionsSkipped
	}
	if r.ConflictCount > 0 {
		s += fmt.Sprintf("; %d conflicts", r.ConflictCount)
	}
	return s
}

func (l *Loop) reportState(ctx context.Context, u port.ResyncStateUpdate) {
	if _, err := l.port.PatchResyncState(ctx, l.opts.Identifier, u); err != nil {
		l.noteReportErr(fmt.Errorf("report resync state %s: %w", u.Status, err))
		return
	}
	l.mu.Lock()
	l.st.lastState = &u
	l.mu.Unlock()
}

// logToPort sends one line to the integration's event log.
func (l *Loop) logToPort(ctx context.Context, line port.LogLine) {
	l.mu.Lock()
	url := l.st.ingestURL
	l.mu.Unlock()
	if url == "" {
		return
	}
	if line.Timestamp.IsZero() {
		line.Timestamp = time.Now().UTC()
	}
	if err := l.port.PostIntegrationLogs(ctx, url, []port.LogLine{line}); err != nil {
		l.noteReportErr(err)
	}
}

func (l *Loop) noteReportErr(err error) {
	l.mu.Lock()
	l.st.reportErr = err.Error()
	l.mu.Unlock()
	l.log.Warn("reporting to Port failed (the sync is not affected)", "error", err)
}

// sendExamples sends, per kind of the mapping in force (as the mapping
// writes it), the first raw entities of the resync with secret-looking
// values masked and metadata.identifier added as the mapping sees it. A
// kind whose examples did not change since the last send is not sent again.
func (l *Loop) sendExamples(ctx context.Context, raw map[string][]catalog.Entity) {
	l.mu.Lock()
	resources := slices.Clone(l.st.kinds)
	l.mu.Unlock()
	named := map[string]bool{}
	for _, r := range resources {
		named[strings.ToLower(r.Kind)] = true
	}
	sent := map[string]bool{}
	for _, r := range resources {
		if sent[r.Kind] {
			continue
		}
		sent[r.Kind] = true
		var ents []catalog.Entity
		if r.Kind == "*" {
			for _, k := range slices.Sorted(maps.Keys(raw)) {
				if !named[k] {
					ents = append(ents, raw[k]...)
				}
			}
			ents = ents[:min(len(ents), engine.ExamplesPerKind)]
		} else {
			ents = raw[strings.ToLower(r.Kind)]
		}
		if len(ents) == 0 {
			continue
		}
		examples := make([]map[string]any, len(ents))
		for i, e := range ents {
			examples[i] = Mask(withIdentifier(e))
		}
		h := hashConfig(map[string]any{"examples": examples})
		l.mu.Lock()
		same := l.st.examplesSent[r.Kind] == h
		l.mu.Unlock()
		if same {
			continue
		}
		if err := l.port.PostKindExamples(ctx, l.opts.Identifier, r.Kind, examples); err != nil {
			l.noteReportErr(err)
			continue
		}
		l.mu.Lock()
		l.st.examplesSent[r.Kind] = h
		l.mu.Unlock()
	}
}

// withIdentifier adds metadata.identifier = lower(kind:namespace/name), as
// the mapping (and Port's own integration) sees the entity, so the jq
// playground gives what the sidecar gives.
func withIdentifier(e catalog.Entity) map[string]any {
	ref, err := catalog.RefOf(e)
	meta, _ := e["metadata"].(map[string]any)
	if err != nil || meta == nil {
		return e
	}
	m2 := maps.Clone(meta)
	m2["identifier"] = ref.String()
	out := maps.Clone(e)
	out["metadata"] = m2
	return out
}

// Status is the integration as status shows it.
type Status struct {
	Identifier         string
	Registered         bool
	RegisteredAt       time.Time
	RegistrationError  string
	MappingFromPort    bool
	MappingFingerprint string
	MappingAppliedAt   time.Time
	MappingError       string
	LastPoll           time.Time
	LastPollError      string
	LastResyncRequest  time.Time
	LastReportError    string
	ExampleKinds       []string
}

// Status reports the loop's state.
func (l *Loop) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Status{Identifier: l.opts.Identifier, Registered: l.st.registered, RegisteredAt: l.st.registeredAt, RegistrationError: l.st.regErr,
		MappingFromPort: l.opts.FromPort, MappingFingerprint: l.st.fingerprint, MappingAppliedAt: l.st.mappingAt, MappingError: l.st.mappingErr,
		LastPoll: l.st.lastPoll, LastPollError: l.st.pollErr, LastResyncRequest: l.st.lastRequest, LastReportError: l.st.reportErr,
		ExampleKinds: slices.Sorted(maps.Keys(l.st.examplesSent))}
}
