package port

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Integration is an integration as Port answers it. Its Config is the
// mapping, in the port-app-config shape a mapping file has.
type Integration struct {
	Identifier                  string            `json:"identifier"`
	InstallationID              string            `json:"installationId"`
	InstallationAppType         string            `json:"installationAppType,omitempty"`
	Version                     string            `json:"version,omitempty"`
	Title                       *string           `json:"title,omitempty"`
	Config                      map[string]any    `json:"config,omitempty"`
	ChangelogDestination        map[string]any    `json:"changelogDestination,omitempty"`
	ResyncState                 *ResyncState      `json:"resyncState,omitempty"`
	LogAttributes               *IngestAttributes `json:"logAttributes,omitempty"`
	MetricAttributes            *IngestAttributes `json:"metricAttributes,omitempty"`
	ArePortResourcesInitialized bool              `json:"arePortResourcesInitialized,omitempty"`
	CreatedAt                   time.Time         `json:"createdAt"`
	UpdatedAt                   time.Time         `json:"updatedAt"`
}

// IngestAttributes say where an integration sends its logs or metrics.
type IngestAttributes struct {
	IngestID  string `json:"ingestId,omitempty"`
	IngestURL string `json:"ingestUrl"`
}

// ResyncStatus is the state of an integration's resync.
type ResyncStatus string

// The resync statuses Port accepts.
const (
	ResyncRunning   ResyncStatus = "running"
	ResyncCompleted ResyncStatus = "completed"
	ResyncFailed    ResyncStatus = "failed"
	ResyncAborted   ResyncStatus = "aborted"
)

// ResyncState is the resync state Port holds for an integration.
type ResyncState struct {
	Status          ResyncStatus `json:"status"`
	LastResyncStart *time.Time   `json:"lastResyncStart,omitempty"`
	LastResyncEnd   *time.Time   `json:"lastResyncEnd,omitempty"`
	NextResync      *time.Time   `json:"nextResync,omitempty"`
	// IntervalMinutes is Port's intervalInMinuets (sic).
	IntervalMinutes *float64  `json:"intervalInMinuets,omitempty"`
	UpdatedAt       time.Time `json:"updatedAt"`
}

// ResyncStateUpdate is a resync-state report. LastResyncEnd and
// NextResync are sent as null when nil (a running resync has no end yet);
// LastResyncStart is left out when nil, so that reporting the end keeps
// the start. Interval 0 is sent as null.
type ResyncStateUpdate struct {
	Status          ResyncStatus
	LastResyncStart *time.Time
	LastResyncEnd   *time.Time
	NextResync      *time.Time
	Interval        time.Duration
}

// MarshalJSON encodes the update as Port's resync-state body.
func (u ResyncStateUpdate) MarshalJSON() ([]byte, error) {
	m := map[string]any{"status": u.Status, "lastResyncEnd": timeOrNil(u.LastResyncEnd),
		"nextResync": timeOrNil(u.NextResync), "intervalInMinuets": nil}
	if u.LastResyncStart != nil {
		m["lastResyncStart"] = u.LastResyncStart.UTC().Format(time.RFC3339Nano)
	}
	if u.Interval > 0 {
		m["intervalInMinuets"] = u.Interval.Minutes()
	}
	return json.Marshal(m)
}

func timeOrNil(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// ResyncRequest is a request to resync an integration (the resync button,
// or a mapping edit, in Port's UI). A request newer than the last one
// handled means "resync now".
type ResyncRequest struct {
	ID        string    `json:"id"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// NewIntegration is the body of CreateIntegration. An empty Identifier is
// the client's IntegrationIdentifier, an empty InstallationAppType is
// IntegrationType, an empty Version the client's version; a nil Config is
// sent as {}.
type NewIntegration struct {
	Identifier           string
	Title                string
	Version              string
	InstallationAppType  string
	Config               map[string]any
	ChangelogDestination map[string]any
}

// IntegrationPatch is the body of PatchIntegration: only the set fields are
// sent. An empty patch asks Port for a resync.
type IntegrationPatch struct {
	Title                *string        `json:"title,omitempty"`
	Version              string         `json:"version,omitempty"`
	InstallationAppType  string         `json:"installationAppType,omitempty"`
	Config               map[string]any `json:"config,omitempty"`
	ChangelogDestination map[string]any `json:"changelogDestination,omitempty"`
}

// DatasourceQuery selects entities by the User-Agent that wrote them (Port's
// data source): it begins with Prefix and ends with Suffix. Before, when
// set, keeps entities last updated before it (the start of a resync).
// Limit is the page size, default 5000.
type DatasourceQuery struct {
	Prefix string
	Suffix string
	Before time.Time
	Limit  int
}

// integrationID returns id, or the client's integration when id is empty.
func (c *Client) integrationID(id string) string {
	if id == "" {
		return c.integration
	}
	return id
}

func integrationPath(id string) string { return "/v1/integration/" + escape(id) }

// integrationCall sends a request about an integration and decodes
// {"integration": ...} into an *Integration.
func (c *Client) integrationCall(ctx context.Context, req call, what, id string) (*Integration, error) {
	var out struct {
		Integration Integration `json:"integration"`
	}
	if _, err := c.do(ctx, req, &out); err != nil {
		return nil, fmt.Errorf("%s integration %q: %w", what, id, err)
	}
	return &out.Integration, nil
}

func encodeBody(v any, what string) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", what, err)
	}
	return body, nil
}

// GetIntegration returns an integration ("" is the client's own); a
// missing one gives IsNotFound(err).
func (c *Client) GetIntegration(ctx context.Context, id string) (*Integration, error) {
	id = c.integrationID(id)
	return c.integrationCall(ctx, call{method: http.MethodGet, route: "GET /v1/integration/{id}", path: integrationPath(id)}, "getting", id)
}

// CreateIntegration creates an integration; with upsert an existing one is
// updated, without it an existing one gives IsConflict(err).
func (c *Client) CreateIntegration(ctx context.Context, in NewIntegration, upsert bool) (*Integration, error) {
	body := map[string]any{"installationId": c.integrationID(in.Identifier), "installationAppType": in.InstallationAppType,
		"version": in.Version, "config": in.Config}
	if in.InstallationAppType == "" {
		body["installationAppType"] = IntegrationType
	}
	if in.Version == "" {
		body["version"] = c.version
	}
	if in.Config == nil {
		body["config"] = map[string]any{}
	}
	if in.Title != "" {
		body["title"] = in.Title
	}
	if in.ChangelogDestination != nil {
		body["changelogDestination"] = in.ChangelogDestination
	}
	data, err := encodeBody(body, "the new integration")
	if err != nil {
		return nil, err
	}
	return c.integrationCall(ctx, call{method: http.MethodPost, route: "POST /v1/integration", path: "/v1/integration",
		query: boolQuery("upsert", upsert), body: data}, "creating", body["installationId"].(string))
}

// PatchIntegration changes the fields set in patch ("" is the client's own
// integration). An empty patch asks Port for a resync; so does a changed
// config.
func (c *Client) PatchIntegration(ctx context.Context, id string, patch IntegrationPatch) (*Integration, error) {
	id = c.integrationID(id)
	data, err := encodeBody(patch, "the integration patch")
	if err != nil {
		return nil, err
	}
	return c.integrationCall(ctx, call{method: http.MethodPatch, route: "PATCH /v1/integration/{id}", path: integrationPath(id), body: data}, "patching", id)
}

// RequestResync asks Port for a resync of an integration (an empty PATCH).
func (c *Client) RequestResync(ctx context.Context, id string) error {
	_, err := c.PatchIntegration(ctx, id, IntegrationPatch{})
	return err
}

// PatchIntegrationConfig replaces an integration's config (its mapping);
// Port then asks for a resync unless skipResync.
func (c *Client) PatchIntegrationConfig(ctx context.Context, id string, config map[string]any, skipResync bool) (*Integration, error) {
	id = c.integrationID(id)
	data, err := encodeBody(map[string]any{"config": config}, "the integration config")
	if err != nil {
		return nil, err
	}
	req := call{method: http.MethodPatch, route: "PATCH /v1/integration/{id}/config", path: integrationPath(id) + "/config", body: data}
	if skipResync {
		req.header = http.Header{"X-Skip-Resync": {"true"}}
	}
	return c.integrationCall(ctx, req, "patching the config of", id)
}

// DeleteIntegration deletes an integration; a missing one gives
// IsNotFound(err).
func (c *Client) DeleteIntegration(ctx context.Context, id string) error {
	id = c.integrationID(id)
	if _, err := c.do(ctx, call{method: http.MethodDelete, route: "DELETE /v1/integration/{id}", path: integrationPath(id)}, nil); err != nil {
		return fmt.Errorf("deleting integration %q: %w", id, err)
	}
	return nil
}

// GetResyncRequest returns an integration's latest resync request, or nil
// when there is none.
func (c *Client) GetResyncRequest(ctx context.Context, id string) (*ResyncRequest, error) {
	id = c.integrationID(id)
	var out struct {
		Request *ResyncRequest `json:"request"`
	}
	_, err := c.do(ctx, call{method: http.MethodGet, route: "GET /v1/integration/{id}/resync-request", path: integrationPath(id) + "/resync-request"}, &out)
	if err != nil {
		return nil, fmt.Errorf("getting the resync request of integration %q: %w", id, err)
	}
	if out.Request == nil || out.Request.UpdatedAt.IsZero() {
		return nil, nil
	}
	return out.Request, nil
}

// PatchResyncState reports an integration's resync state and returns it as
// Port stored it (with its updatedAt).
func (c *Client) PatchResyncState(ctx context.Context, id string, u ResyncStateUpdate) (*ResyncState, error) {
	id = c.integrationID(id)
	if !slices.Contains([]ResyncStatus{ResyncRunning, ResyncCompleted, ResyncFailed, ResyncAborted}, u.Status) {
		return nil, &Error{Code: CodeInvalidInput, Message: fmt.Sprintf("integration %q: resync status %q is not running, completed, failed or aborted", id, u.Status)}
	}
	data, err := encodeBody(u, "the resync state")
	if err != nil {
		return nil, err
	}
	in, err := c.integrationCall(ctx, call{method: http.MethodPatch, route: "PATCH /v1/integration/{id}/resync-state",
		path: integrationPath(id) + "/resync-state", body: data}, "reporting the resync state of", id)
	if err != nil {
		return nil, err
	}
	if in.ResyncState == nil {
		return nil, &Error{Code: CodeUnexpectedResponse, Method: http.MethodPatch, Path: integrationPath(id) + "/resync-state",
			Message: "the answer has no resyncState"}
	}
	return in.ResyncState, nil
}

// PostKindExamples sends raw examples of one kind for an integration (what
// Port's mapping editor shows). Mask secrets before sending.
func (c *Client) PostKindExamples(ctx context.Context, id, kind string, examples []map[string]any) error {
	id = c.integrationID(id)
	if kind == "" {
		return &Error{Code: CodeInvalidInput, Message: fmt.Sprintf("integration %q: examples need a kind", id)}
	}
	if examples == nil {
		examples = []map[string]any{}
	}
	data, err := encodeBody(map[string]any{"examples": examples}, "the examples of kind "+kind)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, call{method: http.MethodPost, route: "POST /v1/integration/{id}/kinds/{kind}/examples",
		path: integrationPath(id) + "/kinds/" + escape(kind) + "/examples", body: data}, nil)
	if err != nil {
		return fmt.Errorf("sending examples of kind %q for integration %q: %w", kind, id, err)
	}
	return nil
}

// OwnDatasource selects the entities this client's installation wrote,
// whatever version wrote them.
func (c *Client) OwnDatasource() DatasourceQuery {
	return DatasourceQuery{Prefix: DatasourcePrefix(), Suffix: DatasourceSuffix(c.integration)}
}

// MaxDatasourceLimit is the largest page of ListDatasourceEntities.
const MaxDatasourceLimit = 10000

// ListDatasourceEntities streams the entities a data source wrote, a page
// per request, following `next`. Iteration stops at the first error, which
// is yielded with a zero Entity.
func (c *Client) ListDatasourceEntities(ctx context.Context, q DatasourceQuery) iter.Seq2[Entity, error] {
	return func(yield func(Entity, error) bool) {
		if q.Prefix == "" && q.Suffix == "" {
			yield(Entity{}, &Error{Code: CodeInvalidInput, Message: "a data source listing needs a prefix or a suffix"})
			return
		}
		body := map[string]any{"datasource_prefix": q.Prefix, "datasource_suffix": q.Suffix, "limit": 5000}
		if q.Limit > 0 {
			body["limit"] = min(q.Limit, MaxDatasourceLimit)
		}
		if !q.Before.IsZero() {
			body["before"] = q.Before.UTC().Format(time.RFC3339Nano)
		}
		for page := 1; ; page++ {
			data, err := encodeBody(body, "the data source listing")
			if err != nil {
				yield(Entity{}, err)
				return
			}
			var out struct {
				Entities []Entity `json:"entities"`
				Next     *string  `json:"next"`
			}
			_, err = c.do(ctx, call{method: http.MethodPost, route: "POST /v1/blueprints/entities/datasource-entities",
				path: "/v1/blueprints/entities/datasource-entities", body: data}, &out)
			if err != nil {
				yield(Entity{}, fmt.Errorf("listing the entities of data source %q…%q (page %d): %w", q.Prefix, q.Suffix, page, err))
				return
			}
			for _, e := range out.Entities {
				if !yield(e, nil) {
					return
				}
			}
			if out.Next == nil || *out.Next == "" {
				return
			}
			body["from"] = *out.Next
		}
	}
}

// LogLine is one line of an integration's event log in Port.
type LogLine struct {
	Level     string         `json:"level"` // DEBUG, INFO, WARNING, ERROR
	Message   string         `json:"message"`
	Timestamp time.Time      `json:"timestamp"`
	Extra     map[string]any `json:"extra,omitempty"`
}

// PostIntegrationLogs sends lines to an integration's event log in Port,
// at the ingest URL the integration's logAttributes name. The URL must be
// on Port's API host, or https on a host of the same domain (the bearer
// token goes with it).
func (c *Client) PostIntegrationLogs(ctx context.Context, ingestURL string, lines []LogLine) error {
	if err := c.checkIngestURL(ingestURL); err != nil {
		return err
	}
	if len(lines) == 0 {
		return nil
	}
	data, err := encodeBody(map[string]any{"logs": lines}, "the integration logs")
	if err != nil {
		return err
	}
	u, _ := url.Parse(ingestURL)
	if _, err := c.do(ctx, call{method: http.MethodPost, route: "POST {logAttributes.ingestUrl}", path: u.Path, url: ingestURL, body: data}, nil); err != nil {
		return fmt.Errorf("sending %d log lines to integration %q: %w", len(lines), c.integration, err)
	}
	return nil
}

// checkIngestURL accepts an absolute URL on the API's own host, or an
// https URL on a host of the API host's domain (api.port.io → *.port.io).
func (c *Client) checkIngestURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return &Error{Code: CodeInvalidInput, Message: fmt.Sprintf("ingest URL %q is not an absolute URL", raw)}
	}
	base, _ := url.Parse(c.base)
	if strings.EqualFold(u.Host, base.Host) && u.Scheme == base.Scheme {
		return nil
	}
	labels := strings.Split(base.Hostname(), ".")
	if len(labels) >= 2 && u.Scheme == "https" {
		domain := strings.Join(labels[len(labels)-2:], ".")
		if strings.HasSuffix(strings.ToLower(u.Hostname()), "."+strings.ToLower(domain)) {
			return nil
		}
	}
	return &Error{Code: CodeInvalidInput, Message: fmt.Sprintf("ingest URL %q is neither on Port's API host %s nor https on its domain; not sending the token there", raw, base.Host)}
}
