package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/plan"
)

// Counts counts what a pass did.
type Counts struct {
	Seen, Pushed, Unchanged, Skipped, Deleted, Failed uint64
}

func (c *Counts) add(o Counts) {
	c.Seen += o.Seen
	c.Pushed += o.Pushed
	c.Unchanged += o.Unchanged
	c.Skipped += o.Skipped
	c.Deleted += o.Deleted
	c.Failed += o.Failed
}

// Report describes one resync or verify pass. Read it through Snapshot
// while the pass runs.
type Report struct {
	ID, Trigger string
	Verify      bool
	DryRun      bool
	Started     time.Time
	Finished    time.Time
	State       string // pending, running, succeeded, failed
	Err         string
	Totals      Counts
	PerKind     map[string]*Counts
	// Total is the catalog's totalItems once known (-1 before), for
	// progress.
	Total int

	// DeletionsSkipped says why planned deletions were not applied
	// (incomplete scan, threshold, policy, failures).
	DeletionsSkipped string
	// Refusal is set when the guard refused deletions; Refused counts them.
	Refusal *Refusal
	Refused int
	// Suppressed counts changes the policy held back.
	Suppressed int
	// Conflicts are Port entities several Backstage entities map to (at
	// most recentMax kept; ConflictCount counts all).
	Conflicts     []plan.Conflict
	ConflictCount int
	// Plan is the whole plan of a dry run (nil otherwise).
	Plan *plan.Changes
	// BlueprintsToCreate are the blueprints a real run would create first
	// (dry run).
	BlueprintsToCreate []string
	// Follows is, for a verify pass requested with a resync, that
	// resync's id.
	Follows string

	mu       sync.Mutex
	examples map[string][]catalog.Entity // first raw entities per kind (resync)
}

func newReport(trigger string, verify, dryRun bool) *Report {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "resync-"
	if verify {
		prefix = "verify-"
	}
	r := &Report{ID: prefix + time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b), Trigger: trigger, Verify: verify, DryRun: dryRun,
		State: "pending", PerKind: map[string]*Counts{}, Total: -1}
	if dryRun {
		r.Plan = &plan.Changes{}
	}
	return r
}

// Type is "resync" or "verify".
func (r *Report) Type() string {
	if r.Verify {
		return "verify"
	}
	return "resync"
}

// setTotal records the catalog's count once a scan knows it.
func (r *Report) setTotal(n int) {
	r.mu.Lock()
	r.Total = n
	r.mu.Unlock()
}

func (r *Report) count(kind string, c Counts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Totals.add(c)
	k := r.PerKind[kind]
	if k == nil {
		k = &Counts{}
		r.PerKind[kind] = k
	}
	k.add(c)
}

// note adds what a plan held back (and, in a dry run, the plan itself).
func (r *Report) note(ch *plan.Changes) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ConflictCount += len(ch.Conflicts)
	for _, c := range ch.Conflicts {
		if len(r.Conflicts) < recentMax {
			r.Conflicts = append(r.Conflicts, c)
		}
	}
	r.Suppressed += len(ch.SuppressedUpdates) + len(ch.SuppressedDeletes)
	if ch.Refusal != nil && len(ch.RefusedDeletes) > 0 {
		r.Refusal = &Refusal{At: time.Now(), Path: r.Type(), Reason: string(ch.Refusal.Reason), Message: ch.Refusal.Message, Refused: len(ch.RefusedDeletes),
			Planned: ch.Refusal.Planned, Owned: ch.Refusal.Owned}
		r.Refused += len(ch.RefusedDeletes)
		r.DeletionsSkipped = ch.Refusal.Message
	}
	if len(ch.SuppressedDeletes) > 0 && r.DeletionsSkipped == "" {
		r.DeletionsSkipped = fmt.Sprintf("policy %s never deletes (%d deletions suppressed)", ch.Policy, len(ch.SuppressedDeletes))
	}
	if r.Plan != nil {
		r.Plan.Merge(ch)
	}
}

func (r *Report) skipDeletions(why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.DeletionsSkipped == "" {
		r.DeletionsSkipped = why
	}
}

// Snapshot returns a copy safe to read while the pass runs.
func (r *Report) Snapshot() *Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &Report{ID: r.ID, Trigger: r.Trigger, Verify: r.Verify, DryRun: r.DryRun, Started: r.Started, Finished: r.Finished, State: r.State, Err: r.Err,
		Totals: r.Totals, PerKind: map[string]*Counts{}, Total: r.Total, DeletionsSkipped: r.DeletionsSkipped, Refused: r.Refused, Suppressed: r.Suppressed,
		Conflicts: slices.Clone(r.Conflicts), ConflictCount: r.ConflictCount, Plan: r.Plan, BlueprintsToCreate: slices.Clone(r.BlueprintsToCreate), Follows: r.Follows}
	if r.Refusal != nil {
		rf := *r.Refusal
		c.Refusal = &rf
	}
	for k, v := range r.PerKind {
		vv := *v
		c.PerKind[k] = &vv
	}
	return c
}

// runner runs the passes one at a time: at start, on the intervals, and on
// request, and keeps their reports for status.
type runner struct {
	e   *Engine
	req chan *Report

	mu          sync.Mutex
	next        time.Time // when the timer starts the next resync; guarded by mu
	verifyAfter bool      // guarded by mu
	queued      *Report   // requested, not started; guarded by mu
	current     *Report   // guarded by mu
	last        *Report   // guarded by mu
	lastVerify  *Report   // guarded by mu
	done        map[string]*Report
}

func newRunner(e *Engine) *runner {
	return &runner{e: e, req: make(chan *Report, 1), done: map[string]*Report{}}
}

// TriggerResync starts a resync (and a verify pass after it when verify is
// set), or reports the one that is running or already requested.
func (e *Engine) TriggerResync(_ context.Context, reason string, verify bool) (string, bool, error) {
	if reason == "" {
		reason = "rpc"
	}
	id, already := e.passes.request(reason, verify)
	return id, already, nil
}

// Current returns a snapshot of the pass running now.
func (e *Engine) Current() (*Report, bool) {
	r := e.passes
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current == nil {
		return nil, false
	}
	return r.current.Snapshot(), true
}

// Pass returns the report of a pass by id (running, queued or among the
// recent finished ones), for callers that wait for a triggered resync.
func (e *Engine) Pass(id string) (*Report, bool) {
	r := e.passes
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rep := range []*Report{r.current, r.queued} {
		if rep != nil && rep.ID == id {
			return rep.Snapshot(), true
		}
	}
	if rep, ok := r.done[id]; ok {
		return rep.Snapshot(), true
	}
	return nil, false
}

func (r *runner) request(trigger string, verify bool) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current != nil && !r.current.Verify {
		if verify {
			r.verifyAfter = true
		}
		return r.current.ID, true
	}
	if verify {
		r.verifyAfter = true
	}
	if r.queued != nil {
		return r.queued.ID, true
	}
	rep := newReport(trigger, false, false)
	select {
	case r.req <- rep:
		r.queued = rep
	default:
		return "", true
	}
	return rep.ID, false
}

// run schedules passes until ctx ends.
func (r *runner) run(ctx context.Context) {
	e := r.e
	if !e.waitPrepared(ctx) {
		return
	}
	if e.opts.ResyncOnStart {
		r.request("start", false)
	}
	resyncTick := newTicker(e.opts.ResyncInterval)
	r.setNext(e.opts.ResyncInterval)
	verifyTick := newTicker(e.opts.VerifyInterval)
	defer resyncTick.stop()
	defer verifyTick.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case rep := <-r.req:
			if rep.Trigger == "snapshot" {
				// A publisher's full snapshot is in the queue: apply it
				// first, so the resync compares against it instead of
				// skipping every entity that has a queued notification.
				r.waitQueueDrained(ctx, 5*time.Minute)
			}
			_, _ = r.pass(ctx, rep, e.resync)
			r.mu.Lock()
			verify := r.verifyAfter
			r.verifyAfter = false
			r.mu.Unlock()
			if verify && ctx.Err() == nil {
				vr := newReport("rpc", true, false)
				vr.Follows = rep.ID
				_, _ = r.pass(ctx, vr, e.verify)
			}
		case <-resyncTick.c():
			r.setNext(e.opts.ResyncInterval)
			r.request("interval", false)
		case <-verifyTick.c():
			_, _ = r.pass(ctx, newReport("interval", true, false), e.verify)
		}
	}
}

// pass runs one pass with its bookkeeping: start and end lines, progress
// every 5 s, status, metrics.
func (r *runner) pass(ctx context.Context, rep *Report, fn func(context.Context, *Report, *slog.Logger) error) (*Report, error) {
	e := r.e
	rep.mu.Lock()
	rep.Started, rep.State = time.Now(), "running"
	rep.mu.Unlock()
	r.mu.Lock()
	r.current = rep
	if r.queued == rep {
		r.queued = nil
	}
	r.mu.Unlock()
	typ := rep.Type()
	log := e.log.With(typ, rep.ID, "trigger", rep.Trigger, "dry_run", rep.DryRun)
	log.Info(typ + " started")
	e.emit(rep, false)
	stopProgress := make(chan struct{})
	var pwg sync.WaitGroup
	if e.opts.ProgressInterval > 0 {
		pwg.Go(func() { progress(log, typ, rep, e.opts.ProgressInterval, stopProgress) })
	}

	err := fn(ctx, rep, log)

	close(stopProgress)
	pwg.Wait()
	rep.mu.Lock()
	rep.Finished = time.Now()
	if err != nil {
		rep.State, rep.Err = "failed", err.Error()
	} else {
		rep.State = "succeeded"
	}
	rep.mu.Unlock()
	r.mu.Lock()
	r.current = nil
	if !rep.DryRun {
		if rep.Verify {
			r.lastVerify = rep
		} else {
			r.last = rep
		}
	}
	r.done[rep.ID] = rep
	if len(r.done) > 20 {
		oldest := ""
		for id, d := range r.done {
			if oldest == "" || d.Finished.Before(r.done[oldest].Finished) {
				oldest = id
			}
		}
		delete(r.done, oldest)
	}
	r.mu.Unlock()
	e.observePass(rep)
	e.emit(rep, true)
	snap := rep.Snapshot()
	attrs := []any{"seconds", snap.Finished.Sub(snap.Started).Seconds(), "seen", snap.Totals.Seen, "pushed", snap.Totals.Pushed,
		"unchanged", snap.Totals.Unchanged, "skipped", snap.Totals.Skipped, "deleted", snap.Totals.Deleted, "failed", snap.Totals.Failed,
		"conflicts", snap.ConflictCount, "per_kind", perKind(snap)}
	if snap.DeletionsSkipped != "" {
		log.Warn(typ+" did not delete", "reason", snap.DeletionsSkipped)
	}
	if err != nil {
		e.events.setErr(err)
		log.Error(typ+" failed", append(attrs, "error", err)...)
	} else {
		log.Info(typ+" finished", attrs...)
	}
	return rep, err
}

// perKind renders per-kind counts compactly for a log line.
func perKind(s *Report) map[string]string {
	out := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(s.PerKind)) {
		c := s.PerKind[k]
		if k == "" {
			k = "unknown"
		}
		out[k] = fmt.Sprintf("seen %d pushed %d unchanged %d skipped %d deleted %d failed %d", c.Seen, c.Pushed, c.Unchanged, c.Skipped, c.Deleted, c.Failed)
	}
	return out
}

// progress logs a pass's progress every interval until stop: seen of
// total, percent, rate and ETA.
func progress(log *slog.Logger, typ string, rep *Report, interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s := rep.Snapshot()
		log.Info(typ+" progress", ProgressAttrs(s, time.Now())...)
	}
}

// ProgressAttrs describes a running pass: seen, total, percent, rate, ETA.
func ProgressAttrs(s *Report, now time.Time) []any {
	elapsed := now.Sub(s.Started).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(s.Totals.Seen) / elapsed
	}
	attrs := []any{"seen", s.Totals.Seen, "total", s.Total, "per_second", int(rate), "pushed", s.Totals.Pushed, "unchanged", s.Totals.Unchanged, "failed", s.Totals.Failed}
	if s.Total > 0 {
		pct := min(100, float64(s.Totals.Seen)*100/float64(s.Total))
		attrs = append(attrs, "percent", fmt.Sprintf("%.1f", pct))
		if rate > 0 && int(s.Totals.Seen) < s.Total {
			eta := time.Duration(float64(s.Total-int(s.Totals.Seen)) / rate * float64(time.Second))
			attrs = append(attrs, "eta", eta.Round(time.Second).String())
		}
	}
	return attrs
}

func (e *Engine) observePass(r *Report) {
	s := r.Snapshot()
	if s.DryRun {
		return
	}
	typ := s.Type()
	m := e.metrics
	m.resyncs.WithLabelValues(typ, s.State).Inc()
	m.resyncSeconds.WithLabelValues(typ).Set(s.Finished.Sub(s.Started).Seconds())
	if s.State == "succeeded" {
		m.resyncLastEnd.WithLabelValues(typ).Set(float64(s.Finished.Unix()))
	}
	if s.Refused > 0 && !s.Verify {
		m.deletionsRefused.Inc()
	}
	for name, v := range map[string]uint64{"seen": s.Totals.Seen, "pushed": s.Totals.Pushed, "unchanged": s.Totals.Unchanged,
		"skipped": s.Totals.Skipped, "deleted": s.Totals.Deleted, "failed": s.Totals.Failed} {
		m.resyncEntities.WithLabelValues(typ, name).Set(float64(v))
	}
}

type ticker struct{ t *time.Ticker }

func newTicker(d time.Duration) ticker {
	if d <= 0 {
		return ticker{}
	}
	return ticker{time.NewTicker(d)}
}

func (t ticker) c() <-chan time.Time {
	if t.t == nil {
		return nil
	}
	return t.t.C
}

func (t ticker) stop() {
	if t.t != nil {
		t.t.Stop()
	}
}

// waitQueueDrained waits until no change is queued, ctx ends or max passes.
func (r *runner) waitQueueDrained(ctx context.Context, max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) && r.e.queue.size() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Resync runs one full resync now and returns its report; with dryRun it
// only plans (no Port writes, no state writes). It waits for Run's setup
// (Prepare, the ownership rebuild); Run must be running (use RunOnce
// outside Run).
func (e *Engine) Resync(ctx context.Context, trigger string, dryRun bool) (*Report, error) {
	if !e.waitPrepared(ctx) {
		return nil, fmt.Errorf("resync: %w", context.Cause(ctx))
	}
	return e.passes.pass(ctx, newReport(trigger, false, dryRun), e.resync)
}

// Verify runs one verify pass now.
func (e *Engine) Verify(ctx context.Context, trigger string) (*Report, error) {
	return e.passes.pass(ctx, newReport(trigger, true, false), e.verify)
}

// RunOnce runs one resync with its own registry loop and returns when its
// writes are done: the one-shot mode (`portbridge sync --once`). Do not call
// it while Run is running.
func (e *Engine) RunOnce(ctx context.Context, dryRun bool) (*Report, error) {
	var toCreate []string
	if e.opts.Prepare != nil {
		m, create, err := e.opts.Prepare(ctx, dryRun)
		if err != nil {
			return nil, fmt.Errorf("setup: %w", err)
		}
		if m != nil {
			if err := e.install(m); err != nil {
				return nil, fmt.Errorf("setup: %w", err)
			}
		}
		toCreate = create
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		e.reg.Run(rctx)
		close(done)
	}()
	e.rebuildIfNeeded(ctx, dryRun)
	rep := newReport("once", false, dryRun)
	rep.BlueprintsToCreate = toCreate
	rep, err := e.passes.pass(ctx, rep, e.resync)
	cancel()
	<-done
	if dryRun && rep.Plan != nil {
		if derr := e.describeUpdates(ctx, rep.Plan); derr != nil {
			e.log.Warn("dry run: cannot read Port's current content for the changed fields", "error", derr)
		}
	}
	return rep, err
}

// setNext records when the resync timer fires next (now + interval; zero
// without a timer).
func (r *runner) setNext(interval time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next = time.Time{}
	if interval > 0 {
		r.next = time.Now().Add(interval)
	}
}

func (r *runner) nextResync() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.next
}

// Passes returns snapshots of the recent passes — finished (the last 20),
// running and queued — oldest first, for callers that wait for one by id.
func (e *Engine) Passes() []*Report {
	r := e.passes
	r.mu.Lock()
	all := make([]*Report, 0, len(r.done)+2)
	for _, rep := range r.done {
		all = append(all, rep)
	}
	for _, rep := range []*Report{r.current, r.queued} {
		if rep != nil {
			all = append(all, rep)
		}
	}
	r.mu.Unlock()
	out := make([]*Report, len(all))
	for i, rep := range all {
		out[i] = rep.Snapshot()
	}
	slices.SortStableFunc(out, func(a, b *Report) int {
		switch {
		case a.Started.IsZero() && !b.Started.IsZero():
			return 1
		case b.Started.IsZero() && !a.Started.IsZero():
			return -1
		}
		return a.Started.Compare(b.Started)
	})
	return out
}
