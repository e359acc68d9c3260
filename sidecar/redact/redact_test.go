package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://api.port.io", "https://api.port.io"},
		{"https://user:pass@host:8443/x?y=1", "https://[REDACTED]@host:8443/x?y=1"},
		{"https://token@host", "https://[REDACTED]@host"},
		{"http://u:p@ss@host/a", "http://[REDACTED]@host/a"},
		{`catalog GET "https://a:b@backstage:7007/api/catalog": dial tcp: refused`, `catalog GET "https://[REDACTED]@backstage:7007/api/catalog": dial tcp: refused`},
		{"two: http://a:b@x and https://c:d@y/z", "two: http://[REDACTED]@x and https://[REDACTED]@y/z"},
		{"mail me: someone@example.com", "mail me: someone@example.com"},
		{"https://host/path@v1", "https://host/path@v1"},
	}
	for _, tt := range tests {
		if got := URL(tt.in); got != tt.want {
			t.Errorf("URL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactor(t *testing.T) {
	t.Parallel()
	r := New([]string{"s3cret-value", "abc", ""})
	got := r.String("token s3cret-value at https://u:s3cret-value@h, abc stays")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "abc stays") || !strings.Contains(got, "https://[REDACTED]@h") {
		t.Fatalf("String = %q", got)
	}
	var zero *Redactor
	if got := zero.String("https://a:b@h"); got != "https://[REDACTED]@h" {
		t.Fatalf("nil Redactor: %q", got)
	}
}

func TestQuote(t *testing.T) {
	t.Parallel()
	if got := Quote("short"); got != `"short"` {
		t.Errorf("Quote(short) = %s", got)
	}
	long := strings.Repeat("é", 1<<19) // 1 MiB of two-byte characters
	got := Quote(long)
	if len(got) > 80 || !strings.Contains(got, "(1048576 bytes)") || strings.Contains(got, "\\x") {
		t.Errorf("Quote(1 MiB) = %s", got)
	}
	for _, u := range []string{"https://user:pw@host/and/a/long/path/that/goes/on", "https://user:" + strings.Repeat("p", 100) + "@host"} {
		if got := Quote(u); strings.Contains(got, "pw") || strings.Contains(got, "ppp") {
			t.Errorf("Quote kept user info: %s", got)
		}
	}
}
