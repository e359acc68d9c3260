package mapping

import (
	"context"
	"runtime/metrics"
	"sync"
	"time"
)

// watchdog is the context of one entity's jq runs: it ends when the
// per-entity time limit passes, when the entity goes over its memory budget
// (budget.go), or when the parent ends. gojq asks a context's Done before
// every instruction it executes, and context.WithTimeout's Done goes through
// an atomic load and a type assertion each time; here Done returns a plain
// field, which measurably speeds up mapping (the watchdog is per entity, so
// the field never changes while jq runs). Done also counts the instruction
// into the memory account; only the goroutine running the entity's jq may
// call it.
type watchdog struct {
	parent     context.Context
	done       chan struct{}
	once       sync.Once
	err        error // set before done is closed
	deadline   time.Time
	timer      *time.Timer
	stopParent func() bool

	// The memory account (budget.go), touched only by the goroutine that
	// maps the entity.
	budget    int64 // bytes
	used      int64 // estimated bytes allocated so far
	nextCheck int64 // used at which the heap is read next
	heapStart uint64
	heap      [1]metrics.Sample
}

func newWatchdog(parent context.Context, limit time.Duration, budget int64) *watchdog {
	w := &watchdog{parent: parent, done: make(chan struct{}), deadline: time.Now().Add(limit), budget: budget, nextCheck: max(budget/8, 1)}
	w.heap[0].Name = heapMetric
	if d, ok := parent.Deadline(); ok && d.Before(w.deadline) {
		w.deadline = d
	}
	w.timer = time.AfterFunc(limit, func() { w.fire(context.DeadlineExceeded) })
	if parent.Done() != nil {
		w.stopParent = context.AfterFunc(parent, func() { w.fire(parent.Err()) })
	}
	return w
}

func (w *watchdog) fire(err error) {
	w.once.Do(func() {
		w.err = err
		close(w.done)
	})
}

// stop releases the timer; call it when the entity is done.
func (w *watchdog) stop() {
	w.timer.Stop()
	if w.stopParent != nil {
		w.stopParent()
	}
}

func (w *watchdog) Deadline() (time.Time, bool) { return w.deadline, true }
func (w *watchdog) Value(key any) any           { return w.parent.Value(key) }

// Done returns the channel closed when the entity must stop, and counts one
// jq instruction.
func (w *watchdog) Done() <-chan struct{} {
	w.used += stepCost
	if w.used >= w.nextCheck {
		w.checkHeap()
	}
	return w.done
}

func (w *watchdog) Err() error {
	select {
	case <-w.done:
		return w.err
	default:
		return nil
	}
}
