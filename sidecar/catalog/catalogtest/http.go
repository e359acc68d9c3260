package catalogtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/portbridge/portbridge/sidecar/catalog"
)

const apiPrefix = "/api/catalog"

var bearerRE = regexp.MustCompile(`(?i)^Bearer[ ]+(\S+)$`)

// ServeHTTP serves /api/catalog/... and the admin routes /_emulator/....
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, adminPrefix+"/") {
		e.serveAdmin(w, r)
		return
	}
	if !strings.HasPrefix(r.URL.Path, apiPrefix+"/") {
		http.NotFound(w, r)
		return
	}
	route := routeOf(r)
	e.fmu.Lock()
	e.requests[route]++
	unavail := e.unavail
	failing, failCode, failBody := false, e.failCode, e.failBody
	if e.failN == 0 {
		failing = true
	} else if e.failN > 0 {
		e.failN--
	}
	e.fmu.Unlock()
	switch {
	case unavail == http.StatusNotFound:
		w.WriteHeader(http.StatusNotFound)
		return
	case unavail != 0:
		writeError(w, r, unavail, "ServiceUnavailableError", "Service has not started up yet")
		return
	case failing && failCode == http.StatusOK:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = io.WriteString(w, failBody)
		return
	case failing:
		writeError(w, r, failCode, errorName(failCode), "emulated failure")
		return
	}
	if e.opts.Token != "" {
		h := r.Header.Get("Authorization")
		m := bearerRE.FindStringSubmatch(h)
		if m == nil {
			writeError(w, r, http.StatusUnauthorized, "AuthenticationError", "Missing credentials")
			return
		}
		if m[1] != e.opts.Token {
			writeError(w, r, http.StatusUnauthorized, "AuthenticationError", "Illegal token")
			return
		}
	}
	rest := strings.TrimPrefix(r.URL.Path, apiPrefix)
	parts := strings.Split(strings.TrimPrefix(rest, "/"), "/")
	switch {
	case r.Method == http.MethodGet && rest == "/entities/by-query":
		e.serveQuery(w, r)
	case r.Method == http.MethodGet && rest == "/entities":
		e.serveList(w, r)
	case r.Method == http.MethodPost && rest == "/entities/by-refs":
		e.serveByRefs(w, r)
	case r.Method == http.MethodGet && len(parts) == 5 && parts[1] == "by-name":
		e.serveByName(w, r, parts[2], parts[3], parts[4])
	case len(parts) == 3 && parts[1] == "by-uid" && r.Method == http.MethodGet:
		e.serveByUID(w, r, parts[2])
	case len(parts) == 3 && parts[1] == "by-uid" && r.Method == http.MethodDelete:
		e.mu.RLock()
		rec := e.byUID[parts[2]]
		e.mu.RUnlock()
		if rec != nil {
			_ = e.Delete(rec.node.ref)
		}
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPost && rest == "/refresh":
		w.WriteHeader(http.StatusOK)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func routeOf(r *http.Request) string {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, apiPrefix+"/"), "/")
	if len(parts) >= 2 && parts[0] == "entities" {
		return parts[1]
	}
	return parts[0]
}

func errorName(status int) string {
	switch status {
	case 400:
		return "InputError"
	case 401:
		return "AuthenticationError"
	case 403:
		return "NotAllowedError"
	case 404:
		return "NotFoundError"
	case 409:
		return "ConflictError"
	case 503:
		return "ServiceUnavailableError"
	default:
		return "Error"
	}
}

// writeError writes Backstage's error body.
func writeError(w http.ResponseWriter, r *http.Request, status int, name, message string) {
	body := map[string]any{
		"error":    map[string]any{"name": name, "message": message},
		"request":  map[string]any{"method": r.Method, "url": strings.TrimPrefix(r.URL.RequestURI(), apiPrefix)},
		"response": map[string]any{"statusCode": status},
	}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(b)
}

type inputError string

func (e inputError) Error() string { return string(e) }

// fieldsParam parses `fields` (comma-joined, may repeat).
func fieldsParam(vals []string) ([][]string, error) {
	var out [][]string
	for _, v := range vals {
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			if strings.Contains(f, "[") {
				return nil, inputError("invalid fields, array type fields are not supported")
			}
			out = append(out, strings.Split(f, "."))
		}
	}
	return out, nil
}

// project keeps only the given paths of an entity (lodash get/set).
func project(body []byte, fields [][]string) (json.RawMessage, error) {
	if len(fields) == 0 {
		return body, nil
	}
	var ent map[string]any
	if err := json.Unmarshal(body, &ent); err != nil {
		return nil, err
	}
	out := map[string]any{}
	for _, path := range fields {
		var cur any = ent
		ok := true
		for _, p := range path {
			m, isMap := cur.(map[string]any)
			if !isMap {
				ok = false
				break
			}
			cur, ok = m[p]
			if !ok {
				break
			}
		}
		if !ok {
			continue
		}
		dst := out
		for _, p := range path[:len(path)-1] {
			next, isMap := dst[p].(map[string]any)
			if !isMap {
				next = map[string]any{}
				dst[p] = next
			}
			dst = next
		}
		dst[path[len(path)-1]] = cur
	}
	return json.Marshal(out)
}

func filtersParam(vals []string) (anyFilter, error) {
	var fs anyFilter
	for _, v := range vals {
		if v == "" {
			return nil, inputError("Empty value found for query parameter 'filter'")
		}
		f, err := parseFilter(v)
		if err != nil {
			return nil, inputError(err.Error())
		}
		if len(f) > 0 {
			fs = append(fs, f)
		}
	}
	return fs, nil
}

// cursor is the emulator's by-query cursor (base64 JSON, like Backstage's,
// but with its own fields).
type cursor struct {
	Filters  []string `json:"filters,omitempty"`
	Order    string   `json:"orderField,omitempty"`
	Desc     bool     `json:"desc,omitempty"`
	Value    *string  `json:"value,omitempty"` // sort value of the key item
	UID      string   `json:"uid"`             // uid of the key item
	Total    int      `json:"totalItems"`
	Previous bool     `json:"isPrevious,omitempty"`
}

func (c cursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.StdEncoding.EncodeToString(b)
}

func decodeCursor(s string) (cursor, error) {
	var c cursor
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return c, inputError("Malformed cursor: " + err.Error())
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, inputError("Malformed cursor: " + err.Error())
	}
	if c.UID == "" {
		return c, inputError("Malformed cursor: no position")
	}
	return c, nil
}

// item is a record with what a query computed for it.
type item struct {
	rec  *record
	rows []kv
	val  *string
}

// ordering sorts items by value (nulls last), then uid, both in the query's
// direction.
type ordering struct {
	field string
	desc  bool
}

func (o ordering) compare(av *string, auid string, bv *string, buid string) int {
	if o.field != "" {
		switch {
		case av == nil && bv != nil:
			return 1
		case av != nil && bv == nil:
			return -1
		case av != nil && bv != nil && *av != *bv:
			if o.desc {
				return strings.Compare(*bv, *av)
			}
			return strings.Compare(*av, *bv)
		}
	}
	if o.desc {
		return strings.Compare(buid, auid)
	}
	return strings.Compare(auid, buid)
}

func parseOrderField(s string) (ordering, error) {
	if s == "" {
		return ordering{}, nil
	}
	field, dir, _ := strings.Cut(s, ",")
	field = strings.ToLower(strings.TrimSpace(field))
	switch strings.TrimSpace(dir) {
	case "", "asc":
		return ordering{field: field}, nil
	case "desc":
		return ordering{field: field, desc: true}, nil
	}
	return ordering{}, inputError("Invalid order field order, must be asc or desc")
}

func decodeRows(rec *record) []kv {
	var ent map[string]any
	if json.Unmarshal(rec.body, &ent) != nil {
		return nil
	}
	return flatten(ent)
}

func (e *Emulator) serveQuery(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 20
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			writeError(w, r, 400, "InputError", fmt.Sprintf("Invalid limit %q, must be a non-negative integer", s))
			return
		}
		limit = n
	}
	fields, err := fieldsParam(q["fields"])
	if err != nil {
		writeError(w, r, 400, "InputError", err.Error())
		return
	}
	var cur cursor
	initial := q.Get("cursor") == ""
	if !initial {
		if cur, err = decodeCursor(q.Get("cursor")); err != nil {
			writeError(w, r, 400, "InputError", err.Error())
			return
		}
	} else {
		cur.Filters = q["filter"]
		if ofs := q["orderField"]; len(ofs) > 0 {
			cur.Order = ofs[0] // only the first is honoured, as in Backstage
		}
	}
	filters, err := filtersParam(cur.Filters)
	if err != nil {
		writeError(w, r, 400, "InputError", err.Error())
		return
	}
	ord, err := parseOrderField(cur.Order)
	if err != nil {
		writeError(w, r, 400, "InputError", err.Error())
		return
	}
	if !initial {
		ord.desc = cur.Desc
	}

	e.mu.RLock()
	items := make([]item, len(e.sorted))
	for i, rec := range e.sorted {
		items[i].rec = rec
	}
	needRows := len(filters) > 0 || ord.field != ""
	if ord.field != "" {
		for i := range items {
			items[i].rows = decodeRows(items[i].rec)
			items[i].val = sortValue(items[i].rows, ord.field)
		}
	}
	if ord.field != "" || ord.desc {
		slices.SortFunc(items, func(a, b item) int { return ord.compare(a.val, a.rec.uid, b.val, b.rec.uid) })
	}
	match := func(it *item) bool {
		if len(filters) == 0 {
			return true
		}
		if it.rows == nil && needRows {
			it.rows = decodeRows(it.rec)
		}
		return filters.matches(it.rows)
	}
	total := cur.Total
	if initial {
		total = 0
		for i := range items {
			if match(&items[i]) {
				total++
			}
		}
	}
	// the page: forward from after the key, or backward from before it
	var page []item
	more := false
	if initial || !cur.Previous {
		start := 0
		if !initial {
			start = sortPos(items, ord, cur.Value, cur.UID, true)
		}
		for i := start; i < len(items); i++ {
			if !match(&items[i]) {
				continue
			}
			if len(page) == limit {
				more = true
				break
			}
			page = append(page, items[i])
		}
	} else {
		end := sortPos(items, ord, cur.Value, cur.UID, false)
		for i := end - 1; i >= 0; i-- {
			if !match(&items[i]) {
				continue
			}
			if len(page) == limit {
				more = true
				break
			}
			page = append(page, items[i])
		}
		slices.Reverse(page)
	}
	var buf bytes.Buffer
	buf.WriteString(`{"items":[`)
	for i, it := range page {
		if i > 0 {
			buf.WriteByte(',')
		}
		b, err := project(it.rec.body, fields)
		if err != nil {
			e.mu.RUnlock()
			writeError(w, r, 500, "Error", err.Error())
			return
		}
		buf.Write(b)
	}
	e.mu.RUnlock()
	buf.WriteString(`],"totalItems":`)
	buf.WriteString(strconv.Itoa(total))
	pageInfo := map[string]string{}
	base := cursor{Filters: cur.Filters, Order: cur.Order, Desc: ord.desc, Total: total}
	forward := initial || !cur.Previous
	if len(page) > 0 {
		last, first := page[len(page)-1], page[0]
		if (forward && more) || !forward {
			c := base
			c.Value, c.UID = last.val, last.rec.uid
			pageInfo["nextCursor"] = c.encode()
		}
		if (!forward && more) || (forward && !initial) {
			c := base
			c.Value, c.UID, c.Previous = first.val, first.rec.uid, true
			pageInfo["prevCursor"] = c.encode()
		}
	}
	pi, _ := json.Marshal(pageInfo)
	buf.WriteString(`,"pageInfo":`)
	buf.Write(pi)
	buf.WriteByte('}')
	writeJSON(w, buf.Bytes())
}

// sortPos finds the first index after (after=true) or at-or-after the key.
func sortPos(items []item, ord ordering, val *string, uid string, after bool) int {
	i, found := slices.BinarySearchFunc(items, 0, func(it item, _ int) int {
		return ord.compare(it.val, it.rec.uid, val, uid)
	})
	if found && after {
		return i + 1
	}
	return i
}

func (e *Emulator) serveList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fields, err := fieldsParam(q["fields"])
	if err != nil {
		writeError(w, r, 400, "InputError", err.Error())
		return
	}
	filters, err := filtersParam(q["filter"])
	if err != nil {
		writeError(w, r, 400, "InputError", err.Error())
		return
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	var buf bytes.Buffer
	buf.WriteByte('[')
	n := 0
	for _, rec := range e.sorted {
		if len(filters) > 0 && !filters.matches(decodeRows(rec)) {
			continue
		}
		b, err := project(rec.body, fields)
		if err != nil {
			writeError(w, r, 500, "Error", err.Error())
			return
		}
		if n > 0 {
			buf.WriteByte(',')
		}
		buf.Write(b)
		n++
	}
	buf.WriteByte(']')
	writeJSON(w, buf.Bytes())
}

func (e *Emulator) serveByRefs(w http.ResponseWriter, r *http.Request) {
	var body struct {
		EntityRefs []string `json:"entityRefs"`
		Fields     []string `json:"fields"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 32<<20))
	if err := dec.Decode(&body); err != nil || body.EntityRefs == nil {
		msg := "entityRefs is required"
		if err != nil {
			msg = err.Error()
		}
		writeError(w, r, 400, "InputError", "Malformed request body (did you remember to specify an application/json content type?), "+msg)
		return
	}
	fields, err := fieldsParam(body.Fields)
	if err != nil {
		writeError(w, r, 400, "InputError", err.Error())
		return
	}
	filters, err := filtersParam(r.URL.Query()["filter"])
	if err != nil {
		writeError(w, r, 400, "InputError", err.Error())
		return
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	var buf bytes.Buffer
	buf.WriteString(`{"items":[`)
	for i, ref := range body.EntityRefs {
		if i > 0 {
			buf.WriteByte(',')
		}
		n := e.nodes[strings.ToLower(ref)]
		if n == nil || n.rec == nil || (len(filters) > 0 && !filters.matches(decodeRows(n.rec))) {
			buf.WriteString("null")
			continue
		}
		b, err := project(n.rec.body, fields)
		if err != nil {
			writeError(w, r, 500, "Error", err.Error())
			return
		}
		buf.Write(b)
	}
	buf.WriteString("]}")
	writeJSON(w, buf.Bytes())
}

func (e *Emulator) serveByName(w http.ResponseWriter, r *http.Request, kind, ns, name string) {
	ref := catalog.Ref{Kind: strings.ToLower(kind), Namespace: strings.ToLower(ns), Name: strings.ToLower(name)}
	e.mu.RLock()
	n := e.nodes[ref.String()]
	var body []byte
	if n != nil && n.rec != nil {
		body = n.rec.body
	}
	e.mu.RUnlock()
	if body == nil {
		writeError(w, r, 404, "NotFoundError", fmt.Sprintf("No entity named '%s' found, with kind '%s' in namespace '%s'", name, kind, ns))
		return
	}
	writeJSON(w, body)
}

func (e *Emulator) serveByUID(w http.ResponseWriter, r *http.Request, uid string) {
	e.mu.RLock()
	rec := e.byUID[uid]
	var body []byte
	if rec != nil {
		body = rec.body
	}
	e.mu.RUnlock()
	if body == nil {
		writeError(w, r, 404, "NotFoundError", "No entity with uid "+uid)
		return
	}
	writeJSON(w, body)
}
