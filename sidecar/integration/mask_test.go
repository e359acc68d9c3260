package integration

import (
	"reflect"
	"testing"
)

func TestMask(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		path   []string // where the value sits
		value  any
		masked bool
	}{
		// keys that name secrets, in metadata and spec
		{"token annotation", []string{"metadata", "annotations", "vault.io/token"}, "s.abc", true},
		{"camelCase api key", []string{"spec", "apiKey"}, "abc", true},
		{"snake password label", []string{"metadata", "labels", "db_password"}, "x", true},
		{"key word", []string{"metadata", "annotations", "jira/project-key"}, "PB", true},
		{"client secret", []string{"spec", "integration", "clientSecret"}, "abc", true},
		{"auth header", []string{"metadata", "annotations", "x-auth"}, "abc", true},
		{"accesstoken suffix", []string{"spec", "githubaccesstoken"}, "abc", true},
		{"a list under a secret key", []string{"spec", "credentials"}, []any{"a", "b"}, true},
		{"author is no auth", []string{"metadata", "annotations", "author"}, "Jane", false},
		{"monkey is no key", []string{"spec", "monkey"}, "banana", false},
		{"keycloak is no key", []string{"metadata", "annotations", "keycloak-realm"}, "prod", false},
		{"plain annotation", []string{"metadata", "annotations", "github.com/project-slug"}, "acme/x", false},
		{"null under a secret key stays null", []string{"metadata", "annotations", "token"}, nil, false},
		{"secret key outside metadata and spec", []string{"status", "token"}, "abc", false},
		// values that look like credentials, anywhere
		{"GitHub token in a description", []string{"metadata", "description"}, "use ghp_abcdefghijklmnopqrstuvwxyz0123456789 to deploy", true},
		{"JWT", []string{"spec", "definition"}, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig", true},
		{"AWS key id", []string{"metadata", "annotations", "aws/id"}, "AKIAABCDEFGHIJKLMNOP", true},
		{"Slack token", []string{"status", "x"}, "xoxb-1234567890-abcdef", true},
		{"password in a URL", []string{"metadata", "annotations", "backstage.io/source-location"}, "url:https://u:p4ss@git.example.com/x", true},
		{"PEM private key", []string{"spec", "definition"}, "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----", true},
		{"bearer value", []string{"spec", "header"}, "Bearer abcdefghijklmnopqrstu", true},
		{"long random string", []string{"spec", "x"}, "Zm9vYmFyQmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg", true},
		{"a URL without a password", []string{"metadata", "links"}, []any{map[string]any{"url": "https://example.com/a/b", "title": "docs"}}, false},
		{"a long sentence", []string{"metadata", "description"}, "This is a perfectly ordinary description of 2 services", false},
		{"a long lower-case slug", []string{"metadata", "name"}, "a-very-long-component-name-for-the-playback-service", false},
		{"a UUID", []string{"spec", "id"}, "5e1f6b5a-9c4d-4e1b-8f3a-2b7c9d0e1f2a", false},
		{"uid and etag are kept", []string{"metadata", "etag"}, "ZjUzMDY4MmEtYjQ5Ny00NzFhLWI2ZjQtNjNlMTk0", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ent := map[string]any{"kind": "Component"}
			cur := ent
			for _, p := range tt.path[:len(tt.path)-1] {
				next := map[string]any{}
				cur[p] = next
				cur = next
			}
			cur[tt.path[len(tt.path)-1]] = tt.value
			out := Mask(ent)
			got := out
			for _, p := range tt.path[:len(tt.path)-1] {
				got = got[p].(map[string]any)
			}
			v := got[tt.path[len(tt.path)-1]]
			if tt.masked && v != Masked {
				t.Fatalf("%v not masked: %v", tt.path, v)
			}
			if !tt.masked && !reflect.DeepEqual(v, tt.value) {
				t.Fatalf("%v changed: %v", tt.path, v)
			}
			// The input is never modified.
			if !reflect.DeepEqual(cur[tt.path[len(tt.path)-1]], tt.value) {
				t.Fatal("Mask modified its input")
			}
		})
	}
}
