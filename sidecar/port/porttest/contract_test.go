package porttest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/portbridge/portbridge/sidecar/port"
)

// The contract table (testdata/contract.txt) lists requests, each derived
// from one rule of Port's API reference, and the answer Port gives. Its
// format, one case per block separated by blank lines:
//
//	[operation]                       sets the operation of the cases below
//	case: what varies in the request
//	rule: the contract rule the case checks
//	auth: none | forged               optional; default a valid token
//	ua: User-Agent                    optional
//	header: Name: value               optional, repeatable
//	setup: REQUEST => WANT            optional, repeatable, runs first
//	send: METHOD PATH [BODY]
//	want: STATUS [CODE] [ASSERTION...]
//	check: REQUEST => WANT            optional, repeatable, runs after
//
// A body is JSON on the rest of the line, or @empty (none), @big (over
// 1 MiB), @bulk:N (N entities), @ids:N (N identifiers); {{x*N}} in a body
// or path stands for x repeated N times. CODE is Port's
// `error` value for answers ≥ 400. An assertion is path=JSON (a dotted
// path into the answer equals the JSON value), #path=N (the array at path
// has N elements), path? (present, not null) or path! (absent). Every case
// runs against a fresh
// contractFixture.

type contractCase struct {
	op, name, rule string
	line           int
	auth, ua       string
	headers        [][2]string
	setup, check   []contractStep
	send           contractStep
}

type contractStep struct {
	method, target, body string
	want                 contractWant
}

type contractWant struct {
	status  int
	code    string
	asserts []string
}

func parseContract(t *testing.T, file string) []contractCase {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []contractCase
	var cur *contractCase
	op := ""
	flush := func() {
		if cur != nil {
			cases = append(cases, *cur)
			cur = nil
		}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
			flush()
			continue
		case strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			flush()
			op = strings.Trim(line, "[]")
			continue
		}
		key, val, found := strings.Cut(line, ":")
		if !found {
			t.Fatalf("%s:%d: expected key: value, got %q", file, n, line)
		}
		val = strings.TrimSpace(val)
		if cur == nil {
			cur = &contractCase{op: op, line: n}
		}
		var err error
		switch key {
		case "case":
			cur.name = val
		case "rule":
			cur.rule = val
		case "auth":
			cur.auth = val
		case "ua":
			cur.ua = val
		case "header":
			h, v, _ := strings.Cut(val, ":")
			cur.headers = append(cur.headers, [2]string{strings.TrimSpace(h), strings.TrimSpace(v)})
		case "send":
			if cur.send.method != "" {
				err = fmt.Errorf("a second send in one case")
				break
			}
			want := cur.send.want
			cur.send, err = parseRequest(val, false)
			cur.send.want = want
		case "want":
			if cur.send.want.status != 0 {
				err = fmt.Errorf("a second want in one case")
				break
			}
			cur.send.want, err = parseWant(val)
		case "setup", "check":
			var st contractStep
			st, err = parseRequest(val, true)
			if key == "setup" {
				cur.setup = append(cur.setup, st)
			} else {
				cur.check = append(cur.check, st)
			}
		default:
			err = fmt.Errorf("unknown key %q", key)
		}
		if err != nil {
			t.Fatalf("%s:%d: %v", file, n, err)
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if c.op == "" || c.name == "" || c.rule == "" || c.send.method == "" || c.send.want.status == 0 {
			t.Fatalf("%s:%d: a case needs an operation, case, rule, send and want", file, c.line)
		}
	}
	return cases
}

// parseRequest reads "METHOD PATH [BODY]" and, with arrow, " => WANT".
func parseRequest(s string, arrow bool) (contractStep, error) {
	var st contractStep
	if arrow {
		req, want, found := strings.Cut(s, " => ")
		if !found {
			return st, fmt.Errorf("expected REQUEST => WANT in %q", s)
		}
		w, err := parseWant(want)
		if err != nil {
			return st, err
		}
		st.want, s = w, req
	}
	parts := strings.SplitN(s, " ", 3)
	if len(parts) < 2 {
		return st, fmt.Errorf("expected METHOD PATH [BODY] in %q", s)
	}
	st.method, st.target = parts[0], parts[1]
	if len(parts) == 3 {
		st.body = parts[2]
	}
	return st, nil
}

func parseWant(s string) (contractWant, error) {
	var w contractWant
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return w, fmt.Errorf("empty want")
	}
	st, err := strconv.Atoi(fields[0])
	if err != nil {
		return w, fmt.Errorf("want %q: the status is not a number", s)
	}
	w.status = st
	rest := splitAssertions(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), fields[0])))
	if st >= 400 && len(rest) > 0 && !strings.ContainsAny(rest[0], "=!#") {
		w.code, rest = rest[0], rest[1:]
	}
	w.asserts = rest
	return w, nil
}

// splitAssertions splits on spaces outside JSON strings.
func splitAssertions(s string) []string {
	var out []string
	var cur strings.Builder
	inStr, esc := false, false
	for _, r := range s {
		switch {
		case esc:
			esc = false
		case inStr && r == '\\':
			esc = true
		case r == '"':
			inStr = !inStr
		case r == ' ' && !inStr:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
			continue
		}
		cur.WriteRune(r)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// repeatMacro is {{x*N}}: the text x repeated N times.
var repeatMacro = regexp.MustCompile(`\{\{(.+?)\*(\d+)\}\}`)

// expandBody turns the body macros into JSON.
func expandBody(body string) string {
	body = repeatMacro.ReplaceAllStringFunc(body, func(m string) string {
		sub := repeatMacro.FindStringSubmatch(m)
		n, _ := strconv.Atoi(sub[2])
		return strings.Repeat(sub[1], n)
	})
	switch {
	case body == "@empty":
		return ""
	case body == "@big":
		return `{"identifier":"big","properties":{"url":"` + strings.Repeat("a", MaxBodyBytes) + `"}}`
	case strings.HasPrefix(body, "@bulk:"):
		n, _ := strconv.Atoi(strings.TrimPrefix(body, "@bulk:"))
		items := make([]string, n)
		for i := range items {
			items[i] = fmt.Sprintf(`{"identifier":"bulk-%02d"}`, i)
		}
		return `{"entities":[` + strings.Join(items, ",") + `]}`
	case strings.HasPrefix(body, "@ids:"):
		n, _ := strconv.Atoi(strings.TrimPrefix(body, "@ids:"))
		items := make([]string, n)
		for i := range items {
			items[i] = fmt.Sprintf(`"id-%03d"`, i)
		}
		return `{"entities":[` + strings.Join(items, ",") + `]}`
	}
	return body
}

// lookup follows a dotted path ("errors.0.statusCode") into a decoded
// answer.
func lookup(v any, path string) (any, bool) {
	if path == "" {
		return v, true
	}
	for _, p := range strings.Split(path, ".") {
		switch t := v.(type) {
		case map[string]any:
			x, ok := t[p]
			if !ok {
				return nil, false
			}
			v = x
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(t) {
				return nil, false
			}
			v = t[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func (w contractWant) verify(status int, out map[string]any) error {
	if status != w.status {
		return fmt.Errorf("status %d, want %d (%v: %v)", status, w.status, out["error"], out["message"])
	}
	if status >= 400 {
		if w.code != "" && out["error"] != w.code {
			return fmt.Errorf("error %v, want %s (%v)", out["error"], w.code, out["message"])
		}
		if _, has := out["message"]; out["ok"] != false || !has || len(out) != 3 {
			return fmt.Errorf("error envelope %v is not exactly {ok: false, error, message}", out)
		}
	}
	for _, a := range w.asserts {
		switch {
		case strings.HasPrefix(a, "#"):
			path, n, _ := strings.Cut(a[1:], "=")
			v, _ := lookup(out, path)
			arr, ok := v.([]any)
			if want, _ := strconv.Atoi(n); !ok || len(arr) != want {
				return fmt.Errorf("%s: %d elements (%v), want %s", path, len(arr), v, n)
			}
		case strings.HasSuffix(a, "?"):
			if v, found := lookup(out, strings.TrimSuffix(a, "?")); !found || v == nil {
				return fmt.Errorf("%s is missing or null", strings.TrimSuffix(a, "?"))
			}
		case strings.HasSuffix(a, "!"):
			if v, found := lookup(out, strings.TrimSuffix(a, "!")); found {
				return fmt.Errorf("%s is %v, want it absent", strings.TrimSuffix(a, "!"), v)
			}
		default:
			path, raw, _ := strings.Cut(a, "=")
			var want any
			if err := json.Unmarshal([]byte(raw), &want); err != nil {
				return fmt.Errorf("assertion %q: %v", a, err)
			}
			got, found := lookup(out, path)
			if !found || !jsonEqual(got, want) {
				return fmt.Errorf("%s is %v, want %s", path, got, raw)
			}
		}
	}
	return nil
}

// contractFixture is the catalog every contract case starts from:
//
//	blueprints  system; service (language enum Go|Python, port number
//	            1..65535, url, tags string[], lifecycle default
//	            "production", expiry timer, released date-time, meta
//	            object, enabled boolean; relations system → system,
//	            deps → service many); component (system_req → system,
//	            required); inherit (inherited ownership)
//	teams       platform, payments
//	entities    system sys1 "System 1", sys2 "System 2"; service svc1
//	            (Go, 8080, tags a b, system sys1, team platform, expiry in
//	            the past, released 2024-01-01), svc2 (Python, 80, deps
//	            [svc1], expiry far in the future); component comp1
//	            (system_req sys1)
//	integration int1 (backstage, version 1.0.0, one component resource)
func contractFixture(t testing.TB) *Emulator {
	t.Helper()
	e := New(Options{})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.PutBlueprint(port.Blueprint{Identifier: "system", Title: "System", Schema: port.BlueprintSchema{Properties: map[string]port.Property{}}}))
	must(e.PutBlueprint(port.Blueprint{Identifier: "service", Title: "Service",
		Schema: port.BlueprintSchema{Properties: map[string]port.Property{
			"language":  {Type: "string", Enum: []any{"Go", "Python"}},
			"port":      {Type: "number", Extra: map[string]any{"minimum": 1, "maximum": 65535}},
			"url":       {Type: "string", Format: "url"},
			"tags":      {Type: "array", Items: map[string]any{"type": "string"}},
			"lifecycle": {Type: "string", Default: "production"},
			"expiry":    {Type: "string", Format: "timer"},
			"released":  {Type: "string", Format: "date-time"},
			"meta":      {Type: "object"},
			"enabled":   {Type: "boolean"},
		}},
		Relations: map[string]port.Relation{
			"system": {Target: "system"},
			"deps":   {Target: "service", Many: true},
		}}))
	must(e.PutBlueprint(port.Blueprint{Identifier: "component", Title: "Component",
		Schema:    port.BlueprintSchema{Properties: map[string]port.Property{}},
		Relations: map[string]port.Relation{"system_req": {Target: "system", Required: true}}}))
	must(e.PutBlueprint(port.Blueprint{Identifier: "inherit", Title: "Inherit",
		Schema: port.BlueprintSchema{Properties: map[string]port.Property{}},
		Extra:  map[string]any{"ownership": map[string]any{"type": "Inherited", "path": "x"}}}))
	for _, p := range []struct {
		bp string
		e  port.Entity
	}{
		{"_team", port.Entity{Identifier: "platform"}},
		{"_team", port.Entity{Identifier: "payments"}},
		{"system", port.Entity{Identifier: "sys1", Title: "System 1"}},
		{"system", port.Entity{Identifier: "sys2", Title: "System 2"}},
		{"service", port.Entity{Identifier: "svc1", Title: "Service 1", Team: "platform",
			Properties: map[string]any{"language": "Go", "port": 8080, "tags": []any{"a", "b"}, "expiry": "2020-01-01T00:00:00Z", "released": "2024-01-01T00:00:00Z"},
			Relations:  map[string]any{"system": "sys1"}}},
		{"service", port.Entity{Identifier: "svc2", Title: "Service 2",
			Properties: map[string]any{"language": "Python", "port": 80, "expiry": "2999-01-01T00:00:00Z"},
			Relations:  map[string]any{"deps": []any{"svc1"}}}},
		{"component", port.Entity{Identifier: "comp1", Relations: map[string]any{"system_req": "sys1"}}},
	} {
		if _, err := e.PutEntity(p.bp, p.e, "fixture", false); err != nil {
			t.Fatal(err)
		}
	}
	must(e.PutIntegration(map[string]any{"installationId": "int1", "installationAppType": "backstage", "version": "1.0.0",
		"config": map[string]any{"resources": []any{map[string]any{"kind": "component", "selector": map[string]any{"query": "true"},
			"port": map[string]any{"entity": map[string]any{"mappings": map[string]any{"identifier": ".metadata.name", "blueprint": "\"service\""}}}}}}}))
	return e
}

// TestContract runs the contract table against the emulator.
func TestContract(t *testing.T) {
	t.Parallel()
	cases := parseContract(t, "testdata/contract.txt")
	if len(cases) < 150 {
		t.Fatalf("the contract table has %d cases, want at least 150", len(cases))
	}
	// The README states the number of cases; keep it true.
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`\*\*(\d+) cases\*\*`).FindSubmatch(readme); m == nil || string(m[1]) != strconv.Itoa(len(cases)) {
		t.Errorf("README.md states %q contract cases, the table has %d", m, len(cases))
	}
	seen := map[string]int{}
	for _, c := range cases {
		name := c.op + "/" + c.name
		if prev, dup := seen[name]; dup {
			t.Fatalf("contract.txt:%d: case %q repeats line %d", c.line, name, prev)
		}
		seen[name] = c.line
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := contractFixture(t)
			tok := token(t, e)
			run := func(st contractStep, main bool) {
				t.Helper()
				req := httptest.NewRequest(st.method, expandBody(st.target), strings.NewReader(expandBody(st.body)))
				auth := tok
				if main {
					switch c.auth {
					case "none":
						auth = ""
					case "forged":
						auth = "forged"
					}
					for _, h := range c.headers {
						req.Header.Set(h[0], h[1])
					}
				}
				if auth != "" {
					req.Header.Set("Authorization", "Bearer "+auth)
				}
				ua := "contract-test/1"
				if c.ua != "" {
					ua = c.ua
				}
				req.Header.Set("User-Agent", ua)
				rec := httptest.NewRecorder()
				e.ServeHTTP(rec, req)
				var out map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
					t.Fatalf("contract.txt:%d: %s %s: the answer is not a JSON object: %q", c.line, st.method, st.target, rec.Body.String())
				}
				if err := st.want.verify(rec.Code, out); err != nil {
					t.Fatalf("contract.txt:%d (%s): %s %s: %v", c.line, c.rule, st.method, st.target, err)
				}
				for _, h := range []string{"X-Trace-Id", "X-Ratelimit-Period", "X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset"} {
					if rec.Header().Get(h) == "" {
						t.Errorf("contract.txt:%d: header %s missing", c.line, h)
					}
				}
			}
			for _, st := range c.setup {
				run(st, false)
			}
			run(c.send, true)
			for _, st := range c.check {
				run(st, false)
			}
		})
	}
}
