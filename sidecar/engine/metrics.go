package engine

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the engine's Prometheus series (prefix portbridge_). Every
// series exists from the start (labelled ones with their known labels at
// zero), so dashboards and alerts see zeros, not gaps.
type metrics struct {
	queueDepth       prometheus.Gauge
	queueOldest      prometheus.Gauge
	retrying         prometheus.Gauge
	parked           prometheus.Gauge
	quarantinedNow   prometheus.Gauge
	received         prometheus.Counter
	stale            prometheus.Counter
	quarantined      prometheus.Counter
	skips            *prometheus.CounterVec
	deletionsRefused prometheus.Counter
	refused          *prometheus.CounterVec
	suppressed       *prometheus.CounterVec
	conflicts        *prometheus.CounterVec
	failures         *prometheus.CounterVec
	applySeconds     prometheus.Histogram
	mappingWarnings  *prometheus.CounterVec
	mappingSkips     *prometheus.CounterVec
	resyncs          *prometheus.CounterVec
	resyncSeconds    *prometheus.GaugeVec
	resyncEntities   *prometheus.GaugeVec
	resyncLastEnd    *prometheus.GaugeVec
	mappingChanges   prometheus.Counter
	ownershipRebuilt *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queueDepth:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "portbridge_queue_depth", Help: "Change notifications stored and not yet applied."}),
		queueOldest:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "portbridge_queue_oldest_seconds", Help: "Age of the oldest stored change notification not yet applied (0 when the queue is empty)."}),
		retrying:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "portbridge_queue_retrying", Help: "Entities whose last attempt failed and that wait for a retry."}),
		parked:         prometheus.NewGauge(prometheus.GaugeOpts{Name: "portbridge_parked_entities", Help: "Entities Port refused for good (4xx); retried on the next resync or mapping change."}),
		quarantinedNow: prometheus.NewGauge(prometheus.GaugeOpts{Name: "portbridge_queue_quarantined", Help: "Queued changes that could not be decoded or mapped, kept aside in the state file."}),
		received:       prometheus.NewCounter(prometheus.CounterOpts{Name: "portbridge_changes_received_total", Help: "Change notifications stored."}),
		stale:          prometheus.NewCounter(prometheus.CounterOpts{Name: "portbridge_changes_stale_total", Help: "Notifications dropped because a newer observation was already applied."}),
		quarantined:    prometheus.NewCounter(prometheus.CounterOpts{Name: "portbridge_changes_quarantined_total", Help: "Queued changes moved to the quarantine."}),
		skips: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_port_skips_total", Help: "Port entities not written because their mapped output was unchanged."},
			[]string{"blueprint"}),
		deletionsRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "portbridge_resync_deletions_refused_total",
			Help: "Resyncs whose deletions the guard refused (incomplete scan, threshold)."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_deletions_refused_total",
			Help: "Port entities whose deletion the guard refused, by path (change, resync) and reason (incomplete_scan, threshold, disabled)."}, []string{"path", "reason"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_changes_suppressed_total",
			Help: "Port writes the policy suppressed, by policy and action (update, delete)."}, []string{"policy", "action"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_conflicts_total",
			Help: "Times several Backstage entities were found mapping to one Port entity, by path."}, []string{"path"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_entity_failures_total",
			Help: "Entities Port did not take, by path and kind of failure (permanent, transient)."}, []string{"path", "kind"}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "portbridge_change_apply_seconds", Help: "Time from storing a change notification to Port confirming it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18)}),
		mappingWarnings: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_mapping_warnings_total", Help: "Mapping fields that failed and became null, by kind."}, []string{"kind"}),
		mappingSkips:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_mapping_skips_total", Help: "Mapped entities skipped (no identifier, no blueprint, jq error), by kind."}, []string{"kind"}),
		resyncs:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_resyncs_total", Help: "Finished passes by type (resync, verify) and result."}, []string{"type", "result"}),
		resyncSeconds:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "portbridge_resync_last_duration_seconds", Help: "Duration of the last pass by type."}, []string{"type"}),
		resyncEntities: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "portbridge_resync_last_entities", Help: "Counts of the last pass by type and count (seen, pushed, unchanged, skipped, deleted, failed)."},
			[]string{"type", "count"}),
		resyncLastEnd: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "portbridge_resync_last_success_timestamp_seconds", Help: "When the last successful pass of a type ended (Unix time); 0 before the first."},
			[]string{"type"}),
		mappingChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "portbridge_mapping_changes_total", Help: "Mappings hot-applied without a restart (a mapping edited in Port)."}),
		ownershipRebuilt: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "portbridge_ownership_rebuilds_total",
			Help: "Rebuilds of the state file's ownership records from Port's data-source listing, by result (ok, failed)."}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.queueDepth, m.queueOldest, m.retrying, m.parked, m.quarantinedNow, m.received, m.stale, m.quarantined, m.skips, m.deletionsRefused, m.refused,
		m.suppressed, m.conflicts, m.failures, m.applySeconds, m.mappingWarnings, m.mappingSkips, m.resyncs, m.resyncSeconds, m.resyncEntities, m.resyncLastEnd,
		m.mappingChanges, m.ownershipRebuilt} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Known label values start at zero.
	m.ownershipRebuilt.WithLabelValues("ok")
	m.ownershipRebuilt.WithLabelValues("failed")
	for _, path := range []string{"change", "resync"} {
		for _, reason := range []string{"incomplete_scan", "threshold", "disabled", "ownership_unknown"} {
			m.refused.WithLabelValues(path, reason)
		}
	}
	for _, path := range []string{"change", "resync", "verify"} {
		m.conflicts.WithLabelValues(path)
		m.failures.WithLabelValues(path, "permanent")
		m.failures.WithLabelValues(path, "transient")
	}
	for _, typ := range []string{"resync", "verify"} {
		for _, result := range []string{"succeeded", "failed"} {
			m.resyncs.WithLabelValues(typ, result)
		}
		m.resyncSeconds.WithLabelValues(typ)
		m.resyncLastEnd.WithLabelValues(typ)
		for _, c := range []string{"seen", "pushed", "unchanged", "skipped", "deleted", "failed"} {
			m.resyncEntities.WithLabelValues(typ, c)
		}
	}
	for _, kind := range kindOrder {
		m.mappingWarnings.WithLabelValues(kind)
		m.mappingSkips.WithLabelValues(kind)
	}
	for _, p := range []string{"sync", "upsert-only", "create-only"} {
		for _, a := range []string{"update", "delete"} {
			m.suppressed.WithLabelValues(p, a)
		}
	}
	return m, nil
}
