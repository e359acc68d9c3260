package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	portbridgev1 "github.com/portbridge/portbridge/proto/portbridge/v1"
)

// runResync implements `portbridge resync`: it asks a running sidecar for
// a resync (TriggerResync) and, with --wait, follows it in GetStatus until
// it finished, exiting as `portbridge sync --once` does. It is the
// scheduled resync beside the daemon (a CronJob), which needs no state
// file of its own.
func runResync(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("resync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conn := addConnFlags(fs)
	wait := fs.Bool("wait", false, "wait for the resync to finish and exit as `sync --once` does: 0 done, 1 failed, 3 entities Port did not take, 4 deletions refused by the guard, 5 conflicts")
	verify := fs.Bool("verify", false, "also run the verify pass (drift repair) after the resync; with --wait, wait for it too")
	reason := fs.String("reason", "cli", "why, for the sidecar's logs and status")
	timeout := fs.Duration("timeout", time.Hour, "with --wait: give up (exit 1) after this `DURATION`; 0 waits without limit")
	poll := fs.Duration("poll", time.Second, "with --wait: how often to read the status")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: portbridge resync [flags]\n\nAsks a running sidecar for a full resync (TriggerResync); a resync already running or requested is reused.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *poll <= 0 {
		return fmt.Errorf("flag --poll: must be positive")
	}
	c, baseURL, err := conn.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if *wait && *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	resp, err := c.TriggerResync(ctx, &portbridgev1.TriggerResyncRequest{Reason: *reason, Verify: *verify})
	if err != nil {
		return callError("trigger a resync on", baseURL, err)
	}
	id := resp.GetResyncId()
	if id == "" {
		return fmt.Errorf("the sidecar at %s did not queue a resync (one is being queued already); try again", baseURL)
	}
	if resp.GetAlreadyRunning() {
		fmt.Fprintf(stdout, "resync %s already running or requested; following it\n", id)
	} else {
		fmt.Fprintf(stdout, "resync %s requested\n", id)
	}
	if !*wait {
		return nil
	}
	res, err := followPass(ctx, c, baseURL, *poll, func(p *portbridgev1.PassResult) bool { return p.GetPass().GetId() == id })
	if err != nil {
		return err
	}
	printResult(stdout, res)
	code := int(res.GetExitCode())
	if *verify {
		v, err := followPass(ctx, c, baseURL, *poll, func(p *portbridgev1.PassResult) bool { return p.GetFollows() == id })
		if err != nil {
			return err
		}
		printResult(stdout, v)
		if code == 0 {
			code = int(v.GetExitCode())
		}
	}
	return exitFor(code, nil)
}

// statusReader is what followPass needs of the client.
type statusReader interface {
	GetStatus(ctx context.Context) (*portbridgev1.GetStatusResponse, error)
}

// followPass reads the status every poll until the pass match selects has
// finished. A pass that was seen and then is no longer listed (the
// sidecar restarted) is an error; so is one never seen within a minute.
func followPass(ctx context.Context, c statusReader, baseURL string, poll time.Duration, match func(*portbridgev1.PassResult) bool) (*portbridgev1.PassResult, error) {
	seen := false
	start := time.Now()
	for {
		st, err := c.GetStatus(ctx)
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("gave up waiting for the resync (--timeout): %w", ctx.Err())
			}
			return nil, callError("read the status of", baseURL, err)
		}
		var found *portbridgev1.PassResult
		for _, p := range st.GetRecentPasses() {
			if match(p) {
				found = p
			}
		}
		switch {
		case found != nil && found.GetPass().GetFinishedAt() != nil:
			return found, nil
		case found != nil:
			seen = true
		case seen:
			return nil, fmt.Errorf("the pass is no longer listed by %s (did the sidecar restart?)", baseURL)
		case time.Since(start) > time.Minute:
			return nil, fmt.Errorf("%s never listed the pass (is it an older sidecar without recent_passes?)", baseURL)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("gave up waiting for the resync (--timeout): %w", ctx.Err())
		case <-time.After(poll):
		}
	}
}

// printResult writes a finished pass like `sync --once` does.
func printResult(w io.Writer, p *portbridgev1.PassResult) {
	r := p.GetPass()
	t := r.GetTotals()
	took := r.GetFinishedAt().AsTime().Sub(r.GetStartedAt().AsTime()).Round(time.Millisecond)
	fmt.Fprintf(w, "%s %s: %s in %s — seen %d, pushed %d, unchanged %d, skipped %d, deleted %d, failed %d (exit code %d)\n", p.GetType(), r.GetId(), r.GetState(),
		took, t.GetSeen(), t.GetPushed(), t.GetUnchanged(), t.GetSkipped(), t.GetDeleted(), t.GetFailed(), p.GetExitCode())
	if r.GetError() != "" {
		fmt.Fprintf(w, "error: %s\n", r.GetError())
	}
	if r.GetDeletionsSkippedReason() != "" {
		fmt.Fprintf(w, "deletions not applied: %s\n", r.GetDeletionsSkippedReason())
	}
	if r.GetConflicts() > 0 {
		fmt.Fprintf(w, "conflicts: %d (see portbridge status)\n", r.GetConflicts())
	}
}
