package port

import (
	"errors"
	"fmt"
	"net/http"
)

// Error codes Port puts in the `error` field of its error envelope, plus the
// codes this client uses for failures it detects before sending.
const (
	CodeNotFound               = "not_found"
	CodeIdentifierTaken        = "identifier_taken"
	CodeSchemaMismatch         = "blueprint_schema_mismatch"
	CodeHasDependents          = "has_dependents"
	CodeInvalidRequest         = "invalid_request"
	CodeBadRequest             = "bad_request"
	CodeRequiredRelation       = "required_relation"
	CodeRelationManyViolation  = "relation_many_violation"
	CodeTeamInheritanceEnabled = "team_inheritance_enabled"
	CodeMissingPermissions     = "missing_permissions"
	CodeUnauthorized           = "unauthorized"
	CodeRateLimited            = "rate_limited"
	CodeInternalError          = "internal_error"
	CodeInvalidIdentifier      = "invalid_identifier"  // client-side: rejected before sending
	CodeInvalidInput           = "invalid_input"       // client-side: an argument the client refused before sending
	CodeEntityTooLarge         = "entity_too_large"    // client-side: one entity exceeds the body limit
	CodeMissingResult          = "missing_result"      // Port's bulk answer had no result for an index
	CodeItemFailed             = "item_failed"         // Port marked a bulk result failed without saying why
	CodeUnexpectedResponse     = "unexpected_response" // a body that is not Port's envelope
	CodeRequestFailed          = "request_failed"      // no answer: network error or context done
)

// Error is a failed Port request, or a failure of one entity inside a bulk
// request. Status is the HTTP status (for bulk items, the item's statusCode;
// 0 when the client rejected the input before sending). It never carries
// credentials or tokens.
type Error struct {
	Status  int
	Code    string
	Message string
	Method  string
	Path    string
	// Entity is the identifier of the entity concerned, when there is one.
	Entity string
	// TraceID is Port's X-Trace-Id of the response, for support requests.
	TraceID string
}

// Error implements error.
func (e *Error) Error() string {
	s := "port"
	if e.Method != "" {
		s += " " + e.Method + " " + e.Path
	}
	if e.Entity != "" {
		s += fmt.Sprintf(" entity %q", e.Entity)
	}
	if e.Status != 0 {
		s += fmt.Sprintf(": %d %s", e.Status, http.StatusText(e.Status))
	}
	if e.Code != "" {
		s += ": " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.TraceID != "" {
		s += " (trace " + e.TraceID + ")"
	}
	return s
}

func asError(err error) (*Error, bool) {
	var pe *Error
	ok := errors.As(err, &pe)
	return pe, ok
}

// HasCode reports whether err is a Port error with the given `error` code.
func HasCode(err error, code string) bool {
	pe, ok := asError(err)
	return ok && pe.Code == code
}

// StatusOf returns the HTTP status of a Port error, or 0.
func StatusOf(err error) int {
	if pe, ok := asError(err); ok {
		return pe.Status
	}
	return 0
}

// IsNotFound reports a 404: a missing blueprint, entity or relation target.
func IsNotFound(err error) bool {
	return StatusOf(err) == http.StatusNotFound || HasCode(err, CodeNotFound)
}

// IsConflict reports a 409 identifier_taken.
func IsConflict(err error) bool {
	return StatusOf(err) == http.StatusConflict || HasCode(err, CodeIdentifierTaken)
}

// IsSchemaMismatch reports an entity that does not match its blueprint.
func IsSchemaMismatch(err error) bool { return HasCode(err, CodeSchemaMismatch) }

// IsHasDependents reports a delete refused because other entities depend on
// the target.
func IsHasDependents(err error) bool { return HasCode(err, CodeHasDependents) }

// IsInvalidRequest reports a 422 invalid_request: the request does not
// match the route's schema.
func IsInvalidRequest(err error) bool { return HasCode(err, CodeInvalidRequest) }

// IsInvalidIdentifier reports an identifier the client refused to send.
func IsInvalidIdentifier(err error) bool { return HasCode(err, CodeInvalidIdentifier) }

// IsUnauthorized reports a 401 (bad credentials or a token Port rejected
// even after a refresh).
func IsUnauthorized(err error) bool { return StatusOf(err) == http.StatusUnauthorized }

// IsRetryable reports a failure worth trying again later: throttling,
// timeouts and server-side errors (408, 429, 5xx), or an error that is not a
// Port error at all (network failures).
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	pe, ok := asError(err)
	if !ok {
		return true
	}
	return pe.Code == CodeRequestFailed || pe.Status == http.StatusInternalServerError || retryableStatus(pe.Status)
}

// retryableStatus lists the statuses the client retries by itself.
func retryableStatus(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}
