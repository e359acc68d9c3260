package engine_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portbridge/portbridge/internal/testlog"
	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

// testlog.Buffer is a log sink safe for concurrent writers.
// Passes log their start, progress with the catalog's total, percent, rate
// and ETA, and an end line with counts per kind.
func TestProgressLines(t *testing.T) {
	t.Parallel()
	var logs testlog.Buffer
	e := newEnv(t, gen(t, 600, 17), func(o *engine.Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		o.ProgressInterval = 20 * time.Millisecond
		o.PageSize = 50
		o.ResyncOnStart = false
	})
	e.portEmu.InjectFaults(porttest.FaultSpec{Latency: 30 * time.Millisecond, Route: "POST /v1/blueprints/{b}/entities/bulk", For: time.Hour})
	e.resync()
	if _, err := e.eng.Verify(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	var progress string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, `msg="resync progress"`) && strings.Contains(l, "eta=") {
			progress = l
			break
		}
	}
	if progress == "" {
		t.Fatalf("no progress line with an ETA:\n%s", out)
	}
	for _, want := range []string{"total=600", "percent=", "per_second=", "seen="} {
		if !strings.Contains(progress, want) {
			t.Errorf("progress line lacks %s: %s", want, progress)
		}
	}
	for _, want := range []string{`msg="resync started"`, `msg="resync finished"`, "per_kind=", `msg="verify started"`, `msg="verify finished"`} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s line", want)
		}
	}
}

// Every engine series exists from the start, at zero, for its known labels:
// dashboards and alerts see zeros, not gaps.
func TestMetricsExistAtZero(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := newEnv(t, nil, func(o *engine.Options) { o.Registry = reg; o.ResyncOnStart = false })
	_ = e
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]int{}
	for _, f := range families {
		have[f.GetName()] = len(f.GetMetric())
	}
	for name, minSeries := range map[string]int{
		"portbridge_queue_depth": 1, "portbridge_queue_oldest_seconds": 1, "portbridge_parked_entities": 1, "portbridge_queue_quarantined": 1,
		"portbridge_deletions_refused_total": 6, "portbridge_entity_failures_total": 6, "portbridge_conflicts_total": 3,
		"portbridge_changes_suppressed_total": 6, "portbridge_resyncs_total": 4, "portbridge_resync_last_success_timestamp_seconds": 2,
		"portbridge_mapping_warnings_total": 7, "portbridge_mapping_skips_total": 7, "portbridge_port_push_retries_total": 1,
		"portbridge_change_apply_seconds": 1,
	} {
		if have[name] < minSeries {
			t.Errorf("%s: %d series at start, want at least %d", name, have[name], minSeries)
		}
	}
}
