package bench

import (
	"context"
	"fmt"
	"time"
)

// ContinueChain is the "continue" section for one runtime: an agent's loop
// on the warm daemon, each non-disposable step (`echo N > /root/out`) on
// the image the previous one made, once with a pause of Pause between a
// result and the next spawn and once straight back; against raw `<runtime>
// run` of a shell writing a file on a prepared bundle, sampled before and
// after the chains. The pool is not waited for: a step finds whatever the
// previous one left (the sandbox it continues in, see the engine's
// continue.go).
type ContinueChain struct {
	Runtime        string  `json:"runtime"`
	PauseMs        float64 `json:"pause_ms"`
	RawShell       Dist    `json:"raw_shell"`
	RawShellCPU    CPU     `json:"raw_shell_cpu"`
	Paused         Dist    `json:"paused"`
	PausedPhases   Phases  `json:"paused_phases"`
	Straight       Dist    `json:"straight"`
	StraightPhases Phases  `json:"straight_phases"`
	StraightCPU    CPU     `json:"straight_cpu"`
	PausedRatio    float64 `json:"paused_ratio"`   // Paused / RawShell (p50)
	StraightRatio  float64 `json:"straight_ratio"` // Straight / RawShell (p50)
}

// continuePause is the agent's think time in the paused chain.
const continuePause = time.Second

// continueChain measures the "continue" section on the warm daemon.
func (b *bench) continueChain(ctx context.Context) error {
	d, n := b.warm, b.o.Iterations
	if d == nil {
		b.note("continue: not measured: warm pool %s", b.rep.Setup.WarmPool)
		return nil
	}
	for _, rt := range b.o.Runtimes {
		b.progress("continue: %s chains, %d steps paused %v and %d straight back", rt, n, continuePause, n)
		c := ContinueChain{Runtime: rt, PauseMs: ms(continuePause)}
		var raw, paused, straight series
		sampleRaw := func() error {
			for range (n + 1) / 2 {
				wall, cpu, err := b.raw.shell[rt].run(ctx)
				if err != nil {
					return err
				}
				raw.addRaw(wall, cpu)
			}
			return nil
		}
		if err := sampleRaw(); err != nil {
			return err
		}
		img := d.base
		step := func(sr *series, i int, record bool) error {
			s, err := b.runAPI(ctx, d, spawn{runtime: rt, image: img, shell: fmt.Sprintf("echo %d > /root/out", i)})
			if err != nil {
				return err
			}
			img = s.image
			if record {
				return b.add(ctx, d, sr, s, true)
			}
			return nil
		}
		for i := -1; i < n; i++ { // i = -1: the warm-up, a first step on the base
			if i >= 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(continuePause):
				}
			}
			if err := step(&paused, i, i >= 0); err != nil {
				return err
			}
		}
		self0, child0 := cpuNow()
		for i := range n {
			if err := step(&straight, i, true); err != nil {
				return err
			}
		}
		self1, child1 := cpuNow()
		if err := sampleRaw(); err != nil {
			return err
		}
		c.RawShell, c.RawShellCPU = dist(raw.walls), raw.cpu()
		c.Paused, c.PausedPhases = dist(paused.walls), summarize(paused.phases)
		c.Straight, c.StraightPhases = dist(straight.walls), summarize(straight.phases)
		// Straight back, nothing else runs: the CPU of the loop is the runs'.
		c.StraightCPU = CPU{SelfMs: round3(ms(self1-self0) / float64(n)), ChildrenMs: round3(ms(child1-child0) / float64(n))}
		c.PausedRatio = ratio(c.Paused.P50Ms, c.RawShell.P50Ms)
		c.StraightRatio = ratio(c.Straight.P50Ms, c.RawShell.P50Ms)
		b.rep.Continue = append(b.rep.Continue, c)
	}
	return nil
}

// continueTargets are the goals of the agent-loop issue.
func continueTargets(r *Report) []Target {
	var out []Target
	for _, c := range r.Continue {
		out = append(out,
			Target{Name: "chained step, 1 s pause, p50 / raw run", Runtime: c.Runtime, Op: "<=", Limit: 0.10, Value: c.PausedRatio,
				Note: "non-disposable, writes a file; raw: sh -c 'echo > file'"},
			Target{Name: "chained step, straight back, p50 / raw run", Runtime: c.Runtime, Op: "<=", Limit: 0.25, Value: c.StraightRatio,
				Note: "non-disposable, writes a file; raw: sh -c 'echo > file'"})
	}
	return out
}

// writeContinue writes the section's table.
func writeContinue(p func(string, ...any), table func([][]string), r Report) {
	if len(r.Continue) == 0 {
		return
	}
	p("\n7. Agent loop (warm daemon: each non-disposable step on the image the previous one made, `echo N > /root/out`; pool not waited for)")
	rows := [][]string{{"runtime", "series", "p50", "p95", "× raw p50", "CPU/run: arbor + runtime"}}
	for _, c := range r.Continue {
		rows = append(rows,
			[]string{c.Runtime, "raw `" + c.Runtime + " run` sh -c 'echo > file'", fmtMs(c.RawShell.P50Ms), fmtMs(c.RawShell.P95Ms), "1.00×", fmtCPU(c.RawShellCPU)},
			[]string{"", fmt.Sprintf("chained, %s pause", fmtMs(c.PauseMs)), fmtMs(c.Paused.P50Ms), fmtMs(c.Paused.P95Ms), fmtRatio(c.PausedRatio), ""},
			[]string{"", "chained, straight back", fmtMs(c.Straight.P50Ms), fmtMs(c.Straight.P95Ms), fmtRatio(c.StraightRatio), fmtCPU(c.StraightCPU)})
	}
	table(rows)
	for _, c := range r.Continue {
		p("  %s paused, p50 phases: %s", c.Runtime, fmtPhases(c.PausedPhases))
		p("  %s straight back, p50 phases: %s", c.Runtime, fmtPhases(c.StraightPhases))
	}
}
