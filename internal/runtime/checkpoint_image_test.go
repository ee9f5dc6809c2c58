package runtime

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/testutil"
)

// TestCheckpointFormat: runsc's names its version, its binary's digest and
// its platform flags, so a checkpoint restores only where all match; runc
// has none.
func TestCheckpointFormat(t *testing.T) {
	testutil.RequiresRoot(t)
	o, err := NewOCI("runsc", "", filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := o.CheckpointFormat(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"runsc version", "sha256:", "--platform=systrap"} {
		if !strings.Contains(f, want) {
			t.Errorf("format %q lacks %q", f, want)
		}
	}
	if again, _ := o.CheckpointFormat(context.Background()); again != f {
		t.Errorf("format changed: %q then %q", f, again)
	}
	r, err := NewOCI("runc", "", filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.CheckpointFormat(context.Background()); !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "runsc") {
		t.Errorf("runc's format: %v, want a failed precondition naming runsc", err)
	}
}
