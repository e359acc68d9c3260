package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"
)

// profileDirEnv names a directory into which a command writes a CPU
// profile of its whole run (cpu.pprof), a heap profile taken when the heap
// was at its largest (heap.pprof) and the Go runtime's memory statistics
// then and at the end (memstats.txt): what a slow or large run is
// diagnosed with (`go tool pprof`). Unset: nothing is profiled.
const profileDirEnv = "PORTBRIDGE_PROFILE_DIR"

// startProfiles starts profiling when PORTBRIDGE_PROFILE_DIR is set and
// returns the function that finishes it.
func startProfiles(ctx context.Context) (stop func(), err error) {
	dir := os.Getenv(profileDirEnv)
	if dir == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", profileDirEnv, err)
	}
	cpu, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", profileDirEnv, err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		_ = cpu.Close()
		return nil, fmt.Errorf("%s: start the CPU profile: %w", profileDirEnv, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		var peak uint64
		var ms, atPeak runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak+peak/20 {
				peak, atPeak = ms.HeapInuse, ms
				writeHeapProfile(filepath.Join(dir, "heap.pprof"))
			}
			select {
			case <-ctx.Done():
				writeMemStats(filepath.Join(dir, "memstats.txt"), &atPeak, &ms)
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
		pprof.StopCPUProfile()
		_ = cpu.Close()
	}, nil
}

func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	_ = pprof.Lookup("heap").WriteTo(f, 0)
}

func writeMemStats(path string, peak, end *runtime.MemStats) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	for _, m := range []struct {
		name string
		ms   *runtime.MemStats
	}{{"peak", peak}, {"end", end}} {
		fmt.Fprintf(f, "%s: HeapInuse %d HeapAlloc %d HeapSys %d HeapReleased %d StackSys %d Sys %d NextGC %d NumGC %d\n",
			m.name, m.ms.HeapInuse, m.ms.HeapAlloc, m.ms.HeapSys, m.ms.HeapReleased, m.ms.StackSys, m.ms.Sys, m.ms.NextGC, m.ms.NumGC)
	}
}
