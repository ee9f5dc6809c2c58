package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/arborsh/arbor/client"
)

// timeToResult is section 1: per runtime, the raw floors, the raw run with
// arbor's own config.json, and arbor disposable and non-disposable runs on
// the cold daemon, interleaved sample by sample so drift on a busy machine
// hits all alike; then the same runs on the warm daemon.
func (b *bench) timeToResult(ctx context.Context) error {
	n := b.o.Iterations
	d := b.cold
	for _, rt := range b.o.Runtimes {
		b.progress("time to result: %s, %d samples per series", rt, n)
		raw, rawSh := b.raw.runners[rt], b.raw.shell[rt]
		var arbRaw *rawRunner // a diagnostic, left out of the quick smoke
		var err error
		if !b.o.Quick {
			arbRaw, err = b.arborSpecRunner(ctx, d, raw)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.note("time to result, %s: the raw run with arbor's config.json was not measured: %v", rt, err)
			arbRaw = nil
		}
		var rawS, shS, arbS, disp, nd series
		for i := -1; i < n; i++ { // i = -1 is the discarded warm-up
			for _, x := range []struct {
				r  *rawRunner
				sr *series
			}{{raw, &rawS}, {rawSh, &shS}, {arbRaw, &arbS}} {
				if x.r == nil {
					continue
				}
				wall, cpu, err := x.r.run(ctx)
				if err != nil {
					return err
				}
				if i >= 0 {
					x.sr.addRaw(wall, cpu)
				}
			}
			for _, x := range []struct {
				s  spawn
				sr *series
			}{
				{spawn{runtime: rt, image: d.base, argv: []string{"/bin/true"}, disposable: true}, &disp},
				{spawn{runtime: rt, image: d.base, shell: fmt.Sprintf("echo %d > /root/out", i)}, &nd},
			} {
				s, err := b.runAPI(ctx, d, x.s)
				if err != nil {
					return err
				}
				if i >= 0 {
					if err := b.add(ctx, d, x.sr, s, true); err != nil {
						return err
					}
				}
			}
		}
		t := TimeToResult{
			Runtime: rt, Raw: dist(rawS.walls), RawCPU: rawS.cpu(), RawShell: dist(shS.walls), RawShellCPU: shS.cpu(),
			Disposable: dist(disp.walls), DisposablePhases: summarize(disp.phases), DisposableCPU: disp.cpu(),
			NonDisposable: dist(nd.walls), NonDisposablePhases: summarize(nd.phases), NonDisposableCPU: nd.cpu(),
		}
		t.DisposableRatio = ratio(t.Disposable.P50Ms, t.Raw.P50Ms)
		t.NonDisposableRatio = ratio(t.NonDisposable.P50Ms, t.RawShell.P50Ms)
		if arbRaw != nil {
			dd, c := dist(arbS.walls), arbS.cpu()
			t.RawArborSpec, t.RawArborSpecCPU = &dd, &c
			t.ArborSpecRatio = ratio(dd.P50Ms, t.Raw.P50Ms)
		}
		if b.warm != nil {
			if t.Warm, err = b.warmTimeToResult(ctx, rt, t.Raw.P50Ms, t.RawShell.P50Ms); err != nil {
				return err
			}
		}
		b.rep.TimeToResult = append(b.rep.TimeToResult, t)
	}
	return nil
}

// warmTimeToResult measures section 1 on the warm daemon: before each
// sample the pool settles, so each sample takes a pre-booted sandbox.
func (b *bench) warmTimeToResult(ctx context.Context, rt string, rawP50, shellP50 float64) (*WarmTimeToResult, error) {
	d, n := b.warm, b.o.Iterations
	b.progress("time to result: %s with the warm pool, %d samples per series", rt, n)
	// measure runs s once the pool has settled and counts CPU until it has
	// settled again (the replacement boots belong to the run).
	measure := func(sr *series, s spawn, record bool) (sample, error) {
		if _, err := d.waitPoolSettled(ctx, rt, 1); err != nil {
			return sample{}, err
		}
		self0, child0 := cpuNow()
		out, err := b.runAPI(ctx, d, s)
		if err != nil {
			return out, err
		}
		poll, err := d.waitPoolSettled(ctx, rt, 1)
		if err != nil {
			return out, err
		}
		self1, child1 := cpuNow()
		out.selfCPU, out.childCPU = self1-self0-poll, child1-child0
		if record {
			err = b.add(ctx, d, sr, out, true)
		}
		return out, err
	}
	// A first run on the base image makes the pool keep one ready for it.
	if _, err := b.runAPI(ctx, d, spawn{runtime: rt, image: d.base, argv: []string{"/bin/true"}, disposable: true}); err != nil {
		return nil, err
	}
	var disp, chained series
	for i := -1; i < n; i++ {
		if _, err := measure(&disp, spawn{runtime: rt, image: d.base, argv: []string{"/bin/true"}, disposable: true}, i >= 0); err != nil {
			return nil, err
		}
	}
	img := d.base
	for i := -1; i < n; i++ {
		s, err := measure(&chained, spawn{runtime: rt, image: img, shell: fmt.Sprintf("echo %d > /root/out", i)}, i >= 0)
		if err != nil {
			return nil, err
		}
		img = s.image
	}
	// Straight back: no waiting for the pool between the runs of a chain.
	var straight series
	if _, err := d.waitPoolSettled(ctx, rt, 1); err != nil {
		return nil, err
	}
	for i := -1; i < n; i++ {
		s, err := b.runAPI(ctx, d, spawn{runtime: rt, image: img, shell: fmt.Sprintf("echo %d > /root/out", i)})
		if err != nil {
			return nil, err
		}
		if i >= 0 {
			if err := b.add(ctx, d, &straight, s, true); err != nil {
				return nil, err
			}
		}
		img = s.image
	}
	w := &WarmTimeToResult{
		Disposable: dist(disp.walls), DisposablePhases: summarize(disp.phases), DisposableCPU: disp.cpu(),
		Chained: dist(chained.walls), ChainedPhases: summarize(chained.phases), ChainedCPU: chained.cpu(),
		Straight: dist(straight.walls), StraightPhases: summarize(straight.phases),
	}
	w.DisposableRatio = ratio(w.Disposable.P50Ms, rawP50)
	w.ChainedRatio = ratio(w.Chained.P50Ms, shellP50)
	w.StraightRatio = ratio(w.Straight.P50Ms, shellP50)
	return w, nil
}

// arborSpecRunner returns a raw runner whose bundle holds the config.json
// arbor generates for a run (copied from a live run's bundle directory),
// pointed at the raw root filesystem and running /bin/true.
func (b *bench) arborSpecRunner(ctx context.Context, d *daemonConn, raw *rawRunner) (*rawRunner, error) {
	sp, err := d.c.Spawn(ctx, spawn{runtime: raw.name, image: d.base, argv: []string{"sleep", "60"}, disposable: true}.request())
	if err != nil {
		return nil, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		_ = d.c.Cancel(cctx, sp.UUID)
		_, _ = d.c.Wait(cctx, sp.UUID)
	}()
	path := filepath.Join(d.home, "run", sp.UUID, "bundle", "config.json") // the engine's layout: run/<operation>/bundle
	deadline := time.Now().Add(30 * time.Second)
	var spec specs.Spec
	for {
		data, err := os.ReadFile(path)
		if err == nil && json.Unmarshal(data, &spec) == nil && spec.Process != nil && spec.Root != nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not appear within 30 s", path)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	// Mounts of the live run's own root (runsc's bind of its /tmp) point
	// into the raw root instead, or go when the raw root has no such path:
	// the live run's root is gone by the time the runner runs.
	mounts := spec.Mounts[:0]
	for _, m := range spec.Mounts {
		if rel, err := filepath.Rel(spec.Root.Path, m.Source); err == nil && filepath.IsLocal(rel) {
			m.Source = filepath.Join(b.raw.rootfs, rel)
			if _, err := os.Stat(m.Source); err != nil {
				continue
			}
		}
		mounts = append(mounts, m)
	}
	spec.Mounts = mounts
	spec.Root = &specs.Root{Path: b.raw.rootfs, Readonly: spec.Root.Readonly}
	spec.Process.Args = []string{"/bin/true"}
	if spec.Linux != nil && spec.Linux.CgroupsPath != "" {
		spec.Linux.CgroupsPath = "/arbor-bench/raw-" + raw.name
	}
	return raw.withSpec("arborspec", &spec)
}

// parallel runs fn(0..n-1) at once and returns the wall time until the
// last returns, and the first error.
func parallel(n int, fn func(i int) error) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i)
		}()
	}
	wg.Wait()
	d := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return d, err
		}
	}
	return d, nil
}

// fanOut is section 2: n non-disposable branches of the base image started
// at once, against n raw runs of the same shell command started at once; on
// the cold daemon at every width, and on the warm daemon at the target width
// and as repeated bursts (see Burst).
func (b *bench) fanOut(ctx context.Context) error {
	warmWidth := 0 // 16, the target's width, or the widest below it
	for _, n := range b.o.FanOut {
		if n <= 16 && n > warmWidth {
			warmWidth = n
		}
	}
	for _, rt := range b.o.Runtimes {
		for _, n := range b.o.FanOut {
			if err := b.fanOutWidth(ctx, b.cold, rt, n); err != nil {
				return err
			}
		}
		if b.warm != nil && warmWidth > 0 {
			if err := b.fanOutWidth(ctx, b.warm, rt, warmWidth); err != nil {
				return err
			}
		}
		if b.warm != nil {
			if err := b.burst(ctx, rt); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *bench) fanOutWidth(ctx context.Context, d *daemonConn, rt string, n int) error {
	reps := 3 // repetitions: more for the cheap narrow batches
	switch {
	case b.o.Quick || n > 16:
		reps = 1
	case n > 4:
		reps = 2
	}
	pool := "off"
	if d == b.warm {
		pool = "on"
	}
	b.progress("fan-out: %s, warm pool %s, %d branches, %d repetition(s)", rt, pool, n, reps)
	raw := b.raw.shell[rt]
	f := FanOut{Runtime: rt, Pool: pool, Branches: n, Reps: reps}
	// settle lets the warm pool finish booting (nothing to wait for on the
	// cold daemon) and returns the CPU its polling used.
	settle := func() (time.Duration, error) {
		if d != b.warm {
			return 0, nil
		}
		return d.waitPoolSettled(ctx, rt, 0)
	}
	var arborCPU, rawCPU series
	batch := func(walls *[]float64, cpu *series, fn func(i int) error) error {
		if _, err := settle(); err != nil {
			return err
		}
		self0, child0 := cpuNow()
		wall, err := parallel(n, fn)
		if err != nil {
			return err
		}
		poll, err := settle()
		if err != nil {
			return err
		}
		self1, child1 := cpuNow()
		*walls = append(*walls, ms(wall))
		cpu.selfCPU = append(cpu.selfCPU, (self1-self0-poll)/time.Duration(n))
		cpu.childCPU = append(cpu.childCPU, (child1-child0)/time.Duration(n))
		return nil
	}
	arbor := func() error {
		return batch(&f.ArborWallsMs, &arborCPU, func(i int) error {
			_, err := b.runAPI(ctx, d, spawn{runtime: rt, image: d.base, shell: fmt.Sprintf("echo %d > /root/branch", i)})
			return err
		})
	}
	rawRuns := func() error {
		return batch(&f.RawWallsMs, &rawCPU, func(int) error {
			_, _, err := raw.run(ctx)
			return err
		})
	}
	// The hardened floor runs after each repetition's pair, so the pair
	// (the headline ratio) is measured as it always was.
	hard, hardRunner := (*HardenedFloor)(nil), b.raw.hardened[rt]
	var hardCPU series
	if hardRunner != nil && d == b.cold {
		hard = &HardenedFloor{}
	}
	for r := range reps {
		first, second := arbor, rawRuns
		if r%2 == 1 {
			first, second = rawRuns, arbor
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
		if hard != nil {
			if err := batch(&hard.WallsMs, &hardCPU, func(int) error {
				_, _, err := hardRunner.run(ctx)
				return err
			}); err != nil {
				return err
			}
		}
	}
	f.ArborWallMs, f.RawWallMs = medianMs(f.ArborWallsMs), medianMs(f.RawWallsMs)
	f.ArborPerSec = ratio(float64(n)*1000, f.ArborWallMs)
	f.RawPerSec = ratio(float64(n)*1000, f.RawWallMs)
	f.Ratio = ratio(f.ArborPerSec, f.RawPerSec)
	f.ArborCPU, f.RawCPU = arborCPU.cpu(), rawCPU.cpu()
	if hard != nil {
		hard.WallMs = medianMs(hard.WallsMs)
		hard.PerSec = ratio(float64(n)*1000, hard.WallMs)
		hard.Ratio = ratio(hard.PerSec, f.RawPerSec)
		hard.ArborRatio = ratio(f.ArborPerSec, hard.PerSec)
		hard.CPU = hardCPU.cpu()
		f.Hardened = hard
	}
	b.rep.FanOut = append(b.rep.FanOut, f)
	return nil
}

// commit is section 3: a one-file change on the base image and on an image
// holding one big file.
func (b *bench) commit(ctx context.Context) error {
	sec := &CommitSection{SmallImageBytes: b.rep.Setup.BaseBytes, BigImageBytes: b.o.BigImageBytes, BuildRuntime: b.chainRT}
	b.progress("commit: building an image with a %d MiB file (%s)", b.o.BigImageBytes>>20, b.chainRT)
	d := b.cold
	s, err := b.runAPI(ctx, d, spawn{runtime: b.chainRT, image: d.base, shell: fmt.Sprintf("head -c %d /dev/zero > /big", b.o.BigImageBytes), timeout: 3600})
	if err != nil {
		return err
	}
	ph, err := b.phases(ctx, d, s)
	if err != nil {
		return err
	}
	sec.BuildMs, sec.BuildPhases = ms(s.wall), summarize([]phaseSample{ph})
	big := s.image
	for _, rt := range b.o.Runtimes {
		b.progress("commit: %s, %d samples per image", rt, b.o.Iterations)
		var small, large series
		for i := -1; i < b.o.Iterations; i++ {
			order := []struct {
				img string
				sr  *series
			}{{d.base, &small}, {big, &large}}
			if i%2 == 1 {
				slices.Reverse(order)
			}
			for _, x := range order {
				s, err := b.runAPI(ctx, d, spawn{runtime: rt, image: x.img, shell: fmt.Sprintf("echo %d > /root/change", i)})
				if err != nil {
					return err
				}
				if i >= 0 {
					if err := b.add(ctx, d, x.sr, s, true); err != nil {
						return err
					}
				}
			}
		}
		r := CommitResult{Runtime: rt, Small: dist(small.walls), Big: dist(large.walls), SmallCommit: small.commitDist(), BigCommit: large.commitDist()}
		r.Ratio = ratio(r.Big.P50Ms, r.Small.P50Ms)
		r.CommitRatio = ratio(r.BigCommit.P50Ms, r.SmallCommit.P50Ms)
		sec.Results = append(sec.Results, r)
	}
	b.rep.Commit = sec
	return nil
}

// extendChain grows the chain with non-disposable steps until it holds an
// image at depth.
func (b *bench) extendChain(ctx context.Context, depth int) error {
	if len(b.chain) >= depth {
		return nil
	}
	b.progress("chain: building to depth %d with %s", depth, b.chainRT)
	start := time.Now()
	defer func() { b.chainMs = round3(b.chainMs + ms(time.Since(start))) }()
	for len(b.chain) < depth {
		i := len(b.chain) // step i makes the image at depth i+1
		s, err := b.runAPI(ctx, b.cold, spawn{runtime: b.chainRT, image: b.chain[i-1], shell: fmt.Sprintf("echo %d > /root/step-%04d", i, i)})
		if err != nil {
			return fmt.Errorf("chain step %d: %w", i, err)
		}
		b.chain = append(b.chain, s.image)
		b.chainSteps = append(b.chainSteps, s.wall)
		if (i+1)%100 == 0 {
			b.progress("chain: depth %d", i+1)
		}
	}
	return nil
}

// mountedLayers is how many layers the chain image at index i mounts: down
// to the nearest image the daemon has squashed, or to the base.
func (b *bench) mountedLayers(i int) int {
	for j := i; j >= 0; j-- {
		if b.cold.logs.isSquashed(b.chain[j]) {
			return i - j + 1
		}
	}
	return i + 1
}

// deepChain is section 4: one more step on the chain's image at each
// depth. The whole chain is built first; then the depths are probed round
// robin, so drift on a busy machine does not favour one depth.
func (b *bench) deepChain(ctx context.Context) error {
	d := b.cold
	depths := b.o.Depths
	if err := b.extendChain(ctx, depths[len(depths)-1]); err != nil {
		return err
	}
	probes := max(3, b.o.Iterations/2)
	sec := &ChainSection{ChainRuntime: b.chainRT, Depths: depths, Probes: probes}
	b.progress("deep chain: one step at depths %v with %v, %d samples each", depths, b.o.Runtimes, probes)
	type point struct {
		depth, mounted int
		rt             string
		sr             series
	}
	var points []*point
	for _, dep := range depths {
		for _, rt := range b.o.Runtimes {
			points = append(points, &point{depth: dep, rt: rt})
		}
	}
	for i := -1; i < probes; i++ {
		for _, p := range points {
			s, err := b.runAPI(ctx, d, spawn{runtime: p.rt, image: b.chain[p.depth-1], shell: fmt.Sprintf("echo %d > /root/probe", i)})
			if err != nil {
				return err
			}
			if i >= 0 {
				if err := b.add(ctx, d, &p.sr, s, true); err != nil {
					return err
				}
			}
		}
	}
	ref := map[string]float64{}
	for _, p := range points {
		// Squashes still running when the chain was finished are done by now.
		p.mounted = b.mountedLayers(p.depth - 1)
		dp := DepthPoint{Runtime: p.rt, Depth: p.depth, MountedLayers: p.mounted, Step: dist(p.sr.walls), Phases: summarize(p.sr.phases)}
		if p.depth == 1 {
			ref[p.rt] = dp.Step.P50Ms
		}
		dp.Ratio = ratio(dp.Step.P50Ms, ref[p.rt])
		sec.Points = append(sec.Points, dp)
	}
	sec.Steps, sec.BuildMs = len(b.chainSteps), b.chainMs
	k := min(100, len(b.chainSteps))
	sec.FirstSteps = dist(b.chainSteps[:k])
	sec.LastSteps = dist(b.chainSteps[len(b.chainSteps)-k:])
	b.rep.DeepChain = sec
	return nil
}

// inspect is section 5: list, read and grep on the chain image at
// InspectDepth and, for reference, on its first step (depth 2).
func (b *bench) inspect(ctx context.Context) error {
	depth := b.o.InspectDepth
	if err := b.extendChain(ctx, depth); err != nil {
		return err
	}
	c := b.cold.c
	deep, shallow := b.chain[depth-1], b.chain[1]
	sec := &InspectSection{Depth: depth, MountedLayers: b.mountedLayers(depth - 1), BaselineDepth: 2}
	b.progress("inspect: depth %d (%d mounted layers) and depth 2, %d samples", depth, sec.MountedLayers, b.o.Iterations)
	ops := []struct {
		name, call string
		fn         func(img string, steps int) error
	}{
		{"list", `ListDir(img, "/root")`, func(img string, steps int) error {
			l, err := c.ListDir(ctx, img, "/root")
			if err != nil {
				return err
			}
			n := 0
			for _, f := range l.Files {
				if strings.Contains(f.Path, "step-") {
					n++
				}
			}
			if n != steps {
				return fmt.Errorf("list /root of %s: %d step files, want %d", img, n, steps)
			}
			return nil
		}},
		{"read", `ReadFile(img, "/root/step-0001")`, func(img string, _ int) error {
			data, err := c.ReadFile(ctx, img, "/root/step-0001")
			if err != nil {
				return err
			}
			if string(data) != "1\n" {
				return fmt.Errorf("read /root/step-0001 of %s: %q, want \"1\\n\"", img, data)
			}
			return nil
		}},
		{"grep", `Grep(img, {Patterns: ["1"], Paths: ["/root"]})`, func(img string, _ int) error {
			r, err := c.Grep(ctx, img, client.GrepOptions{Patterns: []string{"1"}, Paths: []string{"/root"}})
			if err != nil {
				return err
			}
			if len(r.Matches) == 0 {
				return fmt.Errorf("grep /root of %s found nothing", img)
			}
			return nil
		}},
	}
	for _, op := range ops {
		var deepD, baseD []time.Duration
		for i := -1; i < b.o.Iterations; i++ {
			for _, x := range []struct {
				img   string
				steps int
				out   *[]time.Duration
			}{{deep, depth - 1, &deepD}, {shallow, 1, &baseD}} {
				t0 := time.Now()
				if err := op.fn(x.img, x.steps); err != nil {
					return fmt.Errorf("inspect %s: %w", op.name, err)
				}
				if i >= 0 {
					*x.out = append(*x.out, time.Since(t0))
				}
			}
		}
		r := InspectOp{Op: op.name, Call: op.call, Deep: dist(deepD), Baseline: dist(baseD)}
		r.Ratio = ratio(r.Deep.P50Ms, r.Baseline.P50Ms)
		sec.Ops = append(sec.Ops, r)
	}
	b.rep.Inspect = sec
	return nil
}

// storage is section 6: growth of the layer store per snapshot of a
// k-byte change.
func (b *bench) storage(ctx context.Context) error {
	samples := 5
	if b.o.Quick {
		samples = 2
	}
	d := b.cold
	layers := filepath.Join(d.home, "layers")
	for _, rt := range b.o.Runtimes {
		for _, k := range []int64{1 << 10, 1 << 20} {
			b.progress("storage: %s, %d-byte change, %d samples", rt, k, samples)
			st := Storage{Runtime: rt, ChangeBytes: k, Samples: samples}
			var deltas []float64
			for i := range samples {
				before, names, err := du(layers)
				if err != nil {
					return err
				}
				s, err := b.runAPI(ctx, d, spawn{runtime: rt, image: d.base, shell: fmt.Sprintf("head -c %d /dev/urandom > /root/blob", k)})
				if err != nil {
					return err
				}
				after, names2, err := du(layers)
				if err != nil {
					return err
				}
				deltas = append(deltas, float64(after-before))
				if i > 0 {
					continue
				}
				for n := range names2 {
					if !names[n] {
						st.Entries, err = treeEntries(filepath.Join(layers, n))
						if err != nil {
							return err
						}
					}
				}
				im, err := d.c.Image(ctx, s.image)
				if err != nil {
					return err
				}
				st.LayerBytes = im.LayerBytes
			}
			st.StoredBytes = int64(medianMs(deltas))
			st.OverheadBytes = st.StoredBytes - k
			b.rep.Storage = append(b.rep.Storage, st)
		}
	}
	return nil
}

// du returns the bytes allocated under dir (each inode once, directories
// included, as du(1) counts them) and the names directly in dir.
func du(dir string) (int64, map[string]bool, error) {
	var total int64
	seen := map[[2]uint64]bool{}
	names := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // removed meanwhile
			}
			return err
		}
		if filepath.Dir(p) == dir {
			names[d.Name()] = true
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		key := [2]uint64{st.Dev, st.Ino}
		if !seen[key] {
			seen[key] = true
			total += st.Blocks * 512
		}
		return nil
	})
	return total, names, err
}

// treeEntries lists the paths under dir, relative to it, with a type
// suffix ("/" for directories).
func treeEntries(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	return out, err
}
