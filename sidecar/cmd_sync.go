package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/portbridge/portbridge/sidecar/engine"
	"github.com/portbridge/portbridge/sidecar/plan"
)

// exitError makes a command exit with a given code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func runSync(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlags(fs, stdout, "sync --once")
	once := fs.Bool("once", false, "run one full resync and exit; required. Exit codes: 0 done, 1 failed, 3 entities Port did not take, 4 deletions refused by the guard, 5 conflicts")
	dryRun := fs.Bool("dry-run", false, "with --once: print the plan and write nothing to Port or the state file")
	output := fs.String("output", "text", "with --dry-run: the plan as `text` or json")
	ephemeral := fs.Bool("ephemeral-state", false, "use a fresh temporary state file instead of state.path and take ownership from Port's data-source listing (a CronJob beside the daemon); without it, a state.path that is locked by a running daemon, damaged or not writable falls back to the same")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !*once {
		return fmt.Errorf("only one-shot mode exists: pass --once (the daemon is `portbridge serve`)")
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("--output %q: want text or json", *output)
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log.Format, cfg.Log.Level, cfg.Secrets())
	if err := preflight(ctx, cfg, peerBackstage, peerPort); err != nil {
		return fmt.Errorf("cannot start: %w", err)
	}
	checked := time.Now()
	stopProfiles, err := startProfiles(ctx)
	if err != nil {
		return err
	}
	defer stopProfiles()
	// On a terminal a progress bar shows the pass; elsewhere (CI logs) the
	// engine's progress lines do.
	bar := isTerminal(stderr)
	sc, err := build(ctx, cfg, log, buildOptions{ephemeralState: *ephemeral, fallbackToTemp: true, tune: func(o *engine.Options) {
		o.CatalogCheckedAt = checked
		if bar {
			o.ProgressInterval = -1
		}
	}})
	if err != nil {
		return err
	}
	defer sc.close()
	if bar {
		stop := showProgress(ctx, sc.engine, stderr)
		defer stop()
	}
	rep, err := sc.engine.RunOnce(ctx, *dryRun)
	if sc.integ != nil {
		// The resync state, event-log line and examples reach Port before
		// the process ends.
		sc.integ.Flush(ctx)
	}
	if rep == nil {
		return err
	}
	snap := rep.Snapshot()
	if *dryRun {
		var werr error
		if *output == "json" {
			werr = writePlanJSON(stdout, snap)
		} else {
			werr = writePlan(stdout, snap)
		}
		if werr != nil {
			return werr
		}
	} else {
		t := snap.Totals
		fmt.Fprintf(stdout, "resync %s: %s in %s — seen %d, pushed %d, unchanged %d, skipped %d, deleted %d, failed %d\n", snap.ID, snap.State,
			snap.Finished.Sub(snap.Started).Round(time.Millisecond), t.Seen, t.Pushed, t.Unchanged, t.Skipped, t.Deleted, t.Failed)
		if snap.DeletionsSkipped != "" {
			fmt.Fprintf(stdout, "deletions not applied: %s\n", snap.DeletionsSkipped)
		}
		for _, c := range snap.Conflicts {
			fmt.Fprintf(stdout, "conflict: %s/%s is produced by %s; %s wins\n", c.Blueprint, c.Identifier, strings.Join(c.Refs, ", "), c.Winner)
		}
		if t.Failed > 0 {
			st, serr := sc.engine.Status(ctx)
			if serr == nil {
				for _, f := range st.Failures {
					fmt.Fprintf(stdout, "failed: %s → %s/%s: %s\n", f.Ref, f.Blueprint, f.Identifier, failureText(f.Status, f.Code, f.Message))
				}
			}
		}
	}
	return exitFor(rep.ExitCode(), err)
}

// exitFor is the command's error for a pass's exit code (engine.ExitCode's
// rules) and error: nil for 0 without an error; an error alone exits 1.
func exitFor(code int, err error) error {
	if code == 0 && err == nil {
		return nil
	}
	why := map[int]string{engine.ExitFailed: "the resync failed", engine.ExitEntityFailures: "entities failed", engine.ExitRefused: "deletions refused by the guard",
		engine.ExitConflicts: "conflicting entities"}[code]
	if err != nil {
		if why != "" {
			why += ": "
		}
		why += strings.TrimSpace(err.Error())
	}
	if code == 0 {
		code = engine.ExitFailed
	}
	return &exitError{code: code, err: fmt.Errorf("%s", why)}
}

func failureText(status int, code, msg string) string {
	s := msg
	if code != "" {
		s = code + ": " + s
	}
	if status != 0 {
		s = fmt.Sprintf("%d %s", status, s)
	}
	return s
}

// writePlan prints a dry run's plan for people: one line per change, the
// changed fields of updates with old → new, and a summary.
func writePlan(w io.Writer, s *engine.Report) error {
	ch := s.Plan
	if ch == nil {
		ch = &plan.Changes{}
	}
	for _, bp := range s.BlueprintsToCreate {
		fmt.Fprintf(w, "blueprint %s: would be created (mapping.initializePortResources)\n", bp)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tBLUEPRINT\tIDENTIFIER\tFROM\tREASON")
	row := func(action string, c plan.Change) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", action, c.Blueprint, c.Identifier, c.Ref, c.Reason)
		for _, f := range c.Fields {
			fmt.Fprintf(tw, "\t\t\t\t  %s: %s → %s\n", f.Path, value(f.Old), value(f.New))
		}
	}
	for _, l := range []struct {
		action string
		cs     []plan.Change
	}{{"create", ch.Create}, {"update", ch.Update}, {"delete", ch.Delete}, {"release", ch.Release}, {"claim", ch.Claim},
		{"update (suppressed by policy)", ch.SuppressedUpdates}, {"delete (suppressed by policy)", ch.SuppressedDeletes}, {"delete (refused by guard)", ch.RefusedDeletes}} {
		for _, c := range l.cs {
			row(l.action, c)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range s.Conflicts {
		fmt.Fprintf(w, "conflict: %s/%s is produced by %s; %s wins\n", c.Blueprint, c.Identifier, strings.Join(c.Refs, ", "), c.Winner)
	}
	if s.DeletionsSkipped != "" {
		fmt.Fprintf(w, "deletions not applied: %s\n", s.DeletionsSkipped)
	}
	t := s.Totals
	_, err := fmt.Fprintf(w, "Plan: %d to create, %d to update, %d to delete, %d unchanged; %d refused by the guard, %d suppressed by policy, %d conflicts.\n"+
		"dry run %s: %s in %s — seen %d; nothing was written\n",
		len(ch.Create), len(ch.Update), len(ch.Delete), t.Unchanged, len(ch.RefusedDeletes), len(ch.SuppressedUpdates)+len(ch.SuppressedDeletes), s.ConflictCount,
		s.ID, s.State, s.Finished.Sub(s.Started).Round(time.Millisecond), t.Seen)
	return err
}

// value renders a field value compactly (JSON, long values cut).
func value(v any) string {
	if v == nil {
		return "(none)"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 120 {
		return string(b[:117]) + "..."
	}
	return string(b)
}

type jsonChange struct {
	Action     string             `json:"action"`
	Blueprint  string             `json:"blueprint"`
	Identifier string             `json:"identifier"`
	Ref        string             `json:"entityRef"`
	Reason     string             `json:"reason,omitempty"`
	Fields     []plan.FieldChange `json:"fields,omitempty"`
}

// writePlanJSON prints a dry run's plan for machines.
func writePlanJSON(w io.Writer, s *engine.Report) error {
	ch := s.Plan
	if ch == nil {
		ch = &plan.Changes{}
	}
	conv := func(action string, cs []plan.Change) []jsonChange {
		out := make([]jsonChange, 0, len(cs))
		for _, c := range cs {
			out = append(out, jsonChange{Action: action, Blueprint: c.Blueprint, Identifier: c.Identifier, Ref: c.Ref, Reason: c.Reason, Fields: c.Fields})
		}
		return out
	}
	type conflict struct {
		Blueprint  string   `json:"blueprint"`
		Identifier string   `json:"identifier"`
		Refs       []string `json:"entityRefs"`
		Winner     string   `json:"winner"`
	}
	conflicts := make([]conflict, 0, len(s.Conflicts))
	for _, c := range s.Conflicts {
		conflicts = append(conflicts, conflict{c.Blueprint, c.Identifier, c.Refs, c.Winner})
	}
	doc := map[string]any{
		"id": s.ID, "state": s.State, "error": s.Err,
		"blueprintsToCreate": slices.Clip(append([]string{}, s.BlueprintsToCreate...)),
		"create":             conv("create", ch.Create), "update": conv("update", ch.Update), "delete": conv("delete", ch.Delete),
		"release": conv("release", ch.Release), "claim": conv("claim", ch.Claim),
		"suppressedUpdates": conv("update", ch.SuppressedUpdates), "suppressedDeletes": conv("delete", ch.SuppressedDeletes),
		"refusedDeletes": conv("delete", ch.RefusedDeletes), "deletionsSkipped": s.DeletionsSkipped,
		"conflicts": conflicts,
		"totals":    map[string]uint64{"seen": s.Totals.Seen, "unchanged": s.Totals.Unchanged, "skipped": s.Totals.Skipped},
		"exitCode":  s.ExitCode(),
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// showProgress draws the running pass as a progress bar on w (a terminal)
// until the returned stop is called: entities read of the catalog's total,
// rate and time left.
func showProgress(ctx context.Context, eng *engine.Engine, w io.Writer) (stop func()) {
	bar := progressbar.NewOptions64(-1, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("resync"),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("entities"),
		progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rep, ok := eng.Current()
			if !ok {
				continue
			}
			if rep.Total > 0 && bar.GetMax64() != int64(rep.Total) {
				bar.ChangeMax64(int64(rep.Total))
			}
			bar.Describe(fmt.Sprintf("resync: %d written, %d unchanged, %d failed", rep.Totals.Pushed, rep.Totals.Unchanged, rep.Totals.Failed))
			_ = bar.Set64(int64(rep.Totals.Seen))
		}
	}()
	return func() {
		cancel()
		<-done
		_ = bar.Finish()
	}
}
