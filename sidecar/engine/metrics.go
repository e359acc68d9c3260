package engine

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's Prometheus series (prefix portbridge_).
type metrics struct {
	queueDepth       prometheus.Gauge
	retrying         prometheus.Gauge
	received         prometheus.Counter
	stale            prometheus.Counter
	pushes           *prometheus.CounterVec
	skips            *prometheus.CounterVec
	deletes          *prometheus.CounterVec
	deletionsRefused prometheus.Counter
	pushRetries      prometheus.Counter
	portBulkSeconds  prometheus.Histogram
	applySeconds     prometheus.Histogram
	mappingWarnings  *prometheus.CounterVec
	mappingSkips     *prometheus.CounterVec
	resyncs          *prometheus.CounterVec
	resyncSeconds    *prometheus.GaugeVec
	resyncEntities   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "portbridge_queue_depth", Help: "Change notifications stored and not yet applied."}),
		retrying:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "portbridge_queue_retrying", Help: "Entities whose last attempt failed and that wait for a retry."}),
		received:   prometheus.NewCounter(prometheus.CounterOpts{Name: "portbridge_changes_received_total", Help: "Change notifications stored."}),
		stale:      prometheus.NewCounter(prometheus.CounterOpts{Name: "portbridge_changes_stale_total", Help: "Notifications dropped because a newer observation was already applied."}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_port_pushes_total", Help: "Port entities written, by blueprint and result (ok, failed)."},
			[]string{"blueprint", "result"}),
		skips: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_port_skips_total", Help: "Port entities not written because their mapped output was unchanged."},
			[]string{"blueprint"}),
		deletes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_port_deletes_total", Help: "Port entities deleted, by blueprint."}, []string{"blueprint"}),
		deletionsRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "portbridge_resync_deletions_refused_total",
			Help: "Resyncs that planned more deletions than entityDeletionThreshold allows and deleted nothing."}),
		pushRetries: prometheus.NewCounter(prometheus.CounterOpts{Name: "portbridge_port_push_retries_total",
			Help: "Entities pushed again after a retryable failure (429, 5xx, network) outlasted the Port client's own retries."}),
		portBulkSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "portbridge_port_bulk_upsert_seconds", Help: "Duration of bulk upserts (including retries and rate-limit waits).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "portbridge_change_apply_seconds", Help: "Time from storing a change notification to Port confirming it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18)}),
		mappingWarnings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_mapping_warnings_total", Help: "Mapping fields that failed and became null, by kind."}, []string{"kind"}),
		mappingSkips:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_mapping_skips_total", Help: "Mapped entities skipped (no identifier, no blueprint, jq error), by kind."}, []string{"kind"}),
		resyncs:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_resyncs_total", Help: "Finished passes by type (resync, verify) and result."}, []string{"type", "result"}),
		resyncSeconds:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "portbridge_resync_last_duration_seconds", Help: "Duration of the last pass by type."}, []string{"type"}),
		resyncEntities: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "portbridge_resync_last_entities", Help: "Counts of the last pass by type and count (seen, pushed, unchanged, skipped, deleted, failed)."},
			[]string{"type", "count"}),
	}
	for _, c := range []prometheus.Collector{m.queueDepth, m.retrying, m.received, m.stale, m.pushes, m.skips, m.deletes, m.deletionsRefused, m.pushRetries, m.portBulkSeconds,
		m.applySeconds, m.mappingWarnings, m.mappingSkips, m.resyncs, m.resyncSeconds, m.resyncEntities} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observeResync(r *ResyncReport) {
	s := r.Snapshot()
	if s.DryRun {
		return
	}
	typ := "resync"
	if s.Verify {
		typ = "verify"
	}
	m.resyncs.WithLabelValues(typ, s.State).Inc()
	m.resyncSeconds.WithLabelValues(typ).Set(s.Finished.Sub(s.Started).Seconds())
	for name, v := range map[string]uint64{"seen": s.Totals.Seen, "pushed": s.Totals.Pushed, "unchanged": s.Totals.Unchanged,
		"skipped": s.Totals.Skipped, "deleted": s.Totals.Deleted, "failed": s.Totals.Failed} {
		m.resyncEntities.WithLabelValues(typ, name).Set(float64(v))
	}
}
