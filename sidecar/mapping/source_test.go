package mapping

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// markerPos is the line and column of the only ")" in doc.
func markerPos(t *testing.T, doc string) string {
	t.Helper()
	if strings.Count(doc, ")") != 1 {
		t.Fatalf("the document must hold exactly one ')':\n%s", doc)
	}
	i := strings.Index(doc, ")")
	line := strings.Count(doc[:i], "\n") + 1
	col := i - strings.LastIndex(doc[:i], "\n")
	return fmt.Sprintf("m.yaml:%d:%d:", line, col)
}

// deepMapping is a mapping with several resources before the one under
// test, so that positions are far from the top.
func deepMapping(field string) string {
	var b strings.Builder
	b.WriteString("# a mapping with the error deep inside\ncreateMissingRelatedEntities: true\nresources:\n")
	for _, k := range []string{"api", "system", "domain", "group"} {
		fmt.Fprintf(&b, "  - kind: %s\n    selector:\n      query: 'true'\n    port:\n      entity:\n        mappings:\n          identifier: .metadata.identifier\n          title: .metadata.title // .metadata.name\n          blueprint: '\"%s\"'\n          properties:\n            description: .metadata.description\n", k, k)
	}
	b.WriteString("  - kind: component\n    selector:\n      query: 'true'\n    port:\n      entity:\n        mappings:\n          identifier: .metadata.identifier\n          blueprint: '\"component\"'\n          properties:\n            ok: .spec.type\n")
	b.WriteString(field)
	b.WriteString("            after: .spec.owner\n")
	return b.String()
}

// A jq syntax error is reported at the offending character, whatever the
// YAML style of the scalar holding the expression.
func TestExpressionErrorPositions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, field string }{
		{"plain", "            bad: .spec.type | ascii_downcase ) | .x\n"},
		{"plain over two lines", "            bad: .spec.lifecycle\n              | ascii_downcase ) | .x\n"},
		{"plain over three lines with a blank", "            bad: .spec.lifecycle\n\n              | ascii_downcase\n              | ) | .x\n"},
		{"single-quoted with doubled quotes", "            bad: 'if .x == ''y'' then 1 else ) end'\n"},
		{"single-quoted over two lines", "            bad: 'if .x == ''y''\n              then 1 else ) end'\n"},
		{"double-quoted with escapes", "            bad: \"if .x == \\\"y\\\" then \\\"\\\\\\\\\\\" + \\\"\\u00e9\\x41\\\" else ) end\"\n"},
		{"literal block", "            bad: |\n              .spec.lifecycle\n                | ascii_downcase ) | .x\n"},
		{"literal block with blank line", "            bad: |-\n              .spec.lifecycle\n\n              | ascii_downcase ) | .x\n"},
		{"folded block", "            bad: >\n              .spec.lifecycle\n              | ascii_downcase ) | .x\n"},
		{"jq single quotes normalised", "            bad: .a + 'say \"hi\"' + 'x' ) \n"},
		{"tab inside", "            bad: \".a\\t| ) \"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc := deepMapping(tc.field)
			cfg, err := Load([]byte(doc), "m.yaml")
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			_, err = New(cfg, Options{})
			if err == nil {
				t.Fatal("no error")
			}
			want := markerPos(t, doc)
			if !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "properties.bad: jq syntax error") {
				t.Errorf("error %q, want it at %s\n%s", err, want, doc)
			}
		})
	}
}

// Every problem is reported, in document order, each at its own position.
func TestAllErrorsReported(t *testing.T) {
	t.Parallel()
	t.Run("Load", func(t *testing.T) {
		t.Parallel()
		doc := deepMapping("            bad: .x\n")
		doc = strings.Replace(doc, "  - kind: system\n    selector:", "  - kind: system\n    selektor: {query: 'true'}\n    selector:", 1)
		doc = strings.Replace(doc, "          blueprint: '\"domain\"'\n", "", 1)
		doc = strings.Replace(doc, "          title: .metadata.title // .metadata.name\n          blueprint: '\"group\"'", "          titel: .metadata.title\n          blueprint: '\"group\"'", 1)
		doc += "entityDeletionThreshold: 7\n"
		_, err := Load([]byte(doc), "m.yaml")
		var all ConfigErrors
		if !errors.As(err, &all) {
			t.Fatalf("err %T %v, want ConfigErrors", err, err)
		}
		lines := strings.Split(doc, "\n")
		lineOf := func(prefix string) int {
			for i, l := range lines {
				if strings.HasPrefix(l, prefix) {
					return i + 1
				}
			}
			t.Fatalf("no line %q", prefix)
			return 0
		}
		want := []string{
			fmt.Sprintf("m.yaml:%d:5: resources[1].selektor: unknown key", lineOf("    selektor:")),
			fmt.Sprintf("m.yaml:%d:5: resources[2].port.entity.mappings.blueprint: missing", lineOf("  - kind: domain")),
			fmt.Sprintf("m.yaml:%d:11: resources[3].port.entity.mappings.titel: unknown key", lineOf("          titel:")),
			fmt.Sprintf("m.yaml:%d:26: entityDeletionThreshold: must be a number between 0 and 1", lineOf("entityDeletionThreshold")),
		}
		if got := err.Error(); got != strings.Join(want, "\n") {
			t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
		}
	})
	t.Run("New", func(t *testing.T) {
		t.Parallel()
		doc := deepMapping("            bad: .x | | .y\n            worse: nosuch(1)\n")
		doc = strings.Replace(doc, "          title: .metadata.title // .metadata.name\n          blueprint: '\"api\"'", "          title: .metadata.title //\n          blueprint: '\"api\"'", 1)
		cfg, err := Load([]byte(doc), "m.yaml")
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(cfg, Options{})
		var all ConfigErrors
		if !errors.As(err, &all) || len(all) != 3 {
			t.Fatalf("err %v, want 3 problems", err)
		}
		for i, want := range []string{"resources[0] (kind api) title: jq syntax error", "properties.bad: jq syntax error", "properties.worse: jq compile error: function not defined: nosuch/1"} {
			if !strings.Contains(all[i].Error(), want) {
				t.Errorf("problem %d %q lacks %q", i, all[i], want)
			}
		}
	})
}

// A YAML syntax error is reported at the line that breaks the document,
// not where go-yaml's enclosing construct started.
func TestYAMLSyntaxErrorPosition(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, broken string // broken replaces the line "            ok: .spec.type"
		wantCol      int
	}{
		{"unclosed flow sequence", "            ok: [.spec.type", 13},
		{"bad indentation", "              ok: .spec.type\n           x: 1", 12},
		{"tab indentation", "\tok: .spec.type", 1},
		{"unterminated quote", "            ok: '.spec.type", 13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc := deepMapping("")
			// A valid multi-line flow mapping before the error must not be
			// taken for it.
			doc = strings.Replace(doc, "            description: .metadata.description\n", "            description: .metadata.description\n            tags: [\n              .x\n            ]\n", 1)
			i := strings.Index(doc, "            ok: .spec.type")
			line := strings.Count(doc[:i], "\n") + 1
			if strings.HasPrefix(tc.name, "bad indentation") {
				line++
			}
			doc = strings.Replace(doc, "            ok: .spec.type", tc.broken, 1)
			_, err := Load([]byte(doc), "m.yaml")
			want := fmt.Sprintf("m.yaml:%d:%d: invalid YAML: ", line, tc.wantCol)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("err %v, want prefix %q\n%s", err, want, doc)
			}
		})
	}
}
