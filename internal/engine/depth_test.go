package engine

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/overlay"
)

// TestDeepChain runs 600 sequential non-disposable runs, each on the
// previous result: more than overlayfs's 500 layers (arbor bench goes to
// 1,000; here each step is a cold runc run under the race detector). Every run must succeed, see every earlier step's file, and
// mount a chain no deeper than the squash threshold plus what accrues while
// one squash runs — never near the kernel's 500-layer limit.
func TestDeepChain(t *testing.T) {
	steps := 600
	if s := os.Getenv("ARBOR_DEPTH"); s != "" {
		steps, _ = strconv.Atoi(s)
	}
	e, base := newEngine(t, "runc")
	e.cfg.SquashDepth = 32
	img := base
	maxDepth := 0
	var first, last time.Duration
	for i := 1; i <= steps; i++ {
		start := time.Now()
		o, m := run(t, e, img, fmt.Sprintf("echo %d > /root/step-%04d; ls /root | wc -l", i, i))
		d := time.Since(start)
		if got, want := stdout(t, m), fmt.Sprintf("%d\n", i); got != want {
			t.Fatalf("step %d sees %q files, want %q (status %s, error %q, result state %+v)", i, got, want, o.Status, o.Error, m.Result.State)
		}
		if o.ResultImageUUID == img {
			t.Fatalf("step %d made no new image", i)
		}
		img = o.ResultImageUUID
		maxDepth = max(maxDepth, e.chainDepth(img))
		if i <= 100 {
			first += d
		}
		if i > steps-100 {
			last += d
		}
	}
	if maxDepth >= overlay.MaxLayers/2 {
		t.Errorf("mounted chain reached %d layers; squashing is not keeping up", maxDepth)
	}
	im, err := e.Image(context.Background(), acct, img)
	if err != nil || im.Depth != steps+1 {
		t.Fatalf("final image depth %d (%v), want %d", im.Depth, err, steps+1)
	}
	if s, err := readFile(t, e, img, "/root/step-0001"); err != nil || s != "1\n" {
		t.Fatalf("first step's file in final image: %q %v", s, err)
	}
	t.Logf("max mounted depth %d; mean step time first 100 %v, last 100 %v", maxDepth, first/100, last/100)
}
