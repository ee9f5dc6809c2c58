package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/overlay"
	"github.com/arborsh/arbor/internal/testutil"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// BenchmarkTimeToResult measures spawn → completion of a trivial disposable
// command under runsc three ways in one run: served by a warm sandbox, cold
// (boot per run), and the raw floor (`runsc run` on a prepared bundle,
// without arbor). It reports p50/p95 of each and the ratios to raw:
//
//	go test -run '^$' -bench TimeToResult -benchtime 20x ./internal/engine/
func BenchmarkTimeToResult(b *testing.B) {
	warmE, warmBase := newWarmEngine(b, "runsc")
	cold, err := New(context.Background(), Config{Home: b.TempDir(), Runtime: "runsc", WarmPerImage: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer cold.Close()
	coldBase := busybox(b, cold)
	bundle := rawBundle(b)
	n := max(b.N, 5)
	run(b, warmE, warmBase, "true", disposable) // a run on the image warms it
	base := warmE.WarmStats().Hits

	var warm, coldT, raw []time.Duration
	for i := 0; i < n; i++ {
		waitIdle(b, warmE, warmBase, 1) // refills happen between runs, not in them
		start := time.Now()
		run(b, warmE, warmBase, "true", disposable)
		warm = append(warm, time.Since(start))
		waitIdle(b, warmE, warmBase, 1) // the replacement's boot must not slow the cold run

		start = time.Now()
		run(b, cold, coldBase, "true", disposable)
		coldT = append(coldT, time.Since(start))

		start = time.Now()
		id := fmt.Sprintf("raw-%d", i)
		out, err := exec.Command("runsc", "--root="+filepath.Join(bundle, "state"), "--platform=systrap", "--network=none", "--overlay2=none",
			"run", "--bundle", bundle, id).CombinedOutput()
		if err != nil {
			b.Fatalf("raw runsc run: %v %s", err, out)
		}
		raw = append(raw, time.Since(start))
	}
	if hits := warmE.WarmStats().Hits - base; hits < n {
		b.Fatalf("only %d of %d warm runs were served warm", hits, n)
	}
	p := func(ds []time.Duration, q float64) time.Duration {
		s := append([]time.Duration(nil), ds...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[int(q*float64(len(s)-1))]
	}
	b.ReportMetric(p(warm, .5).Seconds()*1000, "warm-p50-ms")
	b.ReportMetric(p(coldT, .5).Seconds()*1000, "cold-p50-ms")
	b.ReportMetric(p(raw, .5).Seconds()*1000, "raw-p50-ms")
	b.ReportMetric(p(warm, .5).Seconds()/p(raw, .5).Seconds(), "warm/raw")
	b.ReportMetric(p(coldT, .5).Seconds()/p(raw, .5).Seconds(), "cold/raw")
	b.Logf("runsc time to result over %d runs: warm p50 %v p95 %v | cold p50 %v p95 %v | raw runsc run p50 %v p95 %v",
		n, p(warm, .5), p(warm, .95), p(coldT, .5), p(coldT, .95), p(raw, .5), p(raw, .95))
}

// rawBundle prepares an OCI bundle running /bin/true on a busybox rootfs.
func rawBundle(b *testing.B) string {
	dir := b.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	e, err := New(context.Background(), Config{Home: testutil.Home(b), Runtime: "runc", WarmPerImage: -1})
	if err != nil {
		b.Fatal(err)
	}
	img := busybox(b, e)
	fs, release, err := e.ImageFS(context.Background(), acct, img)
	if err != nil {
		b.Fatal(err)
	}
	if err := fs.Flatten(context.Background(), filepath.Join(dir, "flat")); err != nil {
		b.Fatal(err)
	}
	release()
	e.Close()
	os.Rename(filepath.Join(dir, "flat"), rootfs)
	spec := &specs.Spec{
		Version:  "1.0.2",
		Root:     &specs.Root{Path: rootfs},
		Hostname: "raw",
		Process:  &specs.Process{Args: []string{"/bin/true"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Mounts:   []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}},
		Linux:    &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: "pid"}, {Type: "mount"}, {Type: "ipc"}, {Type: "uts"}, {Type: "network"}}},
	}
	data, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644)
	// runsc keeps a network-namespace mount in its state directory.
	b.Cleanup(func() { overlay.UnmountUnder(filepath.Join(dir, "state")) })
	return dir
}
