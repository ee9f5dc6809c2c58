package runtimetest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/runtime"
)

// ScriptCounter numbers the lines it reads: for each line l it prints
// "l n", n counting the lines so far, a state held only in its memory.
const ScriptCounter = `i=0; while read l; do i=$((i+1)); echo "$l $i"; done`

// piped is a sandbox's main process's stdio, as host pipes.
type piped struct {
	in  *os.File      // write end of its stdin
	out *bufio.Reader // read end of its stdout
	f   *os.File
}

// pipes returns spec with pipes as stdin and stdout, and their other ends;
// the sandbox's ends are closed once the test is over (the runtime has
// its copies by then).
func pipes(t *testing.T, spec runtime.Spec) (runtime.Spec, *piped) {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inR.Close(); inW.Close(); outR.Close(); outW.Close() })
	spec.Stdin, spec.Stdout = inR, outW
	return spec, &piped{in: inW, out: bufio.NewReader(outR), f: outR}
}

// ask writes line to the process and returns the line it answers.
func (p *piped) ask(t *testing.T, what, line string) string {
	t.Helper()
	if _, err := fmt.Fprintln(p.in, line); err != nil {
		t.Fatalf("%s: write stdin: %v", what, err)
	}
	_ = p.f.SetReadDeadline(time.Now().Add(timeout))
	got, err := p.out.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: read stdout: %v (got %q)", what, err, got)
	}
	return got[:len(got)-1]
}

// copyTree copies directory src to dst (absent), all attributes kept.
func copyTree(src, dst string) error {
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		return fmt.Errorf("cp -a %s %s: %v: %s", src, dst, err, out)
	}
	return nil
}

func (s *suite) checkpointRestore(t *testing.T, rt runtime.Runtime) {
	ctx := ctxFor(t)
	parent, pp := pipes(t, s.spec(t, ScriptCounter))
	if err := rt.Boot(ctx, parent); err != nil {
		t.Fatal(err)
	}
	defer destroy(t, rt, parent.ID)
	if got := pp.ask(t, "parent", "a"); got != "a 1" {
		t.Fatalf("parent answered %q, want %q", got, "a 1")
	}
	images := t.TempDir()
	image := filepath.Join(images, "image")
	if !s.opts.Checkpoints {
		if err := rt.Checkpoint(ctx, parent.ID, runtime.CheckpointOptions{Image: image}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("Checkpoint = %v, want a failed-precondition error (the runtime cannot checkpoint)", err)
		}
		sp := s.spec(t, ScriptCounter)
		if err := rt.Restore(ctx, sp, image); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("Restore = %v, want a failed-precondition error (the runtime cannot restore)", err)
		}
		if err := rt.Resume(ctx, parent.ID); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("Resume = %v, want a failed-precondition error (the runtime cannot pause)", err)
		}
		if got := pp.ask(t, "parent", "b"); got != "b 2" {
			t.Errorf("parent after the refused checkpoint answered %q, want %q", got, "b 2")
		}
		return
	}
	// Each copy gets its own copy of the root as the image expects it.
	roots := []string{filepath.Join(images, "root1"), filepath.Join(images, "root2")}
	err := rt.Checkpoint(ctx, parent.ID, runtime.CheckpointOptions{Image: image, Quiet: func() error {
		for _, r := range roots {
			if err := copyTree(parent.Rootfs, r); err != nil {
				return err
			}
		}
		return nil
	}})
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if err := rt.Checkpoint(ctx, parent.ID, runtime.CheckpointOptions{Image: image}); !errdefs.IsConflict(err) {
		t.Errorf("Checkpoint into an existing image = %v, want a conflict", err)
	}
	if err := rt.Checkpoint(ctx, "rtt-never-created", runtime.CheckpointOptions{Image: filepath.Join(images, "x")}); !errdefs.IsNotFound(err) {
		t.Errorf("Checkpoint of an absent sandbox = %v, want not found", err)
	}
	var forks [2]*piped
	for i := range forks {
		// The rest of the configuration comes from the image.
		// runsc resolves an id by prefix: a copy's id must not extend the parent's.
		sp := runtime.Spec{ID: fmt.Sprintf("rtf-%d-%s", i, parent.ID), Bundle: t.TempDir(), Rootfs: roots[i], Hostname: fmt.Sprintf("fork%d", i)}
		sp, forks[i] = pipes(t, sp)
		if err := rt.Restore(ctx, sp, image); err != nil {
			t.Fatalf("Restore %d: %v", i, err)
		}
		defer destroy(t, rt, sp.ID)
		if i == 0 {
			if err := rt.Restore(ctx, sp, image); !errdefs.IsConflict(err) {
				t.Errorf("Restore into an id in use = %v, want a conflict", err)
			}
		}
	}
	// Every copy continues from line 1, then each goes its own way.
	if got := forks[0].ask(t, "fork 0", "x"); got != "x 2" {
		t.Errorf("fork 0 answered %q, want %q", got, "x 2")
	}
	for i, want := range []string{"y 2", "y 3"} {
		if got := forks[1].ask(t, "fork 1", "y"); got != want {
			t.Errorf("fork 1 answer %d = %q, want %q", i, got, want)
		}
	}
	if got := forks[0].ask(t, "fork 0", "x"); got != "x 3" {
		t.Errorf("fork 0 answered %q, want %q", got, "x 3")
	}
	if got := pp.ask(t, "parent", "b"); got != "b 2" {
		t.Errorf("parent after the checkpoint answered %q, want %q", got, "b 2")
	}
	if err := rt.Resume(ctx, parent.ID); err != nil {
		t.Errorf("Resume of a running sandbox: %v, want nil", err)
	}
	// KeepPaused: the sandbox stays stopped (its answer waits) until Resume.
	if err := rt.Checkpoint(ctx, parent.ID, runtime.CheckpointOptions{Image: filepath.Join(images, "paused"), KeepPaused: true}); err != nil {
		t.Fatalf("Checkpoint KeepPaused: %v", err)
	}
	if _, err := fmt.Fprintln(pp.in, "c"); err != nil {
		t.Fatal(err)
	}
	_ = pp.f.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if got, err := pp.out.ReadString('\n'); err == nil {
		t.Errorf("paused sandbox answered %q", got)
	}
	if err := rt.Resume(ctx, parent.ID); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	_ = pp.f.SetReadDeadline(time.Now().Add(timeout))
	if got, err := pp.out.ReadString('\n'); err != nil || got != "c 3\n" {
		t.Errorf("resumed sandbox answered %q (%v), want %q", got, err, "c 3\n")
	}
}
