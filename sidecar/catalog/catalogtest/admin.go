package catalogtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/portbridge/portbridge/sidecar/catalog"
)

// adminPrefix is the root of the emulator's own routes (no auth): for
// `portbridge dev` and tests,
//
//	POST   /_emulator/entities                          body: an entity, a JSON array or multi-document YAML; 204
//	DELETE /_emulator/entities/{kind}/{namespace}/{name}                                                  204 / 404
//	GET    /_emulator/stats                             {"entities": N, "requests": {route: count}, "work": W}
//	DELETE /_emulator/stats                             ResetRequests; 204
const adminPrefix = "/_emulator"

// Stats is what GET /_emulator/stats answers: the entity count, the
// catalog API requests per route and the work counter (see Work).
type Stats struct {
	Entities int            `json:"entities"`
	Requests map[string]int `json:"requests"`
	Work     int64          `json:"work"`
}

func (e *Emulator) serveAdmin(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, adminPrefix)
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	switch {
	case r.Method == http.MethodPost && rest == "/entities":
		b, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		if err != nil {
			writeAdminError(w, http.StatusBadRequest, fmt.Errorf("read body: %w", err))
			return
		}
		ents, err := decodeEntities(b)
		if err != nil {
			writeAdminError(w, http.StatusBadRequest, err)
			return
		}
		if len(ents) == 0 {
			writeAdminError(w, http.StatusBadRequest, errors.New("body holds no entity"))
			return
		}
		if err := e.Upsert(ents...); err != nil {
			writeAdminError(w, http.StatusBadRequest, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodDelete && len(parts) == 4 && parts[0] == "entities":
		err := e.Delete(parts[1] + ":" + parts[2] + "/" + parts[3])
		switch {
		case errors.Is(err, ErrNoEntity):
			writeAdminError(w, http.StatusNotFound, err)
		case err != nil:
			writeAdminError(w, http.StatusBadRequest, err)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	case r.Method == http.MethodGet && rest == "/stats":
		b, _ := json.Marshal(Stats{Entities: e.Len(), Requests: e.Requests(), Work: e.Work()})
		writeJSON(w, b)
	case r.Method == http.MethodDelete && rest == "/stats":
		e.ResetRequests()
		w.WriteHeader(http.StatusNoContent)
	default:
		writeAdminError(w, http.StatusNotFound, fmt.Errorf("no emulator route %s %s", r.Method, r.URL.Path))
	}
}

// decodeEntities decodes a POSTed body: JSON (an entity or an array of
// them) directly, anything else as multi-document YAML.
func decodeEntities(b []byte) ([]catalog.Entity, error) {
	t := bytes.TrimSpace(b)
	if len(t) > 0 && (t[0] == '[' || t[0] == '{') {
		var v any
		if err := json.Unmarshal(t, &v); err == nil {
			switch x := v.(type) {
			case map[string]any:
				return []catalog.Entity{x}, nil
			case []any:
				out := make([]catalog.Entity, 0, len(x))
				for i, item := range x {
					m, ok := item.(map[string]any)
					if !ok {
						return nil, fmt.Errorf("JSON array item %d: not an object", i+1)
					}
					out = append(out, m)
				}
				return out, nil
			}
		}
	}
	return DecodeYAML(b)
}

func writeAdminError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, err.Error()+"\n")
}
