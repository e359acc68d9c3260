// Package registry is the ownership layer between the engine and Port, as
// external-dns's registry is: it reads what the sidecar owns (for plan
// inputs) and applies a plan.Changes value — Port writes through bulk
// upserts and deletes, then ownership commits for exactly what Port
// confirmed. It is the only place that builds a state.Write.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portbridge/portbridge/sidecar/plan"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/state"
)

// Store is the ownership store (the state file).
type Store interface {
	Refs(refs []string) ([]state.RefRecord, []bool, error)
	Owners(keys []state.Key) (map[state.Key][]state.Owner, error)
	Commit(state.Write) error
}

// Provider writes to Port.
type Provider interface {
	BulkUpsert(ctx context.Context, blueprint string, entities []port.Entity, opts port.UpsertOptions) ([]port.BulkResult, error)
	BulkDelete(ctx context.Context, blueprint string, ids []string, deleteDependents bool) ([]string, error)
}

// Options configure a Registry.
type Options struct {
	Store    Store
	Provider Provider
	// Upsert are the options of every bulk upsert (merge, create missing
	// related entities).
	Upsert           port.UpsertOptions
	DeleteDependents bool
	// FlushInterval is the longest an eager write waits to fill a batch
	// (default 5 ms).
	FlushInterval time.Duration
	// RetryWindow is how long a write that failed for a passing reason is
	// tried again before it counts as failed (default 5 min).
	RetryWindow time.Duration
	// Backoff gives the wait before retry n (default 1 s doubling to 5 min).
	Backoff func(int) time.Duration
	// OnPort is told the outcome of every Port request (reachability).
	OnPort   func(error)
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Registry reads ownership and applies plans. It is safe for concurrent use.
type Registry struct {
	opts             Options
	store            Store
	batch            *batcher
	metrics          *metrics
	deleteDependents atomic.Bool
}

// New builds a Registry; call Run to flush its batches.
func New(opts Options) (*Registry, error) {
	if opts.Store == nil || opts.Provider == nil {
		return nil, errors.New("registry: store and provider are required")
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 5 * time.Millisecond
	}
	if opts.RetryWindow <= 0 {
		opts.RetryWindow = 5 * time.Minute
	}
	if opts.Backoff == nil {
		opts.Backoff = Backoff(time.Second, 5*time.Minute)
	}
	if opts.OnPort == nil {
		opts.OnPort = func(error) {}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, fmt.Errorf("registry: register metrics: %w", err)
	}
	r := &Registry{opts: opts, store: opts.Store, metrics: m}
	r.deleteDependents.Store(opts.DeleteDependents)
	r.batch = &batcher{provider: opts.Provider, flushEvery: opts.FlushInterval, retryWindow: opts.RetryWindow, backoff: opts.Backoff,
		observe: func(bp string, secs float64, err error) {
			m.bulkSeconds.Observe(secs)
			opts.OnPort(err)
		},
		retried: func() { m.retries.Inc() },
		batches: map[batchKey][]item{}, oldest: map[batchKey]time.Time{}, kick: make(chan struct{}, 1)}
	r.batch.opts.Store(&opts.Upsert)
	return r, nil
}

// SetWriteOptions changes the options of later bulk upserts and deletes (a
// mapping whose global flags changed); writes already sent keep theirs.
func (r *Registry) SetWriteOptions(upsert port.UpsertOptions, deleteDependents bool) {
	r.batch.opts.Store(&upsert)
	r.deleteDependents.Store(deleteDependents)
}

// Adopt records outputs for refs without writing to Port: ownership rebuilt
// from what Port holds (its data-source listing), when the state file lost
// it. Outputs are added to the refs' records (or replace an output with the
// same key); observation times are left alone. It commits in chunks of
// adoptChunk refs, each its own short transaction.
func (r *Registry) Adopt(outputs map[string][]state.Output) error {
	refs := slices.Sorted(maps.Keys(outputs))
	for start := 0; start < len(refs); start += adoptChunk {
		w := state.Write{Confirm: map[string][]state.Output{}}
		for _, ref := range refs[start:min(start+adoptChunk, len(refs))] {
			w.Confirm[ref] = outputs[ref]
		}
		if err := r.store.Commit(w); err != nil {
			return fmt.Errorf("record ownership of %d entities rebuilt from Port: %w", len(w.Confirm), err)
		}
	}
	return nil
}

// adoptChunk is how many refs one Adopt transaction records.
const adoptChunk = 1000

// Run sends due batches until ctx ends, then sends what is left and waits
// for every send.
func (r *Registry) Run(ctx context.Context) { r.batch.run(ctx) }

// Flush sends the partial lazy batches now (the end of a resync).
func (r *Registry) Flush(ctx context.Context) { r.batch.flushLazy(ctx) }

// Records returns the ownership records of refs (absent refs have none).
func (r *Registry) Records(refs []string) (map[string]state.RefRecord, error) {
	recs, found, err := r.store.Refs(refs)
	if err != nil {
		return nil, fmt.Errorf("read ownership of %d entities: %w", len(refs), err)
	}
	out := make(map[string]state.RefRecord, len(refs))
	for i, ref := range refs {
		if found[i] {
			out[ref] = recs[i]
		}
	}
	return out, nil
}

// Owned converts a record to plan form.
func Owned(ref string, rec state.RefRecord) []plan.Owned {
	out := make([]plan.Owned, len(rec.Outputs))
	for i, o := range rec.Outputs {
		out[i] = plan.Owned{Key: plan.Key(o.Key), Ref: ref, Hash: o.Hash, PushedAt: o.PushedAt}
	}
	return out
}

// Others returns, for each key, the ownership records of refs that claim
// it other than the refs in exclude (those are in the plan already).
func (r *Registry) Others(keys []plan.Key, exclude map[string]bool) (map[plan.Key][]plan.Owned, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	sk := make([]state.Key, len(keys))
	for i, k := range keys {
		sk[i] = state.Key(k)
	}
	owners, err := r.store.Owners(sk)
	if err != nil {
		return nil, fmt.Errorf("read owners of %d Port entities: %w", len(keys), err)
	}
	out := map[plan.Key][]plan.Owned{}
	for k, os := range owners {
		for _, o := range os {
			if exclude[o.Ref] {
				continue
			}
			out[plan.Key(k)] = append(out[plan.Key(k)], plan.Owned{Key: plan.Key(k), Ref: o.Ref, Hash: o.Hash, PushedAt: o.PushedAt})
		}
	}
	return out, nil
}

// Failure is one change Port (or the registry) did not carry out.
type Failure struct {
	Ref    string
	Kind   string
	Key    plan.Key
	Action plan.Action
	Err    error
	// Permanent is set when trying again cannot help (Port refused the
	// entity: a 4xx other than 408 and 429).
	Permanent bool
	// Status, Code and Message are Port's, when Port answered.
	Status        int
	Code, Message string
}

func newFailure(c plan.Change, err error) Failure {
	f := Failure{Ref: c.Ref, Kind: c.Kind, Key: c.Key, Action: c.Action, Err: err, Permanent: !port.IsRetryable(err)}
	var pe *port.Error
	if errors.As(err, &pe) {
		f.Status, f.Code, f.Message = pe.Status, pe.Code, pe.Message
	}
	if f.Message == "" && err != nil {
		f.Message = err.Error()
	}
	return f
}

// RefOutcome is what happened to one ref's part of a plan.
type RefOutcome struct {
	Ref      string
	Kind     string
	Written  int // entities created or updated
	Deleted  int // entities deleted in Port
	Released int // claims dropped (another ref keeps the entity)
	Failures []Failure
}

// Outcome sums up an applied plan.
type Outcome struct {
	Created, Updated, Deleted, Released, Claimed int
	Failures                                     []Failure
}

// ApplyOptions tune one Apply.
type ApplyOptions struct {
	// Lazy writes wait for full batches or Flush (resync pages).
	Lazy bool
	// Slots, when set, bounds the writes in flight: Apply takes a slot per
	// write before handing it on and gives it back when Port answered.
	Slots chan struct{}
	// OnRef is called once per ref of the plan, after its records are
	// committed.
	OnRef func(RefOutcome)
}

// Refs lists the refs a plan touches (and so reports through OnRef).
func Refs(ch *plan.Changes) []string {
	set := map[string]struct{}{}
	for _, l := range [][]plan.Change{ch.Create, ch.Update, ch.Delete, ch.Release, ch.Claim} {
		for _, c := range l {
			set[c.Ref] = struct{}{}
		}
	}
	for r := range ch.Observed {
		set[r] = struct{}{}
	}
	for r := range ch.Versions {
		set[r] = struct{}{}
	}
	for _, r := range ch.Forget {
		set[r] = struct{}{}
	}
	return slices.Sorted(maps.Keys(set))
}

// refState tracks one ref while a plan is applied.
type refState struct {
	kind     string
	pending  int // writes not answered yet
	written  []state.Output
	claims   []state.Output
	deletes  []plan.Change // deletes and releases, after the writes
	failures []Failure
	observed time.Time
	record   bool
	version  uint64 // content version to record once applied
	forget   bool
}

// Apply carries out ch: claims are recorded, creates and updates go to Port
// in bulk, and, once a ref's writes all succeeded, its deletions and
// releases follow; each ref's records are committed for what Port
// confirmed, and then OnRef reports it. done, if not nil, is called once
// with the sum after every ref was reported. Apply returns once everything
// is handed on (lazy writes may still wait for Flush).
func (r *Registry) Apply(ctx context.Context, ch *plan.Changes, o ApplyOptions, done func(Outcome)) {
	a := &applying{r: r, o: o, done: done, refs: map[string]*refState{}}
	get := func(ref, kind string) *refState {
		s := a.refs[ref]
		if s == nil {
			s = &refState{kind: kind}
			a.refs[ref] = s
		}
		if s.kind == "" {
			s.kind = kind
		}
		return s
	}
	for ref, t := range ch.Observed {
		s := get(ref, "")
		s.observed, s.record = t, true
	}
	for ref, v := range ch.Versions {
		get(ref, "").version = v
	}
	for _, ref := range ch.Forget {
		get(ref, "").forget = true
	}
	now := time.Now().Truncate(time.Millisecond)
	for _, c := range ch.Claim {
		get(c.Ref, c.Kind).claims = append(get(c.Ref, c.Kind).claims, state.Output{Key: state.Key(c.Key), Hash: 0, PushedAt: now})
		a.out.Claimed++
	}
	for _, c := range append(slices.Clone(ch.Delete), ch.Release...) {
		s := get(c.Ref, c.Kind)
		s.deletes = append(s.deletes, c)
	}
	writes := ch.Writes()
	for _, c := range writes {
		get(c.Ref, c.Kind).pending++
	}
	a.left = len(a.refs)
	a.writesLeft = len(writes)
	if a.left == 0 {
		a.finish()
		return
	}
	// Refs without writes complete now (or after the delete phase).
	if len(writes) == 0 {
		a.deletePhase(ctx)
		return
	}
	for _, c := range writes {
		done := a.written(ctx, c)
		if o.Slots != nil {
			select {
			case o.Slots <- struct{}{}:
			case <-ctx.Done():
				// No slot taken: give one back so the callback's release
				// balances, and fail the write.
				o.Slots <- struct{}{}
				done(ctx.Err())
				continue
			}
		}
		ent, _ := c.Entity.(port.Entity)
		r.batch.add(ctx, item{blueprint: c.Blueprint, entity: ent, lazy: o.Lazy, done: done})
	}
}

// applying is the bookkeeping of one Apply.
type applying struct {
	r    *Registry
	o    ApplyOptions
	done func(Outcome)

	mu         sync.Mutex
	refs       map[string]*refState
	left       int // refs not reported yet
	writesLeft int
	out        Outcome
}

// written returns the callback of one write.
func (a *applying) written(ctx context.Context, c plan.Change) func(error) {
	return func(err error) {
		if a.o.Slots != nil {
			<-a.o.Slots
		}
		a.mu.Lock()
		s := a.refs[c.Ref]
		s.pending--
		a.writesLeft--
		if err != nil {
			s.failures = append(s.failures, newFailure(c, err))
			a.r.metrics.pushes.WithLabelValues(c.Blueprint, "failed").Inc()
		} else {
			s.written = append(s.written, state.Output{Key: state.Key(c.Key), Hash: c.Hash, PushedAt: time.Now().Truncate(time.Millisecond)})
			a.r.metrics.pushes.WithLabelValues(c.Blueprint, "ok").Inc()
			if c.Action == plan.Create {
				a.out.Created++
			} else {
				a.out.Updated++
			}
		}
		var complete string
		if s.pending == 0 && len(s.deletes) == 0 {
			complete = c.Ref
		}
		lastWrite := a.writesLeft == 0
		a.mu.Unlock()
		if complete != "" {
			a.complete(complete)
		}
		if lastWrite {
			// Deletions wait for the writes: a ref whose new outputs
			// failed keeps its old ones.
			go a.deletePhase(context.WithoutCancel(ctx))
		}
	}
}

// deletePhase deletes and releases what refs no longer produce, for refs
// whose writes all succeeded, then completes those refs.
func (a *applying) deletePhase(ctx context.Context) {
	a.mu.Lock()
	var dels []plan.Change
	var refs []string
	for ref, s := range a.refs {
		if len(s.deletes) == 0 && (len(s.written)+len(s.failures) > 0 || s.pending > 0) {
			continue // completed with its writes
		}
		refs = append(refs, ref)
		if len(s.failures) == 0 {
			dels = append(dels, s.deletes...)
		}
	}
	a.mu.Unlock()
	removed, failures := a.r.deleteAll(ctx, dels)
	a.mu.Lock()
	for _, f := range failures {
		s := a.refs[f.Ref]
		s.failures = append(s.failures, f)
	}
	for _, c := range dels {
		if removed[c.Ref] != nil && slices.Contains(removed[c.Ref], c.Key) {
			if c.Action == plan.Delete {
				a.out.Deleted++
			} else {
				a.out.Released++
			}
		}
	}
	a.mu.Unlock()
	slices.Sort(refs)
	a.completeAll(refs, removed)
}

func (a *applying) complete(ref string) { a.completeAll([]string{ref}, nil) }

// completeAll commits the records of refs in one state write (one
// transaction, however many refs: a resync page of unchanged entities whose
// versions are new must not cost a commit each) and reports each ref.
func (a *applying) completeAll(refs []string, removed map[string][]plan.Key) {
	w := state.Write{}
	for _, ref := range refs {
		a.recordInto(&w, ref, removed[ref])
	}
	var err error
	if !w.Empty() {
		err = a.r.store.Commit(w)
	}
	for _, ref := range refs {
		a.report(ref, removed[ref], err)
	}
}

// put sets m[k] = v, making m when needed.
func put[V any](m *map[string]V, k string, v V) {
	if *m == nil {
		*m = map[string]V{}
	}
	(*m)[k] = v
}

// recordInto adds one ref's record changes to w: what Port confirmed, what
// is gone, and — when nothing failed — its observation, content version,
// unparking and forgetting.
func (a *applying) recordInto(w *state.Write, ref string, removed []plan.Key) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.refs[ref]
	ok := len(s.failures) == 0
	if outs := append(slices.Clone(s.claims), s.written...); len(outs) > 0 {
		put(&w.Confirm, ref, outs)
	}
	if len(removed) > 0 {
		keys := make([]state.Key, len(removed))
		for i, k := range removed {
			keys[i] = state.Key(k)
		}
		put(&w.Remove, ref, keys)
	}
	if ok && s.record {
		put(&w.Observed, ref, s.observed)
	}
	if ok && s.version != 0 {
		put(&w.Versions, ref, s.version)
	}
	if ok && len(s.written) > 0 {
		w.Unpark = append(w.Unpark, ref)
	}
	if ok && s.forget {
		w.Forget = append(w.Forget, ref)
	}
}

// report tells OnRef how one ref ended; commitErr is the error of the
// write that recorded it.
func (a *applying) report(ref string, removed []plan.Key, commitErr error) {
	a.mu.Lock()
	s := a.refs[ref]
	if commitErr != nil {
		// Port has it but we could not record it: the next pass writes it
		// again, which is harmless; the ref is reported failed.
		s.failures = append(s.failures, Failure{Ref: ref, Kind: s.kind, Err: commitErr, Message: commitErr.Error()})
	}
	released := 0
	for _, c := range s.deletes {
		if c.Action == plan.Release && slices.Contains(removed, c.Key) {
			released++
		}
	}
	ro := RefOutcome{Ref: ref, Kind: s.kind, Written: len(s.written), Deleted: len(removed) - released, Released: released, Failures: slices.Clone(s.failures)}
	a.out.Failures = append(a.out.Failures, s.failures...)
	a.left--
	last := a.left == 0
	a.mu.Unlock()
	if a.o.OnRef != nil {
		a.o.OnRef(ro)
	}
	if last {
		a.finish()
	}
}

func (a *applying) finish() {
	if a.done != nil {
		a.done(a.out)
	}
}

// deleteAll deletes owned entities per blueprint (releases only drop the
// claim) and returns, per ref, the keys that are gone or released: what
// Port confirmed deleting or, when the call succeeded, already did not
// have.
func (r *Registry) deleteAll(ctx context.Context, dels []plan.Change) (map[string][]plan.Key, []Failure) {
	removed := map[string][]plan.Key{}
	var failures []Failure
	byBP := map[string][]plan.Change{}
	for _, c := range dels {
		if c.Action == plan.Release {
			removed[c.Ref] = append(removed[c.Ref], c.Key)
			continue
		}
		byBP[c.Blueprint] = append(byBP[c.Blueprint], c)
	}
	for _, bp := range slices.Sorted(maps.Keys(byBP)) {
		cs := byBP[bp]
		ids := make([]string, 0, len(cs))
		for _, c := range cs {
			if !slices.Contains(ids, c.Identifier) {
				ids = append(ids, c.Identifier)
			}
		}
		deleted, err := r.opts.Provider.BulkDelete(ctx, bp, ids, r.deleteDependents.Load())
		r.opts.OnPort(err)
		if len(deleted) > 0 {
			r.opts.Logger.Info("deleted in Port", "blueprint", bp, "identifiers", deleted)
		}
		r.metrics.deletes.WithLabelValues(bp).Add(float64(len(deleted)))
		gone := map[string]bool{}
		for _, id := range deleted {
			gone[id] = true
		}
		if err == nil {
			for _, id := range ids {
				gone[id] = true
			}
		}
		for _, c := range cs {
			if gone[c.Identifier] {
				removed[c.Ref] = append(removed[c.Ref], c.Key)
				continue
			}
			failures = append(failures, newFailure(c, fmt.Errorf("delete %s from blueprint %s (for %s): %w", c.Identifier, bp, c.Ref, err)))
		}
	}
	return removed, failures
}

// Park records that Port refused ref's entity for good, with Port's reason.
func (r *Registry) Park(ref string, f Failure) error {
	return r.store.Commit(state.Write{Park: map[string]state.Parked{ref: {At: time.Now(), Blueprint: f.Key.Blueprint, Identifier: f.Key.Identifier,
		Status: f.Status, Message: truncate(f.Message, 1000)}}})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
