package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/server"
	"github.com/portbridge/portbridge/server/servertest"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestPrintStatus(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(now.Add(d)) }
	st := &portbridgev1.GetStatusResponse{
		Version:   "v1.2.3",
		StartedAt: ts(-3 * time.Hour),
		Queue:     &portbridgev1.QueueStatus{Depth: 12, OldestAge: durationpb.New(3 * time.Minute), Retrying: 1, PendingDeletions: 2},
		LastResync: &portbridgev1.ResyncStatus{Id: "r-7", Trigger: "interval", StartedAt: ts(-time.Hour), FinishedAt: ts(-time.Hour + 62*time.Second), State: "succeeded",
			Totals:                 &portbridgev1.SyncCounts{Seen: 130, Pushed: 5, Unchanged: 125},
			PerKind:                map[string]*portbridgev1.SyncCounts{"component": {Seen: 100, Pushed: 5, Unchanged: 95}, "api": {Seen: 30, Unchanged: 30}},
			DeletionsSkippedReason: "threshold: 40% > 10%"},
		CurrentResync: &portbridgev1.ResyncStatus{Id: "r-8", Trigger: "rpc", StartedAt: ts(-12 * time.Second), State: "running"},
		Port:          &portbridgev1.PeerStatus{Reachable: true, Url: "https://api.getport.io", LastSuccess: ts(-5 * time.Second)},
		Backstage:     &portbridgev1.PeerStatus{Url: "http://backstage:7007", LastError: "connection refused"},
		PortRateLimit: &portbridgev1.RateLimitStatus{Remaining: -1, Waited: durationpb.New(1500 * time.Millisecond), Throttled: 3,
			WaitingUntil: ts(4 * time.Minute), WaitReason: "429 Retry-After 3600s, capped at 5m0s (port.maxRetryAfter)", Waiting: 2, Capped: 1},
		OwnedEntities: map[string]uint64{"service": 100, "api": 30},
		Ownership:     &portbridgev1.OwnershipStatus{State: "rebuilt", At: ts(-2 * time.Hour), Detail: "130 Port entities of this data source adopted"},
		PortIntegration: &portbridgev1.PortIntegrationStatus{Identifier: "backstage-prod", Registered: true, RegisteredAt: ts(-3 * time.Hour), MappingSource: "port",
			MappingFingerprint: "abc123", MappingError: `blueprint component has no property "colour"`, LastPoll: ts(-20 * time.Second),
			LastResyncRequest: ts(-time.Hour), ExampleKinds: []string{"API", "component"}},
	}
	var out bytes.Buffer
	if err := printStatus(&out, "http://127.0.0.1:8080", st, now); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	for _, want := range []string{"v1.2.3", "up 3h0m0s", "depth              12", "3m0s", "unreachable", "connection refused",
		"remaining unknown", "throttled (429) 3", "waiting until 2025-03-01T12:04:00Z (4m0s from now), 2 requests",
		"429 Retry-After 3600s, capped at 5m0s", "1 pauses cut to port.maxRetryAfter", "api 30, service 100", "Current resync: r-8 (rpc) running", "running for 12s",
		"took 1m2s", "deletions skipped: threshold", "Last verify: none", "Ownership", "rebuilt at 2025-03-01T10:00:00Z", "130 Port entities",
		"backstage-prod", "mapping from port", "fingerprint abc123", "mapping refused", `blueprint component has no property "colour"`, "(20s ago)", "API, component"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// An empty status prints without panicking.
	out.Reset()
	if err := printStatus(&out, "x", &portbridgev1.GetStatusResponse{}, now); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
}

func TestRunStatus(t *testing.T) {
	srv, err := server.New(server.Config{Token: "tok-status", Version: "v9"}, &servertest.Backend{})
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, ln, "", "")
	t.Setenv("PORTBRIDGE_TOKEN", "")
	t.Setenv("PORTBRIDGE_SERVER_TOKEN", "")
	tests := []struct {
		name    string
		args    []string
		env     string
		want    string
		wantErr string
	}{
		{"text", []string{"--addr", ln.Addr().String(), "--token", "tok-status"}, "", "v9", ""},
		{"json grpc", []string{"--addr", "http://" + ln.Addr().String(), "--json", "--protocol", "grpc"}, "tok-status", `"version": "v9"`, ""},
		{"no token", []string{"--addr", ln.Addr().String()}, "", "", "PORTBRIDGE_TOKEN"},
		{"bad protocol", []string{"--protocol", "x"}, "", "", "--protocol"},
		{"bad addr", []string{"--addr", "nonsense"}, "", "", "--addr"},
		{"extra args", []string{"x"}, "", "", "unexpected"},
		{"missing cacert", []string{"--cacert", "/nonexistent"}, "", "", "--cacert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PORTBRIDGE_TOKEN", tt.env)
			var out, errOut bytes.Buffer
			err := runStatus(context.Background(), tt.args, &out, &errOut)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "tok-status") {
					t.Errorf("error contains the token")
				}
				return
			}
			if err != nil || !strings.Contains(out.String(), tt.want) {
				t.Fatalf("err %v, output %s", err, out.String())
			}
			if strings.Contains(tt.name, "json") && !json.Valid(out.Bytes()) {
				t.Errorf("invalid JSON")
			}
		})
	}
}
