package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/portbridge/portbridge/client"
	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
)

// defaultStatusAddr is where `portbridge status` looks for the sidecar when
// neither --addr nor PORTBRIDGE_ADDR says otherwise (the default
// server.listen is ":8080").
const defaultStatusAddr = "http://127.0.0.1:8080"

// runStatus implements `portbridge status`: it calls GetStatus on a running
// sidecar and prints the answer as aligned text, or as JSON with --json.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conn := addConnFlags(fs)
	asJSON := fs.Bool("json", false, "print the status as JSON (protobuf JSON mapping)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this `DURATION`")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: portbridge status [flags]\n\nPrints the status of a running sidecar.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c, baseURL, err := conn.dial()
	if err != nil {
		return err
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, err := c.GetStatus(ctx)
	if err != nil {
		return callError("get status from", baseURL, err)
	}
	if *asJSON {
		// protojson varies its whitespace on purpose; json.Indent makes the
		// output stable for scripts and diffs.
		raw, err := protojson.Marshal(st)
		if err != nil {
			return fmt.Errorf("encode status as JSON: %w", err)
		}
		var out bytes.Buffer
		if err := json.Indent(&out, raw, "", "  "); err != nil {
			return fmt.Errorf("indent status JSON: %w", err)
		}
		out.WriteByte('\n')
		_, err = out.WriteTo(stdout)
		return err
	}
	return printStatus(stdout, baseURL, st, time.Now())
}

// connFlags are the flags of the commands that call a running sidecar.
type connFlags struct {
	addr, token, protocol, caFile *string
}

func addConnFlags(fs *flag.FlagSet) *connFlags {
	return &connFlags{
		addr:     fs.String("addr", envOr("PORTBRIDGE_ADDR", defaultStatusAddr), "the sidecar's `URL` or listen address (host:port); env PORTBRIDGE_ADDR"),
		token:    fs.String("token", "", "bearer `TOKEN`; default from env PORTBRIDGE_TOKEN, else PORTBRIDGE_SERVER_TOKEN"),
		protocol: fs.String("protocol", "connect", "wire `PROTOCOL`: connect, grpc or grpc-web"),
		caFile:   fs.String("cacert", "", "PEM `FILE` of the CA that signed the sidecar's certificate (https only; default: system roots)"),
	}
}

// dial builds a client from the flags; it returns the base URL for
// messages.
func (f *connFlags) dial() (*client.Client, string, error) {
	token := *f.token
	if token == "" {
		token = envOr("PORTBRIDGE_TOKEN", os.Getenv("PORTBRIDGE_SERVER_TOKEN"))
	}
	proto, err := client.ParseProtocol(*f.protocol)
	if err != nil {
		return nil, "", fmt.Errorf("flag --protocol: %w", err)
	}
	baseURL, err := statusURL(*f.addr)
	if err != nil {
		return nil, "", fmt.Errorf("flag --addr: %w", err)
	}
	opts := []client.Option{client.WithProtocol(proto), client.WithRetry(2, 200*time.Millisecond)}
	if *f.caFile != "" {
		pem, err := os.ReadFile(*f.caFile)
		if err != nil {
			return nil, "", fmt.Errorf("flag --cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, "", fmt.Errorf("flag --cacert: %s holds no PEM certificate", *f.caFile)
		}
		opts = append(opts, client.WithTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	c, err := client.New(baseURL, token, opts...)
	if err != nil {
		return nil, "", err
	}
	return c, baseURL, nil
}

// callError describes a failed RPC, with a hint for a missing token.
func callError(what, baseURL string, err error) error {
	if connect.CodeOf(err) == connect.CodeUnauthenticated {
		return fmt.Errorf("%s %s: %w (set --token or PORTBRIDGE_TOKEN)", what, baseURL, err)
	}
	return fmt.Errorf("%s %s: %w", what, baseURL, err)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// statusURL accepts a URL or a listen address (":8080", "0.0.0.0:8080",
// "127.0.0.1:8080") and returns a URL to call; an unspecified host becomes
// 127.0.0.1.
func statusURL(addr string) (string, error) {
	if strings.Contains(addr, "://") {
		return addr, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%q is neither a URL nor host:port: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// printStatus writes st as aligned text.
func printStatus(w io.Writer, addr string, st *portbridgev1.GetStatusResponse, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }

	row("Sidecar", addr)
	row("Version", orDash(st.GetVersion()))
	if st.GetStartedAt() != nil {
		row("Started", fmt.Sprintf("%s (up %s)", stamp(st.GetStartedAt()), ago(now, st.GetStartedAt())))
	}
	lastErr := orDash(st.GetLastError())
	if st.GetLastErrorAt() != nil {
		lastErr = fmt.Sprintf("%s (%s ago) %s", stamp(st.GetLastErrorAt()), ago(now, st.GetLastErrorAt()), st.GetLastError())
	}
	row("Last error", lastErr)
	row("Policy", orDash(st.GetPolicy()))
	row("")

	q := st.GetQueue()
	oldest := "-"
	if q.GetDepth() > 0 && q.GetOldestAge() != nil {
		oldest = dur(q.GetOldestAge())
	}
	row("Queue", "depth", fmt.Sprint(q.GetDepth()))
	row("", "oldest change", oldest)
	row("", "retrying", fmt.Sprint(q.GetRetrying()))
	row("", "pending deletions", fmt.Sprint(q.GetPendingDeletions()))
	row("", "quarantined", fmt.Sprint(q.GetQuarantined()))
	for _, qc := range q.GetRecentQuarantined() {
		row("", "", fmt.Sprintf("#%d %s: %s", qc.GetSeq(), stamp(qc.GetAt()), qc.GetReason()))
	}
	row("Parked entities", fmt.Sprint(st.GetParked().GetCount()))
	for _, p := range st.GetParked().GetRecent() {
		row("", p.GetEntityRef(), p.GetBlueprint()+"/"+p.GetIdentifier(), failureText(int(p.GetPortStatus()), "", p.GetMessage()))
	}
	if g := st.GetDeletionGuard(); g != nil {
		refused := "none"
		if len(g.GetRefused()) > 0 {
			var parts []string
			for _, path := range slices.Sorted(maps.Keys(g.GetRefused())) {
				parts = append(parts, fmt.Sprintf("%s %d", path, g.GetRefused()[path]))
			}
			refused = strings.Join(parts, ", ")
		}
		row("Deletion guard", fmt.Sprintf("threshold %.0f%%", g.GetThreshold()*100), "change-path window "+dur(g.GetWindow()), "refused since start: "+refused)
		if r := g.GetLastRefusal(); r != nil {
			row("", "last refusal", fmt.Sprintf("%s (%s, %s): %s", stamp(r.GetAt()), r.GetPath(), r.GetReason(), r.GetMessage()))
		}
	}
	row("")

	for _, peer := range []struct {
		name string
		p    *portbridgev1.PeerStatus
	}{{"Port", st.GetPort()}, {"Backstage", st.GetBackstage()}} {
		if peer.p == nil {
			row(peer.name, "unknown")
			continue
		}
		state := "unreachable"
		if peer.p.GetReachable() {
			state = "reachable"
		}
		last := "never"
		if peer.p.GetLastSuccess() != nil {
			last = fmt.Sprintf("%s (%s ago)", stamp(peer.p.GetLastSuccess()), ago(now, peer.p.GetLastSuccess()))
		}
		row(peer.name, state, orDash(peer.p.GetUrl()), "last success "+last)
		if e := peer.p.GetLastError(); e != "" {
			row("", "last error", e)
		}
	}
	if rl := st.GetPortRateLimit(); rl != nil {
		remaining := "unknown"
		if rl.GetRemaining() >= 0 {
			remaining = fmt.Sprint(rl.GetRemaining())
		}
		reset := "unknown"
		if rl.GetResetAt() != nil {
			reset = stamp(rl.GetResetAt())
		}
		row("Port rate limit", "remaining "+remaining, "resets "+reset,
			"waited "+dur(rl.GetWaited()), fmt.Sprintf("throttled (429) %d", rl.GetThrottled()))
		if u := rl.GetWaitingUntil(); u != nil {
			row("", fmt.Sprintf("waiting until %s (%s from now), %d requests", stamp(u), u.AsTime().Sub(now).Round(time.Second), rl.GetWaiting()), rl.GetWaitReason())
		}
		if n := rl.GetCapped(); n > 0 {
			row("", fmt.Sprintf("%d pauses cut to port.maxRetryAfter", n))
		}
	}
	if owned := st.GetOwnedEntities(); len(owned) > 0 {
		parts := make([]string, 0, len(owned))
		for _, bp := range slices.Sorted(maps.Keys(owned)) {
			parts = append(parts, fmt.Sprintf("%s %d", bp, owned[bp]))
		}
		row("Owned entities", strings.Join(parts, ", "))
	}
	if o := st.GetOwnership(); o != nil {
		line := o.GetState()
		if o.GetAt() != nil {
			line += " at " + stamp(o.GetAt())
		}
		row("Ownership", line, o.GetDetail())
	}
	printIntegration(row, st.GetPortIntegration(), now)
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	if fs := st.GetRecentFailures(); len(fs) > 0 {
		fmt.Fprintf(w, "\nRecent failures (newest first, %d shown):\n", min(len(fs), 10))
		ft := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(ft, "  WHEN\tPATH\tENTITY\tPORT ENTITY\tKIND\tPORT SAYS")
		for _, f := range fs[:min(len(fs), 10)] {
			kind := "retrying"
			if f.GetPermanent() {
				kind = "parked"
			}
			fmt.Fprintf(ft, "  %s\t%s\t%s\t%s/%s\t%s\t%s\n", stamp(f.GetAt()), f.GetPath(), f.GetEntityRef(), f.GetBlueprint(), f.GetIdentifier(), kind,
				failureText(int(f.GetPortStatus()), f.GetPortCode(), f.GetMessage()))
		}
		if err := ft.Flush(); err != nil {
			return fmt.Errorf("write status: %w", err)
		}
	}
	if cs := st.GetRecentConflicts(); len(cs) > 0 {
		fmt.Fprintf(w, "\nConflicts (several Backstage entities map to one Port entity; the first in order wins):\n")
		for _, c := range cs[:min(len(cs), 10)] {
			fmt.Fprintf(w, "  %s/%s: %s (winner %s)\n", c.GetBlueprint(), c.GetIdentifier(), strings.Join(c.GetEntityRefs(), ", "), c.GetWinner())
		}
	}

	for _, pass := range []struct {
		title string
		r     *portbridgev1.ResyncStatus
	}{{"Current resync", st.GetCurrentResync()}, {"Last resync", st.GetLastResync()}, {"Last verify", st.GetLastVerify()}} {
		if err := printPass(w, pass.title, pass.r, now); err != nil {
			return err
		}
	}
	return nil
}

// printIntegration adds the integration's rows.
func printIntegration(row func(...string), in *portbridgev1.PortIntegrationStatus, now time.Time) {
	if in == nil {
		row("Port integration", "not registered (port.integration.register: false)")
		return
	}
	reg := "not registered"
	if in.GetRegistered() {
		reg = "registered " + stamp(in.GetRegisteredAt())
	}
	row("Port integration", in.GetIdentifier(), reg, "mapping from "+in.GetMappingSource(), "fingerprint "+orDash(in.GetMappingFingerprint()))
	if e := in.GetRegistrationError(); e != "" {
		row("", "registration error", e)
	}
	if e := in.GetMappingError(); e != "" {
		row("", "mapping refused", e)
	}
	poll := "never"
	if in.GetLastPoll() != nil {
		poll = fmt.Sprintf("%s (%s ago)", stamp(in.GetLastPoll()), ago(now, in.GetLastPoll()))
	}
	row("", "last poll", poll, orDash(in.GetLastPollError()))
	if in.GetLastResyncRequest() != nil {
		row("", "last resync request", stamp(in.GetLastResyncRequest()))
	}
	if len(in.GetExampleKinds()) > 0 {
		row("", "raw examples", strings.Join(in.GetExampleKinds(), ", "))
	}
	if e := in.GetLastReportError(); e != "" {
		row("", "last report error", e)
	}
}

// printPass writes one resync or verify pass with its counts per kind.
func printPass(w io.Writer, title string, r *portbridgev1.ResyncStatus, now time.Time) error {
	if r == nil {
		_, err := fmt.Fprintf(w, "\n%s: none\n", title)
		return err
	}
	when := "started " + stamp(r.GetStartedAt())
	switch {
	case r.GetFinishedAt() != nil && r.GetStartedAt() != nil:
		took := r.GetFinishedAt().AsTime().Sub(r.GetStartedAt().AsTime()).Round(time.Millisecond)
		when += fmt.Sprintf(", took %s", took)
	case r.GetStartedAt() != nil:
		when += fmt.Sprintf(", running for %s", ago(now, r.GetStartedAt()))
	}
	if _, err := fmt.Fprintf(w, "\n%s: %s (%s) %s, %s\n", title, orDash(r.GetId()), orDash(r.GetTrigger()), orDash(r.GetState()), when); err != nil {
		return err
	}
	if r.GetError() != "" {
		fmt.Fprintf(w, "  error: %s\n", r.GetError())
	}
	if r.GetDeletionsSkippedReason() != "" {
		fmt.Fprintf(w, "  deletions skipped: %s\n", r.GetDeletionsSkippedReason())
	}
	if r.GetRefusedDeletions() > 0 {
		fmt.Fprintf(w, "  deletions refused by the guard: %d (%s)\n", r.GetRefusedDeletions(), r.GetRefusalReason())
	}
	if r.GetConflicts() > 0 {
		fmt.Fprintf(w, "  conflicts: %d\n", r.GetConflicts())
	}
	if r.GetState() == "running" && r.GetTotalItems() > 0 {
		pct := float64(r.GetTotals().GetSeen()) * 100 / float64(r.GetTotalItems())
		fmt.Fprintf(w, "  progress: %d of %d (%.1f%%)\n", r.GetTotals().GetSeen(), r.GetTotalItems(), min(pct, 100))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  kind\tseen\tpushed\tunchanged\tskipped\tdeleted\tfailed\t")
	counts := func(name string, c *portbridgev1.SyncCounts) {
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%d\t%d\t\n", name,
			c.GetSeen(), c.GetPushed(), c.GetUnchanged(), c.GetSkipped(), c.GetDeleted(), c.GetFailed())
	}
	for _, kind := range slices.Sorted(maps.Keys(r.GetPerKind())) {
		counts(kind, r.GetPerKind()[kind])
	}
	counts("total", r.GetTotals())
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func stamp(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

func ago(now time.Time, ts *timestamppb.Timestamp) string {
	d := now.Sub(ts.AsTime())
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second).String()
}

func dur(d *durationpb.Duration) string {
	if d == nil {
		return "0s"
	}
	return d.AsDuration().Round(time.Millisecond).String()
}
