// Package port is the client for Port's REST API (getport.io / port.io): it
// authenticates with client credentials, manages blueprints, upserts,
// deletes and searches entities in bulk, and paces itself with one limiter
// shared by every caller so that Port's rate limits are respected.
package port

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/portbridge/portbridge/sidecar/redact"
)

// Base URLs of Port's regions.
const (
	BaseURLEU = "https://api.port.io"
	BaseURLUS = "https://api.us.port.io"
)

// Config configures a Client.
type Config struct {
	BaseURL      string // default BaseURLEU; legacy *.getport.io hosts are accepted, a trailing /v1 is dropped
	ClientID     string // Port client id
	ClientSecret string // Port client secret; never logged
	// Version is the product version in the User-Agent, default "dev".
	Version string
	// IntegrationIdentifier names this installation in Port: its
	// integration and, in the User-Agent, the data source of every entity
	// it writes. Default DefaultIntegrationIdentifier.
	IntegrationIdentifier string
	// UserAgent, when set, is sent instead of the one built from Version and
	// IntegrationIdentifier.
	UserAgent         string
	MaxConcurrency    int                   // cap on in-flight requests, default 8
	RequestsPerSecond float64               // optional client-side limit, 0 = none (server headers still honoured)
	HTTPClient        *http.Client          // optional
	Logger            *slog.Logger          // optional
	Metrics           prometheus.Registerer // optional: request latency per route/status, rate-limit waits, retries

	// MaxRetryAfter caps any pause Port asks for (Retry-After,
	// x-ratelimit-reset); default 5 minutes, Port's rate-limit window.
	MaxRetryAfter time.Duration
	// Limiter, when set, is shared with other clients of the process;
	// RequestsPerSecond and MaxRetryAfter are then ignored.
	Limiter *Limiter
	// MaxRetries bounds the retries of one request on 408/429/502/503/504
	// and network errors; default 8, negative means none.
	MaxRetries int
	// RetryBaseDelay is the first backoff delay (doubled per retry, with
	// jitter, capped at 30 s); default 250 ms.
	RetryBaseDelay time.Duration
}

// Client talks to Port's REST API. It is safe for concurrent use.
type Client struct {
	base        string
	userAgent   string
	integration string
	version     string
	id          string
	secret      string
	http        *http.Client
	log         *slog.Logger
	limiter     *Limiter
	sem         chan struct{}
	retries     int
	baseDelay   time.Duration
	metrics     *metrics

	tokMu    sync.Mutex
	token    string
	tokenExp time.Time
}

// New validates cfg and returns a client. It does not contact Port.
func New(cfg Config) (*Client, error) {
	base := strings.TrimRight(cfg.BaseURL, "/")
	if base == "" {
		base = BaseURLEU
	}
	base = strings.TrimSuffix(base, "/v1")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("port client: base URL %s must be an absolute http(s) URL", redact.Quote(cfg.BaseURL))
	}
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("port client: client id and client secret are required")
	}
	ident := cfg.IntegrationIdentifier
	if ident == "" {
		ident = DefaultIntegrationIdentifier
	}
	if err := ValidateIntegrationIdentifier(ident); err != nil {
		return nil, fmt.Errorf("port client: %w", err)
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = UserAgent(cfg.Version, ident)
	}
	conc := cfg.MaxConcurrency
	if conc <= 0 {
		conc = 8
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lim := cfg.Limiter
	if lim == nil {
		lim = NewLimiter(cfg.RequestsPerSecond, cfg.MaxRetryAfter)
	}
	retries := cfg.MaxRetries
	switch {
	case retries == 0:
		retries = 8
	case retries < 0:
		retries = 0
	}
	delay := cfg.RetryBaseDelay
	if delay <= 0 {
		delay = 250 * time.Millisecond
	}
	m, err := newMetrics(cfg.Metrics, lim)
	if err != nil {
		return nil, err
	}
	return &Client{
		base: base, userAgent: ua, integration: ident, version: segment(cfg.Version, "dev"), id: cfg.ClientID, secret: cfg.ClientSecret,
		http: hc, log: log, limiter: lim, sem: make(chan struct{}, conc),
		retries: retries, baseDelay: delay, metrics: m,
	}, nil
}

// UserAgent returns the User-Agent the client sends; Port records it as the
// data source of every entity the client writes.
func (c *Client) UserAgent() string { return c.userAgent }

// IntegrationIdentifier returns the identifier of this installation's
// integration in Port.
func (c *Client) IntegrationIdentifier() string { return c.integration }

// RateLimit returns the last seen rate-limit headers, the total time spent
// waiting in the limiter and the number of 429 answers.
func (c *Client) RateLimit() RateLimitState { return c.limiter.State() }

// Authenticate fetches an access token now (it is otherwise fetched on the
// first request), so that bad credentials show at start-up.
func (c *Client) Authenticate(ctx context.Context) error {
	_, err := c.accessToken(ctx)
	return err
}

// escape escapes one path segment; '+' is escaped too, so that no server
// can read it as a space.
func escape(seg string) string {
	return strings.ReplaceAll(url.PathEscape(seg), "+", "%2B")
}

// envelope is the part of every Port answer the client checks.
type envelope struct {
	OK      *bool  `json:"ok"`
	Error   string `json:"error"`
	Message string `json:"message"`
}

// call is one logical request to Port.
type call struct {
	method string
	route  string // path template, for metrics and logs
	path   string // escaped path
	query  url.Values
	body   []byte
	noAuth bool
	// anyOK decodes a 2xx body whatever its top-level ok says (a bulk
	// answer carries per-entity results even when ok is false).
	anyOK  bool
	header http.Header // extra request headers
	// url, when set, is an absolute URL Port gave us (an ingest URL),
	// used instead of the base URL and path.
	url string
}

// do sends c, retrying as the package describes, and decodes a 2xx body
// into out (when not nil). It returns the final status; err is a *Error for
// Port's error answers.
func (c *Client) do(ctx context.Context, req call, out any) (int, error) {
	refreshed := false
	for attempt := 0; ; attempt++ {
		status, hdr, body, err := c.send(ctx, req)
		if err != nil {
			if ctx.Err() != nil {
				return 0, fmt.Errorf("port %s %s: %w", req.method, req.path, ctx.Err())
			}
			if attempt >= c.retries {
				return 0, fmt.Errorf("port %s %s: %w", req.method, req.path, err)
			}
			c.log.Debug("port request failed, retrying", "route", req.route, "err", err, "attempt", attempt+1)
			if err := c.backoff(ctx, req, attempt, nil, "network"); err != nil {
				return 0, err
			}
			continue
		}
		switch {
		case status == http.StatusUnauthorized && !req.noAuth && !refreshed:
			refreshed = true
			c.dropToken()
			c.log.Debug("port answered 401, refreshing the token", "route", req.route)
			attempt--
			continue
		case retryableStatus(status) && attempt < c.retries:
			c.log.Debug("port asked to retry", "route", req.route, "status", status, "attempt", attempt+1)
			if err := c.backoff(ctx, req, attempt, hdr, strings.ToLower(http.StatusText(status))); err != nil {
				return 0, err
			}
			continue
		}
		return status, decodeAnswer(req, status, hdr, body, out)
	}
}

// backoff waits before a retry. After a 429, or an answer with
// Retry-After, the shared limiter is already paused (capped at
// MaxRetryAfter, and visible in RateLimit), so only a small jitter is added
// here; other answers wait a jittered exponential delay.
func (c *Client) backoff(ctx context.Context, req call, attempt int, hdr http.Header, reason string) error {
	c.limiter.countRetry()
	c.metrics.retry(req.route, reason)
	d := min(c.baseDelay<<min(attempt, 16), 30*time.Second)
	d = d/2 + rand.N(d/2+1)
	if hdr != nil && (hdr.Get("Retry-After") != "" || reason == "too many requests") {
		d = rand.N(c.baseDelay/4 + 1)
	}
	return sleep(ctx, d)
}

// send performs one HTTP exchange under the concurrency cap and the limiter.
func (c *Client) send(ctx context.Context, req call) (int, http.Header, []byte, error) {
	var token string
	if !req.noAuth {
		t, err := c.accessToken(ctx)
		if err != nil {
			return 0, nil, nil, err
		}
		token = t
	}
	u := c.base + req.path
	if req.url != "" {
		u = req.url
	}
	if len(req.query) > 0 {
		u += "?" + req.query.Encode()
	}
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hreq, err := http.NewRequestWithContext(ctx, req.method, u, body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("building request: %w", err)
	}
	for k, v := range req.header {
		hreq.Header[k] = v
	}
	hreq.Header.Set("User-Agent", c.userAgent)
	hreq.Header.Set("Accept", "application/json")
	if req.body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		hreq.Header.Set("Authorization", "Bearer "+token)
	}

	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, nil, nil, ctx.Err()
	}
	defer func() { <-c.sem }()
	waitStart := time.Now()
	release, err := c.limiter.acquire(ctx)
	if err != nil {
		return 0, nil, nil, err
	}
	defer release()
	c.metrics.waited(time.Since(waitStart))

	start := time.Now()
	resp, err := c.http.Do(hreq)
	if err != nil {
		c.metrics.observe(req.route, 0, time.Since(start))
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if until, why := c.limiter.observe(resp.StatusCode, resp.Header); !until.IsZero() {
		c.log.Warn("Port asked to wait: pausing every Port request", "route", req.route, "until", until.UTC().Format(time.RFC3339),
			"wait", time.Until(until).Round(time.Millisecond).String(), "reason", why)
	}
	c.metrics.observe(req.route, resp.StatusCode, time.Since(start))
	if resp.StatusCode == http.StatusTooManyRequests {
		c.metrics.throttled()
	}
	if err != nil {
		return 0, nil, nil, fmt.Errorf("reading the answer: %w", err)
	}
	return resp.StatusCode, resp.Header, data, nil
}

// decodeAnswer turns a final answer into out or a *Error.
func decodeAnswer(req call, status int, hdr http.Header, body []byte, out any) error {
	var env envelope
	jsonErr := json.Unmarshal(body, &env)
	if status >= 200 && status < 300 && jsonErr == nil && (env.OK == nil || *env.OK || req.anyOK) {
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(body, out); err != nil {
			return &Error{Status: status, Code: CodeUnexpectedResponse, Method: req.method, Path: req.path,
				Message: "decoding the answer: " + err.Error(), TraceID: hdr.Get("X-Trace-Id")}
		}
		return nil
	}
	e := &Error{Status: status, Code: env.Error, Message: env.Message, Method: req.method, Path: req.path,
		TraceID: hdr.Get("X-Trace-Id")}
	if jsonErr != nil {
		e.Code = CodeUnexpectedResponse
		e.Message = truncate(string(body), 200)
	}
	return e
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// accessToken returns a cached token or fetches one; concurrent callers
// wait for one fetch.
func (c *Client) accessToken(ctx context.Context) (string, error) {
	c.tokMu.Lock()
	defer c.tokMu.Unlock()
	if c.token != "" && time.Now().Before(c.tokenExp) {
		return c.token, nil
	}
	body, err := json.Marshal(map[string]string{"clientId": c.id, "clientSecret": c.secret})
	if err != nil {
		return "", err
	}
	var out struct {
		AccessToken string  `json:"accessToken"`
		ExpiresIn   float64 `json:"expiresIn"`
	}
	req := call{method: http.MethodPost, route: "POST /v1/auth/access_token", path: "/v1/auth/access_token", body: body, noAuth: true}
	status, err := c.do(ctx, req, &out)
	if err != nil {
		return "", fmt.Errorf("port: getting an access token for client %q: %w", c.id, err)
	}
	if status != http.StatusOK || out.AccessToken == "" || out.ExpiresIn <= 0 {
		return "", &Error{Status: status, Code: CodeUnexpectedResponse, Method: req.method, Path: req.path,
			Message: "the token answer has no accessToken or expiresIn"}
	}
	ttl := time.Duration(out.ExpiresIn * float64(time.Second))
	c.token = out.AccessToken
	c.tokenExp = time.Now().Add(ttl - min(5*time.Minute, ttl/10))
	return c.token, nil
}

func (c *Client) dropToken() {
	c.tokMu.Lock()
	c.token = ""
	c.tokMu.Unlock()
}

// boolQuery returns query values with the true flags set to "true".
func boolQuery(flags ...any) url.Values {
	q := url.Values{}
	for i := 0; i+1 < len(flags); i += 2 {
		if flags[i+1].(bool) {
			q.Set(flags[i].(string), "true")
		}
	}
	return q
}
