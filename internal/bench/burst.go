package bench

import (
	"context"
	"fmt"
	"time"
)

// burstBranches is the width of the fan-out burst (issue 18's target).
const burstBranches = 8

// Burst is section 2's fan-out burst, on the warm daemon: Branches
// non-disposable branches spawned at once from one image, the pool settled
// before each burst, against as many raw runs started at once. The image
// is made fresh for it, so the first burst finds what the pool keeps of a
// new image (two sandboxes); the pool then keeps as many as the burst took
// (up to its bound), and the later bursts find them.
type Burst struct {
	Runtime  string `json:"runtime"`
	Branches int    `json:"branches"`
	Reps     int    `json:"reps"` // bursts after the first, and raw batches
	// FirstMs is the first burst's wall time, FirstHits how many of its
	// branches took a warm sandbox.
	FirstMs   float64 `json:"first_ms"`
	FirstHits int     `json:"first_hits"`
	// The later bursts' walls and warm sandboxes taken, and the raw ones.
	ArborWallsMs []float64 `json:"arbor_walls_ms"`
	Hits         []int     `json:"hits"`
	RawWallsMs   []float64 `json:"raw_walls_ms"`
	ArborWallMs  float64   `json:"arbor_wall_ms"` // median of the later bursts
	RawWallMs    float64   `json:"raw_wall_ms"`   // median
	// Ratio is ArborWallMs / RawWallMs, FirstRatio FirstMs / RawWallMs
	// (wall time to every result: lower is better).
	Ratio      float64 `json:"ratio"`
	FirstRatio float64 `json:"first_ratio"`
}

// burst measures the fan-out burst for rt on the warm daemon.
func (b *bench) burst(ctx context.Context, rt string) error {
	d := b.warm
	reps := 3
	if b.o.Quick {
		reps = 1
	}
	b.progress("fan-out burst: %s, warm pool on, %d branches, first + %d repetition(s)", rt, burstBranches, reps)
	// A fresh image: the pool has no history of it.
	s, err := b.runAPI(ctx, d, spawn{runtime: rt, image: d.base, shell: fmt.Sprintf("echo %d > /root/burst", time.Now().UnixNano())})
	if err != nil {
		return err
	}
	img := s.image
	raw := b.raw.shell[rt]
	out := Burst{Runtime: rt, Branches: burstBranches, Reps: reps}
	arbor := func() (float64, int, error) {
		if _, err := d.waitPoolSettled(ctx, rt, 0); err != nil {
			return 0, 0, err
		}
		w0, err := d.warmStatus(ctx)
		if err != nil {
			return 0, 0, err
		}
		wall, err := parallel(burstBranches, func(i int) error {
			_, err := b.runAPI(ctx, d, spawn{runtime: rt, image: img, shell: fmt.Sprintf("echo %d > /root/branch", i)})
			return err
		})
		if err != nil {
			return 0, 0, err
		}
		w1, err := d.warmStatus(ctx)
		if err != nil {
			return 0, 0, err
		}
		return ms(wall), w1.Hits - w0.Hits, nil
	}
	rawBatch := func() error {
		if _, err := d.waitPoolSettled(ctx, rt, 0); err != nil {
			return err
		}
		wall, err := parallel(burstBranches, func(int) error {
			_, _, err := raw.run(ctx)
			return err
		})
		out.RawWallsMs = append(out.RawWallsMs, ms(wall))
		return err
	}
	if out.FirstMs, out.FirstHits, err = arbor(); err != nil {
		return err
	}
	for range reps {
		if err := rawBatch(); err != nil {
			return err
		}
		wall, hits, err := arbor()
		if err != nil {
			return err
		}
		out.ArborWallsMs = append(out.ArborWallsMs, wall)
		out.Hits = append(out.Hits, hits)
	}
	// The branches' teardowns and the boots they cause end before the
	// next section (or the daemon's stop, which would fail them).
	if _, err := d.waitPoolSettled(ctx, rt, 0); err != nil {
		return err
	}
	out.ArborWallMs, out.RawWallMs = medianMs(out.ArborWallsMs), medianMs(out.RawWallsMs)
	out.Ratio, out.FirstRatio = ratio(out.ArborWallMs, out.RawWallMs), ratio(out.FirstMs, out.RawWallMs)
	b.rep.Burst = append(b.rep.Burst, out)
	return nil
}
