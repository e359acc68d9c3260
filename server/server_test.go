package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/structpb"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/proto/portbridge/v1/portbridgev1connect"
	"github.com/portbridge/portbridge/server/servertest"
)

const testToken = "s3cret-token"

// startServer serves a Server on a 127.0.0.1 port through Serve (h2c) until
// the test ends, and returns its base URL.
func startServer(t testing.TB, cfg Config, b Backend) (string, *Server) {
	t.Helper()
	srv, err := New(cfg, b)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, "", "") }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v after shutdown", err)
		}
	})
	return "http://" + ln.Addr().String(), srv
}

func defaultConfig() Config { return Config{Token: testToken, Version: "v-test"} }

// h2cClient speaks HTTP/2 over cleartext, as gRPC needs. Its connections
// are closed when the test ends (before the server's graceful shutdown,
// which would otherwise wait for them).
func h2cClient(t testing.TB) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// http1Client is a plain HTTP/1.1 client, like curl, whose connections are
// closed when the test ends.
func http1Client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// bearer adds the token to every call of a Connect client, unary and
// streaming.
func bearer(token string) connect.ClientOption {
	return connect.WithInterceptors(bearerInterceptor(token))
}

type bearerInterceptor string

func (b bearerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set("Authorization", "Bearer "+string(b))
		return next(ctx, req)
	}
}

func (b bearerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(b))
		return conn
	}
}

func (b bearerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func entity(t *testing.T, kind, ns, name string) *structpb.Struct {
	t.Helper()
	meta := map[string]any{"name": name}
	if ns != "" {
		meta["namespace"] = ns
	}
	s, err := structpb.NewStruct(map[string]any{"apiVersion": "backstage.io/v1alpha1", "kind": kind, "metadata": meta})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func upsert(t *testing.T, ref, kind, ns, name string) *portbridgev1.Change {
	return &portbridgev1.Change{EntityRef: ref, Change: &portbridgev1.Change_Upserted{Upserted: &portbridgev1.Upserted{Entity: entity(t, kind, ns, name)}}}
}

func del(ref string) *portbridgev1.Change {
	return &portbridgev1.Change{EntityRef: ref, Change: &portbridgev1.Change_Deleted{Deleted: &portbridgev1.Deleted{}}}
}

func TestConnectProtocols(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect-proto", nil},
		{"connect-json", []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpc-web", []connect.ClientOption{connect.WithGRPCWeb()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := &servertest.Backend{}
			url, _ := startServer(t, defaultConfig(), b)
			c := portbridgev1connect.NewBridgeServiceClient(h2cClient(t), url, append(tt.opts, bearer(testToken))...)
			ctx := context.Background()
			resp, err := c.PublishChanges(ctx, connect.NewRequest(&portbridgev1.PublishChangesRequest{
				Changes: []*portbridgev1.Change{upsert(t, "Component:Default/Petstore", "Component", "", "petstore"), del("api:default/old")},
				Source:  "test",
			}))
			if err != nil {
				t.Fatalf("PublishChanges: %v", err)
			}
			if resp.Msg.Accepted != 2 || resp.Msg.QueueDepth != 2 {
				t.Errorf("response = %v, want accepted 2, depth 2", resp.Msg)
			}
			got := b.Batches()
			if len(got) != 1 || got[0][0].EntityRef != "component:default/petstore" || got[0][0].ObservedAt == nil {
				t.Errorf("stored %v, want the ref lower-cased and observed_at set", got)
			}
			st, err := c.GetStatus(ctx, connect.NewRequest(&portbridgev1.GetStatusRequest{}))
			if err != nil {
				t.Fatalf("GetStatus: %v", err)
			}
			if st.Msg.Version != "v-test" || st.Msg.Queue.GetDepth() != 2 {
				t.Errorf("status = %v", st.Msg)
			}
			rs, err := c.TriggerResync(ctx, connect.NewRequest(&portbridgev1.TriggerResyncRequest{Reason: "manual"}))
			if err != nil || rs.Msg.ResyncId != "resync-manual" || rs.Msg.AlreadyRunning {
				t.Errorf("TriggerResync = %v, %v", rs, err)
			}
			pv, err := c.PreviewMapping(ctx, connect.NewRequest(&portbridgev1.PreviewMappingRequest{Entity: entity(t, "Component", "", "petstore")}))
			if err != nil || len(pv.Msg.Entities) != 1 || pv.Msg.Entities[0].Identifier != "petstore" {
				t.Errorf("PreviewMapping = %v, %v", pv, err)
			}
		})
	}
}

func TestStreamChanges(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		msgs       []*portbridgev1.StreamChangesRequest
		wantCode   connect.Code // 0: success
		wantMsg    string
		wantStored int // batches stored
	}{
		{
			name: "three messages",
			msgs: []*portbridgev1.StreamChangesRequest{
				{Changes: []*portbridgev1.Change{del("component:default/a")}, Source: "bs"},
				{Changes: []*portbridgev1.Change{del("component:default/b"), del("component:default/c")}},
				{Changes: []*portbridgev1.Change{del("component:default/d")}, FullSnapshot: true},
			},
			wantStored: 3,
		},
		{
			name: "bad second message keeps the first",
			msgs: []*portbridgev1.StreamChangesRequest{
				{Changes: []*portbridgev1.Change{del("component:default/a")}},
				{Changes: []*portbridgev1.Change{del("component:default/b"), del("nonsense")}},
				{Changes: []*portbridgev1.Change{del("component:default/d")}},
			},
			wantCode:   connect.CodeInvalidArgument,
			wantMsg:    "messages[1].changes[1].entity_ref",
			wantStored: 1,
		},
		{
			name:     "empty message",
			msgs:     []*portbridgev1.StreamChangesRequest{{}},
			wantCode: connect.CodeInvalidArgument,
			wantMsg:  "messages[0].changes: must not be empty",
		},
		{
			name:     "no messages",
			wantCode: connect.CodeInvalidArgument,
			wantMsg:  "messages: the stream has no messages",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, proto := range []connect.ClientOption{connect.WithGRPC(), connect.WithProtoJSON()} {
				b := &servertest.Backend{}
				url, _ := startServer(t, defaultConfig(), b)
				c := portbridgev1connect.NewBridgeServiceClient(h2cClient(t), url, proto, bearer(testToken))
				stream := c.StreamChanges(context.Background())
				for _, m := range tt.msgs {
					if err := stream.Send(m); err != nil {
						break // the server answered early; CloseAndReceive has the error
					}
				}
				resp, err := stream.CloseAndReceive()
				if tt.wantCode == 0 {
					if err != nil {
						t.Fatalf("StreamChanges: %v", err)
					}
					if resp.Msg.Accepted != 4 || resp.Msg.Messages != 3 || resp.Msg.QueueDepth != 4 {
						t.Errorf("response = %v", resp.Msg)
					}
					if b.Sources()[2] != "bs" || !b.Snapshots()[2] || b.Snapshots()[0] {
						t.Errorf("sources %v snapshots %v: want source of the first message and the flag of the third", b.Sources(), b.Snapshots())
					}
				} else if connect.CodeOf(err) != tt.wantCode || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("error = %v, want %v naming %q", err, tt.wantCode, tt.wantMsg)
				}
				if got := len(b.Batches()); got != tt.wantStored {
					t.Errorf("stored %d batches, want %d", got, tt.wantStored)
				}
			}
		})
	}
}

func TestBackendErrors(t *testing.T) {
	t.Parallel()
	b := &servertest.Backend{
		PublishErrs: []error{errors.New("disk full")},
		StatusErr:   errors.New("bolt closed"),
		PreviewErr:  fmt.Errorf("mapping engine: %w", ErrUnimplemented),
	}
	url, _ := startServer(t, defaultConfig(), b)
	c := portbridgev1connect.NewBridgeServiceClient(h2cClient(t), url, connect.WithGRPC(), bearer(testToken))
	ctx := context.Background()
	_, err := c.PublishChanges(ctx, connect.NewRequest(&portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{del("component:default/a")}}))
	if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Publish failure gave %v, want Unavailable with the cause", err)
	}
	_, err = c.GetStatus(ctx, connect.NewRequest(&portbridgev1.GetStatusRequest{}))
	if connect.CodeOf(err) != connect.CodeInternal {
		t.Errorf("Status failure gave %v, want Internal", err)
	}
	_, err = c.PreviewMapping(ctx, connect.NewRequest(&portbridgev1.PreviewMappingRequest{Entity: entity(t, "Component", "", "a")}))
	if connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Errorf("PreviewMapping gave %v, want Unimplemented", err)
	}
	_, err = c.PreviewMapping(ctx, connect.NewRequest(&portbridgev1.PreviewMappingRequest{}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "entity: required") {
		t.Errorf("PreviewMapping without entity gave %v, want InvalidArgument naming entity", err)
	}
	_, err = c.TriggerResync(ctx, connect.NewRequest(&portbridgev1.TriggerResyncRequest{Reason: strings.Repeat("x", 201)}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "reason") {
		t.Errorf("TriggerResync with a long reason gave %v, want InvalidArgument naming reason", err)
	}
}

func TestHTTPEndpoints(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		path     string
		readyErr error
		want     int
		wantBody string
	}{
		{"healthz", "/healthz", errors.New("down"), 200, "ok"},
		{"readyz ready", "/readyz", nil, 200, "ready"},
		{"readyz not ready", "/readyz", errors.New("state file not open"), 503, "state file not open"},
		{"metrics", "/metrics", nil, 200, "portbridge_api_requests_total"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url, _ := startServer(t, defaultConfig(), &servertest.Backend{ReadyErr: tt.readyErr})
			// One call first so the RPC metrics have a series.
			hc := http1Client(t)
			c := portbridgev1connect.NewBridgeServiceClient(hc, url, bearer(testToken))
			if _, err := c.GetStatus(context.Background(), connect.NewRequest(&portbridgev1.GetStatusRequest{})); err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Get(url + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			if resp.StatusCode != tt.want || !strings.Contains(body.String(), tt.wantBody) {
				t.Errorf("GET %s = %d %q, want %d containing %q", tt.path, resp.StatusCode, body.String(), tt.want, tt.wantBody)
			}
		})
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		backend Backend
		wantErr string
	}{
		{"ok", Config{Token: "tok-9f3a"}, &servertest.Backend{}, ""},
		{"no auth allowed", Config{AllowNoAuth: true}, &servertest.Backend{}, ""},
		{"empty token", Config{}, &servertest.Backend{}, "token is empty"},
		{"token with spaces", Config{Token: " tok-9f3a"}, &servertest.Backend{}, "whitespace"},
		{"nil backend", Config{Token: "tok-9f3a"}, nil, "backend is nil"},
		{"negative size", Config{Token: "tok-9f3a", MaxRequestBytes: -1}, &servertest.Backend{}, "negative"},
		{"huge size", Config{Token: "tok-9f3a", MaxRequestBytes: 2 << 30}, &servertest.Backend{}, "above 1 GiB"},
		{"negative shutdown", Config{Token: "tok-9f3a", ShutdownTimeout: -time.Second}, &servertest.Backend{}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.cfg, tt.backend)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("New: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("New error = %v, want %q", err, tt.wantErr)
			}
			if err != nil && tt.cfg.Token != "" && strings.Contains(err.Error(), strings.TrimSpace(tt.cfg.Token)) {
				t.Errorf("error %q contains the token", err)
			}
		})
	}
}

func TestSharedRegistry(t *testing.T) {
	t.Parallel()
	cfg := defaultConfig()
	cfg.Registry = prometheus.NewRegistry()
	if _, err := New(cfg, &servertest.Backend{}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, &servertest.Backend{}); err != nil {
		t.Fatalf("second server on the same registry: %v", err)
	}
}
