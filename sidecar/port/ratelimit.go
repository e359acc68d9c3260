package port

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter paces the requests of every caller that shares it, so that
// concurrent workers cannot stampede Port. It combines an optional
// client-side requests-per-second limit, a pause set by 429 answers
// (Retry-After / x-ratelimit-reset), and an estimate of the server's window
// budget from the x-ratelimit-* headers that counts requests still in flight.
// When the estimated remaining budget gets low it spreads the rest of the
// window evenly, and at zero it waits for the window to reset.
//
// A pause Port asks for (Retry-After on a 429 or 503, x-ratelimit-reset) is
// capped at MaxRetryAfter: a misconfigured or hostile answer must not stop
// every Port request for an hour. What the limiter waits for, until when
// and why, and how long callers have waited (including waits still going
// on) are in State.
// A Limiter is safe for concurrent use; one per process is the intent.
type Limiter struct {
	rate *rate.Limiter
	// maxPause caps any pause or window wait.
	maxPause time.Duration

	mu          sync.Mutex
	now         func() time.Time
	pauseUntil  time.Time
	pauseReason string
	capped      int
	waiters     int   // callers waiting in acquire now
	waitStarts  int64 // sum of their start times, in Unix nanoseconds
	limit       int
	period      time.Duration
	windowEnd   time.Time // end of the server's current window, zero if unknown
	remaining   int       // local estimate for the current window, -1 if unknown
	inflight    int
	nextSlot    time.Time // earliest start of the next paced request
	totalWait   time.Duration
	throttled   int
	retries     int
	lastSeen    RateLimitState
}

// RateLimitState is what the client last learnt about Port's rate limit and
// how much it has waited because of it.
type RateLimitState struct {
	Limit     int           // x-ratelimit-limit of the last response, 0 if none
	Remaining int           // x-ratelimit-remaining of the last response, -1 if none
	Reset     time.Time     // when the server's window resets, zero if unknown
	Period    time.Duration // x-ratelimit-period
	TotalWait time.Duration // time callers spent waiting in the limiter, including waits going on now
	Throttled int           // number of 429 answers
	Retries   int           // number of retried requests
	// WaitingUntil is when the current pause ends; zero when requests are
	// not held back.
	WaitingUntil time.Time
	// WaitReason says why: "429 Retry-After 3600s, capped at 5m0s",
	// "503 Retry-After 20s", "429 x-ratelimit-reset", "x-ratelimit-remaining
	// 0 until the window resets".
	WaitReason string
	// Waiting is how many requests wait now.
	Waiting int
	// Capped counts pauses asked for that were longer than the cap.
	Capped int
}

// DefaultMaxPause caps a pause when NewLimiter is given 0: Port's rate-limit
// window is five minutes.
const DefaultMaxPause = 5 * time.Minute

// NewLimiter returns a limiter; requestsPerSecond > 0 adds a client-side
// cap (burst 1), 0 relies on the server's headers only. maxPause caps every
// pause Port asks for (0: DefaultMaxPause).
func NewLimiter(requestsPerSecond float64, maxPause time.Duration) *Limiter {
	if maxPause <= 0 {
		maxPause = DefaultMaxPause
	}
	l := &Limiter{now: time.Now, remaining: -1, lastSeen: RateLimitState{Remaining: -1}, maxPause: maxPause}
	if requestsPerSecond > 0 {
		l.rate = rate.NewLimiter(rate.Limit(requestsPerSecond), 1)
	}
	return l
}

// acquire blocks until a request may be sent and returns the function that
// must be called once its response has been observed.
func (l *Limiter) acquire(ctx context.Context) (release func(), err error) {
	start := time.Now()
	l.mu.Lock()
	l.waiters++
	l.waitStarts += start.UnixNano()
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.waiters--
		l.waitStarts -= start.UnixNano()
		l.totalWait += time.Since(start)
		l.mu.Unlock()
	}()
	if l.rate != nil {
		if err := l.rate.Wait(ctx); err != nil {
			return nil, err
		}
	}
	for {
		wait := l.tryAcquire()
		if wait <= 0 {
			return l.release, nil
		}
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// tryAcquire takes a slot and returns 0, or returns how long to wait.
func (l *Limiter) tryAcquire() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if now.Before(l.pauseUntil) {
		return l.pauseUntil.Sub(now)
	}
	if !l.windowEnd.IsZero() && !now.Before(l.windowEnd) {
		// The window rolled over. Requests still in flight may land in the
		// new window, so count them against it.
		if l.period > 0 {
			for !now.Before(l.windowEnd) {
				l.windowEnd = l.windowEnd.Add(l.period)
			}
			l.remaining = l.limit - l.inflight
		} else {
			l.windowEnd = time.Time{}
			l.remaining = -1
		}
		l.nextSlot = time.Time{}
	}
	if l.remaining >= 0 {
		if l.remaining <= 0 {
			if l.windowEnd.IsZero() {
				return 50 * time.Millisecond
			}
			return min(l.windowEnd.Sub(now)+time.Millisecond, l.maxPause)
		}
		// Below a fifth of the budget, spread what is left over the rest
		// of the window instead of spending it at once.
		if !l.windowEnd.IsZero() && l.remaining*5 < l.limit {
			if now.Before(l.nextSlot) {
				return l.nextSlot.Sub(now)
			}
			l.nextSlot = now.Add(l.windowEnd.Sub(now) / time.Duration(l.remaining+1))
		}
		l.remaining--
	}
	l.inflight++
	return 0
}

func (l *Limiter) release() {
	l.mu.Lock()
	l.inflight--
	l.mu.Unlock()
}

// observe updates the limiter from a response's status and headers. It must
// be called before the request's release. When the answer pauses requests
// (429, or a retryable status with Retry-After) it returns the pause: until
// when, and why.
func (l *Limiter) observe(status int, h http.Header) (pausedUntil time.Time, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	limit, hasLimit := headerInt(h, "X-Ratelimit-Limit")
	remaining, hasRemaining := headerInt(h, "X-Ratelimit-Remaining")
	period, hasPeriod := headerInt(h, "X-Ratelimit-Period")
	reset, hasReset := parseReset(h.Get("X-Ratelimit-Reset"), now)
	if hasReset && reset.Sub(now) > l.maxPause {
		reset = now.Add(l.maxPause) // a window end far away must not stop everything
	}
	// A different limit or period starts the accounting afresh.
	changed := (hasLimit && int(limit) != l.limit) || (hasPeriod && time.Duration(period)*time.Second != l.period)
	if hasLimit {
		l.limit = int(limit)
		l.lastSeen.Limit = int(limit)
	}
	if hasPeriod {
		l.period = time.Duration(period) * time.Second
		l.lastSeen.Period = l.period
	}
	if hasRemaining {
		l.lastSeen.Remaining = int(remaining)
	}
	if hasReset {
		l.lastSeen.Reset = reset
	}
	if hasRemaining && hasReset && hasLimit {
		switch {
		case changed || l.windowEnd.IsZero() || reset.After(l.windowEnd.Add(time.Second/2)):
			// A newer window: other requests in flight may not be counted
			// in this answer yet.
			l.windowEnd = reset
			l.remaining = max(int(remaining)-(l.inflight-1), 0)
			l.nextSlot = time.Time{}
		case !reset.Before(l.windowEnd.Add(-time.Second / 2)):
			l.remaining = min(l.remaining, int(remaining))
			if l.remaining < 0 {
				l.remaining = int(remaining)
			}
		}
	}
	if status == http.StatusTooManyRequests {
		l.throttled++
		l.lastSeen.Throttled = l.throttled
	}
	if status != http.StatusTooManyRequests && (!retryableStatus(status) || h.Get("Retry-After") == "") {
		return time.Time{}, ""
	}
	until, source, ok := retryAfter(h, now)
	if !ok {
		until, source = now.Add(time.Second), "no Retry-After, 1s"
	}
	reason = fmt.Sprintf("%d %s", status, source)
	if d := until.Sub(now); d > l.maxPause {
		until = now.Add(l.maxPause)
		reason += fmt.Sprintf(", capped at %s (port.maxRetryAfter)", l.maxPause)
		l.capped++
	}
	if until.After(l.pauseUntil) {
		l.pauseUntil, l.pauseReason = until, reason
		return until, reason
	}
	return time.Time{}, ""
}

func (l *Limiter) countRetry() {
	l.mu.Lock()
	l.retries++
	l.mu.Unlock()
}

// State returns what the limiter knows and has done so far.
func (l *Limiter) State() RateLimitState {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	s := l.lastSeen
	s.TotalWait = l.totalWait
	if l.waiters > 0 {
		s.TotalWait += time.Duration(int64(l.waiters)*time.Now().UnixNano() - l.waitStarts)
	}
	s.Throttled = l.throttled
	s.Retries = l.retries
	s.Waiting = l.waiters
	s.Capped = l.capped
	switch {
	case now.Before(l.pauseUntil):
		s.WaitingUntil, s.WaitReason = l.pauseUntil, l.pauseReason
	case l.waiters > 0 && l.remaining == 0 && now.Before(l.windowEnd):
		s.WaitingUntil, s.WaitReason = l.windowEnd, "x-ratelimit-remaining 0 until the window resets"
	}
	return s
}

// MaxPause is the cap on pauses.
func (l *Limiter) MaxPause() time.Duration { return l.maxPause }

// retryAfter returns when a throttled or failed request may be retried,
// from Retry-After (seconds or an HTTP date) or else x-ratelimit-reset, and
// which header said so.
func retryAfter(h http.Header, now time.Time) (time.Time, string, bool) {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseFloat(v, 64); err == nil && secs >= 0 && secs < 1e9 {
			return now.Add(time.Duration(secs * float64(time.Second))), "Retry-After " + strconv.FormatFloat(secs, 'f', -1, 64) + "s", true
		}
		if t, err := http.ParseTime(v); err == nil {
			return t, "Retry-After " + t.UTC().Format(time.RFC3339), true
		}
	}
	t, ok := parseReset(h.Get("X-Ratelimit-Reset"), now)
	return t, "x-ratelimit-reset", ok
}

// parseReset reads x-ratelimit-reset: epoch seconds when the number is
// large (> 10000), otherwise seconds from now.
func parseReset(v string, now time.Time) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			return t, true
		}
		return time.Time{}, false
	}
	if f > 10000 {
		return time.Unix(0, int64(f*float64(time.Second))), true
	}
	return now.Add(time.Duration(f * float64(time.Second))), true
}

func headerInt(h http.Header, key string) (int64, bool) {
	v := h.Get(key)
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	return n, err == nil
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
