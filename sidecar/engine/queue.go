package engine

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/portbridge/portbridge/sidecar/state"
)

// maxInflightRefs bounds how many entities the change path works on at once.
const maxInflightRefs = 512

// pendingRef is the in-memory index entry of one Backstage ref with queued
// changes. The bodies stay in the state file.
type pendingRef struct {
	ref      string
	seqs     []uint64
	newest   state.QueueRef
	due      time.Time
	busy     bool // being applied
	queued   bool // in ready
	attempts int
}

// dispatcher is the change path's queue: it indexes stored notifications
// by entity (the newest observation wins), hands due entities to workers
// oldest first, and retries failed ones with backoff. Ready refs wait in a
// FIFO queue; refs due later (deletions in their grace period, retries) wait
// in a delayed set that is walked only when its earliest entry is due, so a
// burst of 100,000 changes costs O(1) per change.
type dispatcher struct {
	e    *Engine
	wake chan struct{}

	mu          sync.Mutex
	pending     map[string]*pendingRef // guarded by mu
	ready       []*pendingRef          // due now, FIFO; guarded by mu
	delayed     map[string]*pendingRef // due later; guarded by mu
	delayScanAt time.Time              // earliest due in delayed; guarded by mu
	inflight    int                    // guarded by mu
	retrying    int                    // guarded by mu (gauge)
	deletions   int                    // guarded by mu (gauge)
}

func newDispatcher(e *Engine) *dispatcher {
	return &dispatcher{e: e, wake: make(chan struct{}, 1), pending: map[string]*pendingRef{}, delayed: map[string]*pendingRef{}}
}

// Publish stores a batch durably, then indexes it for the workers. It
// refuses when the state file is gone (nothing stored there would be
// read again).
func (e *Engine) Publish(ctx context.Context, changes []state.Change, fullSnapshot bool) (uint64, error) {
	if p := e.fileErr.Load(); p != nil {
		return 0, fmt.Errorf("%w: %w", ErrNotReady, *p)
	}
	// One stat per batch: a change stored in a deleted file would be lost.
	if err := e.opts.Store.CheckFile(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	refs, depth, err := e.opts.Store.Enqueue(ctx, changes, fullSnapshot)
	if err != nil {
		e.events.setErr(err)
		return 0, err
	}
	e.metrics.received.Add(float64(len(changes)))
	e.receivedN.Add(uint64(len(changes)))
	e.queue.index(refs)
	if fullSnapshot {
		// The publisher has no earlier view: deletions it missed are only
		// found by a full resync.
		e.passes.request("snapshot", false)
	}
	return depth, nil
}

// load indexes the queue a previous process left, quarantining items that
// cannot be decoded, and asks for the reconciling resync of a full snapshot
// that was stored but not reconciled.
func (d *dispatcher) load() error {
	e := d.e
	var refs []state.QueueRef
	bad := 0
	err := e.opts.Store.QueueScan(func(qc state.QueuedChange) error {
		refs = append(refs, state.QueueRef{Seq: qc.Seq, Ref: qc.Ref, ObservedAt: qc.ObservedAt, ReceivedAt: qc.ReceivedAt, Deleted: qc.Deleted})
		return nil
	}, func(seq uint64, err error) {
		bad++
		e.metrics.quarantined.Inc()
		e.log.Error("queued change cannot be decoded; moved to the quarantine", "seq", seq, "error", err)
	})
	if err != nil {
		return fmt.Errorf("load the queue from %s: %w", e.opts.Store.Path(), err)
	}
	if len(refs) > 0 || bad > 0 {
		e.log.Info("replaying queued changes from the state file", "changes", len(refs), "quarantined", bad)
	}
	d.index(refs)
	if _, pending, err := e.opts.Store.SnapshotPending(); err != nil {
		e.log.Warn("cannot read the snapshot flag", "error", err)
	} else if pending {
		e.log.Info("a full snapshot stored before the restart was not reconciled yet; a resync follows")
		e.passes.request("snapshot", false)
	}
	return nil
}

// index adds stored changes to the in-memory index. Among changes of one
// ref the newest observation wins; ties go to the later stored one.
func (d *dispatcher) index(refs []state.QueueRef) {
	d.mu.Lock()
	now := time.Now()
	for _, r := range refs {
		p := d.pending[r.Ref]
		if p == nil {
			p = &pendingRef{ref: r.Ref}
			d.pending[r.Ref] = p
		}
		p.seqs = append(p.seqs, r.Seq)
		if len(p.seqs) == 1 || !r.ObservedAt.Before(p.newest.ObservedAt) {
			p.newest = r
			p.attempts = 0
			p.due = time.Time{}
			if r.Deleted {
				p.due = r.ReceivedAt.Add(d.e.opts.DeleteGracePeriod)
			}
		}
		d.schedule(p, now)
	}
	d.mu.Unlock()
	d.kick()
}

func (d *dispatcher) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// schedule puts p in the ready queue when it is due, or in the delayed set;
// d.mu must be held. Busy refs are scheduled again when they finish.
func (d *dispatcher) schedule(p *pendingRef, now time.Time) {
	if p.busy || p.queued {
		return
	}
	if p.due.After(now) {
		d.delayed[p.ref] = p
		if d.delayScanAt.IsZero() || p.due.Before(d.delayScanAt) {
			d.delayScanAt = p.due
		}
		return
	}
	delete(d.delayed, p.ref)
	p.queued = true
	d.ready = append(d.ready, p)
}

// updateGauges refreshes status counters; d.mu must be held. It walks the
// index, so it runs on a timer and for status, not per change.
func (d *dispatcher) updateGauges() {
	retrying, deletions := 0, 0
	for _, p := range d.pending {
		if p.attempts > 0 {
			retrying++
		}
		if p.newest.Deleted {
			deletions++
		}
	}
	d.retrying, d.deletions = retrying, deletions
	d.e.metrics.queueDepth.Set(float64(d.e.opts.Store.QueueDepth()))
	if n, err := d.e.opts.Store.ParkedCount(); err == nil {
		d.e.metrics.parked.Set(float64(n))
	}
	if n, err := d.e.opts.Store.QuarantineCount(); err == nil {
		d.e.metrics.quarantinedNow.Set(float64(n))
	}
	if oldest, ok := d.e.opts.Store.QueueOldest(); ok {
		d.e.metrics.queueOldest.Set(time.Since(oldest).Seconds())
	} else {
		d.e.metrics.queueOldest.Set(0)
	}
	d.e.metrics.retrying.Set(float64(retrying))
}

// gauges returns the retrying and pending-deletion counts.
func (d *dispatcher) gauges() (retrying, deletions int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.updateGauges()
	return d.retrying, d.deletions
}

func (d *dispatcher) hasPending(ref string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.pending[ref]
	return ok
}

// pendingDeletions counts refs whose newest queued change is a deletion,
// other than except and those weighed already: deletions announced but not
// weighed yet, which the guard weighs together with the one at hand.
func (d *dispatcher) pendingDeletions(except string, weighed func(string) bool) int {
	d.mu.Lock()
	var refs []string
	for r, p := range d.pending {
		if p.newest.Deleted && r != except {
			refs = append(refs, r)
		}
	}
	d.mu.Unlock()
	n := 0
	for _, r := range refs {
		if !weighed(r) {
			n++
		}
	}
	return n
}

// size is the number of refs with queued changes.
func (d *dispatcher) size() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending)
}

func (d *dispatcher) inflightCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inflight
}

// drain waits until no ref is being applied.
func (d *dispatcher) drain() {
	for d.inflightCount() > 0 {
		time.Sleep(10 * time.Millisecond)
	}
}

// run hands due refs to workers, oldest first, until ctx ends.
func (d *dispatcher) run(ctx context.Context) {
	if !d.e.waitPrepared(ctx) {
		return
	}
	sem := make(chan struct{}, d.e.opts.Workers)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	gauges := time.NewTicker(time.Second)
	defer gauges.Stop()
	for {
		now := time.Now()
		next := time.Duration(0)
		var launch []*pendingRef
		d.mu.Lock()
		if !d.delayScanAt.IsZero() && !now.Before(d.delayScanAt) {
			d.delayScanAt = time.Time{}
			for _, p := range d.delayed {
				if p.due.After(now) {
					if d.delayScanAt.IsZero() || p.due.Before(d.delayScanAt) {
						d.delayScanAt = p.due
					}
					continue
				}
				d.schedule(p, now)
			}
		}
		if !d.delayScanAt.IsZero() {
			next = max(d.delayScanAt.Sub(now), time.Millisecond)
		}
		for len(d.ready) > 0 && d.inflight+len(launch) < maxInflightRefs {
			p := d.ready[0]
			d.ready[0] = nil
			d.ready = d.ready[1:]
			p.queued = false
			if p.busy || d.pending[p.ref] != p {
				continue
			}
			p.busy = true
			launch = append(launch, p)
		}
		d.inflight += len(launch)
		d.mu.Unlock()
		for i, p := range launch {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				d.abandon(launch[i:])
				return
			}
			go d.apply(ctx, p, sem)
		}
		if next <= 0 {
			next = time.Hour
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-timer.C:
		case <-gauges.C:
			d.mu.Lock()
			d.updateGauges()
			d.mu.Unlock()
		}
	}
}

// abandon returns refs taken for launch to the index unapplied.
func (d *dispatcher) abandon(ps []*pendingRef) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range ps {
		p.busy = false
		d.inflight--
	}
}

// apply works on one ref (the semaphore slot is held only while mapping),
// then acknowledges, retries or parks.
func (d *dispatcher) apply(ctx context.Context, p *pendingRef, sem chan struct{}) {
	released := false
	release := func() {
		if !released {
			released = true
			<-sem
		}
	}
	defer release()

	d.mu.Lock()
	seqs := slices.Clone(p.seqs)
	newest := p.newest
	attempt := p.attempts + 1
	d.mu.Unlock()

	var out changeOutcome
	if err := d.e.locks.lock(ctx, p.ref); err != nil {
		out.err = err
	} else {
		start := time.Now()
		out = d.e.applyChange(ctx, p.ref, newest, attempt, release)
		d.e.locks.unlock(p.ref)
		if out.ok() {
			d.e.metrics.applySeconds.Observe(time.Since(start).Seconds())
		}
	}
	d.finish(ctx, p, seqs, out)
}

// finish acknowledges seqs when the ref is done (applied, or parked after a
// permanent failure), or schedules a retry.
func (d *dispatcher) finish(ctx context.Context, p *pendingRef, seqs []uint64, out changeOutcome) {
	e := d.e
	done := out.ok() || out.permanent()
	if out.permanent() {
		e.park(p.ref, out.failures)
	}
	var ackErr error
	if done {
		ackErr = e.opts.Store.QueueAck(seqs...)
		if ackErr != nil {
			e.events.setErr(ackErr)
			done = false
		}
	}
	d.mu.Lock()
	defer d.kick()
	defer d.mu.Unlock()
	d.inflight--
	p.busy = false
	if !done {
		if ctx.Err() != nil {
			return // shutting down: the queue keeps the change
		}
		p.attempts++
		p.due = time.Now().Add(e.backoff(p.attempts))
		e.log.Warn("change not applied; will retry", "ref", p.ref, "attempt", p.attempts, "retry_in", time.Until(p.due).Round(time.Millisecond),
			"error", out.errorText(ackErr))
		d.schedule(p, time.Now())
		return
	}
	p.seqs = slices.DeleteFunc(p.seqs, func(s uint64) bool { return slices.Contains(seqs, s) })
	p.attempts = 0
	if len(p.seqs) == 0 {
		delete(d.pending, p.ref)
		delete(d.delayed, p.ref)
	} else {
		d.schedule(p, time.Now())
	}
}
