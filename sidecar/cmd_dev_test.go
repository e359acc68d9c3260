package main

import (
	"bufio"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// `portbridge dev` shows what landed (and explains the placeholder Port
// creates for the example catalog's dangling owner), prints commands that
// work as printed, and ends with status 0 on Ctrl-C (SIGINT), so that
// `make dev` does not end with "make: *** Error 1".
func TestDevRunsAndStopsCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "dev", "--listen", "127.0.0.1:0", "--catalog-listen", "127.0.0.1:0", "--port-listen", "127.0.0.1:0",
		"--catalog", "../testdata/backstage-examples/all.yaml,../testdata/backstage-examples/acme-corp.yaml")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	var out strings.Builder
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(60 * time.Second)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("dev ended early:\n%s", out.String())
			}
			out.WriteString(l + "\n")
			if strings.Contains(l, "Ctrl-C stops everything") {
				break wait
			}
		case <-deadline:
			t.Fatalf("dev did not get ready:\n%s", out.String())
		}
	}
	for _, w := range []string{"group group:default/guest is not in the catalog: Port created it as an empty placeholder because component:default/playback-order relates to it (owningGroup)",
		bin + " status --addr http://127.0.0.1:", bin + " sync --once --dry-run --config "} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
	// The printed config works for the CLI while dev runs.
	cli := ""
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, " config check --config ") {
			cli = l[strings.LastIndex(l, " ")+1:]
		}
	}
	if o, err := exec.Command(bin, "config", "check", "--config", cli).CombinedOutput(); err != nil || !strings.Contains(string(o), "is valid") {
		t.Errorf("config check with the printed config: %v\n%s", err, o)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dev after SIGINT: %v (want exit status 0)", err)
	}
}
