// Package engine is the sync loop: it applies queued change notifications
// (the change path), runs full resyncs that repair and clean up (the resync
// path), plans creates, updates and deletes against the state file under a
// policy, applies them to Port in bulk, and repairs drift found in Port
// (the verify pass).
//
// The shape follows external-dns: the catalog is the source of desired
// state, the mapping turns it into Port entities, the plan compares them with
// what the state file says we pushed, the policy limits what may happen, and
// the state file is the registry that records ownership, so nothing we did
// not create is ever deleted.
package engine

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/mapping"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/state"
)

// Catalog is what the engine reads from Backstage.
type Catalog interface {
	Entities(ctx context.Context, q catalog.Query) iter.Seq2[catalog.Entity, error]
	EntitiesByRefs(ctx context.Context, refs []string, fields []string) ([]catalog.Entity, error)
	Ping(ctx context.Context) error
}

// Port is what the engine writes to and reads from Port.
type Port interface {
	BulkUpsert(ctx context.Context, blueprint string, entities []port.Entity, opts port.UpsertOptions) ([]port.BulkResult, error)
	BulkDelete(ctx context.Context, blueprint string, ids []string, deleteDependents bool) ([]string, error)
	SearchEntities(ctx context.Context, blueprint string, q port.SearchRequest) iter.Seq2[port.Entity, error]
	RateLimit() port.RateLimitState
}

// Mapper turns a Backstage entity into Port entities.
type Mapper interface {
	Map(ctx context.Context, entity map[string]any) mapping.Result
	Fingerprint() string
}

// Policy limits what a sync may do, as external-dns's policies do.
type Policy string

// The policies.
const (
	PolicySync       Policy = "sync"        // create, update and delete
	PolicyUpsertOnly Policy = "upsert-only" // create and update, never delete
	PolicyCreateOnly Policy = "create-only" // create only
)

// Options configure an Engine.
type Options struct {
	Store   *state.Store
	Catalog Catalog
	Port    Port
	Mapper  Mapper
	// Prepare, when set, runs at the start of Run before anything is
	// applied (Port blueprint setup): it is retried with backoff until it
	// succeeds, while the queue keeps accepting changes. A non-nil Mapper
	// it returns replaces Mapper (built from the blueprints as Port has
	// them).
	Prepare func(ctx context.Context) (Mapper, error)
	// CompileMapping builds a Mapper from a port-app-config document, for
	// PreviewMapping with a mapping given in the request. Optional.
	CompileMapping func(yaml []byte) (Mapper, error)
	// ManagedBlueprints are the blueprints the mapping writes, for the
	// verify pass.
	ManagedBlueprints []string

	Policy                       Policy
	CreateMissingRelatedEntities bool
	MergeEntities                bool
	DeleteDependents             bool
	// DeletionThreshold is the largest share of owned entities one resync
	// may delete (Port's entityDeletionThreshold); above it none are.
	DeletionThreshold float64

	Workers           int
	FlushInterval     time.Duration
	DeleteGracePeriod time.Duration
	ResyncInterval    time.Duration
	ResyncOnStart     bool
	VerifyInterval    time.Duration
	PageSize          int
	// RetryBase and RetryMax bound the backoff of a failed change.
	RetryBase, RetryMax time.Duration
	// PushRetryWindow is how long an entity whose push failed for a
	// retryable reason is tried again before it counts as failed (a
	// resync waits that long for a Port outage to end). Default 5 min.
	PushRetryWindow time.Duration

	Version  string
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// CatalogURL and PortURL are reported in status.
	CatalogURL, PortURL string
}

// Engine runs the sync. Create it with New, start it with Run.
type Engine struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	pusher  *pusher
	locks   *refLocks
	started time.Time

	wake     chan struct{} // nudges the dispatcher
	prepared chan struct{} // closed once Prepare succeeded
	mapper   atomic.Pointer[mapperBox]

	mu          sync.Mutex
	pending     map[string]*pendingRef // guarded by mu
	ready       []*pendingRef          // due now, FIFO; guarded by mu
	delayed     map[string]*pendingRef // due later; guarded by mu
	delayScanAt time.Time              // earliest due in delayed; guarded by mu
	inflight    int                    // refs being applied; guarded by mu
	resyncReq   chan resyncRequest
	verifyAfter bool          // guarded by mu
	queued      *ResyncReport // requested, not started; guarded by mu
	current     *ResyncReport // guarded by mu
	last        *ResyncReport // guarded by mu
	lastVerify  *ResyncReport // guarded by mu
	lastErr     string        // guarded by mu
	catalogPeer peer          // guarded by mu
	portPeer    peer          // guarded by mu
	retrying    int           // guarded by mu
	deletions   int           // guarded by mu
}

type peer struct {
	ok          bool
	known       bool
	lastSuccess time.Time
	lastErr     string
}

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
	switch opts.Policy {
	case "":
		opts.Policy = PolicySync
	case PolicySync, PolicyUpsertOnly, PolicyCreateOnly:
	default:
		return nil, fmt.Errorf("engine: unknown policy %q", opts.Policy)
	}
	if opts.DeletionThreshold <= 0 || opts.DeletionThreshold > 1 {
		opts.DeletionThreshold = 0.9
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 5 * time.Millisecond
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
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, fmt.Errorf("engine: register metrics: %w", err)
	}
	e := &Engine{
		opts:      opts,
		log:       opts.Logger,
		metrics:   m,
		locks:     newRefLocks(),
		started:   time.Now(),
		wake:      make(chan struct{}, 1),
		pending:   map[string]*pendingRef{},
		delayed:   map[string]*pendingRef{},
		resyncReq: make(chan resyncRequest, 1),
		prepared:  make(chan struct{}),
	}
	e.mapper.Store(&mapperBox{opts.Mapper})
	e.pusher = newPusher(opts.Port, port.UpsertOptions{Merge: opts.MergeEntities, CreateMissingRelatedEntities: opts.CreateMissingRelatedEntities}, opts.FlushInterval, e)
	m.queueDepth.Set(float64(opts.Store.QueueDepth()))
	return e, nil
}

// Run loads the queue left by an earlier process, then applies changes and
// runs resyncs and verify passes until ctx ends. On return, in-flight work
// has been drained or abandoned to the durable queue.
func (e *Engine) Run(ctx context.Context) error {
	if err := e.loadQueue(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { e.prepare(ctx) })
	pctx, cancelPusher := context.WithCancel(context.WithoutCancel(ctx))
	wg.Go(func() { e.pusher.run(pctx) })
	wg.Go(func() { e.dispatch(ctx) })
	wg.Go(func() { e.scheduleResyncs(ctx) })
	wg.Go(func() { e.samplePeers(ctx) })
	<-ctx.Done()
	// Let in-flight pushes finish (bounded), then stop the pusher.
	drain := time.NewTimer(10 * time.Second)
	defer drain.Stop()
	for e.inflightCount() > 0 {
		select {
		case <-drain.C:
			e.log.Warn("shutdown: abandoning in-flight changes to the durable queue", "refs", e.inflightCount())
			cancelPusher()
			wg.Wait()
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancelPusher()
	wg.Wait()
	return nil
}

type mapperBox struct{ Mapper }

// mapperNow returns the mapper in use.
func (e *Engine) mapperNow() Mapper { return e.mapper.Load().Mapper }

// prepare runs Options.Prepare until it succeeds, then opens the gate for
// the change path and resyncs.
func (e *Engine) prepare(ctx context.Context) {
	defer close(e.prepared)
	if e.opts.Prepare == nil {
		return
	}
	for attempt := 1; ; attempt++ {
		m, err := e.opts.Prepare(ctx)
		if err == nil {
			if m != nil {
				e.mapper.Store(&mapperBox{m})
			}
			return
		}
		e.setErr(err)
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

func (e *Engine) inflightCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inflight
}

func (e *Engine) setErr(err error) {
	if err == nil {
		return
	}
	e.mu.Lock()
	e.lastErr = err.Error()
	e.mu.Unlock()
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

// samplePeers keeps the Backstage reachability in status fresh.
func (e *Engine) samplePeers(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := e.opts.Catalog.Ping(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		e.notePeer(&e.catalogPeer, err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Ready reports whether the engine can do its job: the state file is open
// and the loop runs. Peers being down does not make it unready (the queue
// still accepts changes).
func (e *Engine) Ready(context.Context) error {
	if _, err := e.opts.Store.Size(); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

// backoff returns the wait before attempt n (1-based) of a failed change.
func (e *Engine) backoff(n int) time.Duration {
	d := e.opts.RetryBase << min(n-1, 20)
	if d > e.opts.RetryMax || d <= 0 {
		d = e.opts.RetryMax
	}
	// Full jitter on the upper half keeps retries spread out.
	return d/2 + rand.N(d/2+1)
}

// refLocks serialises work on one Backstage ref between the change path and
// resyncs, so an older observation is never written after a newer one.
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
