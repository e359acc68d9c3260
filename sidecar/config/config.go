// Package config loads the sidecar's one YAML config file: `${VAR}`
// substitution in values (as Backstage's app-config does), an environment
// override for every key (PORTBRIDGE_<SECTION>_<KEY>), defaults, and
// validation that names the file, the key and the reason.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/portbridge/portbridge/sidecar/limits"
	"github.com/portbridge/portbridge/sidecar/port"
	"github.com/portbridge/portbridge/sidecar/redact"
)

// Config is the whole configuration. Field tags: `yaml` is the key, `desc`
// documents it for `portbridge serve --help`, `secret:"true"` marks values
// that must never be printed.
type Config struct {
	Server    Server    `yaml:"server"`
	State     State     `yaml:"state"`
	Backstage Backstage `yaml:"backstage"`
	Port      Port      `yaml:"port"`
	Mapping   Mapping   `yaml:"mapping"`
	Sync      Sync      `yaml:"sync"`
	Log       Log       `yaml:"log"`
	Limits    Limits    `yaml:"limits"`

	// File is the path the config was read from ("" for defaults only).
	File string `yaml:"-"`
}

// Server configures the Connect/gRPC listener.
type Server struct {
	Listen          string `yaml:"listen" desc:"address of the Connect/gRPC/gRPC-Web listener, also serving /healthz, /readyz and /metrics"`
	Token           string `yaml:"token" secret:"true" desc:"bearer token every RPC must carry"`
	AllowNoAuth     bool   `yaml:"allowNoAuth" desc:"allow an empty token; only accepted when listen is a loopback address"`
	TLS             TLS    `yaml:"tls"`
	MaxRequestBytes int64  `yaml:"maxRequestBytes" desc:"largest accepted request body in bytes"`
}

// TLS enables TLS on the listener when both files are set.
type TLS struct {
	CertFile string `yaml:"certFile" desc:"PEM certificate; with keyFile enables TLS"`
	KeyFile  string `yaml:"keyFile" desc:"PEM private key"`
}

// State configures the bbolt file.
type State struct {
	Path string `yaml:"path" desc:"bbolt state file (mode 0600): queue, hashes, ownership"`
}

// Backstage configures the catalog client.
type Backstage struct {
	BaseURL  string `yaml:"baseUrl" desc:"Backstage backend base URL (the client adds /api/catalog)"`
	Token    string `yaml:"token" secret:"true" desc:"static externalAccess token for the catalog API"`
	PageSize int    `yaml:"pageSize" desc:"entities per catalog page during a resync"`
}

// Port configures the Port API client.
type Port struct {
	BaseURL           string      `yaml:"baseUrl" desc:"Port API base URL (EU https://api.port.io, US https://api.us.port.io)"`
	ClientID          string      `yaml:"clientId" desc:"Port client id"`
	ClientSecret      string      `yaml:"clientSecret" secret:"true" desc:"Port client secret"`
	MaxConcurrency    int         `yaml:"maxConcurrency" desc:"most Port requests in flight at once"`
	RequestsPerSecond float64     `yaml:"requestsPerSecond" desc:"client-side cap on Port requests per second (0: only Port's rate-limit headers)"`
	MaxRetryAfter     Duration    `yaml:"maxRetryAfter" desc:"longest pause a Retry-After or x-ratelimit-reset from Port may impose (longer ones are capped)"`
	Integration       Integration `yaml:"integration"`
}

// Integration names this installation in Port and says how Port steers
// it.
type Integration struct {
	Identifier string `yaml:"identifier" desc:"this installation's integration identifier in Port; also in the User-Agent, which Port records as the data source of every entity written"`
	Register   bool   `yaml:"register" desc:"find or create the integration in Port at start, poll its mapping and resync requests, report resync state and raw examples; false leaves Port's integration list alone"`
	Title      string `yaml:"title" desc:"the integration's title in Port, set when the integration is created (a title edited in Port is kept)"`
	// PollInterval is how often the integration's config and resync
	// request are read.
	PollInterval        Duration `yaml:"pollInterval" desc:"how often the integration's mapping and resync request are read from Port (two requests per poll)"`
	SendRawDataExamples bool     `yaml:"sendRawDataExamples" desc:"send the first 5 raw Backstage entities per kind of each resync to Port (secret-looking values masked), for the mapping editor's jq playground"`
}

// Mapping configures how entities become Port entities.
type Mapping struct {
	Source                  string   `yaml:"source" desc:"where the mapping comes from: file (mapping.file, or the embedded default when empty) or port (the integration's config in Port, polled and hot-applied; needs port.integration.register)"`
	File                    string   `yaml:"file" desc:"Port port-app-config YAML; empty uses the embedded corrected default"`
	BlueprintsFile          string   `yaml:"blueprintsFile" desc:"JSON list of blueprints; empty uses the embedded defaults"`
	InitializePortResources bool     `yaml:"initializePortResources" desc:"create missing blueprints at start (never changes existing ones)"`
	AllowEnv                bool     `yaml:"allowEnv" desc:"let jq mappings read environment variables ($ENV, env)"`
	Timeout                 Duration `yaml:"timeout" desc:"jq time limit per entity"`
	MaxOutputBytes          int      `yaml:"maxOutputBytes" desc:"largest mapped Port entity as JSON, in bytes (checked before it is encoded)"`
	MemoryBudget            int64    `yaml:"memoryBudget" desc:"memory jq may use per entity, in bytes (checked while it runs)"`
}

// Limits bound the input the sidecar accepts (see package limits; the keys
// are the limits.Key* constants).
type Limits struct {
	MaxDepth              int `yaml:"maxDepth" desc:"deepest nesting of objects and arrays in an entity (the entity is level 1; at most 1000)"`
	MaxEntityBytes        int `yaml:"maxEntityBytes" desc:"largest entity as JSON, in bytes"`
	MaxStringBytes        int `yaml:"maxStringBytes" desc:"longest string (or object key) in an entity, in bytes"`
	MaxMetadataFieldBytes int `yaml:"maxMetadataFieldBytes" desc:"largest field of an entity's metadata as JSON, in bytes"`
	MaxChangesPerBatch    int `yaml:"maxChangesPerBatch" desc:"most changes in one PublishChanges request or StreamChanges message"`
	MaxSourceBytes        int `yaml:"maxSourceBytes" desc:"longest source (publisher name) of a batch, in bytes"`
	MaxReasonBytes        int `yaml:"maxReasonBytes" desc:"longest TriggerResync reason, in bytes"`
	MaxRefBytes           int `yaml:"maxRefBytes" desc:"longest entity_ref, uid and etag, in bytes"`
	MaxMappingYAMLBytes   int `yaml:"maxMappingYamlBytes" desc:"largest mapping_yaml a PreviewMapping request may bring, in bytes"`
}

// Bounds returns the limits as package limits uses them.
func (l Limits) Bounds() limits.Limits {
	return limits.Limits{MaxDepth: l.MaxDepth, MaxEntityBytes: l.MaxEntityBytes, MaxStringBytes: l.MaxStringBytes,
		MaxMetadataFieldBytes: l.MaxMetadataFieldBytes, MaxChangesPerBatch: l.MaxChangesPerBatch, MaxSourceBytes: l.MaxSourceBytes,
		MaxReasonBytes: l.MaxReasonBytes, MaxRefBytes: l.MaxRefBytes, MaxMappingYAMLBytes: l.MaxMappingYAMLBytes}
}

func limitsFrom(l limits.Limits) Limits {
	return Limits{MaxDepth: l.MaxDepth, MaxEntityBytes: l.MaxEntityBytes, MaxStringBytes: l.MaxStringBytes,
		MaxMetadataFieldBytes: l.MaxMetadataFieldBytes, MaxChangesPerBatch: l.MaxChangesPerBatch, MaxSourceBytes: l.MaxSourceBytes,
		MaxReasonBytes: l.MaxReasonBytes, MaxRefBytes: l.MaxRefBytes, MaxMappingYAMLBytes: l.MaxMappingYAMLBytes}
}

// Sync configures the engine.
type Sync struct {
	Policy            string   `yaml:"policy" desc:"sync (create, update, delete), upsert-only (never delete) or create-only"`
	ResyncInterval    Duration `yaml:"resyncInterval" desc:"time between full resyncs (0 disables the timer)"`
	ResyncOnStart     bool     `yaml:"resyncOnStart" desc:"run a full resync when the sidecar starts"`
	VerifyInterval    Duration `yaml:"verifyInterval" desc:"time between verify passes that repair drift in Port (0 disables)"`
	DeleteGracePeriod Duration `yaml:"deleteGracePeriod" desc:"how long a deletion waits, then re-checks the catalog, before deleting in Port"`
	DeletionWindow    Duration `yaml:"deletionWindow" desc:"window over which change-path deletions are weighed against entityDeletionThreshold"`
	Workers           int      `yaml:"workers" desc:"workers applying queued changes"`
	FlushInterval     Duration `yaml:"flushInterval" desc:"longest a change waits to fill a Port bulk request"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level" desc:"debug, info, warn or error"`
	Format string `yaml:"format" desc:"json or text"`
}

// Duration is a time.Duration written as "30s", "1h".
type Duration time.Duration

// UnmarshalYAML parses Go duration syntax.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %s is not a duration like 30s or 1h", n.Line, redact.Quote(n.Value))
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes Go duration syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Default returns the configuration used for keys the file does not set.
func Default() Config {
	return Config{
		Server:    Server{Listen: ":8080", MaxRequestBytes: 8 << 20},
		State:     State{Path: "/var/lib/portbridge/state.db"},
		Backstage: Backstage{BaseURL: "http://localhost:7007", PageSize: 500},
		Port: Port{BaseURL: "https://api.port.io", MaxConcurrency: 8, MaxRetryAfter: Duration(DefaultMaxRetryAfter), Integration: Integration{Identifier: port.DefaultIntegrationIdentifier,
			Register: true, Title: DefaultIntegrationTitle, PollInterval: Duration(time.Minute), SendRawDataExamples: true}},
		Mapping: Mapping{Source: MappingSourceFile, InitializePortResources: true, Timeout: Duration(time.Second), MaxOutputBytes: 1 << 20,
			MemoryBudget: 32 << 20},
		Sync: Sync{Policy: "sync", ResyncInterval: Duration(time.Hour), ResyncOnStart: true, VerifyInterval: Duration(24 * time.Hour),
			DeleteGracePeriod: Duration(30 * time.Second), DeletionWindow: Duration(10 * time.Minute), Workers: 4, FlushInterval: Duration(5 * time.Millisecond)},
		Log:    Log{Level: "info", Format: "json"},
		Limits: limitsFrom(limits.Default()),
	}
}

// DefaultMaxRetryAfter is port.maxRetryAfter's default: Port's rate-limit
// window is five minutes, so a longer pause is never needed to let the
// window reset, and Port's own integration (Ocean) waits at most five
// minutes between retries too.
const DefaultMaxRetryAfter = 5 * time.Minute

// DefaultIntegrationTitle is the title a new integration gets in Port.
const DefaultIntegrationTitle = "Backstage (portbridge)"

// The mapping sources.
const (
	MappingSourceFile = "file"
	MappingSourcePort = "port"
)

// MinPollInterval is the shortest port.integration.pollInterval.
const MinPollInterval = time.Second

// EnvPrefix starts every override variable.
const EnvPrefix = "PORTBRIDGE_"

// Load reads path (may be "" for defaults and environment only), applies
// ${VAR} substitution, then environment overrides from getenv, then
// validates. getenv is os.Getenv in production.
func Load(path string, getenv func(string) string) (*Config, error) {
	cfg := Default()
	cfg.File = path
	name := path
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		if err := decode(data, path, getenv, &cfg); err != nil {
			return nil, err
		}
	} else {
		name = "(no config file)"
	}
	if err := applyEnv(&cfg, getenv); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	return &cfg, nil
}

var varRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

func decode(data []byte, file string, getenv func(string) string, cfg *Config) error {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return fmt.Errorf("config %s: %s", file, hideValues(err.Error()))
	}
	if len(root.Content) == 0 {
		return nil
	}
	var missing []string
	substituted := map[*yaml.Node]bool{}
	substitute(&root, getenv, &missing, substituted)
	if len(missing) > 0 {
		return fmt.Errorf("config %s: %s", file, strings.Join(missing, "; "))
	}
	doc := root.Content[0]
	c := checker{substituted: substituted}
	if err := c.check(doc, reflect.TypeOf(Config{}), "", false); err != nil {
		return fmt.Errorf("config %s: %w", file, err)
	}
	if err := doc.Decode(cfg); err != nil {
		// check should have found it; never show what yaml quotes.
		return fmt.Errorf("config %s: %s", file, hideValues(strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n  ")))
	}
	return nil
}

// quotedValue is how yaml quotes a value in its errors.
var quotedValue = regexp.MustCompile("`[^`]*`")

// hideValues removes the values yaml quotes in an error message: one may
// be a secret.
func hideValues(msg string) string { return quotedValue.ReplaceAllString(msg, "(value not shown)") }

var durationType = reflect.TypeOf(Duration(0))

// checker checks a YAML document against the Config type before it is
// decoded, so that every error names the line and the dotted key and never
// shows a secret: the values of secret keys, of aliases and of ${VAR}
// substitutions are never quoted, others at most as a short prefix.
type checker struct {
	substituted map[*yaml.Node]bool
}

func (c checker) check(n *yaml.Node, t reflect.Type, prefix string, secret bool) error {
	key := strings.TrimPrefix(prefix, ".")
	alias := false
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n, alias = n.Alias, true
	}
	if t.Kind() != reflect.Struct || t == durationType {
		return c.leaf(n, t, key, secret || alias || c.substituted[n])
	}
	if n.Kind != yaml.MappingNode {
		if n.Tag == "!!null" {
			return nil
		}
		return fmt.Errorf("line %d: key %s must be a mapping", n.Line, key)
	}
	fields := map[string]reflect.StructField{}
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("yaml"); tag != "" && tag != "-" {
			fields[tag] = t.Field(i)
		}
	}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		full := prefix + "." + k.Value
		f, ok := fields[k.Value]
		if !ok {
			errs = append(errs, fmt.Errorf("line %d: unknown key %s", k.Line, shortKey(strings.TrimPrefix(full, "."))))
			continue
		}
		if err := c.check(n.Content[i+1], f.Type, full, f.Tag.Get("secret") == "true"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// leaf checks that a value can be decoded into a field of type t.
func (c checker) leaf(n *yaml.Node, t reflect.Type, key string, hidden bool) error {
	want := typeWord(t)
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: key %s must be %s, not a %s", n.Line, key, want, kindWord(n.Kind))
	}
	if n.Tag == "!!null" {
		return nil
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		if hidden {
			return fmt.Errorf("line %d: key %s must be %s (the value is not shown: it may be secret)", n.Line, key, want)
		}
		return fmt.Errorf("line %d: key %s must be %s, got %s", n.Line, key, want, redact.Quote(n.Value))
	}
	return nil
}

// shortKey cuts a key from the file (it could be anything) for a message.
func shortKey(k string) string {
	if len(k) > 100 {
		return k[:100] + "…"
	}
	return k
}

func typeWord(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration like 30s or 1h"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Float64:
		return "a number"
	}
	return "an integer"
}

func kindWord(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "document"
}

// substitute replaces ${VAR} and ${VAR:-default} in scalar values; "$$"
// escapes a dollar sign. A reference to an unset variable without a default
// is an error naming the line.
func substitute(n *yaml.Node, getenv func(string) string, missing *[]string, substituted map[*yaml.Node]bool) {
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "$") {
		substituted[n] = true
		n.Value = varRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			if m == "$$" {
				return "$"
			}
			sub := varRef.FindStringSubmatch(m)
			if v := getenv(sub[1]); v != "" {
				return v
			}
			if sub[2] != "" {
				return sub[3]
			}
			*missing = append(*missing, fmt.Sprintf("line %d: environment variable %s is not set", n.Line, sub[1]))
			return ""
		})
		if n.Style&(yaml.TaggedStyle|yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
			return
		}
		// A substituted value is re-typed from its new text (so ${PORT} can
		// fill an integer) unless it was quoted.
		n.Tag = ""
	}
	for _, c := range n.Content {
		substitute(c, getenv, missing, substituted)
	}
}

// Field describes one config key, for help output and env overrides.
type Field struct {
	Key     string // dotted YAML path, e.g. "port.clientSecret"
	Env     string // override variable, e.g. "PORTBRIDGE_PORT_CLIENT_SECRET"
	Desc    string
	Secret  bool
	Default string
	value   reflect.Value
}

// Fields lists every key of cfg in file order.
func Fields(cfg *Config) []Field {
	var out []Field
	walk(reflect.ValueOf(cfg).Elem(), "", &out)
	return out
}

func walk(v reflect.Value, prefix string, out *[]Field) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "-" || tag == "" {
			continue
		}
		key := tag
		if prefix != "" {
			key = prefix + "." + tag
		}
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct {
			walk(fv, key, out)
			continue
		}
		*out = append(*out, Field{Key: key, Env: envName(key), Desc: f.Tag.Get("desc"), Secret: f.Tag.Get("secret") == "true",
			Default: formatValue(fv), value: fv})
	}
}

func formatValue(v reflect.Value) string {
	if d, ok := v.Interface().(Duration); ok {
		return d.D().String()
	}
	return fmt.Sprint(v.Interface())
}

// envName turns "port.clientSecret" into "PORTBRIDGE_PORT_CLIENT_SECRET".
func envName(key string) string {
	var b strings.Builder
	b.WriteString(EnvPrefix)
	for i, r := range key {
		switch {
		case r == '.':
			b.WriteByte('_')
		case r >= 'A' && r <= 'Z':
			if i > 0 && key[i-1] != '.' {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		default:
			b.WriteString(strings.ToUpper(string(r)))
		}
	}
	return b.String()
}

func applyEnv(cfg *Config, getenv func(string) string) error {
	var errs []error
	for _, f := range Fields(cfg) {
		raw := getenv(f.Env)
		if raw == "" {
			continue
		}
		if err := setValue(f.value, raw); err != nil {
			errs = append(errs, fmt.Errorf("environment %s (key %s): %w", f.Env, f.Key, err))
		}
	}
	return errors.Join(errs...)
}

func setValue(v reflect.Value, raw string) error {
	if _, ok := v.Interface().(Duration); ok {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%s is not a duration like 30s or 1h", redact.Quote(raw))
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%s is not true or false", redact.Quote(raw))
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("%s is not an integer", redact.Quote(raw))
		}
		v.SetInt(n)
	case reflect.Float64:
		n, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("%s is not a number", redact.Quote(raw))
		}
		v.SetFloat(n)
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

// Secrets returns the non-empty secret values, for redaction.
func (c *Config) Secrets() []string {
	var out []string
	for _, f := range Fields(c) {
		if f.Secret && f.value.String() != "" {
			out = append(out, f.value.String())
		}
	}
	return out
}

// CheckCredentials reports missing Port credentials: serve, sync and
// config check need both; tools that only read (map, blueprints suggest
// without --apply) do not.
func (c *Config) CheckCredentials() error {
	switch {
	case c.Port.ClientID == "" && c.Port.ClientSecret == "":
		return fmt.Errorf("key port.clientId: port.clientId and port.clientSecret must be set (env %s, %s): the sidecar cannot write to Port without them",
			envName("port.clientId"), envName("port.clientSecret"))
	case c.Port.ClientID == "":
		return fmt.Errorf("key port.clientId: must be set with port.clientSecret (env %s)", envName("port.clientId"))
	case c.Port.ClientSecret == "":
		return fmt.Errorf("key port.clientSecret: must be set with port.clientId (env %s)", envName("port.clientSecret"))
	}
	return nil
}

// Validate checks every key and returns all problems at once, each naming
// its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("key %s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Server.Listen == "" {
		bad("server.listen", "must be set, e.g. :8080")
	}
	if c.Server.Token == "" {
		if !c.Server.AllowNoAuth {
			bad("server.token", "must be set (env %s); an empty token needs server.allowNoAuth: true and a loopback listen address", envName("server.token"))
		} else if !IsLoopback(c.Server.Listen) {
			bad("server.allowNoAuth", "an empty token is only allowed when server.listen is a loopback address, not %s", redact.Quote(c.Server.Listen))
		}
	}
	if (c.Server.TLS.CertFile == "") != (c.Server.TLS.KeyFile == "") {
		bad("server.tls", "certFile and keyFile must be set together")
	}
	if c.Server.MaxRequestBytes < 1024 {
		bad("server.maxRequestBytes", "must be at least 1024, got %d", c.Server.MaxRequestBytes)
	}
	if c.State.Path == "" {
		bad("state.path", "must be set")
	}
	// Secrets and credentials often come from mounted files, whose trailing
	// newline would make every request fail with an unclear 401.
	for _, f := range []struct{ key, v string }{{"server.token", c.Server.Token}, {"backstage.token", c.Backstage.Token},
		{"port.clientId", c.Port.ClientID}, {"port.clientSecret", c.Port.ClientSecret}} {
		if strings.TrimSpace(f.v) != f.v {
			bad(f.key, "has leading or trailing whitespace (a newline at the end of a secret file?); remove it")
		}
	}
	if strings.TrimSpace(c.Backstage.Token) == c.Backstage.Token && strings.ContainsAny(c.Backstage.Token, " \t\r\n") {
		bad("backstage.token", "contains whitespace; a bearer token cannot")
	}
	checkURL := func(key, s string) {
		u, err := url.Parse(s)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			bad(key, "%s is not an http(s) URL", redact.Quote(s))
		case u.RawQuery != "" || u.Fragment != "":
			bad(key, "%s must not have a query or fragment", redact.Quote(s))
		}
	}
	checkURL("backstage.baseUrl", c.Backstage.BaseURL)
	checkURL("port.baseUrl", c.Port.BaseURL)
	if c.Backstage.PageSize < 1 || c.Backstage.PageSize > 10000 {
		bad("backstage.pageSize", "must be between 1 and 10000, got %d", c.Backstage.PageSize)
	}
	if c.Port.MaxConcurrency < 1 || c.Port.MaxConcurrency > 64 {
		bad("port.maxConcurrency", "must be between 1 and 64, got %d", c.Port.MaxConcurrency)
	}
	if c.Port.RequestsPerSecond < 0 {
		bad("port.requestsPerSecond", "must not be negative")
	}
	if err := port.ValidateIntegrationIdentifier(c.Port.Integration.Identifier); err != nil {
		bad("port.integration.identifier", "%v", err)
	}
	if err := c.CheckCredentials(); err != nil && (c.Port.ClientID != "" || c.Port.ClientSecret != "") {
		// Half of a pair is always a mistake; none at all is one only for
		// the commands that write to Port (CheckCredentials).
		errs = append(errs, err)
	}
	if d := c.Port.MaxRetryAfter.D(); d < time.Second || d > 24*time.Hour {
		bad("port.maxRetryAfter", "must be between 1s and 24h, got %s", d)
	}
	if in := c.Port.Integration; in.Register {
		if in.PollInterval.D() < MinPollInterval {
			bad("port.integration.pollInterval", "must be at least %s, got %s", MinPollInterval, in.PollInterval.D())
		}
		if len(in.Title) > 100 {
			bad("port.integration.title", "must be at most 100 characters, got %d", len(in.Title))
		}
	}
	switch c.Mapping.Source {
	case MappingSourceFile:
	case MappingSourcePort:
		if !c.Port.Integration.Register {
			bad("mapping.source", "port needs port.integration.register: true (the mapping is the integration's config in Port)")
		}
	default:
		bad("mapping.source", "%q is not file or port", c.Mapping.Source)
	}
	if c.Mapping.Timeout.D() <= 0 {
		bad("mapping.timeout", "must be positive")
	}
	if c.Mapping.MaxOutputBytes < 1024 || c.Mapping.MaxOutputBytes > 64<<20 {
		bad("mapping.maxOutputBytes", "must be between 1024 and 67108864 (64 MiB), got %d", c.Mapping.MaxOutputBytes)
	}
	if c.Mapping.MemoryBudget < 1<<20 || c.Mapping.MemoryBudget > 4<<30 {
		bad("mapping.memoryBudget", "must be between 1048576 (1 MiB) and 4294967296 (4 GiB), got %d", c.Mapping.MemoryBudget)
	}
	if err := c.Limits.Bounds().Validate(); err != nil {
		errs = append(errs, err)
	}
	switch c.Sync.Policy {
	case "sync", "upsert-only", "create-only":
	default:
		bad("sync.policy", "%s is not one of sync, upsert-only, create-only", redact.Quote(c.Sync.Policy))
	}
	for key, d := range map[string]Duration{"sync.resyncInterval": c.Sync.ResyncInterval, "sync.verifyInterval": c.Sync.VerifyInterval, "sync.deleteGracePeriod": c.Sync.DeleteGracePeriod} {
		if d < 0 {
			bad(key, "must not be negative")
		}
	}
	if c.Sync.DeletionWindow.D() <= 0 {
		bad("sync.deletionWindow", "must be positive")
	}
	if c.Sync.Workers < 1 || c.Sync.Workers > 256 {
		bad("sync.workers", "must be between 1 and 256, got %d", c.Sync.Workers)
	}
	if c.Sync.FlushInterval.D() <= 0 || c.Sync.FlushInterval.D() > time.Second {
		bad("sync.flushInterval", "must be between 1ns and 1s")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%s is not one of debug, info, warn, error", redact.Quote(c.Log.Level))
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		bad("log.format", "%s is not json or text", redact.Quote(c.Log.Format))
	}
	return errors.Join(errs...)
}

// IsLoopback reports whether a listen address binds only to loopback
// ("127.0.0.1:8080", "[::1]:8080", "localhost:8080"). ":8080" binds all
// interfaces and is not loopback.
func IsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
