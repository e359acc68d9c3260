package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestModuleStale(t *testing.T) {
	t.Parallel()
	base := time.Now().Add(-time.Hour)
	// files maps a path to its age in minutes after base; absent = missing.
	complete := map[string]int{
		"package-lock.json":               0,
		"package.json":                    0,
		"tsconfig.json":                   0,
		"node_modules/.package-lock.json": 1,
		"src/index.ts":                    2,
		"src/module.ts":                   2,
		"dist/index.js":                   3,
		"dist/module.js":                  3,
	}
	with := func(edit func(map[string]int)) map[string]int {
		m := map[string]int{}
		for k, v := range complete {
			m[k] = v
		}
		edit(m)
		return m
	}
	tests := []struct {
		name           string
		files          map[string]int
		install, build string // substrings of the reasons; "" = not needed
		wantErr        bool
	}{
		{name: "up to date", files: complete},
		{name: "clean clone", files: with(func(m map[string]int) {
			delete(m, "node_modules/.package-lock.json")
			delete(m, "dist/index.js")
			delete(m, "dist/module.js")
		}), install: "node_modules is missing", build: "missing"},
		{name: "lock file changed", files: with(func(m map[string]int) { m["package-lock.json"] = 4 }),
			install: "newer than node_modules", build: "older"},
		{name: "source changed", files: with(func(m map[string]int) { m["src/module.ts"] = 5 }), build: "dist/module.js is older"},
		{name: "tsconfig changed", files: with(func(m map[string]int) { m["tsconfig.json"] = 5 }), build: "older"},
		{name: "new source not built", files: with(func(m map[string]int) { m["src/extra.ts"] = 2 }), build: "dist/extra.js is missing"},
		{name: "declaration files are not sources", files: with(func(m map[string]int) { m["src/types.d.ts"] = 9 })},
		{name: "no package-lock.json", files: with(func(m map[string]int) { delete(m, "package-lock.json") }), wantErr: true},
		{name: "no tsconfig.json", files: with(func(m map[string]int) { delete(m, "tsconfig.json") }), wantErr: true},
		{name: "no sources", files: with(func(m map[string]int) {
			delete(m, "src/index.ts")
			delete(m, "src/module.ts")
		}), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for rel, minutes := range tt.files {
				p := filepath.Join(dir, rel)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				at := base.Add(time.Duration(minutes) * time.Minute)
				if err := os.Chtimes(p, at, at); err != nil {
					t.Fatal(err)
				}
			}
			install, build, err := moduleStale(dir)
			if (err != nil) != tt.wantErr {
				t.Fatalf("moduleStale: err %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if (install == "") != (tt.install == "") || !strings.Contains(install, tt.install) {
				t.Errorf("install reason %q, want one containing %q", install, tt.install)
			}
			if (build == "") != (tt.build == "") || !strings.Contains(build, tt.build) {
				t.Errorf("build reason %q, want one containing %q", build, tt.build)
			}
		})
	}
}
