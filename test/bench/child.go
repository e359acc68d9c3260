package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/portbridge/portbridge/sidecar/port/porttest"
)

// buildBinary builds the sidecar into dir.
func buildBinary(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "portbridge")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/portbridge/portbridge/sidecar")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./sidecar: %w\n%s", err, out)
	}
	return bin, nil
}

// childConfig is what differs between the children's config files.
type childConfig struct {
	listen        string
	resyncOnStart bool
}

const serverToken = "bench-server-token"

// writeConfig writes a sidecar config file for the emulators and the
// shared state file, and returns its path.
func (g *rig) writeConfig(name string, c childConfig) (string, error) {
	listen := c.listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	cfg := fmt.Sprintf(`server:
  listen: %q
  token: %q
state:
  path: %q
backstage:
  baseUrl: %q
  token: %q
  pageSize: 500
port:
  baseUrl: %q
  clientId: %q
  clientSecret: %q
mapping:
  initializePortResources: true
sync:
  resyncOnStart: %v
  resyncInterval: 0s
  verifyInterval: 0s
log:
  level: info
  format: text
`, listen, serverToken, g.statePath(), g.catalogURL, catalogToken, g.portURL, porttest.DefaultClientID, porttest.DefaultClientSecret, c.resyncOnStart)
	path := filepath.Join(g.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return "", fmt.Errorf("write the sidecar config %s: %w", path, err)
	}
	return path, nil
}

func (g *rig) statePath() string { return filepath.Join(g.dir, "state.db") }

// childRun is one finished `portbridge sync --once`.
type childRun struct {
	Elapsed time.Duration
	MaxRSS  int64  // bytes: the last VmHWM read while it ran
	Stdout  string // the summary line
}

// syncOnce runs `portbridge sync --once` with the config file and returns
// its wall time and peak RSS.
func (g *rig) syncOnce(ctx context.Context, name, config string) (childRun, error) {
	logPath := filepath.Join(g.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return childRun{}, err
	}
	defer logf.Close()
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, g.bin, "sync", "--once", "--config", config)
	cmd.Stdout = &stdout
	cmd.Stderr = g.logSink(logf)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return childRun{}, fmt.Errorf("start portbridge sync --once (%s): %w", name, err)
	}
	watch := watchRSS(cmd.Process.Pid)
	err = cmd.Wait()
	run := childRun{Elapsed: time.Since(start), Stdout: strings.TrimSpace(stdout.String()), MaxRSS: watch.stop()}
	if err == nil && run.MaxRSS == 0 {
		err = fmt.Errorf("could not read VmHWM from /proc/%d/status while it ran", cmd.Process.Pid)
	}
	if err != nil {
		return run, fmt.Errorf("portbridge sync --once (%s): %w\nstdout: %s\nlog tail:\n%s", name, err, run.Stdout, fileTail(logPath, 3000))
	}
	return run, nil
}

// rssPoll is how often watchRSS reads the child's high-water mark.
const rssPoll = 20 * time.Millisecond

// rssWatch polls a child's VmHWM (the peak resident set of its address
// space) until stopped. wait4's ru_maxrss is no use here: Go starts
// children with vfork semantics, so on exec Linux folds the parent's
// (this process's, emulators included) high-water mark into the child's.
type rssWatch struct {
	peak atomic.Int64
	quit chan struct{}
	done chan struct{}
}

func watchRSS(pid int) *rssWatch {
	w := &rssWatch{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(rssPoll)
		defer t.Stop()
		for {
			if v, err := readVmHWM(pid); err == nil && v > w.peak.Load() {
				w.peak.Store(v)
			}
			select {
			case <-w.quit:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// stop ends the polling and returns the highest VmHWM read, in bytes.
func (w *rssWatch) stop() int64 {
	close(w.quit)
	<-w.done
	return w.peak.Load()
}

// current returns the highest VmHWM read so far.
func (w *rssWatch) current() int64 { return w.peak.Load() }

// readVmHWM reads the VmHWM line of /proc/<pid>/status, in bytes.
func readVmHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmHWM line %q", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("unexpected VmHWM line %q: %w", strings.TrimSpace(line), err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

func (g *rig) logSink(f *os.File) io.Writer {
	if g.cfg.Verbose {
		return io.MultiWriter(f, g.progress)
	}
	return f
}

func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
