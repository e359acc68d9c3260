// Package engine runs the sync loops that feed the plan and the registry:
// the change path (queued notifications, applied per entity), the resync
// pass (the whole catalog, then safe deletions), the verify pass (drift
// repair against what Port holds) and the scheduler that runs the passes.
//
// Every write and every delete on every path is a plan.Changes value that
// went through one policy filter and one guard before the registry applied
// it (external-dns: source → plan → policy → registry → provider). The
// engine knows nothing of the API's wire types: sidecar/ adapts it to the
// server.
package engine

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/plan"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/registry"
	"github.com/portbridge/portbridge/sidecar/state"
)

// Catalog is what the engine reads from Backstage.
type Catalog interface {
	Entities(ctx context.Context, q catalog.Query) iter.Seq2[catalog.Entity, error]
	Versions(ctx context.Context, q catalog.Query) iter.Seq2[catalog.Version, error]
	FetchByRefs(ctx context.Context, refs []string, fields []string) iter.Seq2[catalog.Fetched, error]
	EntitiesByRefs(ctx context.Context, refs []string, fields []string) ([]catalog.Entity, error)
	Ping(ctx context.Context) error
}

// Port is what the engine writes to and reads from Port.
type Port interface {
	registry.Provider
	SearchEntities(ctx context.Context, blueprint string, q port.SearchRequest) iter.Seq2[port.Entity, error]
	RateLimit() port.RateLimitState
}

// Store is the state file: the durable queue, ownership, parking and
// quarantine.
type Store interface {
	registry.Store
	Enqueue(ctx context.Context, changes []state.Change, fullSnapshot bool) ([]state.QueueRef, uint64, error)
	QueueGet(seq uint64) (state.QueuedChange, bool, error)
	QueueScan(fn func(state.QueuedChange) error, bad func(uint64, error)) error
	QueueAck(seqs ...uint64) error
	QueueDepth() uint64
	QueueOldest() (time.Time, bool)
	Quarantine(seq uint64, reason string) error
	QuarantineCount() (int, error)
	QuarantineList(limit int) ([]state.Quarantined, error)
	OwnedCounts() (map[string]uint64, error)
	ForEachRef(fn func(string, state.RefRecord) error) error
	ParkedCount() (int, error)
	ParkedRefs(limit int) (map[string]state.Parked, error)
	SnapshotPending() (time.Time, bool, error)
	SnapshotDone(started time.Time) error
	GetMeta(key string) ([]byte, error)
	PutMeta(key string, value []byte) error
	CheckFile() error
	Path() string
}

// Mapper turns a Backstage entity into Port entities.
type Mapper interface {
	Map(ctx context.Context, entity map[string]any) mapping.Result
	Fingerprint() string
}

// Options configure an Engine.
type Options struct {
	Store   Store
	Catalog Catalog
	Port    Port
	Mapper  Mapper
	// Prepare, when set, runs at the start of Run before anything is
	// applied (Port blueprint setup): it is retried with backoff until it
	// succeeds, while the queue keeps accepting changes. A non-nil Mapper
	// it returns replaces Mapper (built from the blueprints as Port has
	// them). dryRun asks it to change nothing in Port and to report what it
	// would create.
	Prepare func(ctx context.Context, dryRun bool) (Mapper, []string, error)
	// CompileMapping builds a Mapper from a port-app-config document, for
	// PreviewMapping with a mapping given in the request. Optional.
	CompileMapping func(yaml []byte) (Mapper, error)
	// ManagedBlueprints are the blueprints the mapping writes, for the
	// verify pass.
	ManagedBlueprints []string
	// OwnedInPort, when set, lists the Port entities this installation
	// wrote (Port's data source for the sidecar's User-Agent), with their
	// content. A state file without ownership records is rebuilt from it
	// before the first resync; while that fails, nothing is deleted.
	OwnedInPort func(ctx context.Context) iter.Seq2[port.Entity, error]
	// EphemeralState says the state file is a temporary one (a one-shot
	// run without the daemon's file): a dry run may then rebuild ownership
	// into it.
	EphemeralState bool

	// Policy is sync (default), upsert-only or create-only.
	Policy                       string
	CreateMissingRelatedEntities bool
	MergeEntities                bool
	DeleteDependents             bool
	// DeletionThreshold is the largest share of owned entities one plan may
	// delete (Port's entityDeletionThreshold): 0 forbids every deletion, 1
	// allows any share. Use plan.DefaultDeletionThreshold for Port's
	// default.
	DeletionThreshold float64
	// DeletionWindow is the window over which change-path deletions are
	// counted against the threshold (default 10 min).
	DeletionWindow time.Duration

	Workers           int
	FlushInterval     time.Duration
	DeleteGracePeriod time.Duration
	ResyncInterval    time.Duration
	ResyncOnStart     bool
	VerifyInterval    time.Duration
	PageSize          int
	// CatalogCheckedAt is when the caller last reached the catalog (a
	// preflight check): the engine then does not check it again for a
	// while.
	CatalogCheckedAt time.Time
	// RetryBase and RetryMax bound the backoff of a failed change.
	RetryBase, RetryMax time.Duration
	// PushRetryWindow is how long an entity whose push failed for a
	// retryable reason is tried again before it counts as failed (a
	// resync waits that long for a Port outage to end). Default 5 min.
	PushRetryWindow time.Duration
	// FileCheckInterval is how often the state file is checked for being
	// deleted or replaced underneath (default 2 s).
	FileCheckInterval time.Duration
	// ShutdownTimeout bounds how long Run waits for in-flight work after
	// its context ends (default 10 s).
	ShutdownTimeout time.Duration
	// ProgressInterval is how often a running pass logs its progress
	// (default 5 s; negative: never, e.g. when a progress bar shows it).
	ProgressInterval time.Duration

	Version  string
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// CatalogURL and PortURL are reported in status (redacted).
	CatalogURL, PortURL string
}

// Engine runs the sync. Create it with New, start it with Run.
type Engine struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	reg     *registry.Registry
	policy  plan.Policy
	guard   *deletionGuard
	locks   *refLocks
	queue   *dispatcher
	passes  *runner
	events  *events
	started time.Time

	prepared chan struct{} // closed once Prepare succeeded
	loaded   atomic.Bool   // the queue was loaded from the state file
	// receivedN counts stored notifications (a resync's tolerance for
	// catalog changes during its scan).
	receivedN atomic.Uint64
	fileErr   atomic.Pointer[error]
	mapper    atomic.Pointer[mapperBox]
	settings  atomic.Pointer[Settings]
	subs      subscribers
	recent    recentExamples
	ownership ownership

	mu          sync.Mutex
	catalogPeer peer // guarded by mu
	portPeer    peer // guarded by mu
}

type peer struct {
	ok          bool
	known       bool
	lastSuccess time.Time
	lastErr     string
}

type mapperBox struct{ Mapper }

// New checks opts and builds an Engine.
func New(opts Options) (*Engine, error) {
	switch {
	case opts.Store == nil:
		return nil, errors.New("engine: no state store")
	case opts.Catalog == nil:
		return nil, errors.New("engine: no catalog client")
	case opts.Port == nil:
		return nil, errors.New("engine: no Port client")
	case opts.Mapper == nil:
		return nil, errors.New("engine: no mapper")
	}
	policy, err := plan.PolicyFor(opts.Policy)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if opts.DeletionThreshold < 0 || opts.DeletionThreshold > 1 {
		return nil, fmt.Errorf("engine: deletion threshold %v is outside 0..1", opts.DeletionThreshold)
	}
	if opts.DeletionWindow <= 0 {
		opts.DeletionWindow = 10 * time.Minute
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 500
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 5 * time.Minute
	}
	if opts.PushRetryWindow <= 0 {
		opts.PushRetryWindow = 5 * time.Minute
	}
	if opts.FileCheckInterval <= 0 {
		opts.FileCheckInterval = 2 * time.Second
	}
	if opts.ProgressInterval == 0 {
		opts.ProgressInterval = 5 * time.Second
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	promReg := opts.Registry
	if promReg == nil {
		promReg = prometheus.NewRegistry()
	}
	m, err := newMetrics(promReg)
	if err != nil {
		return nil, fmt.Errorf("engine: register metrics: %w", err)
	}
	e := &Engine{opts: opts, log: opts.Logger, metrics: m, policy: policy, locks: newRefLocks(), started: time.Now(), prepared: make(chan struct{}),
		events: newEvents()}
	e.reg, err = registry.New(registry.Options{Store: opts.Store, Provider: opts.Port,
		Upsert:           port.UpsertOptions{Merge: opts.MergeEntities, CreateMissingRelatedEntities: opts.CreateMissingRelatedEntities},
		DeleteDependents: opts.DeleteDependents, FlushInterval: opts.FlushInterval, RetryWindow: opts.PushRetryWindow,
		Backoff: registry.Backoff(opts.RetryBase, opts.RetryMax), OnPort: func(err error) { e.notePeer(&e.portPeer, err) },
		Logger: opts.Logger, Registry: promReg})
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	e.guard = newDeletionGuard(plan.Guard{Threshold: opts.DeletionThreshold}, opts.DeletionWindow)
	e.queue = newDispatcher(e)
	e.passes = newRunner(e)
	e.mapper.Store(&mapperBox{opts.Mapper})
	e.settings.Store(&Settings{CreateMissingRelatedEntities: opts.CreateMissingRelatedEntities, MergeEntities: opts.MergeEntities,
		DeleteDependents: opts.DeleteDependents, DeletionThreshold: opts.DeletionThreshold, ManagedBlueprints: slices.Clone(opts.ManagedBlueprints)})
	m.queueDepth.Set(float64(opts.Store.QueueDepth()))
	if !opts.CatalogCheckedAt.IsZero() {
		e.catalogPeer = peer{known: true, ok: true, lastSuccess: opts.CatalogCheckedAt}
	}
	return e, nil
}

// Run loads the queue left by an earlier process, then applies changes and
// runs resyncs and verify passes until ctx ends. On return, in-flight work
// has been drained or left to the durable queue, within ShutdownTimeout. It
// returns an error when the state file was deleted or replaced underneath.
func (e *Engine) Run(ctx context.Context) error {
	if err := e.queue.load(); err != nil {
		return err
	}
	e.loaded.Store(true)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { e.prepare(ctx) })
	// The registry outlives ctx a little: in-flight writes finish.
	rctx, cancelRegistry := context.WithCancel(context.WithoutCancel(ctx))
	regDone := make(chan struct{})
	go func() { e.reg.Run(rctx); close(regDone) }()
	wg.Go(func() { e.queue.run(ctx) })
	wg.Go(func() { e.passes.run(ctx) })
	wg.Go(func() { e.samplePeers(ctx) })
	wg.Go(func() { e.watchFile(ctx, cancel) })
	<-ctx.Done()

	deadline := time.NewTimer(e.opts.ShutdownTimeout)
	defer deadline.Stop()
	stopped := make(chan struct{})
	go func() { wg.Wait(); e.queue.drain(); close(stopped) }()
	select {
	case <-stopped:
	case <-deadline.C:
		e.log.Warn("shutdown: leaving in-flight changes to the durable queue", "refs", e.queue.inflightCount())
	}
	cancelRegistry()
	select {
	case <-regDone:
	case <-time.After(time.Second):
	}
	if p := e.fileErr.Load(); p != nil {
		return *p
	}
	return nil
}

// mapperNow returns the mapper in use.
func (e *Engine) mapperNow() Mapper { return e.mapper.Load().Mapper }

// prepare runs Options.Prepare until it succeeds, then opens the gate for
// the change path and resyncs.
func (e *Engine) prepare(ctx context.Context) {
	defer close(e.prepared)
	if e.opts.Prepare == nil {
		e.rebuildIfNeeded(ctx, false)
		return
	}
	for attempt := 1; ; attempt++ {
		m, _, err := e.opts.Prepare(ctx, false)
		if err == nil && m != nil {
			err = e.install(m)
		}
		if err == nil {
			e.rebuildIfNeeded(ctx, false)
			return
		}
		e.events.setErr(err)
		e.notePeer(&e.portPeer, err)
		wait := e.backoff(attempt)
		e.log.Error("setup failed; changes are queued and applied once it succeeds", "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// waitPrepared blocks until Prepare succeeded or ctx ends.
func (e *Engine) waitPrepared(ctx context.Context) bool {
	select {
	case <-e.prepared:
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}

// watchFile stops the engine (and acknowledgements) when the state file is
// deleted or replaced: every later write would go to a file nobody reads.
func (e *Engine) watchFile(ctx context.Context, stop context.CancelFunc) {
	t := time.NewTicker(e.opts.FileCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := e.opts.Store.CheckFile(); err != nil {
			err = fmt.Errorf("stopping: %w; changes are no longer acknowledged (restart the sidecar: it starts a new state file and the next resync rebuilds it)", err)
			e.fileErr.Store(&err)
			e.events.setErr(err)
			e.log.Error("state file lost", "error", err)
			stop()
			return
		}
	}
}

func (e *Engine) notePeer(p *peer, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p.known = true
	if err == nil {
		p.ok, p.lastSuccess, p.lastErr = true, time.Now(), ""
		return
	}
	p.ok, p.lastErr = false, err.Error()
}

// samplePeers keeps the Backstage reachability in status fresh: a ping
// every 30 s, unless a request succeeded more recently.
func (e *Engine) samplePeers(ctx context.Context) {
	const every = 30 * time.Second
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		e.mu.Lock()
		fresh := e.catalogPeer.ok && time.Since(e.catalogPeer.lastSuccess) < every
		e.mu.Unlock()
		if !fresh {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := e.opts.Catalog.Ping(cctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			e.notePeer(&e.catalogPeer, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ErrNotReady is wrapped by Ready and Publish when the engine cannot accept
// changes.
var ErrNotReady = errors.New("not ready")

// Ready reports whether the engine can do its job: the queue is loaded and
// the state file is the one it opened. Peers being down does not make it
// unready (the queue still accepts changes).
func (e *Engine) Ready(context.Context) error {
	if p := e.fileErr.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, *p)
	}
	if !e.loaded.Load() {
		return fmt.Errorf("%w: loading the queue from %s", ErrNotReady, e.opts.Store.Path())
	}
	if err := e.opts.Store.CheckFile(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	return nil
}

// backoff returns the wait before attempt n (1-based) of a failed change.
func (e *Engine) backoff(n int) time.Duration {
	return registry.Backoff(e.opts.RetryBase, e.opts.RetryMax)(n)
}

// refLocks serialises work on one Backstage ref between the change path and
// the passes, so an older observation is never written after a newer one.
type refLocks struct {
	mu   sync.Mutex
	held map[string]chan struct{}
}

func newRefLocks() *refLocks { return &refLocks{held: map[string]chan struct{}{}} }

// lock waits for ref to be free and takes it.
func (l *refLocks) lock(ctx context.Context, ref string) error {
	for {
		l.mu.Lock()
		ch, busy := l.held[ref]
		if !busy {
			l.held[ref] = make(chan struct{})
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// tryLock takes ref if it is free.
func (l *refLocks) tryLock(ref string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, busy := l.held[ref]; busy {
		return false
	}
	l.held[ref] = make(chan struct{})
	return true
}

func (l *refLocks) unlock(ref string) {
	l.mu.Lock()
	ch := l.held[ref]
	delete(l.held, ref)
	l.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}
