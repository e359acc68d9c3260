package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/proto/portbridge/v1/portbridgev1connect"
	"github.com/portbridge/portbridge/server/servertest"
)

// TestConnectJSONOverHTTP1 calls the service the way curl does: a plain
// HTTP/1.1 POST of JSON.
func TestConnectJSONOverHTTP1(t *testing.T) {
	t.Parallel()
	const (
		status  = "/portbridge.v1.BridgeService/GetStatus"
		publish = "/portbridge.v1.BridgeService/PublishChanges"
	)
	big := `{"changes":[{"entityRef":"component:default/a","deleted":{}}],"source":"` + strings.Repeat("x", 2048) + `"}`
	tests := []struct {
		name     string
		path     string
		auth     string
		body     string
		wantHTTP int
		wantCode string // Connect error code; "" for success
		wantText string // in the body
	}{
		{"status", status, "Bearer " + testToken, `{}`, 200, "", `"version":"v-test"`},
		{"scheme is case-insensitive", status, "bearer " + testToken, `{}`, 200, "", `"version"`},
		{"missing token", status, "", `{}`, 401, "unauthenticated", "missing Authorization"},
		{"wrong token", status, "Bearer wrong-guess-123", `{}`, 401, "unauthenticated", "invalid bearer token"},
		{"basic auth", status, "Basic " + testToken, `{}`, 401, "unauthenticated", "not of the form"},
		{"token only", status, testToken, `{}`, 401, "unauthenticated", "not of the form"},
		{"missing token before a bad body", publish, "", `{not json`, 401, "unauthenticated", ""},
		{"publish entity as is", publish, "Bearer " + testToken,
			`{"changes":[{"entityRef":"component:default/petstore","observedAt":"2024-05-01T10:00:00Z","upserted":{"entity":
			{"apiVersion":"backstage.io/v1alpha1","kind":"Component","metadata":{"name":"petstore","annotations":{"x":"y"}},"spec":{"type":"service","anything":[1,2]}}}}]}`,
			200, "", `"accepted":1`},
		{"malformed JSON", publish, "Bearer " + testToken, `{"changes":[`, 400, "invalid_argument", "unmarshal"},
		{"empty body", publish, "Bearer " + testToken, ``, 400, "invalid_argument", ""},
		{"unknown top-level field", publish, "Bearer " + testToken,
			`{"changes":[{"entityRef":"component:default/a","deleted":{}}],"fullSnapshotz":true}`, 400, "invalid_argument", "fullSnapshotz"},
		{"unknown change field", publish, "Bearer " + testToken,
			`{"changes":[{"entityRef":"component:default/a","deleted":{},"kind":"x"}]}`, 400, "invalid_argument", "kind"},
		{"both upserted and deleted", publish, "Bearer " + testToken,
			`{"changes":[{"entityRef":"component:default/a","deleted":{},"upserted":{"entity":{}}}]}`, 400, "invalid_argument", "oneof"},
		{"empty batch", publish, "Bearer " + testToken, `{"changes":[]}`, 400, "invalid_argument", "changes: must not be empty"},
		{"one bad item", publish, "Bearer " + testToken,
			`{"changes":[{"entityRef":"component:default/a","deleted":{}},{"entityRef":"component:default/b","upserted":{"entity":{"kind":"Component","metadata":{}}}}]}`,
			400, "invalid_argument", "changes[1].upserted.entity.metadata.name: required"},
		{"oversized", publish, "Bearer " + testToken, big, 429, "resource_exhausted", "larger than"},
	}
	b := &servertest.Backend{}
	cfg := defaultConfig()
	cfg.MaxRequestBytes = 1024
	url, _ := startServer(t, cfg, b)
	hc := http1Client(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequest(http.MethodPost, url+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.ProtoMajor != 1 {
				t.Errorf("answered over HTTP/%d, want HTTP/1.1", resp.ProtoMajor)
			}
			if resp.StatusCode != tt.wantHTTP || !strings.Contains(string(body), tt.wantText) {
				t.Errorf("HTTP %d %s, want %d containing %q", resp.StatusCode, body, tt.wantHTTP, tt.wantText)
			}
			if tt.wantCode != "" {
				var e struct{ Code, Message string }
				if err := json.Unmarshal(body, &e); err != nil || e.Code != tt.wantCode {
					t.Errorf("error body %s, want code %q", body, tt.wantCode)
				}
			}
			if tt.wantHTTP == 401 {
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
				if strings.Contains(string(body), testToken) || strings.Contains(string(body), "wrong-guess-123") {
					t.Errorf("error body %s echoes a token", body)
				}
			}
		})
	}
	t.Cleanup(func() {
		for _, batch := range b.Batches() {
			if len(batch) != 1 || batch[0].EntityRef != "component:default/petstore" {
				t.Errorf("stored %v; only the valid publish should be stored", batch)
			}
		}
	})
}

// TestOversizedMessages checks the size limit for every protocol and for a
// streamed message.
func TestOversizedMessages(t *testing.T) {
	t.Parallel()
	cfg := defaultConfig()
	cfg.MaxRequestBytes = 1024
	b := &servertest.Backend{}
	url, _ := startServer(t, cfg, b)
	huge := &portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{del("component:default/a")}, Source: strings.Repeat("x", 4096)}
	for _, tt := range []struct {
		name string
		opt  connect.ClientOption
	}{
		{"connect", connect.WithProtoJSON()},
		{"grpc", connect.WithGRPC()},
		{"grpc-web", connect.WithGRPCWeb()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := portbridgev1connect.NewBridgeServiceClient(h2cClient(t), url, tt.opt, bearer(testToken))
			_, err := c.PublishChanges(context.Background(), connect.NewRequest(huge))
			if connect.CodeOf(err) != connect.CodeResourceExhausted {
				t.Errorf("unary: %v, want ResourceExhausted", err)
			}
			stream := c.StreamChanges(context.Background())
			_ = stream.Send(&portbridgev1.StreamChangesRequest{Changes: huge.Changes, Source: huge.Source})
			if _, err := stream.CloseAndReceive(); connect.CodeOf(err) != connect.CodeResourceExhausted {
				t.Errorf("stream: %v, want ResourceExhausted", err)
			}
		})
	}
	t.Cleanup(func() {
		if n := len(b.Batches()); n != 0 {
			t.Errorf("stored %d oversized batches", n)
		}
	})
}

func dialGRPC(t *testing.T, url string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	addr := strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// TestGRPCGoClient uses the plain grpc-go stubs (bridge_grpc.pb.go).
func TestGRPCGoClient(t *testing.T) {
	t.Parallel()
	b := &servertest.Backend{}
	url, _ := startServer(t, defaultConfig(), b)
	c := portbridgev1.NewBridgeServiceClient(dialGRPC(t, url, insecure.NewCredentials()))
	ctx := context.Background()
	req := &portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{upsert(t, "component:default/a", "Component", "", "a")}}

	resp, err := c.PublishChanges(withToken(ctx, testToken), req)
	if err != nil || resp.Accepted != 1 {
		t.Fatalf("PublishChanges = %v, %v", resp, err)
	}
	for _, tok := range []string{"", "wrong"} {
		cctx := ctx
		if tok != "" {
			cctx = withToken(ctx, tok)
		}
		if _, err := c.PublishChanges(cctx, req); status.Code(err) != codes.Unauthenticated {
			t.Errorf("token %q: %v, want Unauthenticated", tok, err)
		}
		if _, err := c.GetStatus(cctx, &portbridgev1.GetStatusRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("GetStatus with token %q: %v, want Unauthenticated", tok, err)
		}
	}

	bad := &portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{del("component:default/a"), del("broken")}}
	_, err = c.PublishChanges(withToken(ctx, testToken), bad)
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "changes[1].entity_ref") {
		t.Errorf("bad batch: %v, want InvalidArgument naming changes[1].entity_ref", err)
	}
	var details bool
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && br.FieldViolations[0].Field == "changes[1].entity_ref" {
			details = true
		}
	}
	if !details {
		t.Errorf("bad batch: details %v lack the BadRequest", st.Details())
	}

	stream, err := c.StreamChanges(withToken(ctx, testToken))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := stream.Send(&portbridgev1.StreamChangesRequest{Changes: []*portbridgev1.Change{del("component:default/s" + string(rune('a'+i)))}}); err != nil {
			t.Fatal(err)
		}
	}
	sresp, err := stream.CloseAndRecv()
	if err != nil || sresp.Accepted != 3 || sresp.Messages != 3 {
		t.Errorf("StreamChanges = %v, %v", sresp, err)
	}
	if n := len(b.Batches()); n != 4 {
		t.Errorf("stored %d batches, want 4", n)
	}
}

func TestGRPCHealth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		service  string
		readyErr error
		want     healthpb.HealthCheckResponse_ServingStatus
		wantCode codes.Code
	}{
		{"server", "", nil, healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"service", "portbridge.v1.BridgeService", nil, healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"not ready", "", io.ErrClosedPipe, healthpb.HealthCheckResponse_NOT_SERVING, codes.OK},
		{"unknown service", "foo.Bar", nil, 0, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			url, _ := startServer(t, defaultConfig(), &servertest.Backend{ReadyErr: tt.readyErr})
			// No token: health needs none.
			resp, err := healthpb.NewHealthClient(dialGRPC(t, url, insecure.NewCredentials())).
				Check(context.Background(), &healthpb.HealthCheckRequest{Service: tt.service})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("Check: %v, want %v", err, tt.wantCode)
			}
			if err == nil && resp.Status != tt.want {
				t.Errorf("status %v, want %v", resp.Status, tt.want)
			}
		})
	}
}

func TestReflection(t *testing.T) {
	t.Parallel()
	url, _ := startServer(t, defaultConfig(), &servertest.Backend{})
	conn := dialGRPC(t, url, insecure.NewCredentials())
	want := []string{"portbridge.v1.BridgeService", "grpc.health.v1.Health"}
	ctx := context.Background()

	s1, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r1, err := s1.Recv()
	if err != nil {
		t.Fatalf("v1 reflection: %v", err)
	}
	var got []string
	for _, s := range r1.GetListServicesResponse().GetService() {
		got = append(got, s.GetName())
	}
	for _, w := range want {
		if !strings.Contains(strings.Join(got, " "), w) {
			t.Errorf("v1 reflection lists %v, want %s", got, w)
		}
	}
	// The file descriptor must resolve, so grpcurl/buf curl can build calls.
	if err := s1.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "portbridge.v1.BridgeService"}}); err != nil {
		t.Fatal(err)
	}
	if r, err := s1.Recv(); err != nil || len(r.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("file containing BridgeService: %v, %v", r, err)
	}
	_ = s1.CloseSend()

	// v1alpha is deprecated but still what older grpcurl versions ask for.
	s2, err := reflectionv1alpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 testing the deprecated v1alpha service on purpose
	if err := s2.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r2, err := s2.Recv()
	//lint:ignore SA1019 testing the deprecated v1alpha service on purpose
	if err != nil || len(r2.GetListServicesResponse().GetService()) < 2 {
		t.Errorf("v1alpha reflection: %v, %v", r2, err)
	}
	_ = s2.CloseSend()
}

func TestNoAuthOnLoopback(t *testing.T) {
	t.Parallel()
	url, _ := startServer(t, Config{AllowNoAuth: true}, &servertest.Backend{})
	c := portbridgev1.NewBridgeServiceClient(dialGRPC(t, url, insecure.NewCredentials()))
	if _, err := c.GetStatus(context.Background(), &portbridgev1.GetStatusRequest{}); err != nil {
		t.Errorf("GetStatus without token on a no-auth server: %v", err)
	}
}

func TestServeTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := servertest.SelfSignedTLS(t)
	srv, err := New(defaultConfig(), &servertest.Backend{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, certFile, keyFile) }()

	// grpc-go insists on HTTP/2 negotiated through ALPN.
	conn := dialGRPC(t, "https://"+ln.Addr().String(), credentials.NewTLS(&tls.Config{RootCAs: pool}))
	st, err := portbridgev1.NewBridgeServiceClient(conn).GetStatus(withToken(ctx, testToken), &portbridgev1.GetStatusRequest{})
	if err != nil || st.Version != "v-test" {
		t.Errorf("GetStatus over TLS = %v, %v", st, err)
	}
	_ = conn.Close()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestServeErrors(t *testing.T) {
	t.Parallel()
	certFile, _, _ := servertest.SelfSignedTLS(t)
	srv, err := New(defaultConfig(), &servertest.Backend{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, cert, key, want string
	}{
		{"cert without key", certFile, "", "both a certificate file and a key file"},
		{"missing files", "/nonexistent/tls.crt", "/nonexistent/tls.key", "/nonexistent/tls.crt"},
		{"key is not a key", certFile, certFile, "load TLS certificate"},
	}
	for _, tt := range tests {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		err = srv.Serve(context.Background(), ln, tt.cert, tt.key)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	if err := srv.ListenAndServe(context.Background(), "256.0.0.1:bad", "", ""); err == nil || !strings.Contains(err.Error(), "256.0.0.1:bad") {
		t.Errorf("ListenAndServe on a bad address: %v", err)
	}
}

// TestGracefulShutdown ends Serve's context while a PublishChanges call is
// in the Backend: the call still completes and is acknowledged, and Serve
// returns nil.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	b := &servertest.Backend{BeforePublish: func(context.Context) {
		close(entered)
		<-release
	}}
	srv, err := New(defaultConfig(), b)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, "", "") }()

	c := portbridgev1.NewBridgeServiceClient(dialGRPC(t, "http://"+ln.Addr().String(), insecure.NewCredentials()))
	answered := make(chan error, 1)
	go func() {
		_, err := c.PublishChanges(withToken(context.Background(), testToken),
			&portbridgev1.PublishChangesRequest{Changes: []*portbridgev1.Change{del("component:default/a")}})
		answered <- err
	}()
	<-entered
	cancel() // shutdown starts with the call in flight
	// Shutdown closes the listener first: once dials fail, it has begun.
	for {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			break
		}
		_ = conn.Close()
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := <-answered; err != nil {
		t.Errorf("in-flight call during shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if n := len(b.Batches()); n != 1 {
		t.Errorf("stored %d batches, want 1", n)
	}
}
