package port

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the client's Prometheus collectors; a nil *metrics records
// nothing.
type metrics struct {
	latency   *prometheus.HistogramVec
	retries   *prometheus.CounterVec
	waitSecs  prometheus.Counter
	throttles prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, lim *Limiter) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	// Gauges of what the limiter waits for now, read when scraped. A
	// process has one Port client (a second registration keeps the first).
	for _, g := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portbridge_port_rate_limit_waiting_until_seconds",
			Help: "Unix time at which the current pause of Port requests ends (Retry-After, x-ratelimit-reset, capped at port.maxRetryAfter); 0 when requests are not paused.",
		}, func() float64 {
			if t := lim.State().WaitingUntil; !t.IsZero() {
				return float64(t.UnixNano()) / 1e9
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portbridge_port_rate_limit_waiting",
			Help: "Port requests waiting for the rate limiter now.",
		}, func() float64 { return float64(lim.State().Waiting) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "portbridge_port_retry_after_capped_total",
			Help: "Pauses Port asked for that were longer than port.maxRetryAfter and were cut to it.",
		}, func() float64 { return float64(lim.State().Capped) }),
	} {
		if err := reg.Register(g); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	m := &metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "portbridge_port_request_duration_seconds",
			Help:    "Latency of Port API requests by route and status (0 = network error).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"route", "status"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portbridge_port_retries_total",
			Help: "Port API requests retried, by route and reason.",
		}, []string{"route", "reason"}),
		waitSecs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portbridge_port_rate_limit_wait_seconds_total",
			Help: "Time spent waiting for the Port rate limiter.",
		}),
		throttles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portbridge_port_throttled_total",
			Help: "Port API answers with status 429.",
		}),
	}
	for i, col := range []prometheus.Collector{m.latency, m.retries, m.waitSecs, m.throttles} {
		if err := reg.Register(col); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			switch i {
			case 0:
				m.latency = are.ExistingCollector.(*prometheus.HistogramVec)
			case 1:
				m.retries = are.ExistingCollector.(*prometheus.CounterVec)
			case 2:
				m.waitSecs = are.ExistingCollector.(prometheus.Counter)
			case 3:
				m.throttles = are.ExistingCollector.(prometheus.Counter)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(route string, status int, d time.Duration) {
	if m != nil {
		m.latency.WithLabelValues(route, strconv.Itoa(status)).Observe(d.Seconds())
	}
}

func (m *metrics) retry(route, reason string) {
	if m != nil {
		m.retries.WithLabelValues(route, reason).Inc()
	}
}

func (m *metrics) waited(d time.Duration) {
	if m != nil && d > 0 {
		m.waitSecs.Add(d.Seconds())
	}
}

func (m *metrics) throttled() {
	if m != nil {
		m.throttles.Inc()
	}
}
