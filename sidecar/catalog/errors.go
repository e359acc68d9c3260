package catalog

import (
	"errors"
	"fmt"

	"github.com/portbridge/portbridge/sidecar/redact"
)

// ErrNotReady is wrapped by errors for answers that mean "the catalog is
// not serving yet": 503 (Backstage starting or stopping) and a 404 without
// a Backstage error body (the catalog plugin has not mounted its router).
var ErrNotReady = errors.New("catalog not ready")

// APIError is a non-2xx answer of the catalog API. Name and Message come
// from Backstage's error body `{error:{name,message},request,response}`
// when there is one.
type APIError struct {
	Method     string // HTTP method of the request
	URL        string // the full request URL (never contains the token)
	StatusCode int
	Name       string // Backstage error name, e.g. NotFoundError, AuthenticationError
	Message    string // Backstage error message, or a snippet of a non-JSON body
}

func (e *APIError) Error() string {
	name := e.Name
	if name == "" {
		name = "HTTP error"
	}
	msg := e.Message
	if msg == "" {
		msg = "no error body"
	}
	return fmt.Sprintf("catalog %s %s: %d %s: %s", e.Method, redact.URL(e.URL), e.StatusCode, name, msg)
}

// Unwrap lets errors.Is(err, ErrNotReady) match not-ready answers.
func (e *APIError) Unwrap() error {
	if e.notReady() {
		return ErrNotReady
	}
	return nil
}

func (e *APIError) notReady() bool {
	return e.StatusCode == 503 || (e.StatusCode == 404 && e.Name == "")
}

// MalformedResponseError is an answer that is not what the catalog API
// promises: undecodable JSON, a page without items, an entity without
// kind or metadata.name, a by-refs answer of the wrong length.
type MalformedResponseError struct {
	URL    string
	Reason string
	Err    error
}

func (e *MalformedResponseError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("catalog %s: malformed response: %s: %v", redact.URL(e.URL), e.Reason, e.Err)
	}
	return fmt.Sprintf("catalog %s: malformed response: %s", redact.URL(e.URL), e.Reason)
}

func (e *MalformedResponseError) Unwrap() error { return e.Err }

// IsNotFound reports whether err is the catalog's "no such entity" answer
// (404 with a NotFoundError body).
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.StatusCode == 404 && ae.Name != ""
}

// IsUnauthorized reports whether the catalog rejected the credentials
// (401 missing or illegal token, 403 token not allowed).
func IsUnauthorized(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && (ae.StatusCode == 401 || ae.StatusCode == 403)
}

// IsNotReady reports whether err means the catalog is starting or stopping.
func IsNotReady(err error) bool { return errors.Is(err, ErrNotReady) }

// LimitError reports catalog entities over the input limits (package
// limits). A scan skips them and ends with a LimitError after every other
// entity, so it never looks complete; a read by ref returns the other
// entities and nil for these, with the error.
type LimitError struct {
	// Refs are the entities over the limits: all of them for a read by
	// ref, the first 100 for a scan.
	Refs []string
	// Skipped counts them all.
	Skipped int
	// First says which bound the first one broke, and where.
	First string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%d catalog entities are over the input limits and were skipped (first %s: %s)", e.Skipped, firstOr(e.Refs, "?"), e.First)
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}
