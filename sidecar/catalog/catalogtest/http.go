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
	"sort"
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

// identityFields are the paths a projection can answer from a record's
// identity without rendering or decoding the entity, in output order.
var identityFields = []string{"apiVersion", "kind", "metadata.name", "metadata.namespace", "metadata.uid", "metadata.etag"}

// projection is a parsed `fields` parameter.
type projection struct {
	paths [][]string
	// identity[i]: identityFields[i] is asked for, and nothing else is
	identity []bool
	cheap    bool
}

func newProjection(paths [][]string) projection {
	p := projection{paths: paths, identity: make([]bool, len(identityFields)), cheap: len(paths) > 0}
	for _, path := range paths {
		i := slices.Index(identityFields, strings.Join(path, "."))
		if i < 0 {
			p.cheap = false
			break
		}
		p.identity[i] = true
	}
	return p
}

// appendProjected appends the entity of rec, keeping only the projection's
// paths (lodash get/set); no paths means the whole entity.
func appendProjected(dst []byte, rec *record, p projection) ([]byte, error) {
	if len(p.paths) == 0 {
		return rec.appendFinal(dst), nil
	}
	if !p.cheap {
		b, err := project(rec.final(), p.paths)
		return append(dst, b...), err
	}
	id := rec.identity()
	vals := [...]string{id.apiVersion, id.kind, id.name, id.namespace, rec.uid, ""}
	if p.identity[5] {
		vals[5] = rec.etag()
	}
	dst = append(dst, '{')
	n := 0
	inMeta := false
	for i, key := range identityFields {
		if !p.identity[i] {
			continue
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		n++
		if sub, ok := strings.CutPrefix(key, "metadata."); ok {
			if !inMeta {
				dst = append(dst, `"metadata":{`...)
				inMeta = true
			}
			key = sub
		}
		dst = append(dst, '"')
		dst = append(dst, key...)
		dst = append(dst, `":`...)
		dst = appendJSONString(dst, vals[i])
	}
	if inMeta {
		dst = append(dst, '}')
	}
	return append(dst, '}'), nil
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

// ordering sorts by value, then uid, both in the query's direction.
type ordering struct {
	field string
	desc  bool
}

func (o ordering) compare(av *string, auid string, bv *string, buid string) int {
	if o.field != "" && av != nil && bv != nil && *av != *bv {
		if o.desc {
			return strings.Compare(*bv, *av)
		}
		return strings.Compare(*av, *bv)
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
	if json.Unmarshal(rec.final(), &ent) != nil {
		return nil
	}
	return flatten(ent)
}

// view is the ordered list of records a query pages through: every record
// by uid (shared with the emulator, no copy), or the records matching some
// filters, ordered by a field. Entities without a value for the order
// field are not in it, as in Backstage (an inner join on the search table).
type view struct {
	version uint64
	recs    []*record
	vals    []*string // sort values, parallel to recs; nil without an order field
}

func (v *view) val(i int) *string {
	if v.vals == nil {
		return nil
	}
	return v.vals[i]
}

// maxViews bounds the cached query views.
const maxViews = 8

// viewFor returns the view of a query; the caller holds e.mu for reading.
// Building a filtered or field-ordered view reads every entity once; it is
// cached until the next mutation, so the pages after the first cost
// O(log N + page).
func (e *Emulator) viewFor(filterStrs []string, filters anyFilter, ord ordering) *view {
	if len(filters) == 0 && ord.field == "" {
		return &view{version: e.version, recs: e.sorted}
	}
	key := strings.Join(filterStrs, "\x00") + "\x01" + ord.field + "\x01" + strconv.FormatBool(ord.desc)
	e.vmu.Lock()
	v := e.views[key]
	e.vmu.Unlock()
	if v != nil && v.version == e.version {
		return v
	}
	v = &view{version: e.version}
	for _, rec := range e.sorted {
		e.work.Add(1)
		rows := decodeRows(rec)
		if !filters.matches(rows) {
			continue
		}
		if ord.field == "" {
			v.recs = append(v.recs, rec)
			continue
		}
		val := sortValue(rows, ord.field)
		if val == nil {
			continue
		}
		v.recs = append(v.recs, rec)
		v.vals = append(v.vals, val)
	}
	if ord.field != "" {
		idx := make([]int, len(v.recs))
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(a, b int) int { return ord.compare(v.vals[a], v.recs[a].uid, v.vals[b], v.recs[b].uid) })
		recs, vals := make([]*record, len(idx)), make([]*string, len(idx))
		for i, j := range idx {
			recs[i], vals[i] = v.recs[j], v.vals[j]
		}
		v.recs, v.vals = recs, vals
	}
	e.vmu.Lock()
	if len(e.views) >= maxViews {
		for k, old := range e.views {
			if old.version != e.version || len(e.views) >= maxViews {
				delete(e.views, k)
			}
		}
	}
	e.views[key] = v
	e.vmu.Unlock()
	return v
}

// search returns the first position whose key is after (strictly, or at
// or after) the key (val, uid), counting each comparison as work.
func (e *Emulator) search(v *view, ord ordering, val *string, uid string, strictly bool) int {
	return sort.Search(len(v.recs), func(i int) bool {
		e.work.Add(1)
		c := ord.compare(v.val(i), v.recs[i].uid, val, uid)
		if strictly {
			return c > 0
		}
		return c >= 0
	})
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
	paths, err := fieldsParam(q["fields"])
	if err != nil {
		writeError(w, r, 400, "InputError", err.Error())
		return
	}
	fields := newProjection(paths)
	var cur cursor
	initial := q.Get("cursor") == ""
	excludeTotal := false
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
		if vs, ok := q["totalItems"]; ok {
			switch vs[0] {
			case "include":
			case "exclude":
				excludeTotal = true
			default:
				writeError(w, r, 400, "InputError", fmt.Sprintf("Invalid totalItems parameter %q, expected one of: include, exclude", vs[0]))
				return
			}
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
	v := e.viewFor(cur.Filters, filters, ord)
	total := cur.Total
	if initial {
		total = len(v.recs)
		if excludeTotal {
			total = 0
		}
	}
	// the page: forward from after the key, or backward from before it
	forward := initial || !cur.Previous
	var from, to int
	more := false
	if forward {
		if !initial {
			from = e.search(v, ord, cur.Value, cur.UID, true)
		}
		to = min(from+limit, len(v.recs))
		more = limit > 0 && to < len(v.recs)
	} else {
		to = e.search(v, ord, cur.Value, cur.UID, false)
		from = max(0, to-limit)
		more = from > 0
	}
	per := 2560 // a whole entity
	if fields.cheap {
		per = 200
	}
	buf := make([]byte, 0, 64+(to-from)*per)
	buf = append(buf, `{"items":[`...)
	for i := from; i < to; i++ {
		if i > from {
			buf = append(buf, ',')
		}
		e.work.Add(1)
		if buf, err = appendProjected(buf, v.recs[i], fields); err != nil {
			e.mu.RUnlock()
			writeError(w, r, 500, "Error", err.Error())
			return
		}
	}
	pageInfo := map[string]string{}
	base := cursor{Filters: cur.Filters, Order: cur.Order, Desc: ord.desc, Total: total}
	if to > from {
		if (forward && more) || !forward {
			c := base
			c.Value, c.UID = v.val(to-1), v.recs[to-1].uid
			pageInfo["nextCursor"] = c.encode()
		}
		if (!forward && more) || (forward && !initial) {
			c := base
			c.Value, c.UID, c.Previous = v.val(from), v.recs[from].uid, true
			pageInfo["prevCursor"] = c.encode()
		}
	}
	e.mu.RUnlock()
	buf = append(buf, `],"totalItems":`...)
	buf = strconv.AppendInt(buf, int64(total), 10)
	pi, _ := json.Marshal(pageInfo)
	buf = append(buf, `,"pageInfo":`...)
	buf = append(buf, pi...)
	buf = append(buf, '}')
	writeJSON(w, buf)
}

func (e *Emulator) serveList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fields, err := fieldsParam(q["fields"])
	if err != nil {
		writeError(w, r, 400, "InputError", err.Error())
		return
	}
	proj := newProjection(fields)
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
		e.work.Add(1)
		if len(filters) > 0 && !filters.matches(decodeRows(rec)) {
			continue
		}
		b, err := appendProjected(nil, rec, proj)
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
	proj := newProjection(fields)
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
		e.work.Add(1)
		n := e.nodes[strings.ToLower(ref)]
		if n == nil || n.rec == nil || (len(filters) > 0 && !filters.matches(decodeRows(n.rec))) {
			buf.WriteString("null")
			continue
		}
		b, err := appendProjected(nil, n.rec, proj)
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
		body = n.rec.final()
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
		body = rec.final()
	}
	e.mu.RUnlock()
	if body == nil {
		writeError(w, r, 404, "NotFoundError", "No entity with uid "+uid)
		return
	}
	writeJSON(w, body)
}
