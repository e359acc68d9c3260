package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/portbridge/portbridge/client"
	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/server"
	"github.com/portbridge/portbridge/server/servertest"
)

const token = "client-test-token"

// start serves the real server package on 127.0.0.1 with b as its Backend
// until the test ends; with certFile and keyFile it serves TLS.
func start(t *testing.T, b server.Backend, certFile, keyFile string) string {
	t.Helper()
	srv, err := server.New(server.Config{Token: token, Version: "v-client-test"}, b)
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
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	scheme := "http://"
	if certFile != "" {
		scheme = "https://"
	}
	return scheme + ln.Addr().String()
}

func newClient(t *testing.T, url, tok string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, tok, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func del(ref string) *portbridgev1.Change {
	return &portbridgev1.Change{EntityRef: ref, Change: &portbridgev1.Change_Deleted{Deleted: &portbridgev1.Deleted{}}}
}

func publishReq(refs ...string) *portbridgev1.PublishChangesRequest {
	req := &portbridgev1.PublishChangesRequest{Source: "client-test"}
	for _, r := range refs {
		req.Changes = append(req.Changes, del(r))
	}
	return req
}

// exercise calls every RPC once and checks the answers.
func exercise(t *testing.T, c *client.Client, b *servertest.Backend) {
	t.Helper()
	ctx := context.Background()
	pub, err := c.PublishChanges(ctx, publishReq("component:default/a", "API:Default/B"))
	if err != nil || pub.Accepted != 2 {
		t.Fatalf("PublishChanges = %v, %v", pub, err)
	}
	st, err := c.StreamChanges(ctx, []*portbridgev1.StreamChangesRequest{
		{Changes: []*portbridgev1.Change{del("component:default/c")}},
		{Changes: []*portbridgev1.Change{del("component:default/d")}},
	})
	if err != nil || st.Accepted != 2 || st.Messages != 2 || st.QueueDepth != 4 {
		t.Fatalf("StreamChanges = %v, %v", st, err)
	}
	status, err := c.GetStatus(ctx)
	if err != nil || status.Version != "v-client-test" || status.Queue.GetDepth() != 4 {
		t.Fatalf("GetStatus = %v, %v", status, err)
	}
	rs, err := c.TriggerResync(ctx, &portbridgev1.TriggerResyncRequest{Reason: "ci"})
	if err != nil || rs.ResyncId != "resync-ci" {
		t.Fatalf("TriggerResync = %v, %v", rs, err)
	}
	e, _ := structpb.NewStruct(map[string]any{"kind": "Component", "metadata": map[string]any{"name": "a"}})
	pv, err := c.PreviewMapping(ctx, &portbridgev1.PreviewMappingRequest{Entity: e})
	if err != nil || len(pv.Entities) != 1 {
		t.Fatalf("PreviewMapping = %v, %v", pv, err)
	}
	if got := b.Batches(); len(got) != 3 || got[0][1].EntityRef != "api:default/b" {
		t.Errorf("stored %v", got)
	}
}

func TestProtocols(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := servertest.SelfSignedTLS(t)
	for _, p := range []client.Protocol{client.ProtocolConnect, client.ProtocolGRPC, client.ProtocolGRPCWeb} {
		t.Run(p.String(), func(t *testing.T) {
			t.Parallel()
			b := &servertest.Backend{}
			exercise(t, newClient(t, start(t, b, "", ""), token, client.WithProtocol(p)), b)
		})
		t.Run(p.String()+" over TLS", func(t *testing.T) {
			t.Parallel()
			b := &servertest.Backend{}
			url := start(t, b, certFile, keyFile)
			exercise(t, newClient(t, url, token, client.WithProtocol(p), client.WithTLSConfig(&tls.Config{RootCAs: pool})), b)
		})
	}
}

func TestRetry(t *testing.T) {
	t.Parallel()
	unavailable := errors.New("state file busy")
	tests := []struct {
		name      string
		failures  int
		retries   int
		wantCode  connect.Code // 0: success
		wantCalls int
	}{
		{"fails twice then succeeds", 2, 3, 0, 3},
		{"gives up", 5, 2, connect.CodeUnavailable, 3},
		{"retries disabled", 1, 0, connect.CodeUnavailable, 1},
	}
	for _, tt := range tests {
		for _, p := range []client.Protocol{client.ProtocolConnect, client.ProtocolGRPC} {
			t.Run(tt.name+" "+p.String(), func(t *testing.T) {
				t.Parallel()
				b := &servertest.Backend{}
				for range tt.failures {
					b.PublishErrs = append(b.PublishErrs, unavailable)
				}
				c := newClient(t, start(t, b, "", ""), token, client.WithProtocol(p), client.WithRetry(tt.retries, time.Millisecond))
				_, err := c.PublishChanges(context.Background(), publishReq("component:default/a"))
				if connect.CodeOf(err) != tt.wantCode && !(tt.wantCode == 0 && err == nil) {
					t.Errorf("error %v, want code %v", err, tt.wantCode)
				}
				if err != nil && !strings.Contains(err.Error(), "state file busy") {
					t.Errorf("error %q lacks the server's cause", err)
				}
				if got := b.PublishCalls(); got != tt.wantCalls {
					t.Errorf("%d Publish calls, want %d", got, tt.wantCalls)
				}
			})
		}
	}
}

func TestStreamRetrySendsTheWholeStreamAgain(t *testing.T) {
	t.Parallel()
	b := &servertest.Backend{PublishErrs: []error{errors.New("busy")}}
	c := newClient(t, start(t, b, "", ""), token, client.WithProtocol(client.ProtocolGRPC), client.WithRetry(2, time.Millisecond))
	resp, err := c.StreamChanges(context.Background(), []*portbridgev1.StreamChangesRequest{
		{Changes: []*portbridgev1.Change{del("component:default/a")}},
		{Changes: []*portbridgev1.Change{del("component:default/b")}},
	})
	if err != nil || resp.Accepted != 2 {
		t.Fatalf("StreamChanges = %v, %v", resp, err)
	}
	if got := len(b.Batches()); got != 2 {
		t.Errorf("stored %d batches, want 2", got)
	}
}

func TestNoRetry(t *testing.T) {
	t.Parallel()
	b := &servertest.Backend{}
	url := start(t, b, "", "")
	tests := []struct {
		name string
		tok  string
		req  *portbridgev1.PublishChangesRequest
		want connect.Code
	}{
		{"invalid batch", token, publishReq("not-a-ref"), connect.CodeInvalidArgument},
		{"empty batch", token, publishReq(), connect.CodeInvalidArgument},
		{"wrong token", "wrong", publishReq("component:default/a"), connect.CodeUnauthenticated},
		{"no token", "", publishReq("component:default/a"), connect.CodeUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A retry would wait an hour: the test would time out.
			c := newClient(t, url, tt.tok, client.WithRetry(5, time.Hour))
			_, err := c.PublishChanges(context.Background(), tt.req)
			if connect.CodeOf(err) != tt.want {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if err != nil && tt.tok != "" && strings.Contains(err.Error(), tt.tok) {
				t.Errorf("error %q contains the token", err)
			}
		})
	}
	if n := len(b.Batches()); n != 0 {
		t.Errorf("stored %d batches", n)
	}
}

// deadURL returns the URL of a port nothing listens on any more.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr
}

func TestUnreachableServer(t *testing.T) {
	t.Parallel()
	url := deadURL(t)
	t.Run("retries connection refused", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, url, token, client.WithRetry(2, time.Millisecond))
		_, err := c.GetStatus(context.Background())
		if connect.CodeOf(err) != connect.CodeUnavailable || !strings.Contains(err.Error(), "3 attempts") {
			t.Errorf("error %v, want Unavailable after 3 attempts", err)
		}
	})
	t.Run("stops when the context ends", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, url, token, client.WithRetry(5, time.Hour))
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			// Cancel while the client waits an hour to retry.
			time.Sleep(20 * time.Millisecond)
			cancel()
		}()
		_, err := c.GetStatus(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want it to wrap context.Canceled", err)
		}
	})
}

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		url     string
		token   string
		opts    []client.Option
		wantErr string
	}{
		{"http", "http://127.0.0.1:8080", token, nil, ""},
		{"https with path", "https://sidecar.example/api/", token, nil, ""},
		{"no token", "http://127.0.0.1:8080", "", nil, ""},
		{"no scheme", "127.0.0.1:8080", token, nil, "base URL"},
		{"ftp", "ftp://host", token, nil, "scheme must be http or https"},
		{"no host", "http://", token, nil, "without user, query or fragment"},
		{"query", "http://host?x=1", token, nil, "without user, query or fragment"},
		{"user", "http://u:p@host", token, nil, "without user"},
		{"unparseable", "http://[::1", token, nil, "base URL"},
		{"token with newline", "http://host", "a\nb", nil, "line break"},
		{"negative retries", "http://host", token, []client.Option{client.WithRetry(-1, time.Second)}, "retries >= 0"},
		{"zero base", "http://host", token, []client.Option{client.WithRetry(2, 0)}, "positive base"},
		{"TLS config on http", "http://host", token, []client.Option{client.WithTLSConfig(&tls.Config{})}, "https://"},
		{"TLS config and HTTP client", "https://host", token, []client.Option{client.WithTLSConfig(&tls.Config{}), client.WithHTTPClient(&http.Client{})}, "cannot be combined"},
		{"unknown protocol", "http://host", token, []client.Option{client.WithProtocol(client.Protocol(9))}, "unknown protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := client.New(tt.url, tt.token, tt.opts...)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				c.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseProtocol(t *testing.T) {
	t.Parallel()
	for _, p := range []client.Protocol{client.ProtocolConnect, client.ProtocolGRPC, client.ProtocolGRPCWeb} {
		got, err := client.ParseProtocol(strings.ToUpper(p.String()))
		if err != nil || got != p {
			t.Errorf("ParseProtocol(%q) = %v, %v", p, got, err)
		}
	}
	for _, s := range []string{"", "http", "grpcweb"} {
		if _, err := client.ParseProtocol(s); err == nil {
			t.Errorf("ParseProtocol(%q) succeeded", s)
		}
	}
}
