package mapping

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// requireJQ returns the path of the jq command line tool. The differential
// tests need it: they fail without it (CI installs Debian's jq) and are
// skipped only with -short.
func requireJQ(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("differential test against the jq CLI skipped with -short")
	}
	path, err := exec.LookPath("jq")
	if err != nil {
		t.Fatalf("the jq command line tool is not on PATH (install it: apt-get install jq); these tests compare our engine with it. Run with -short to skip them.")
	}
	return path
}

// handWritten exercises jq features beyond the default mapping. Every
// expression must mean the same in jq 1.6 and gojq, except the cases listed
// in knownDifferences.
const handWritten = `
resources:
  - kind: component
    selector:
      query: '.spec.type != "library" and (.metadata.name | test("^[a-z]"))'
    port:
      entity:
        mappings:
          identifier: '.metadata.identifier'
          title: '"\(.metadata.name) (\(.spec.lifecycle // "unknown"))"'
          blueprint: '"service"'
          team: '[.relations[]? | select(.type == "ownedBy") | .targetRef | split("/") | last]'
          icon: 'if .spec.type == "website" then "Web" else "Service" end'
          properties:
            upper: '.metadata.name | ascii_upcase'
            parts: '.metadata.name | split("-")'
            tagCount: '(.metadata.tags // []) | length'
            sortedTags: '(.metadata.tags // []) | sort | join(",")'
            hasSystem: '.spec | has("system")'
            relTypes: '[.relations[]?.type] | unique'
            byType: '[.relations[]?] | group_by(.type) | map({key: .[0].type, value: length}) | from_entries'
            firstRel: 'first(.relations[]?.targetRef)'
            reduced: 'reduce (.relations[]? | .targetRef | length) as $n (0; . + $n)'
            running: '[foreach (.relations[]?) as $r (0; . + 1; .)]'
            caught: 'try (.spec.type | keys) catch "caught"'
            failing: '.spec.type | keys'
            env: '$ENV | length'
            quoted: '.metadata.namespace + ''/'' + .metadata.name'
            paths: '[paths(type == "string")] | length'
            entries: '.metadata | to_entries | map(.key) | sort'
            trimmed: '.metadata.name | ltrimstr("wayback-")'
            numbers: '[1, 2.5, 1e3, -0.5, (10 / 4), (7 % 3)]'
            optional: '.spec.nope.deeper?'
            base64: '.metadata.name | @base64'
            alternative: '.spec.nothing // .spec.owner // "none"'
            many: '.relations[]?.targetRef'
          relations:
            owner: '.relations[]? | select(.type == "ownedBy") | .targetRef'
            apis: '.relations[]? | select(.type | test("Api$")) | .targetRef'
  - kind: group
    selector:
      query: 'true'
    port:
      itemsToParse: '[.relations[]? | select(.type == "hasMember")]'
      itemsToParseName: member
      entity:
        mappings:
          identifier: '.metadata.identifier + "-" + (.member.targetRef | split("/") | last)'
          blueprint: '"membership"'
          properties:
            group: .metadata.name
            user: .member.targetRef
`

// knownDifferences lists where jq 1.6 and gojq legitimately differ and how
// the comparison treats it.
var knownDifferences = []struct{ what, why string }{
	{"error message text", "jq says 'Cannot iterate over null', gojq 'cannot iterate over: null'; both fail the field, which then becomes null with a warning, so only the fact of an error is compared"},
	{"object key order in tojson/tostring", "jq keeps insertion order, gojq sorts keys; strings that decode to equal JSON values are treated as equal"},
}

func TestDifferentialAgainstJQ(t *testing.T) {
	jq := requireJQ(t)
	t.Parallel()
	for _, d := range knownDifferences {
		t.Logf("known difference: %s: %s", d.what, d.why)
	}
	oceanCfg, oceanBPs := oceanConfig(t)
	hw, err := Load([]byte(handWritten), "handwritten.yaml")
	if err != nil {
		t.Fatal(err)
	}
	configs := []struct {
		name string
		cfg  *Config
		opts Options
	}{
		{"default", DefaultConfig(), Options{}},
		{"ocean", oceanCfg, Options{Blueprints: oceanBPs}},
		{"handwritten", hw, Options{}},
	}
	var entities []map[string]any
	for _, line := range bytes.Split(generatedNDJSON(t, 300), []byte{'\n'}) {
		if len(line) == 0 {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		entities = append(entities, e)
	}
	var input bytes.Buffer
	for _, e := range entities {
		b, _ := json.Marshal(e)
		input.Write(append(b, '\n'))
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m, err := New(c.cfg, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			type run struct {
				entity int
				out    []any
			}
			var ours []run
			for i, e := range entities {
				enriched, err := enrich(e, e["kind"].(string))
				if err != nil {
					t.Fatal(err)
				}
				var res Result
				wd := newWatchdog(context.Background(), time.Minute, DefaultMemoryBudget)
				for _, ri := range m.resourcesFor(e["kind"].(string)) {
					m.runResource(wd, m.resources[ri], enriched, &res, func(c *compiled, raw []any) {
						ours = append(ours, run{i, []any{c.index, raw}})
					})
				}
				wd.stop()
				if len(res.Skipped) > 0 {
					t.Fatalf("%s: %+v", refOf(e), res.Skipped)
				}
			}
			theirs := runJQ(t, jq, m.JQProgram(), input.Bytes())
			if len(theirs) != len(ours) {
				t.Fatalf("jq printed %d results, we have %d", len(theirs), len(ours))
			}
			compared := 0
			for k, o := range ours {
				ri := int(o.out[0].(int))
				c := m.resources[ri]
				jqOut, _ := theirs[k].([]any)
				if len(jqOut) != 2 || !equalJSON(jqOut[0], ri) {
					t.Fatalf("result %d: jq gave %v", k, theirs[k])
				}
				a, b := o.out[1].([]any), jqOut[1].([]any)
				if len(a) != len(b) {
					t.Errorf("%s resource %d: %d slots vs jq %d", refOf(entities[o.entity]), ri, len(a), len(b))
					continue
				}
				for s := range a {
					compared++
					if why := sameSlot(a[s], b[s]); why != "" {
						t.Errorf("%s resource %d field %s: %s\n  gojq: %s\n  jq:   %s", refOf(entities[o.entity]), ri, c.slots[s].field, why, preview(a[s]), preview(b[s]))
					}
				}
			}
			t.Logf("%d entities, %d resource runs, %d fields compared", len(entities), len(ours), compared)
		})
	}
}

// sameSlot compares one slot result from gojq and jq, allowing the known
// differences; it returns why they differ, or "".
func sameSlot(a, b any) string {
	ea, aErr := a.(map[string]any)
	eb, bErr := b.(map[string]any)
	if aErr || bErr {
		if aErr && bErr && ea[errKey] != nil && eb[errKey] != nil {
			return "" // both failed; messages differ by design
		}
		return "one failed, the other did not"
	}
	if equalJSON(a, b) {
		return ""
	}
	// tojson key order: compare strings that hold JSON by value.
	la, lb := a.([]any), b.([]any)
	if len(la) == len(lb) {
		for i := range la {
			sa, ok1 := la[i].(string)
			sb, ok2 := lb[i].(string)
			var va, vb any
			if !ok1 || !ok2 || json.Unmarshal([]byte(sa), &va) != nil || json.Unmarshal([]byte(sb), &vb) != nil || !equalJSON(va, vb) {
				if !equalJSON(la[i], lb[i]) {
					return "values differ"
				}
			}
		}
		return ""
	}
	return "values differ"
}

func runJQ(t *testing.T, jq, program string, input []byte) []any {
	t.Helper()
	prog := filepath.Join(t.TempDir(), "mapping.jq")
	if err := os.WriteFile(prog, []byte(program), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(jq, "-c", "-f", prog)
	cmd.Stdin = bytes.NewReader(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("jq: %v: %s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Fatalf("jq reported errors: %s", stderr.String())
	}
	var out []any
	dec := json.NewDecoder(&stdout)
	for dec.More() {
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}
