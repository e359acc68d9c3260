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
	"sync"
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
	portURL       string // the Port emulator, or the latency row's recorder in front of it
}

const serverToken = "bench-server-token"

// writeConfig writes a sidecar config file for the emulators and the
// shared state file, and returns its path.
func (g *rig) writeConfig(name string, c childConfig) (string, error) {
	listen := c.listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	if c.portURL == "" {
		c.portURL = g.port.url
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
`, listen, serverToken, g.statePath(), g.cat.url, catalogToken, c.portURL, porttest.DefaultClientID, porttest.DefaultClientSecret, c.resyncOnStart)
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
	CPU     time.Duration // user + system time of the child (wait4)
	Mem     procMem       // peaks while it ran
	Stdout  string        // the summary line
}

// syncOnce runs `portbridge sync --once` with the config file and returns
// its wall time, CPU time and memory peaks.
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
	watch := watchMem(cmd.Process.Pid)
	err = cmd.Wait()
	run := childRun{Elapsed: time.Since(start), Stdout: strings.TrimSpace(stdout.String()), Mem: watch.stop()}
	if cmd.ProcessState != nil {
		run.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err == nil && run.Mem.HWM == 0 {
		err = fmt.Errorf("could not read /proc/%d/status while it ran", cmd.Process.Pid)
	}
	if err != nil {
		return run, fmt.Errorf("portbridge sync --once (%s): %w\nstdout: %s\nlog tail:\n%s", name, err, run.Stdout, fileTail(logPath, 3000))
	}
	return run, nil
}

// memPoll is how often watchMem reads the child's memory.
const memPoll = 20 * time.Millisecond

// procMem is a process's memory from /proc/<pid>/status, in bytes: VmHWM
// (the high-water mark of the whole resident set), RssAnon (heap, stacks:
// what the process allocated) and RssFile (mapped file pages, such as the
// bbolt state file: the kernel can drop them under memory pressure).
type procMem struct {
	HWM, Anon, File int64
}

// memWatch polls a child's /proc/<pid>/status until stopped and keeps the
// peak of each figure. VmHWM is the kernel's own high-water mark; RssAnon
// and RssFile have none, so theirs are the highest values read. wait4's
// ru_maxrss is no use here: Go starts children with vfork semantics, so on
// exec Linux folds the parent's high-water mark into the child's.
type memWatch struct {
	mu   sync.Mutex
	peak procMem
	quit chan struct{}
	done chan struct{}
}

func watchMem(pid int) *memWatch {
	w := &memWatch{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(memPoll)
		defer t.Stop()
		for {
			if m, err := readProcMem(pid); err == nil {
				w.mu.Lock()
				w.peak = procMem{HWM: max(w.peak.HWM, m.HWM), Anon: max(w.peak.Anon, m.Anon), File: max(w.peak.File, m.File)}
				w.mu.Unlock()
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

// stop ends the polling and returns the peaks.
func (w *memWatch) stop() procMem {
	close(w.quit)
	<-w.done
	return w.current()
}

// current returns the peaks so far.
func (w *memWatch) current() procMem {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak
}

// readProcMem reads VmHWM, RssAnon and RssFile from /proc/<pid>/status.
func readProcMem(pid int) (procMem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMem{}, err
	}
	var m procMem
	found := 0
	for line := range strings.Lines(string(b)) {
		key, rest, ok := strings.Cut(line, ":")
		var dst *int64
		switch key {
		case "VmHWM":
			dst = &m.HWM
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		}
		if !ok || dst == nil {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return procMem{}, fmt.Errorf("unexpected line %q in /proc/%d/status", strings.TrimSpace(line), pid)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return procMem{}, fmt.Errorf("unexpected line %q in /proc/%d/status: %w", strings.TrimSpace(line), pid, err)
		}
		*dst = kb * 1024
		found++
	}
	if found != 3 {
		return procMem{}, fmt.Errorf("VmHWM, RssAnon or RssFile missing from /proc/%d/status", pid)
	}
	return m, nil
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
