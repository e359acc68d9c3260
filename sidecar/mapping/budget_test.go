package mapping

import (
	"context"
	"fmt"
	"reflect"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/itchyny/gojq"
)

// outputs runs a compiled program and returns every output, errors as
// "error: <message>".
func outputs(t *testing.T, code *gojq.Code, input any, vars ...any) []any {
	t.Helper()
	var out []any
	iter := code.RunWithContext(context.Background(), input, vars...)
	for {
		v, ok := iter.Next()
		if !ok {
			return out
		}
		if err, ok := v.(error); ok {
			out = append(out, "error: "+err.Error())
			if len(out) > 100 {
				return out
			}
			continue
		}
		out = append(out, v)
	}
}

// The guards and the operator rewriting change no result: every expression
// gives the same outputs (and errors) with and without them.
func TestGuardsKeepSemantics(t *testing.T) {
	t.Parallel()
	input := map[string]any{"a": 1, "b": "two", "s": "a,b,,c", "n": []any{3, 1, 2, 1}, "o": map[string]any{"x": 1, "y": []any{1, 2}},
		"rows": []any{[]any{1, 2}, []any{3}}, "id": "k1", "items": []any{map[string]any{"id": "p"}, map[string]any{"id": "q"}}}
	exprs := []string{
		`(1,2) + (10,20)`, `.a + 1`, `.b + "x"`, `.n + .n`, `.o + {z: 1}`, `null + .a`, `.a + null`, `{} + 1`, `"x" * 3`, `3 * "x"`, `"x" * 0`, `"x" * 1.5`,
		`.o * {y: 3}`, `(2,3) * (4,5)`, `4611686018427387904 * 4611686018427387904`, `"a,b" / ","`, `10 / 4`, `1 / 0`, `.a - 1`, `.n - [1]`,
		`.a = 5`, `.n[6] = 1`, `.o.x = (7,8)`, `.a += 1`, `.b *= 2`, `.n[0] |= . + 10`, `.o |= with_entries(.value = 0)`, `.a //= 3`,
		`"\(.a)-\(.b)"`, `@base64 "x\(.b)"`, `@json "v=\(.o)"`, `@text`, `@json`, `@html`, `@uri`, `@sh "echo \(.b)"`, `.n | @csv`, `.n | @tsv`,
		`.b | @base64 | @base64d`, `format("text")`, `.o | tostring`, `.o | tojson | fromjson`, `.n | add`, `.s / "," | join("-")`, `[.n, [.n]] | flatten`,
		`[[[1]]] | flatten(1)`, `.s | split(",")`, `.s | split(", *"; null)`, `.rows | transpose`, `.s | indices(",")`, `.n | indices(1)`,
		`.b | explode | implode`, `.b | ascii_upcase | ascii_downcase`, `.o | keys`, `.n | sort`, `.n | unique`, `.n | reverse`, `.o | to_entries`,
		`setpath(["a"]; 9) | .a`, `pick(.o.x)`, `fromstream(.o | tostream)`, `.items | INDEX(.id)`, `INDEX(.items[]; .id)`, `add(.n[])`,
		`.s | sub(","; ";")`, `.s | gsub(","; ";")`, `.s | gsub("(?<x>,)"; "[\(.x)]")`, `[.s | scan(",")]`, `[.s | splits(",")]`, `.s | test(",")`,
		`[.s | match(","; "g") | .offset]`, `.b | capture("(?<first>.)")`, `[.s | match([",", "g"]) | .offset]`, `.s | sub(","; "!"; "g")`,
		`del(.a)`, `[paths]`, `reduce .n[] as $x (0; . + $x)`, `[limit(3; repeat(1))]`, `try error("x") catch .`, `try ({} + 1) catch .`,
		`.missing // "d"`, `{(.b): 1}`, `[.n[] | select(. > 1)]`, `.b | .[1:]`, `[range(3)] | map(. * 10)`, `to_entries | from_entries | keys`,
		`walk(if type == "number" then . + 1 else . end) | .n`, `[.[] | numbers] | add`, `.n as [$x, $y] | $x + $y`, `def f(x): x + x; f(.a)`,
		`reduce range(3) as $i ([]; . + [$i])`, `[foreach range(3) as $i (0; . + $i)]`, `.n | min_by(.), max_by(.)`, `.n | sort_by(-.)`,
		`.n | group_by(.) | length`, `.n | unique_by(.)`, `[combinations(2)] | length`, `.o | has("x")`, `.n | contains([1])`, `.a | tostring * 2`,
	}
	for _, expr := range exprs {
		t.Run(expr, func(t *testing.T) {
			t.Parallel()
			q, err := gojq.Parse(expr)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := gojq.Compile(q)
			if err != nil {
				t.Fatal(err)
			}
			guardedCode, err := compileSource(expr, compilerOptions(false))
			if err != nil {
				t.Fatalf("compile with guards: %v", err)
			}
			wd := newWatchdog(context.Background(), time.Minute, DefaultMemoryBudget)
			defer wd.stop()
			want := outputs(t, plain, input)
			got := outputs(t, guardedCode, input, wd)
			if !reflect.DeepEqual(normalise(got), normalise(want)) {
				t.Errorf("with guards %v, without %v", got, want)
			}
		})
	}
}

// normalise renders values with gojq's encoder (ints and floats alike).
func normalise(vs []any) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		b, err := gojq.Marshal(v)
		if err != nil {
			out[i] = fmt.Sprint(v)
			continue
		}
		out[i] = string(b)
	}
	return out
}

func oneProperty(t *testing.T, expr string, opts Options) *Mapper {
	t.Helper()
	doc := fmt.Sprintf("resources:\n  - kind: component\n    selector:\n      query: 'true'\n    port:\n      entity:\n        mappings:\n          identifier: .metadata.identifier\n          blueprint: '\"component\"'\n          properties:\n            x: %q\n", expr)
	cfg, err := Load([]byte(doc), "blowup.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// Every shape of blow-up found fails its entity with the budget's reason,
// quickly and without allocating much more than the budget. (The real
// binary's peak memory is tested in sidecar/process_test.go.)
func TestBlowUpsStayWithinBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates tens of MiB per case")
	}
	const budget = 32 << 20
	doubled := `def f: [., .]; reduce range(40) as $i ("x"; f)`
	tests := []struct{ name, expr, want string }{
		{"issue 13: tostring of a doubled array", doubled + ` | tostring`, "memory budget"},
		{"tojson", doubled + ` | tojson`, "memory budget"},
		{"@json format", doubled + ` | @json`, "memory budget"},
		{"@text format", doubled + ` | @text`, "memory budget"},
		{"@base64 format", doubled + ` | @base64`, "memory budget"},
		{"@html of an interpolation", `@html "\(` + doubled + `)"`, "memory budget"},
		{"string interpolation", `"\(` + doubled + `)"`, "memory budget"},
		{"format(csv)", `[` + doubled + `] | format("csv")`, "memory budget"},
		{"flatten", doubled + ` | flatten`, "memory budget"},
		{"string doubling", `reduce range(40) as $i ("x"; . + .)`, "memory budget"},
		{"array doubling", `reduce range(40) as $i ([1]; . + .)`, "memory budget"},
		{"object doubling by deep merge", `def f: {a: ., b: .}; reduce range(40) as $i ({}; f) | . * .`, "memory budget"},
		{"big integer squaring", `reduce range(40) as $i (3; . * .)`, "an integer of more than 1048576 bits"},
		{"string repeat", `"x" * 1e9`, "memory budget"},
		{"add of shared strings", `("x" * 1000000) as $s | [range(1000) | $s] | add`, "memory budget"},
		{"join of shared strings", `("x" * 1000000) as $s | [range(1000) | $s] | join(",")`, "memory budget"},
		{"explode", `"x" * 3000000 | explode`, "memory budget"},
		{"split into characters", `"x" * 3000000 | split("")`, "memory budget"},
		{"divide into characters", `("x" * 3000000) / ""`, "memory budget"},
		{"global match", `"x" * 2000000 | [match(""; "g")]`, "memory budget"},
		{"gsub", `"x" * 2000000 | gsub(""; "y")`, "memory budget"},
		{"indices", `"x," * 2000000 | indices(",")`, "memory budget"},
		{"transpose", `[range(5000)] as $a | [range(5000) | $a] | transpose`, "memory budget"},
		{"far index", `[] | .[100000000] = 1`, "memory budget"},
		{"far index by setpath", `setpath([100000000]; 1)`, "memory budget"},
		{"far index by update", `.x[100000000] |= 1`, "memory budget"},
		{"far index by pick", `[] | pick(.[100000000])`, "memory budget"},
		{"far index by fromstream", `fromstream([[100000000], 1], [[100000000]])`, "memory budget"},
		{"collecting a range", `[range(1e9)]`, "memory budget"},
		{"collecting copies", `[range(200) | ("x" * 1000000 | ascii_downcase)]`, "memory budget"},
		{"deep nesting", `reduce range(1000000) as $i (0; [.]) | tojson`, "memory budget"},
		{"a huge output without tostring", doubled, "over the 1048576-byte limit (mapping.maxOutputBytes)"},
		{"a huge error", `error(` + doubled + `)`, "jq error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: the allocation measure is process-wide.
			m := oneProperty(t, tt.expr, Options{Timeout: 30 * time.Second, MemoryBudget: budget})
			runtime.GC()
			before := heapAllocs()
			start := time.Now()
			r := m.Map(context.Background(), map[string]any{"kind": "Component", "metadata": map[string]any{"name": "a"}})
			took := time.Since(start)
			allocated := heapAllocs() - before
			var msgs []string
			for _, w := range append(r.Skipped, r.Warnings...) {
				msgs = append(msgs, w.Message)
			}
			all := strings.Join(msgs, "\n")
			if !strings.Contains(all, tt.want) || len(r.Entities) != 0 && tt.want != "jq error" {
				t.Fatalf("result %+v, want a problem containing %q", r, tt.want)
			}
			if len(all) > 2000 {
				t.Errorf("messages are %d bytes long", len(all))
			}
			if allocated > 16*budget {
				t.Errorf("allocated %d MiB for a %d MiB budget", allocated>>20, budget>>20)
			}
			t.Logf("%s in %v, %d MiB allocated: %.200s", tt.name, took.Round(time.Millisecond), allocated>>20, all)
		})
	}
}

// A mapping that uses a lot of instructions without keeping what it builds
// is not stopped by the budget (the heap decides, not the count). Not
// parallel: the heap is the process's.
func TestBudgetSparesChurn(t *testing.T) {
	m := oneProperty(t, `reduce range(3000000) as $i (0; [$i, .] | .[0])`, Options{Timeout: 30 * time.Second, MemoryBudget: 16 << 20})
	r := m.Map(context.Background(), map[string]any{"kind": "Component", "metadata": map[string]any{"name": "a"}})
	if len(r.Entities) != 1 || len(r.Skipped) != 0 || len(r.Warnings) != 0 {
		t.Fatalf("result %+v", r)
	}
}

func TestReservedNames(t *testing.T) {
	t.Parallel()
	doc := "resources:\n  - kind: component\n    selector:\n      query: 'true'\n    port:\n      entity:\n        mappings:\n          identifier: .metadata.identifier\n          blueprint: '\"component\"'\n          title: '$__pb_w | tojson'\n"
	cfg, err := Load([]byte(doc), "m.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "reserved") || !strings.Contains(err.Error(), "m.yaml:10:") {
		t.Fatalf("New = %v, want a reserved-name error at the line", err)
	}
}
