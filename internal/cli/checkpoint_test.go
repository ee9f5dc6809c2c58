package cli

import (
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
)

// TestCheckpoint: arbor checkpoint prints the image (--json its size too),
// which arbor images and arbor df show with its checkpoint; arbor
// checkpoint restore starts instances from it; a plain image's refusal
// says it has no checkpoint.
func TestCheckpoint(t *testing.T) {
	d := liveDaemon(t)
	keep := false
	sp, err := d.c.Spawn(t.Context(), apitypes.InstanceSpawnRequest{Command: "cat", Image: d.busybox,
		Stdin: &apitypes.ClosableStreamRepr{Value: "", Close: &keep}})
	if err != nil {
		t.Fatal(err)
	}
	res := okJSON[apitypes.CheckpointResponse](t, d, "checkpoint", sp.UUID[:8])
	if res.Image == "" || res.CheckpointBytes <= 0 {
		t.Fatalf("arbor checkpoint --json = %+v, want an image and its size", res)
	}
	img := strings.TrimSpace(d.ok(t, "checkpoint", sp.UUID))
	if len(img) != 36 {
		t.Errorf("arbor checkpoint printed %q, want an image id", img)
	}
	d.ok(t, "cancel", sp.UUID)
	wantContains(t, "images", d.ok(t, "images", "--all"), "CHECKPOINT", res.Image[:8])
	wantContains(t, "df", d.ok(t, "df"), "CHECKPOINTS")
	rr := okJSON[apitypes.RestoreResponse](t, d, "checkpoint", "restore", "-n", "2", res.Image[:8])
	if len(rr.Operations) != 2 {
		t.Fatalf("arbor checkpoint restore --json = %+v, want 2 operations", rr)
	}
	out := d.ok(t, "checkpoint", "restore", img)
	if ids := strings.Fields(out); len(ids) != 1 || len(ids[0]) != 36 {
		t.Errorf("arbor checkpoint restore printed %q, want one operation id", out)
	}
	d.ok(t, append(append([]string{"cancel"}, rr.Operations...), strings.Fields(out)...)...)
	r := d.arbor(t, "checkpoint", "restore", d.busybox)
	if r.code == 0 || !strings.Contains(r.stderr, "no memory checkpoint") {
		t.Errorf("arbor checkpoint restore of a plain image: %v; want a failure saying why", r)
	}
}
