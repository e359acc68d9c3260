// Package server serves the portbridge BridgeService over Connect, gRPC and
// gRPC-Web on one listener (h2c, or TLS when a certificate is configured),
// together with grpc.health.v1, server reflection, /healthz, /readyz and
// /metrics. It authenticates and validates every call and hands valid
// changes to a Backend; it knows nothing about the queue or the engine.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
	"github.com/portbridge/portbridge/proto/portbridge/v1/portbridgev1connect"
	"github.com/portbridge/portbridge/sidecar/limits"
)

// Backend is what the server needs from the sidecar. The server validates and
// normalises every change before it calls Publish.
//
// Errors a Backend returns reach the caller: a *connect.Error keeps its code,
// an error wrapping ErrUnimplemented becomes Unimplemented, one wrapping
// ErrInvalidArgument InvalidArgument (a bad mapping_yaml), context errors
// become Canceled or DeadlineExceeded, and anything else becomes Unavailable
// (Publish, TriggerResync) or Internal (Status, PreviewMapping). Their
// messages must not contain secrets.
type Backend interface {
	// Publish stores validated, normalised changes durably (fsync) before
	// returning; it returns the queue depth after.
	Publish(ctx context.Context, changes []*portbridgev1.Change, fullSnapshot bool, source string) (queueDepth uint64, err error)
	// TriggerResync starts a full resync, or reports the running one.
	TriggerResync(ctx context.Context, reason string, verify bool) (id string, alreadyRunning bool, err error)
	// Status reports the sidecar's state. The server fills in Version when
	// the Backend leaves it empty.
	Status(ctx context.Context) (*portbridgev1.GetStatusResponse, error)
	// PreviewMapping maps one entity without writing anything. A Backend
	// that has no mapping engine returns an error wrapping ErrUnimplemented.
	PreviewMapping(ctx context.Context, entity map[string]any, mappingYAML string) (*portbridgev1.PreviewMappingResponse, error)
	// Ready reports whether the sidecar can accept changes (for /readyz and
	// grpc.health.v1).
	Ready(ctx context.Context) error
}

// ErrUnimplemented is returned (wrapped) by a Backend for an RPC it cannot
// serve yet; the server answers it with connect.CodeUnimplemented.
var ErrUnimplemented = errors.New("not implemented")

// ErrInvalidArgument is wrapped by a Backend error caused by the request's
// content (a PreviewMapping mapping that does not parse or compile); the
// server answers it with connect.CodeInvalidArgument.
var ErrInvalidArgument = errors.New("invalid argument")

// DefaultMaxRequestBytes is the request size limit when Config leaves it 0.
const DefaultMaxRequestBytes = 8 << 20

// DefaultShutdownTimeout is how long Serve waits for in-flight requests when
// its context ends, when Config leaves ShutdownTimeout 0.
const DefaultShutdownTimeout = 10 * time.Second

// readyTimeout bounds one Backend.Ready call made by /readyz or health.
const readyTimeout = 5 * time.Second

// Config configures a Server.
type Config struct {
	// Token is the bearer token every BridgeService RPC must carry. It may be
	// empty only with AllowNoAuth; the caller checks that the listener is on
	// loopback (sidecar/config refuses anything else).
	Token string
	// AllowNoAuth permits an empty Token: then no RPC is authenticated.
	AllowNoAuth bool
	// MaxRequestBytes limits one request message (and a unary request's
	// body); larger ones fail with ResourceExhausted. Default 8 MiB.
	MaxRequestBytes int64
	// ShutdownTimeout bounds the graceful shutdown in Serve. Default 10s.
	ShutdownTimeout time.Duration
	// Limits bound what requests may carry (entity depth and sizes, batch
	// size, source, reason, refs, mapping_yaml); zero fields get
	// limits.Default's values. Whatever passes them can be stored in the
	// queue and decoded again.
	Limits limits.Limits
	// Version is reported by GetStatus when the Backend does not set it.
	Version string
	// Logger receives request errors and server events. Default: discard.
	Logger *slog.Logger
	// Registry is served on /metrics, and the server registers its RPC
	// metrics on it. Default: a new registry with Go and process collectors.
	Registry *prometheus.Registry
}

// Server is the sidecar's API server. Create it with New.
type Server struct {
	cfg      Config
	backend  Backend
	log      *slog.Logger
	metrics  *metrics
	tokenSum [sha256.Size]byte
	handler  http.Handler
}

// New checks cfg and builds a Server that hands changes to backend.
func New(cfg Config, backend Backend) (*Server, error) {
	if backend == nil {
		return nil, errors.New("server: backend is nil")
	}
	if cfg.Token == "" && !cfg.AllowNoAuth {
		return nil, errors.New("server: token is empty and running without authentication is not allowed")
	}
	if strings.TrimSpace(cfg.Token) != cfg.Token {
		return nil, errors.New("server: token has leading or trailing whitespace")
	}
	if cfg.MaxRequestBytes < 0 {
		return nil, fmt.Errorf("server: max request bytes is negative (%d)", cfg.MaxRequestBytes)
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.MaxRequestBytes > 1<<30 {
		return nil, fmt.Errorf("server: max request bytes %d is above 1 GiB", cfg.MaxRequestBytes)
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if err := cfg.Limits.Validate(); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if cfg.ShutdownTimeout < 0 {
		return nil, fmt.Errorf("server: shutdown timeout is negative (%s)", cfg.ShutdownTimeout)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
		cfg.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("server: register metrics: %w", err)
	}
	s := &Server{cfg: cfg, backend: backend, log: cfg.Logger, metrics: m}
	if cfg.Token != "" {
		s.tokenSum = sha256.Sum256([]byte(cfg.Token))
	}
	s.handler = s.buildHandler()
	return s, nil
}

// Handler returns the server's routes: the BridgeService (Connect, gRPC and
// gRPC-Web), grpc.health.v1, reflection (v1 and v1alpha), /healthz, /readyz
// and /metrics.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) buildHandler() http.Handler {
	mux := http.NewServeMux()
	maxMsg := int(s.cfg.MaxRequestBytes)
	common := []connect.HandlerOption{
		connect.WithReadMaxBytes(maxMsg),
		connect.WithCodec(strictJSONCodec{name: "json"}),
		connect.WithCodec(strictJSONCodec{name: "json; charset=utf-8"}),
	}
	opts := append(common, connect.WithInterceptors(s.metrics.interceptor(s.log)))
	path, h := portbridgev1connect.NewBridgeServiceHandler(&service{s: s}, opts...)
	mux.Handle(path, s.requireToken(s.limitBody(h)))

	// Health and reflection need no token: probes and grpcurl/buf curl
	// discovery must work without one, and they reveal nothing secret.
	mux.Handle(grpchealth.NewHandler(&healthChecker{ready: s.backend.Ready}, opts...))
	reflector := grpcreflect.NewStaticReflector(portbridgev1connect.BridgeServiceName, grpchealth.HealthV1ServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, opts...))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, opts...))

	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{Registry: s.cfg.Registry}))
	return mux
}

// limitBody caps the HTTP body of unary calls at the message limit plus
// framing. A client stream is many messages, each capped by the codec's
// ReadMaxBytes, so its body as a whole is not capped here.
func (s *Server) limitBody(next http.Handler) http.Handler {
	const framing = 1 << 10
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != portbridgev1connect.BridgeServiceStreamChangesProcedure {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxRequestBytes+framing)
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.backend.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// ListenAndServe listens on addr (host:port) and calls Serve.
func (s *Server) ListenAndServe(ctx context.Context, addr, tlsCert, tlsKey string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", addr, err)
	}
	return s.Serve(ctx, ln, tlsCert, tlsKey)
}

// Serve answers requests on ln until ctx ends, then shuts down gracefully:
// it stops accepting, lets in-flight requests finish for up to
// ShutdownTimeout, and closes what is left. Without tlsCert and tlsKey it
// serves HTTP/1.1 and HTTP/2 cleartext (h2c, needed by gRPC over plain TCP);
// with both it serves HTTP/1.1 and HTTP/2 over TLS. Serve closes ln and
// returns nil after a shutdown caused by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener, tlsCert, tlsKey string) error {
	if (tlsCert == "") != (tlsKey == "") {
		_ = ln.Close()
		return errors.New("server: TLS needs both a certificate file and a key file")
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(tlsCert, tlsKey)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("server: load TLS certificate %s and key %s: %w", tlsCert, tlsKey, err)
		}
		protocols.SetHTTP2(true)
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	hs.Protocols = &protocols

	errc := make(chan error, 1)
	go func() {
		if hs.TLSConfig != nil {
			// The certificate is in TLSConfig; ServeTLS adds ALPN for h2.
			errc <- hs.ServeTLS(ln, "", "")
			return
		}
		errc <- hs.Serve(ln)
	}()
	s.log.Info("api server listening", "addr", ln.Addr().String(), "tls", tlsCert != "")

	select {
	case err := <-errc:
		return fmt.Errorf("server: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc
	if err != nil {
		_ = hs.Close()
		return fmt.Errorf("server: graceful shutdown: %w", err)
	}
	s.log.Info("api server stopped")
	return nil
}
