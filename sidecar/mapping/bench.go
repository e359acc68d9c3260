package mapping

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Throughput is one measured pass of a mapping over NDJSON input.
type Throughput struct {
	Name     string
	Entities int // input entities
	Outputs  int // mapped entities (ours) or output lines (jq)
	Elapsed  time.Duration
	Workers  int
}

// PerSecond is the input entities mapped per second.
func (t Throughput) PerSecond() float64 {
	if t.Elapsed <= 0 {
		return 0
	}
	return float64(t.Entities) / t.Elapsed.Seconds()
}

func (t Throughput) String() string {
	return fmt.Sprintf("%-10s %8d entities in %8.3fs = %10.0f entities/s (%d outputs, %d workers)",
		t.Name, t.Entities, t.Elapsed.Seconds(), t.PerSecond(), t.Outputs, t.Workers)
}

// MeasureNDJSON maps every line of ndjson (one Backstage entity each) with
// m on workers goroutines (0 means GOMAXPROCS), decoding each line from JSON
// as the catalog client would, and measures the throughput.
func MeasureNDJSON(ctx context.Context, m *Mapper, ndjson []byte, workers int) (Throughput, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var lines [][]byte
	for _, l := range bytes.Split(ndjson, []byte{'\n'}) {
		if len(bytes.TrimSpace(l)) > 0 {
			lines = append(lines, l)
		}
	}
	var next, outputs atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for {
				i := int(next.Add(1) - 1)
				if i >= len(lines) || ctx.Err() != nil {
					break
				}
				var e map[string]any
				if err := json.Unmarshal(lines[i], &e); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("line %d: %w", i+1, err) })
					break
				}
				n += len(m.Map(ctx, e).Entities)
			}
			outputs.Add(int64(n))
		}()
	}
	wg.Wait()
	t := Throughput{Name: "portbridge", Entities: len(lines), Outputs: int(outputs.Load()), Elapsed: time.Since(start), Workers: workers}
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return t, firstErr
}

// MeasureJQ runs the jq command line tool (jqPath, e.g. "jq") with
// m.JQProgram() over the same NDJSON and measures its throughput.
func MeasureJQ(ctx context.Context, jqPath string, m *Mapper, ndjson []byte) (Throughput, error) {
	prog, err := os.CreateTemp("", "portbridge-mapping-*.jq")
	if err != nil {
		return Throughput{}, fmt.Errorf("writing the jq program: %w", err)
	}
	defer os.Remove(prog.Name())
	if _, err := prog.WriteString(m.JQProgram()); err != nil {
		prog.Close()
		return Throughput{}, fmt.Errorf("writing the jq program: %w", err)
	}
	if err := prog.Close(); err != nil {
		return Throughput{}, fmt.Errorf("writing the jq program: %w", err)
	}
	entities := bytes.Count(ndjson, []byte{'\n'})
	if len(ndjson) > 0 && ndjson[len(ndjson)-1] != '\n' {
		entities++
	}
	cmd := exec.CommandContext(ctx, jqPath, "-c", "-f", prog.Name())
	cmd.Stdin = bytes.NewReader(ndjson)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return Throughput{}, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Throughput{}, fmt.Errorf("starting %s: %w", jqPath, err)
	}
	lines, cerr := countLines(out)
	werr := cmd.Wait()
	t := Throughput{Name: "jq", Entities: entities, Outputs: lines, Elapsed: time.Since(start), Workers: 1}
	if werr != nil {
		return t, fmt.Errorf("%s failed: %w: %s", jqPath, werr, bytes.TrimSpace(stderr.Bytes()))
	}
	return t, cerr
}

func countLines(r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	n := 0
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 && chunk[len(chunk)-1] == '\n' {
			n++
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
