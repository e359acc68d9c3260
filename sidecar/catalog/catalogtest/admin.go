package catalogtest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// adminPrefix is the root of the emulator's own routes (no auth): for
// `portbridge dev` and tests,
//
//	POST   /_emulator/entities                          body: an entity, a JSON array or multi-document YAML; 204
//	DELETE /_emulator/entities/{kind}/{namespace}/{name}                                                  204 / 404
const adminPrefix = "/_emulator"

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
		ents, err := DecodeYAML(b)
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
	default:
		writeAdminError(w, http.StatusNotFound, fmt.Errorf("no emulator route %s %s", r.Method, r.URL.Path))
	}
}

func writeAdminError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, err.Error()+"\n")
}
