package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/portbridge/portbridge/sidecar/catalog"
	"github.com/portbridge/portbridge/sidecar/config"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/version"
)

// preflightTimeout bounds each peer check; the checks run concurrently, so
// a preflight answers within this time whatever the network does.
const preflightTimeout = 5 * time.Second

// peer names an outside service the sidecar needs.
type peer int

const (
	peerBackstage peer = iota
	peerPort
)

// peerProblem is why a peer cannot be used, phrased for the operator: what
// was tried (the URL, without user info), the cause, and the config keys to
// check (with their environment variables).
type peerProblem struct {
	Peer  string   `json:"peer"`
	URL   string   `json:"url"`
	Cause string   `json:"cause"`
	Keys  []string `json:"keys"`
	Hint  string   `json:"hint,omitempty"`
	// Auth is set when the peer answered but refused the credentials.
	Auth bool `json:"auth"`
}

func (p *peerProblem) Error() string {
	keys := make([]string, len(p.Keys))
	for i, k := range p.Keys {
		keys[i] = k + " (env " + envOf(k) + ")"
	}
	s := fmt.Sprintf("%s at %s: %s; check %s", p.Peer, p.URL, p.Cause, strings.Join(keys, ", "))
	if p.Hint != "" {
		s += "; " + p.Hint
	}
	return s
}

// preflightError lists the peers that cannot be used.
type preflightError struct{ problems []*peerProblem }

func (e *preflightError) Error() string {
	if len(e.problems) == 1 {
		return e.problems[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d peers are not usable:", len(e.problems))
	for _, p := range e.problems {
		b.WriteString("\n  - " + p.Error())
	}
	return b.String()
}

// preflight checks, concurrently and within preflightTimeout, that each
// peer answers and accepts the configured credentials: Backstage with one
// catalog request (by-query, limit 0), Port by fetching an access token. It
// returns nil or a *preflightError with one problem per failing peer.
func preflight(ctx context.Context, cfg *config.Config, peers ...peer) error {
	probs := make([]*peerProblem, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, preflightTimeout)
			defer cancel()
			switch p {
			case peerBackstage:
				probs[i] = checkBackstage(ctx, cfg)
			case peerPort:
				probs[i] = checkPort(ctx, cfg)
			}
		})
	}
	wg.Wait()
	e := &preflightError{}
	for _, p := range probs {
		if p != nil {
			e.problems = append(e.problems, p)
		}
	}
	if len(e.problems) == 0 {
		return nil
	}
	return e
}

// logPreflight runs preflight in the background and logs the outcome: one
// error line per unusable peer, or one info line. serve keeps running
// either way (changes are queued and retried); the log says what to fix.
func logPreflight(ctx context.Context, cfg *config.Config, log *slog.Logger) {
	go func() {
		err := preflight(ctx, cfg, peerBackstage, peerPort)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			log.Info("peers reachable", "backstage", redactURL(cfg.Backstage.BaseURL), "port", redactURL(cfg.Port.BaseURL))
			return
		}
		for _, p := range peerProblems(err) {
			log.Error(p.Peer+" is not usable; portbridge keeps queueing changes and retrying", "url", p.URL, "cause", p.Cause,
				"check", strings.Join(p.Keys, ", "), "hint", p.Hint)
		}
	}()
}

// peerProblems unpacks the problems of a preflight error.
func peerProblems(err error) []*peerProblem {
	var pe *preflightError
	if errors.As(err, &pe) {
		return pe.problems
	}
	return nil
}

func checkBackstage(ctx context.Context, cfg *config.Config) *peerProblem {
	u := redactURL(cfg.Backstage.BaseURL)
	problem := func(cause string, auth bool, hint string, keys ...string) *peerProblem {
		return &peerProblem{Peer: "Backstage", URL: u, Cause: cause, Auth: auth, Hint: hint, Keys: keys}
	}
	cc, err := catalog.New(catalog.Config{BaseURL: cfg.Backstage.BaseURL, Token: cfg.Backstage.Token, Retries: -1,
		HTTPClient: &http.Client{Timeout: preflightTimeout}})
	if err != nil {
		return problem(scrub(err.Error(), cfg.Backstage.BaseURL), false, "", "backstage.baseUrl", "backstage.token")
	}
	err = cc.Ping(ctx)
	var ae *catalog.APIError
	switch {
	case err == nil:
		return nil
	case catalog.IsUnauthorized(err):
		hint := "the token must equal a static token in Backstage's backend.auth.externalAccess, with access to the catalog plugin"
		if cfg.Backstage.Token == "" {
			hint = "no token is configured; Backstage needs one from backend.auth.externalAccess"
		}
		return problem(answerCause(err), true, hint, "backstage.token")
	case errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound:
		return problem(answerCause(err), false, "backstage.baseUrl is the backend's base URL, without /api/catalog", "backstage.baseUrl")
	case errors.As(err, &ae):
		return problem(answerCause(err), false, "", "backstage.baseUrl")
	}
	return problem(networkCause(err), false, "is Backstage's backend running and reachable from here?", "backstage.baseUrl")
}

func checkPort(ctx context.Context, cfg *config.Config) *peerProblem {
	u := redactURL(cfg.Port.BaseURL)
	problem := func(cause string, auth bool, hint string, keys ...string) *peerProblem {
		return &peerProblem{Peer: "Port", URL: u, Cause: cause, Auth: auth, Hint: hint, Keys: keys}
	}
	if cfg.Port.ClientID == "" || cfg.Port.ClientSecret == "" {
		return problem("no credentials are configured", true, "Port's docs: Find your Port credentials", "port.clientId", "port.clientSecret")
	}
	pc, err := port.New(port.Config{BaseURL: cfg.Port.BaseURL, ClientID: cfg.Port.ClientID, ClientSecret: cfg.Port.ClientSecret,
		UserAgent: "portbridge/" + version.Version, MaxRetries: -1, HTTPClient: &http.Client{Timeout: preflightTimeout}})
	if err != nil {
		return problem(scrub(err.Error(), cfg.Port.BaseURL), false, "", "port.baseUrl")
	}
	err = pc.Authenticate(ctx)
	var pe *port.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pe) && (pe.Status == http.StatusUnauthorized || pe.Status == http.StatusForbidden):
		return problem(answerCause(pe), true, "the client id and secret must belong to this Port organization and region ("+port.BaseURLEU+" EU, "+port.BaseURLUS+" US)",
			"port.clientId", "port.clientSecret", "port.baseUrl")
	case errors.As(err, &pe) && pe.Status != 0:
		return problem(answerCause(pe), false, "is port.baseUrl Port's API ("+port.BaseURLEU+" or "+port.BaseURLUS+")?", "port.baseUrl")
	}
	return problem(networkCause(err), false, "EU "+port.BaseURLEU+", US "+port.BaseURLUS+"; a proxy is taken from HTTPS_PROXY", "port.baseUrl")
}

// answerCause describes an HTTP answer: status and the peer's message.
func answerCause(err error) string {
	var ae *catalog.APIError
	if errors.As(err, &ae) {
		s := fmt.Sprintf("answered %d %s", ae.StatusCode, http.StatusText(ae.StatusCode))
		if ae.Name != "" || ae.Message != "" {
			s += " (" + strings.TrimPrefix(strings.TrimSpace(ae.Name+": "+ae.Message), ": ") + ")"
		}
		return s
	}
	var pe *port.Error
	if errors.As(err, &pe) {
		s := fmt.Sprintf("answered %d %s", pe.Status, http.StatusText(pe.Status))
		if pe.Code != "" || pe.Message != "" {
			s += " (" + strings.TrimPrefix(strings.TrimSpace(pe.Code+": "+pe.Message), ": ") + ")"
		}
		return s
	}
	return err.Error()
}

// networkCause names why no HTTP answer came: refused, unknown host, time-out,
// TLS, with the low-level error for the record.
func networkCause(err error) string {
	var dns *net.DNSError
	var op *net.OpError
	var cert *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var recordHdr tls.RecordHeaderError
	switch {
	case errors.As(err, &dns):
		return fmt.Sprintf("cannot resolve host %q (%v)", dns.Name, dns.Err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (nothing listens there)"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by the peer"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host or network unreachable"
	case errors.As(err, &cert), errors.As(err, &unknownCA), errors.As(err, &hostname):
		return "TLS certificate not accepted: " + innermost(err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return "the server speaks plain HTTP, not HTTPS: use an http:// URL"
	case errors.As(err, &recordHdr):
		return "TLS handshake failed (is it an http:// URL?): " + innermost(err)
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return fmt.Sprintf("no answer within %s", preflightTimeout)
	case errors.As(err, &op):
		return op.Err.Error()
	}
	return innermost(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// innermost returns the message of the deepest wrapped error, which for
// transport errors is the useful part ("x509: certificate signed by unknown
// authority").
func innermost(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// redactURL returns u without user info, query or fragment (which may hold
// credentials); an unparsable URL is returned as a placeholder.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return "(invalid URL)"
	}
	p.User = nil
	p.RawQuery, p.Fragment = "", ""
	return p.String()
}

// scrub replaces a raw URL (which may carry user info or a token in its
// query) in a message with its redacted form.
func scrub(msg, rawURL string) string {
	if rawURL == "" {
		return msg
	}
	return strings.ReplaceAll(msg, rawURL, redactURL(rawURL))
}

// envOf returns the environment variable that overrides a config key.
func envOf(key string) string {
	def := config.Default()
	for _, f := range config.Fields(&def) {
		if f.Key == key {
			return f.Env
		}
	}
	return "?"
}
