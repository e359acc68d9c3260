package registry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portbridge/portbridge/sidecar/port"
)

// bulkMax is Port's limit of entities per bulk upsert.
const bulkMax = port.MaxBulkEntities

// item is one Port entity waiting for a bulk upsert.
type item struct {
	blueprint string
	entity    port.Entity
	// lazy items (resyncs, verify passes) wait for a full batch or an
	// explicit flush instead of the flush interval: a resync that finds
	// 1,000 changed entities spread over 100,000 sends ceil(1000/20) bulk
	// requests per blueprint, not one per page.
	lazy bool
	// done is called once with Port's verdict. It must not block.
	done func(err error)

	firstTry time.Time
	attempts int
}

type batchKey struct {
	blueprint string
	lazy      bool
}

// batcher groups entities across callers into bulk upserts per blueprint: a
// batch goes out when it holds 20 entities, when its oldest entity waited
// the flush interval (eager items), or on flush (lazy items). It retries an
// entity whose push failed for a passing reason within the retry window.
// It knows nothing of ownership: it only batches and reports.
type batcher struct {
	provider    Provider
	opts        atomic.Pointer[port.UpsertOptions] // swapped by a mapping change
	flushEvery  time.Duration
	retryWindow time.Duration
	backoff     func(int) time.Duration
	observe     func(blueprint string, seconds float64, err error)
	retried     func()

	mu      sync.Mutex
	batches map[batchKey][]item    // guarded by mu
	oldest  map[batchKey]time.Time // eager batches only; guarded by mu
	kick    chan struct{}
	sends   sync.WaitGroup
}

// add queues items; full batches go out at once.
func (b *batcher) add(ctx context.Context, items ...item) {
	b.mu.Lock()
	var full [][]item
	for _, it := range items {
		k := batchKey{it.blueprint, it.lazy}
		if len(b.batches[k]) == 0 && !it.lazy {
			b.oldest[k] = time.Now()
		}
		b.batches[k] = append(b.batches[k], it)
		if len(b.batches[k]) >= bulkMax {
			full = append(full, b.batches[k])
			delete(b.batches, k)
			delete(b.oldest, k)
		}
	}
	b.mu.Unlock()
	for _, f := range full {
		b.send(ctx, f)
	}
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// run flushes eager batches when due until ctx ends, then flushes what is
// left and waits for the sends.
func (b *batcher) run(ctx context.Context) {
	t := time.NewTimer(b.flushEvery)
	defer t.Stop()
	for {
		next := b.flushDue(ctx, time.Now())
		if next <= 0 {
			next = time.Hour
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			b.flushDue(context.WithoutCancel(ctx), time.Now().Add(24*time.Hour))
			b.flushLazy(context.WithoutCancel(ctx))
			b.sends.Wait()
			return
		case <-t.C:
		case <-b.kick:
		}
	}
}

// flushDue sends eager batches older than the flush interval at now and
// returns the time until the next one is due (0 when none waits).
func (b *batcher) flushDue(ctx context.Context, now time.Time) time.Duration {
	b.mu.Lock()
	var next time.Duration
	var due [][]item
	for k, at := range b.oldest {
		wait := at.Add(b.flushEvery).Sub(now)
		if wait <= 0 {
			due = append(due, b.batches[k])
			delete(b.batches, k)
			delete(b.oldest, k)
			continue
		}
		if next == 0 || wait < next {
			next = wait
		}
	}
	b.mu.Unlock()
	for _, d := range due {
		b.send(ctx, d)
	}
	return next
}

// flushLazy sends every partial lazy batch now.
func (b *batcher) flushLazy(ctx context.Context) {
	b.mu.Lock()
	var due [][]item
	for k, items := range b.batches {
		if k.lazy {
			due = append(due, items)
			delete(b.batches, k)
		}
	}
	b.mu.Unlock()
	for _, d := range due {
		b.send(ctx, d)
	}
}

func (b *batcher) send(ctx context.Context, items []item) {
	b.sends.Add(1)
	go func() {
		defer b.sends.Done()
		b.sendNow(ctx, items)
	}()
}

func (b *batcher) sendNow(ctx context.Context, items []item) {
	bp := items[0].blueprint
	entities := make([]port.Entity, len(items))
	for i, it := range items {
		entities[i] = it.entity
	}
	start := time.Now()
	results, err := b.provider.BulkUpsert(ctx, bp, entities, *b.opts.Load())
	if err == nil && len(results) != len(items) {
		err = fmt.Errorf("bulk upsert to blueprint %s: Port client returned %d results for %d entities", bp, len(results), len(items))
	}
	b.observe(bp, time.Since(start).Seconds(), err)
	if err != nil {
		err = fmt.Errorf("bulk upsert of %d entities to blueprint %s: %w", len(items), bp, err)
		for _, it := range items {
			b.fail(ctx, it, err)
		}
		return
	}
	for i, r := range results {
		if r.Err != nil {
			b.fail(ctx, items[i], r.Err)
			continue
		}
		items[i].done(nil)
	}
}

// fail retries an entity whose push failed for a passing reason (Port
// overloaded, rate-limited or unreachable beyond the client's own retries)
// with backoff for up to the retry window, then reports the failure.
func (b *batcher) fail(ctx context.Context, it item, err error) {
	if it.firstTry.IsZero() {
		it.firstTry = time.Now()
	}
	if ctx.Err() == nil && port.IsRetryable(err) && time.Since(it.firstTry) < b.retryWindow {
		it.attempts++
		b.retried()
		b.sends.Add(1)
		time.AfterFunc(b.backoff(it.attempts), func() {
			defer b.sends.Done()
			b.add(ctx, it)
		})
		return
	}
	it.done(err)
}

// Backoff returns a jittered exponential wait before attempt n (1-based):
// base doubled per attempt up to max, full jitter on the upper half.
func Backoff(base, max time.Duration) func(int) time.Duration {
	return func(n int) time.Duration {
		d := base << min(n-1, 20)
		if d > max || d <= 0 {
			d = max
		}
		return d/2 + rand.N(d/2+1)
	}
}
