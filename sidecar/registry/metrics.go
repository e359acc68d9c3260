package registry

import "github.com/prometheus/client_golang/prometheus"

// metrics are the registry's Prometheus series (prefix portbridge_).
type metrics struct {
	pushes      *prometheus.CounterVec
	deletes     *prometheus.CounterVec
	retries     prometheus.Counter
	bulkSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_port_pushes_total", Help: "Port entities written, by blueprint and result (ok, failed)."},
			[]string{"blueprint", "result"}),
		deletes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_port_deletes_total", Help: "Port entities deleted, by blueprint."}, []string{"blueprint"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "portbridge_port_push_retries_total",
			Help: "Entities pushed again after a retryable failure (429, 5xx, network) outlasted the Port client's own retries."}),
		bulkSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "portbridge_port_bulk_upsert_seconds", Help: "Duration of bulk upserts (including retries and rate-limit waits).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
	}
	for _, c := range []prometheus.Collector{m.pushes, m.deletes, m.retries, m.bulkSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
