package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// requireToken wraps the BridgeService routes and requires
// `Authorization: Bearer <token>` before anything of the request body is
// read, so an unauthenticated caller cannot make the server parse a large
// message. The error is written in the caller's protocol (Connect answers
// HTTP 401, gRPC and gRPC-Web a status in trailers). The challenge
// (WWW-Authenticate) is a response header: HTTP forbids authentication
// fields in trailers, where the gRPC error writer puts an error's metadata,
// and Go's HTTP/2 server drops such a trailer with a warning in the log on
// every unauthenticated call. Tokens are compared as
// SHA-256 sums in constant time, so neither the token's content nor its
// length leaks through timing; errors never echo what the caller sent.
func (s *Server) requireToken(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := checkBearer(r.Header.Get("Authorization"), s.tokenSum); err != nil {
			s.metrics.countRejected(r.URL.Path, connect.CodeUnauthenticated)
			s.log.Debug("rpc rejected", "procedure", r.URL.Path, "remote", r.RemoteAddr, "error", err)
			w.Header().Set("WWW-Authenticate", `Bearer realm="portbridge"`)
			_ = ew.Write(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkBearer checks an Authorization header value against the SHA-256 sum
// of the expected token.
func checkBearer(header string, want [sha256.Size]byte) *connect.Error {
	if header == "" {
		return unauthenticated(`missing Authorization header (want "Bearer <token>")`)
	}
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return unauthenticated(`Authorization header is not of the form "Bearer <token>"`)
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return unauthenticated("invalid bearer token")
	}
	return nil
}

func unauthenticated(msg string) *connect.Error {
	return connect.NewError(connect.CodeUnauthenticated, errors.New(msg))
}
