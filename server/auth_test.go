package server

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/portbridge/portbridge/internal/testlog"
	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/proto/portbridge/v1/portbridgev1connect"
	"github.com/portbridge/portbridge/server/servertest"
)

// testlog.Buffer is a log sink safe for the server's goroutines.
// An unauthenticated call is refused in every protocol without a warning in
// the server's log: the challenge header goes in the response headers, where
// HTTP allows it, and never in gRPC trailers, which may not carry it (Go's
// HTTP/2 server logged "ignoring invalid trailer" for every such call).
func TestUnauthenticatedCallsLogNothing(t *testing.T) {
	t.Parallel()
	var logs testlog.Buffer
	cfg := defaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	url, _ := startServer(t, cfg, &servertest.Backend{})
	ctx := context.Background()

	gc := portbridgev1.NewBridgeServiceClient(dialGRPC(t, url, insecure.NewCredentials()))
	for _, tok := range []string{"", "wrong"} {
		cctx := ctx
		if tok != "" {
			cctx = withToken(ctx, tok)
		}
		_, err := gc.GetStatus(cctx, &portbridgev1.GetStatusRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("grpc-go with token %q: %v, want Unauthenticated", tok, err)
		}
	}
	for _, opt := range []connect.ClientOption{connect.WithGRPC(), connect.WithGRPCWeb()} {
		c := portbridgev1connect.NewBridgeServiceClient(h2cClient(t), url, opt)
		_, err := c.GetStatus(ctx, connect.NewRequest(&portbridgev1.GetStatusRequest{}))
		if connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("connect client: %v, want Unauthenticated", err)
		}
	}
	// Connect over HTTP/1.1 answers 401 with the challenge.
	req, _ := http.NewRequest(http.MethodPost, url+portbridgev1connect.BridgeServiceGetStatusProcedure, strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http1Client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Bearer realm="portbridge"` {
		t.Fatalf("Connect: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if s := logs.String(); strings.Contains(s, "level=WARN") || strings.Contains(s, "level=ERROR") || strings.Contains(s, "railer") {
		t.Fatalf("unauthenticated calls logged:\n%s", s)
	}
}
