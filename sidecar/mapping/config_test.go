package mapping

import (
	"errors"
	"strings"
	"testing"
)

const goodMapping = `
deleteDependentEntities: false
resources:
  - kind: component
    selector:
      query: 'true'
    port:
      entity:
        mappings:
          identifier: .metadata.identifier
          title: .metadata.title // .metadata.name
          blueprint: '"component"'
          properties:
            quoted: .metadata.name + '-x'
`

func TestLoadDefaultsAndPortFlags(t *testing.T) {
	t.Parallel()
	cfg, err := Load([]byte(goodMapping), "m.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.CreateMissingRelatedEntities || cfg.DeleteDependentEntities || !cfg.EnableMergeEntity || cfg.EntityDeletionThreshold != 0.9 {
		t.Errorf("flags = %+v, want Port's defaults except deleteDependentEntities=false", cfg)
	}
	if got := cfg.Resources[0].Mappings.Properties["quoted"]; got != ".metadata.name + '-x'" {
		t.Errorf("property kept as %q", got)
	}
	if got := cfg.ManagedBlueprints(); len(got) != 1 || got[0] != "component" {
		t.Errorf("ManagedBlueprints = %v", got)
	}
	if got := DefaultConfig().ManagedBlueprints(); len(got) != len(DefaultBlueprints()) {
		t.Errorf("default mapping writes %v, default blueprints are %d", got, len(DefaultBlueprints()))
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	resource := func(mappings string) string {
		return "resources:\n  - kind: component\n    selector:\n      query: 'true'\n    port:\n      entity:\n        mappings:\n" + mappings
	}
	base := "          identifier: .metadata.identifier\n          blueprint: '\"component\"'\n"
	tests := []struct {
		name, doc string
		compile   bool // error found by New, not Load
		want      []string
	}{
		{"invalid YAML", "resources:\n  - kind: [unclosed\n", false, []string{"m.yaml:2:3", "invalid YAML", "did not find expected"}},
		{"unknown top-level key", "resource:\n  - kind: x\n", false, []string{"m.yaml:1:1", "resource", "unknown key"}},
		{"unknown nested key", resource(base + "          propertys:\n            a: .b\n"), false, []string{"m.yaml:10:11", "port.entity.mappings.propertys", "unknown key"}},
		{"unknown selector key", strings.Replace(resource(base), "query: 'true'", "query: 'true'\n      qurey: x", 1), false, []string{"m.yaml:5:7", "selector.qurey", "unknown key"}},
		{"missing identifier", resource("          blueprint: '\"c\"'\n"), false, []string{"identifier", "missing"}},
		{"missing selector", "resources:\n  - kind: c\n    port:\n      entity:\n        mappings:\n" + base, false, []string{"selector.query", "missing"}},
		{"threshold out of range", "entityDeletionThreshold: 2\nresources: []\n", false, []string{"m.yaml:1:26", "entityDeletionThreshold", "between 0 and 1"}},
		{"flag not a boolean", "enableMergeEntity: yes please\nresources: []\n", false, []string{"enableMergeEntity", "true or false"}},
		{"duplicate key", resource(base + "          title: .a\n          title: .b\n"), false, []string{"m.yaml:11:11", "duplicate key"}},
		{"no resources", "createMissingRelatedEntities: true\n", false, []string{"resources", "missing"}},
		{"jq syntax error", resource(base + "          properties:\n            type: .spec.type | | x\n"), true,
			[]string{"m.yaml:11:32", "resources[0] (kind component) properties.type", "jq syntax error", "unexpected token"}},
		{"jq syntax error in quoted text", resource(base + "          title: '.metadata.name +'\n"), true,
			[]string{"m.yaml:10:", "title", "jq syntax error", "unexpected EOF"}},
		{"undefined function", resource(base + "          title: .x | nosuchfunc\n"), true, []string{"m.yaml:10:23", "title", "nosuchfunc"}},
		{"input is not available", resource(base + "          title: input\n"), true, []string{"title", "input"}},
		{"block scalar error", resource(base + "          properties:\n            a: |\n              .x |\n              ]\n"), true, []string{"m.yaml:13:", "properties.a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Load([]byte(tt.doc), "m.yaml")
			if tt.compile {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				_, err = New(cfg, Options{})
			}
			if err == nil {
				t.Fatal("no error")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not a *ConfigError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNormalizeQuotes(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{`.a`, `.a`},
		{`'component'`, `"component"`},
		{`.kind == 'API'`, `.kind == "API"`},
		{`"it's"`, `"it's"`},
		{`'say "hi"'`, `"say \"hi\""`},
		{`.a # it's a comment` + "\n| 'x'", `.a # it's a comment` + "\n| \"x\""},
		{`'unterminated`, `'unterminated`},
	}
	for _, tt := range tests {
		if got := normalizeQuotes(tt.in); got != tt.want {
			t.Errorf("normalizeQuotes(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestValidIdentifier(t *testing.T) {
	t.Parallel()
	good := []string{"component:default/my-svc", "a", "Ünïcode", `a\b`, "x@y.z+1=2"}
	bad := []string{"", ".", "..", "system:default/", "component:", "has space", "semi;colon", strings.Repeat("a", 1001)}
	for _, s := range good {
		if err := ValidIdentifier(s); err != nil {
			t.Errorf("ValidIdentifier(%q) = %v", s, err)
		}
	}
	for _, s := range bad {
		if err := ValidIdentifier(s); err == nil {
			t.Errorf("ValidIdentifier(%q) accepted it", clip(s))
		}
	}
}

func TestLiteral(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		expr string
		want any
		ok   bool
	}{
		{`"component"`, "component", true},
		{`'component'`, "component", true},
		{`("x")`, "x", true},
		{`42`, 42.0, true},
		{`true`, true, true},
		{`null`, nil, true},
		{`.metadata.name`, nil, false},
		{`"a\(.x)"`, nil, false},
		{`"a" + "b"`, nil, false},
		{`"a" | ascii_upcase`, nil, false},
		{`[1]`, nil, false},
		{`| |`, nil, false},
	} {
		got, ok := Literal(tc.expr)
		if ok != tc.ok || got != tc.want {
			t.Errorf("Literal(%s) = %v, %v; want %v, %v", tc.expr, got, ok, tc.want, tc.ok)
		}
	}
}
