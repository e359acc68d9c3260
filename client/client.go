// Package client is the Go client of the portbridge sidecar's BridgeService.
// It speaks Connect, gRPC or gRPC-Web, sends the bearer token, and retries
// calls that fail with Unavailable (the sidecar restarting, a connection
// refused) with bounded, jittered backoff.
//
// Errors keep their RPC code: use connect.CodeOf(err) to read it.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/proto/portbridge/v1/portbridgev1connect"
)

// Protocol is the wire protocol the client speaks.
type Protocol int

const (
	// ProtocolConnect is the Connect protocol with binary protobuf; it works
	// over HTTP/1.1 and HTTP/2.
	ProtocolConnect Protocol = iota
	// ProtocolGRPC is gRPC; over http:// it uses HTTP/2 cleartext (h2c).
	ProtocolGRPC
	// ProtocolGRPCWeb is gRPC-Web; it works over HTTP/1.1 and HTTP/2.
	ProtocolGRPCWeb
)

// String returns "connect", "grpc" or "grpc-web".
func (p Protocol) String() string {
	switch p {
	case ProtocolConnect:
		return "connect"
	case ProtocolGRPC:
		return "grpc"
	case ProtocolGRPCWeb:
		return "grpc-web"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

// ParseProtocol parses "connect", "grpc" or "grpc-web".
func ParseProtocol(s string) (Protocol, error) {
	for _, p := range []Protocol{ProtocolConnect, ProtocolGRPC, ProtocolGRPCWeb} {
		if strings.EqualFold(s, p.String()) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown protocol %q (want connect, grpc or grpc-web)", s)
}

// Defaults for retries on Unavailable.
const (
	DefaultMaxRetries  = 3
	DefaultRetryBase   = 200 * time.Millisecond
	maxRetryBackoff    = 10 * time.Second
	dialTimeout        = 10 * time.Second
	tlsHandshakeTimout = 10 * time.Second
)

type options struct {
	protocol   Protocol
	httpClient connect.HTTPClient
	tlsConfig  *tls.Config
	maxRetries int
	retryBase  time.Duration
}

// Option configures New.
type Option func(*options)

// WithProtocol selects the wire protocol. Default ProtocolConnect.
func WithProtocol(p Protocol) Option { return func(o *options) { o.protocol = p } }

// WithHTTPClient makes the client send its requests through hc. The caller
// then answers for HTTP/2 (gRPC needs it) and TLS; WithTLSConfig cannot be
// combined with it.
func WithHTTPClient(hc connect.HTTPClient) Option { return func(o *options) { o.httpClient = hc } }

// WithTLSConfig sets the TLS configuration for an https:// base URL (for
// example a private CA's RootCAs).
func WithTLSConfig(cfg *tls.Config) Option { return func(o *options) { o.tlsConfig = cfg } }

// WithRetry sets how often a call failing with Unavailable is retried (0
// disables retries) and the first backoff; each further backoff doubles, up
// to 10s, with jitter. Default 3 retries from 200ms.
func WithRetry(maxRetries int, base time.Duration) Option {
	return func(o *options) { o.maxRetries, o.retryBase = maxRetries, base }
}

// Client calls one sidecar. It is safe for concurrent use.
type Client struct {
	rpc        portbridgev1connect.BridgeServiceClient
	transport  *http.Transport // owned by the client; nil with WithHTTPClient
	maxRetries int
	retryBase  time.Duration
}

// New returns a client of the sidecar at baseURL (http:// or https://, for
// example "http://127.0.0.1:8080"). An empty token sends no Authorization
// header (for a sidecar running without authentication on loopback).
func New(baseURL, token string, opts ...Option) (*Client, error) {
	o := options{protocol: ProtocolConnect, maxRetries: DefaultMaxRetries, retryBase: DefaultRetryBase}
	for _, opt := range opts {
		opt(&o)
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: base URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("client: base URL %q: scheme must be http or https", baseURL)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("client: base URL %q: want scheme://host[:port][/path] without user, query or fragment", baseURL)
	}
	if o.maxRetries < 0 || (o.maxRetries > 0 && o.retryBase <= 0) {
		return nil, fmt.Errorf("client: retry: %d retries from %s: want retries >= 0 and a positive base", o.maxRetries, o.retryBase)
	}
	if strings.ContainsAny(token, "\r\n") {
		return nil, errors.New("client: token contains a line break")
	}

	c := &Client{maxRetries: o.maxRetries, retryBase: o.retryBase}
	hc := o.httpClient
	switch {
	case hc != nil && o.tlsConfig != nil:
		return nil, errors.New("client: WithTLSConfig and WithHTTPClient cannot be combined; configure TLS in the HTTP client")
	case hc == nil && o.tlsConfig != nil && u.Scheme != "https":
		return nil, fmt.Errorf("client: WithTLSConfig needs an https:// base URL, got %q", baseURL)
	case hc == nil:
		c.transport = newTransport(u.Scheme == "https", o.protocol, o.tlsConfig)
		hc = &http.Client{Transport: c.transport}
	}

	copts := []connect.ClientOption{connect.WithInterceptors(bearer(token))}
	switch o.protocol {
	case ProtocolConnect:
	case ProtocolGRPC:
		copts = append(copts, connect.WithGRPC())
	case ProtocolGRPCWeb:
		copts = append(copts, connect.WithGRPCWeb())
	default:
		return nil, fmt.Errorf("client: unknown protocol %v", o.protocol)
	}
	c.rpc = portbridgev1connect.NewBridgeServiceClient(hc, strings.TrimSuffix(u.String(), "/"), copts...)
	return c, nil
}

// newTransport returns a transport for the scheme and protocol. Over
// http://, gRPC needs HTTP/2 with prior knowledge (h2c), the others use
// HTTP/1.1, which any proxy passes. Over https://, ALPN picks HTTP/2 when the
// server offers it.
func newTransport(https bool, p Protocol, tlsCfg *tls.Config) *http.Transport {
	var protocols http.Protocols
	switch {
	case https:
		protocols.SetHTTP1(true)
		protocols.SetHTTP2(true)
	case p == ProtocolGRPC:
		protocols.SetUnencryptedHTTP2(true)
	default:
		protocols.SetHTTP1(true)
	}
	t := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: tlsHandshakeTimout,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 16,
		Protocols:           &protocols,
	}
	if tlsCfg != nil {
		t.TLSClientConfig = tlsCfg.Clone()
	}
	return t
}

// Close releases the client's idle connections. Calls after Close still
// work; they open new connections.
func (c *Client) Close() {
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
}

// PublishChanges stores a batch of changes in the sidecar's durable queue;
// it returns once the batch is stored.
func (c *Client) PublishChanges(ctx context.Context, req *portbridgev1.PublishChangesRequest) (*portbridgev1.PublishChangesResponse, error) {
	return unary(ctx, c, "PublishChanges", req, c.rpc.PublishChanges)
}

// StreamChanges sends msgs on one client stream and returns the sidecar's
// acknowledgement of all of them. On Unavailable the whole stream is sent
// again: changes are coalesced by entity in the queue, so repeating them is
// harmless.
func (c *Client) StreamChanges(ctx context.Context, msgs []*portbridgev1.StreamChangesRequest) (*portbridgev1.StreamChangesResponse, error) {
	return retry(ctx, c, "StreamChanges", func(ctx context.Context) (*portbridgev1.StreamChangesResponse, error) {
		stream := c.rpc.StreamChanges(ctx)
		for _, m := range msgs {
			if err := stream.Send(m); err != nil {
				// The server ended the stream early; CloseAndReceive
				// returns its error.
				break
			}
		}
		resp, err := stream.CloseAndReceive()
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	})
}

// TriggerResync starts a full resync, or reports the one already running.
func (c *Client) TriggerResync(ctx context.Context, req *portbridgev1.TriggerResyncRequest) (*portbridgev1.TriggerResyncResponse, error) {
	return unary(ctx, c, "TriggerResync", req, c.rpc.TriggerResync)
}

// GetStatus returns the sidecar's status.
func (c *Client) GetStatus(ctx context.Context) (*portbridgev1.GetStatusResponse, error) {
	return unary(ctx, c, "GetStatus", &portbridgev1.GetStatusRequest{}, c.rpc.GetStatus)
}

// PreviewMapping maps one entity without writing anything.
func (c *Client) PreviewMapping(ctx context.Context, req *portbridgev1.PreviewMappingRequest) (*portbridgev1.PreviewMappingResponse, error) {
	return unary(ctx, c, "PreviewMapping", req, c.rpc.PreviewMapping)
}

// unary makes one unary call with retries.
func unary[Req, Resp any](ctx context.Context, c *Client, name string, req *Req,
	call func(context.Context, *connect.Request[Req]) (*connect.Response[Resp], error),
) (*Resp, error) {
	return retry(ctx, c, name, func(ctx context.Context) (*Resp, error) {
		resp, err := call(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	})
}

// retry calls fn until it succeeds, fails with a code other than
// Unavailable, the retries are used up, or ctx ends.
func retry[T any](ctx context.Context, c *Client, name string, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	for attempt := 0; ; attempt++ {
		res, err := fn(ctx)
		if err == nil {
			return res, nil
		}
		if connect.CodeOf(err) != connect.CodeUnavailable || ctx.Err() != nil {
			return zero, fmt.Errorf("portbridge %s: %w", name, err)
		}
		if attempt >= c.maxRetries {
			return zero, fmt.Errorf("portbridge %s: %d attempts: %w", name, attempt+1, err)
		}
		t := time.NewTimer(backoff(c.retryBase, attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return zero, fmt.Errorf("portbridge %s: %w (gave up waiting to retry: %w)", name, err, ctx.Err())
		case <-t.C:
		}
	}
}

// backoff returns the wait before retry attempt+1: base doubled per attempt,
// capped, and jittered to between half and all of that.
func backoff(base time.Duration, attempt int) time.Duration {
	d := base
	for i := 0; i < attempt && d < maxRetryBackoff; i++ {
		d *= 2
	}
	d = min(d, maxRetryBackoff)
	half := d / 2
	return half + rand.N(d-half+1)
}

// bearer sets the Authorization header on every call.
type bearer string

func (b bearer) set(h http.Header) {
	if b != "" {
		h.Set("Authorization", "Bearer "+string(b))
	}
}

func (b bearer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		b.set(req.Header())
		return next(ctx, req)
	}
}

func (b bearer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		b.set(conn.RequestHeader())
		return conn
	}
}

func (b bearer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
