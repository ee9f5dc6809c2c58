package fakeruntime_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/arborsh/arbor/internal/runtime"
	"github.com/arborsh/arbor/internal/runtime/fakeruntime"
	"github.com/arborsh/arbor/internal/runtime/runtimetest"
)

// shell plays the conformance suite's shell lines in Go, and fails the
// process (exit 127, as a shell would) for any other.
func shell(ctx context.Context, p *fakeruntime.Process) fakeruntime.Exit {
	if len(p.Args) != 3 || p.Args[0] != "/bin/sh" || p.Args[1] != "-c" {
		fmt.Fprintf(p.Stderr, "fake: cannot play %q\n", p.Args)
		return fakeruntime.Exited(127)
	}
	switch script := p.Args[2]; script {
	case runtimetest.ScriptExit:
		return fakeruntime.Exited(3)
	case runtimetest.ScriptExit0:
		return fakeruntime.Exited(0)
	case runtimetest.ScriptStdio:
		if _, err := io.Copy(p.Stdout, p.Stdin); err != nil {
			return fakeruntime.Exited(1)
		}
		fmt.Fprint(p.Stderr, "oops\n")
		return fakeruntime.Exited(0)
	case runtimetest.ScriptIdentity:
		var foo string
		for _, kv := range p.Env {
			if v, ok := strings.CutPrefix(kv, "FOO="); ok {
				foo = v
			}
		}
		fmt.Fprintf(p.Stdout, "%s\n%s\n%d\n%d\n", foo, p.Cwd, p.UID, p.GID)
		return fakeruntime.Exited(0)
	case runtimetest.ScriptWrite:
		if err := os.WriteFile(path.Join(p.Rootfs, "written"), []byte("data\n"), 0o644); err != nil {
			fmt.Fprintln(p.Stderr, err)
			return fakeruntime.Exited(1)
		}
		return fakeruntime.Exited(0)
	case runtimetest.ScriptEcho:
		fmt.Fprint(p.Stdout, "hi\n")
		return fakeruntime.Exited(0)
	case runtimetest.ScriptSelfSignal:
		if !p.Exec {
			return fakeruntime.Exited(0) // a sandbox's pid 1 ignores it
		}
		return fakeruntime.Signaled(syscall.SIGTERM)
	case runtimetest.ScriptCounter:
		go func() { // stdin may never end: the handler ends with ctx
			sc := bufio.NewScanner(p.Stdin)
			for i := 1; sc.Scan(); i++ {
				fmt.Fprintf(p.Stdout, "%s %d\n", sc.Text(), i)
			}
		}()
		<-ctx.Done()
		return fakeruntime.Exited(0) // ignored: killed
	case runtimetest.ScriptSleep, runtimetest.ScriptUpSleep:
		if script == runtimetest.ScriptUpSleep {
			fmt.Fprint(p.Stdout, "up\n")
		}
		<-ctx.Done()
		return fakeruntime.Exited(0) // ignored: killed
	}
	fmt.Fprintf(p.Stderr, "fake: cannot play %q\n", p.Args[2])
	return fakeruntime.Exited(127)
}

func TestConformance(t *testing.T) {
	var f *fakeruntime.Runtime
	runtimetest.Run(t, func(t *testing.T) runtime.Runtime { f = fakeruntime.New(shell); return f }, runtimetest.Options{
		Crash: func(id string, _ int) { f.Crash(id) },
	})
}

// TestCalls: the fake records every call in order, and no sandbox is left
// once each is destroyed or has run.
func TestCalls(t *testing.T) {
	ctx := context.Background()
	f := fakeruntime.New(shell)
	dir := t.TempDir()
	sp := runtime.Spec{ID: "a", Bundle: dir, Rootfs: dir, Args: []string{"/bin/sh", "-c", runtimetest.ScriptSleep}}
	if err := f.Boot(ctx, sp); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Exec(ctx, "a", runtime.ExecSpec{Args: []string{"/bin/sh", "-c", runtimetest.ScriptEcho}}); err != nil {
		t.Fatal(err)
	}
	if got := f.Sandboxes(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Sandboxes() = %q, want [a]", got)
	}
	if err := f.Destroy(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	sp.ID, sp.Args = "b", []string{"/bin/sh", "-c", runtimetest.ScriptExit}
	if _, err := f.Run(ctx, sp); err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, c := range f.Calls() {
		ops = append(ops, c.Op+" "+c.ID)
	}
	want := []string{"Boot a", "Exec a", "Destroy a", "Run b"}
	if !slices.Equal(ops, want) {
		t.Errorf("Calls() = %q, want %q", ops, want)
	}
	if got := f.Sandboxes(); len(got) != 0 {
		t.Errorf("Sandboxes() = %q after Destroy and Run, want none", got)
	}
}

// TestHandlerStdioNeverNil: a handler may write and read without checks.
func TestHandlerStdioNeverNil(t *testing.T) {
	dir := t.TempDir()
	f := fakeruntime.New(func(ctx context.Context, p *fakeruntime.Process) fakeruntime.Exit {
		if p.Stdin == nil || p.Stdout == nil || p.Stderr == nil {
			return fakeruntime.Exited(1)
		}
		return fakeruntime.Exited(0)
	})
	res, err := f.Run(context.Background(), runtime.Spec{ID: "x", Bundle: dir, Rootfs: dir, Args: []string{"x"}})
	if err != nil || res.ExitCode != 0 {
		t.Errorf("Run = exit %d, %v, want 0 (stdio given to the handler)", res.ExitCode, err)
	}
}

// TestStdioFilesDuplicated: a file given as stdio is the process's own
// copy, as under a real runtime: the engine closes its read end of the
// stdin pipe in OnStart, and the process still reads what is written to
// the pipe, then EOF once the writer closes.
func TestStdioFilesDuplicated(t *testing.T) {
	dir := t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	f := fakeruntime.New(shell)
	var out strings.Builder
	sp := runtime.Spec{ID: "x", Bundle: dir, Rootfs: dir, Args: []string{"/bin/sh", "-c", runtimetest.ScriptStdio}, Stdin: r, Stdout: &out,
		OnStart: func(int) {
			r.Close() // the runtime has its copy
			go func() { fmt.Fprint(w, "through the pipe\n"); w.Close() }()
		}}
	res, err := f.Run(context.Background(), sp)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("Run = exit %d, %v", res.ExitCode, err)
	}
	if out.String() != "through the pipe\n" {
		t.Errorf("stdout = %q, want what was written to the closed-by-caller pipe", out.String())
	}
}
