package engine

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/state"
)

// bulkMax is Port's limit of entities per bulk upsert.
const bulkMax = 20

// pushItem is one Port entity waiting for a bulk upsert.
type pushItem struct {
	key    state.Key
	hash   uint64
	ref    string
	kind   string
	entity port.Entity
	// done is called once with Port's verdict, after the entity's record
	// was committed to the state file (on success). It must not block.
	done func(created bool, err error)

	firstTry time.Time
	attempts int
	lastErr  error // why the last attempt failed (dependency-order waves)
	// lazy items (resyncs, verify passes) wait for a full batch or an
	// explicit flushLazy instead of the flush interval: a resync that finds
	// 1,000 changed entities spread over 100,000 sends ceil(1000/20) bulk
	// requests per blueprint, not one per page.
	lazy bool
}

// batchKey separates lazy batches from the change path's.
type batchKey struct {
	blueprint string
	lazy      bool
}

// pusher batches entities across callers into bulk upserts per blueprint:
// a batch is sent when it holds 20 entities or when its oldest entity has
// waited flush. The Port client splits by encoded size (1 MiB) and caps
// concurrency. Only entities Port confirmed get their hash stored.
type pusher struct {
	port  Port
	opts  port.UpsertOptions
	flush time.Duration
	eng   *Engine

	mu      sync.Mutex
	batches map[batchKey][]pushItem // guarded by mu
	oldest  map[batchKey]time.Time  // eager batches only; guarded by mu
	kick    chan struct{}
	sends   sync.WaitGroup
}

func newPusher(p Port, opts port.UpsertOptions, flush time.Duration, eng *Engine) *pusher {
	return &pusher{port: p, opts: opts, flush: flush, eng: eng, batches: map[batchKey][]pushItem{}, oldest: map[batchKey]time.Time{}, kick: make(chan struct{}, 1)}
}

// add queues items; full batches go out at once.
func (p *pusher) add(ctx context.Context, items ...pushItem) {
	p.mu.Lock()
	var full [][]pushItem
	var fullBP []string
	for _, it := range items {
		k := batchKey{it.key.Blueprint, it.lazy}
		if len(p.batches[k]) == 0 && !it.lazy {
			p.oldest[k] = time.Now()
		}
		p.batches[k] = append(p.batches[k], it)
		if len(p.batches[k]) >= bulkMax {
			full = append(full, p.batches[k])
			fullBP = append(fullBP, k.blueprint)
			delete(p.batches, k)
			delete(p.oldest, k)
		}
	}
	p.mu.Unlock()
	for i := range full {
		p.send(ctx, fullBP[i], full[i])
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// run flushes partial batches after the flush interval until ctx ends, then
// flushes what is left and waits for sends.
func (p *pusher) run(ctx context.Context) {
	t := time.NewTimer(p.flush)
	defer t.Stop()
	for {
		next := p.flushDue(ctx, time.Now())
		if next <= 0 {
			next = time.Hour
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			p.flushDue(context.WithoutCancel(ctx), time.Now().Add(24*time.Hour))
			p.flushLazy(context.WithoutCancel(ctx))
			p.sends.Wait()
			return
		case <-t.C:
		case <-p.kick:
		}
	}
}

// flushDue sends batches older than the flush interval at now and returns
// the time until the next one is due (0 when none waits).
func (p *pusher) flushDue(ctx context.Context, now time.Time) time.Duration {
	p.mu.Lock()
	var next time.Duration
	type batch struct {
		bp    string
		items []pushItem
	}
	var due []batch
	for k, at := range p.oldest {
		wait := at.Add(p.flush).Sub(now)
		if wait <= 0 {
			due = append(due, batch{k.blueprint, p.batches[k]})
			delete(p.batches, k)
			delete(p.oldest, k)
			continue
		}
		if next == 0 || wait < next {
			next = wait
		}
	}
	p.mu.Unlock()
	for _, b := range due {
		p.send(ctx, b.bp, b.items)
	}
	return next
}

// flushLazy sends every partial lazy batch now.
func (p *pusher) flushLazy(ctx context.Context) {
	p.mu.Lock()
	var bps []string
	var batches [][]pushItem
	for k, items := range p.batches {
		if k.lazy {
			bps = append(bps, k.blueprint)
			batches = append(batches, items)
			delete(p.batches, k)
		}
	}
	p.mu.Unlock()
	for i := range batches {
		p.send(ctx, bps[i], batches[i])
	}
}

func (p *pusher) send(ctx context.Context, blueprint string, items []pushItem) {
	p.sends.Add(1)
	go func() {
		defer p.sends.Done()
		p.sendNow(ctx, blueprint, items)
	}()
}

func (p *pusher) sendNow(ctx context.Context, blueprint string, items []pushItem) {
	entities := make([]port.Entity, len(items))
	for i, it := range items {
		entities[i] = it.entity
	}
	start := time.Now()
	results, err := p.port.BulkUpsert(ctx, blueprint, entities, p.opts)
	p.eng.metrics.portBulkSeconds.Observe(time.Since(start).Seconds())
	p.eng.notePeer(&p.eng.portPeer, err)
	if err == nil && len(results) != len(items) {
		err = fmt.Errorf("bulk upsert to blueprint %s: Port client returned %d results for %d entities", blueprint, len(results), len(items))
	}
	if err != nil {
		err = fmt.Errorf("bulk upsert of %d entities to blueprint %s: %w", len(items), blueprint, err)
		p.eng.setErr(err)
		for _, it := range items {
			p.fail(ctx, it, err)
		}
		return
	}
	now := time.Now()
	w := state.Write{Confirm: map[string][]state.Output{}}
	for i, r := range results {
		if r.Err == nil {
			it := items[i]
			w.Confirm[it.ref] = append(w.Confirm[it.ref], state.Output{Key: it.key, Hash: it.hash, PushedAt: now})
		}
	}
	commitErr := p.eng.opts.Store.Commit(w)
	if commitErr != nil {
		p.eng.setErr(commitErr)
	}
	for i, r := range results {
		it := items[i]
		switch {
		case r.Err != nil:
			err := fmt.Errorf("upsert %s (from %s) to blueprint %s: %w", it.key.Identifier, it.ref, blueprint, r.Err)
			p.eng.setErr(err)
			p.fail(ctx, it, err)
		case commitErr != nil:
			// Port has it but we could not record it: the next pass pushes
			// it again, which is harmless.
			it.done(r.Created, commitErr)
		default:
			p.eng.metrics.pushes.WithLabelValues(blueprint, "ok").Inc()
			it.done(r.Created, nil)
		}
	}
}

// fail retries an entity whose push failed for a passing reason (Port
// overloaded, rate-limited or unreachable beyond the client's own retries)
// with backoff for up to the retry window, then reports the failure.
func (p *pusher) fail(ctx context.Context, it pushItem, err error) {
	if it.firstTry.IsZero() {
		it.firstTry = time.Now()
	}
	if ctx.Err() == nil && port.IsRetryable(err) && time.Since(it.firstTry) < p.eng.opts.PushRetryWindow {
		it.attempts++
		delay := p.eng.backoff(it.attempts)
		p.eng.metrics.pushRetries.Inc()
		p.sends.Add(1)
		time.AfterFunc(delay, func() {
			defer p.sends.Done()
			p.add(ctx, it)
		})
		return
	}
	p.eng.metrics.pushes.WithLabelValues(it.key.Blueprint, "failed").Inc()
	it.done(false, err)
}
