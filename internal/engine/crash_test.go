package engine

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/netns"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/testutil"
)

// TestMain lets the test binary act as a daemon process that a test can
// kill -9 at a chosen moment.
func TestMain(m *testing.M) {
	if mode := os.Getenv("ARBOR_CRASH_HELPER"); mode != "" {
		crashHelper(mode)
		return
	}
	code := m.Run()
	testutil.RemoveBuildDir()
	os.Exit(code)
}

// crashHelper opens the engine at $ARBOR_CRASH_HOME, starts a run on image
// $ARBOR_CRASH_IMAGE and reports progress on stdout, then blocks forever.
func crashHelper(mode string) {
	ctx := context.Background()
	cfg := Config{Home: os.Getenv("ARBOR_CRASH_HOME"), Runtime: os.Getenv("ARBOR_CRASH_RUNTIME"), WarmPerImage: -1}
	if mode == "warm" {
		cfg.InitBinary, cfg.WarmPerImage = os.Getenv("ARBOR_CRASH_INIT"), 2
	}
	if strings.HasPrefix(mode, "fork") || strings.HasPrefix(mode, "checkpoint") {
		cfg.InitBinary = os.Getenv("ARBOR_CRASH_INIT")
	}
	e, err := New(ctx, cfg)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if mode == "warm" {
		// Leave idle warm sandboxes, one of them networked, besides the
		// warm run the daemon dies in.
		for _, network := range []bool{false, true} {
			op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: "true", Image: os.Getenv("ARBOR_CRASH_IMAGE"), Shell: ptr(true),
				Disposable: ptr(true), Networking: &Networking{Enabled: ptr(network)}})
			if err == nil {
				_, err = e.WaitOperation(ctx, acct, op)
			}
			if err != nil {
				fmt.Println("error", err)
				os.Exit(1)
			}
		}
		if err := e.warm.WaitIdle(ctx, func(warmKey) bool { return true }, 2); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
	}
	if mode == "import" {
		// An import dies as it commits: its layer is in place, its image
		// and SUCCESS (one transaction) not yet written.
		var buf bytes.Buffer
		if err := baseimage.WriteBusyboxTar(&buf); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		f, err := e.PutFile(ctx, acct, &buf, 0)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		printed := make(chan struct{})
		testHookAfterRename = func() {
			<-printed
			fmt.Println("committing")
			select {}
		}
		op, err := e.Import(ctx, acct, ImportRequest{Registry: oplog.ImportSource{URL: UploadScheme + f.UUID}})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("op", op)
		close(printed)
		select {}
	}
	if mode == "fork" {
		crashInFork(ctx, e, SpawnRequest{Command: "echo data > /root/forked; echo ready; cat", Shell: ptr(true)}, "ready\n", false)
	}
	if mode == "fork-python" || mode == "fork-python-restored" {
		crashInFork(ctx, e, SpawnRequest{Command: "python3", Args: []string{"-u", "-c", pyApp}}, "ready\n", mode == "fork-python-restored")
	}
	if strings.HasPrefix(mode, "checkpoint") {
		crashInCheckpoint(ctx, e, mode)
	}
	cmd := "sleep 1000"
	if mode == "commit" {
		cmd = "echo data > /root/committed"
		testHookAfterRename = func() {
			fmt.Println("committing")
			select {}
		}
	}
	op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: cmd, Image: os.Getenv("ARBOR_CRASH_IMAGE"), Shell: ptr(true)})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("op", op)
	// Its main process has started (so the operation is EXECUTING).
	if _, err := e.runningOp(ctx, acct, op); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("executing")
	select {}
}

func TestKill9Recovery(t *testing.T) {
	for _, tc := range []struct{ mode, rt, waitFor string }{
		{"run", "runc", "executing"},
		{"run", "runsc", "executing"},
		{"commit", "runc", "committing"},
		{"import", "runc", "committing"},                // an import's image and SUCCESS land together or not at all
		{"warm", "runsc", "executing"},                  // in a warm run, with idle warm sandboxes (one networked)
		{"fork", "runsc", "forking"},                    // mid-fork: parent paused, checkpoint written, upper copied
		{"fork-python", "runsc", "forking"},             // the same with python3 holding state and a loopback server
		{"fork-python-restored", "runsc", "forking"},    // later: the fork point committed, the copies' sandboxes restored
		{"checkpoint", "runsc", "checkpointing"},        // a kept checkpoint written, not yet in place
		{"checkpoint-commit", "runsc", "checkpointing"}, // in place, its image's layer renamed, the row not written
	} {
		t.Run(tc.mode+"-"+tc.rt, func(t *testing.T) {
			e, base := newEngine(t, tc.rt)
			if strings.HasPrefix(tc.mode, "fork-python") {
				base = pythonImage(t, e)
			}
			home := e.Home()
			layersBefore := listDir(t, filepath.Join(home, "layers"))
			imsBefore, _ := e.ListImages(context.Background(), ImageFilter{Account: acct})
			e.Close()

			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "ARBOR_CRASH_HELPER="+tc.mode, "ARBOR_CRASH_HOME="+home, "ARBOR_CRASH_IMAGE="+base, "ARBOR_CRASH_RUNTIME="+tc.rt)
			if tc.mode == "warm" || strings.HasPrefix(tc.mode, "fork") || strings.HasPrefix(tc.mode, "checkpoint") {
				cmd.Env = append(cmd.Env, "ARBOR_CRASH_INIT="+staticInit(t))
			}
			out, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var op string
			sc := bufio.NewScanner(out)
			deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
			for sc.Scan() {
				line := sc.Text()
				if v, ok := strings.CutPrefix(line, "op "); ok {
					op = v
				}
				if strings.HasPrefix(line, "error") {
					t.Fatal(line)
				}
				if line == tc.waitFor {
					break
				}
			}
			deadline.Stop()
			if tc.mode == "warm" {
				// The idle networked sandbox's namespace exists now...
				if ns, _ := exec.Command("ip", "netns", "list").Output(); !strings.Contains(string(ns), "arbor-"+netns.Tag(home)+"-") {
					t.Fatalf("no network namespace of the warm pool before the crash: %s", ns)
				}
			}
			if tc.mode == "fork" || tc.mode == "fork-python" { // a half-made fork: its checkpoint and upper copy
				dirs, _ := filepath.Glob(filepath.Join(home, "run", "fork-*"))
				if len(dirs) != 1 || dirBytes(dirs[0]) < 1<<20 {
					t.Fatalf("mid-fork: %v under run/, want one fork dir holding the checkpoint's megabytes", dirs)
				}
				t.Logf("mid-fork: %d bytes in %s", dirBytes(dirs[0]), dirs[0])
			}
			if tc.mode == "fork-python-restored" { // the parent's sandbox and a copy's, at least
				rt := e.runtimes[tc.rt].(interface{ Path() string })
				list, _ := exec.Command(rt.Path(), "--root="+filepath.Join(home, "runtime", tc.rt), "list", "--quiet").Output()
				if n := len(strings.Fields(string(list))); n < 2 {
					t.Fatalf("%d sandboxes before the crash, want the parent's and a restored copy's", n)
				}
			}
			// kill -9 the daemon at this moment.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()

			e2, err := New(context.Background(), Config{Home: home, Runtime: tc.rt})
			if err != nil {
				t.Fatalf("restart: %v", err)
			}
			defer e2.Close()
			o, err := e2.Operation(context.Background(), acct, op)
			if err != nil {
				t.Fatal(err)
			}
			if o.Status != apitypes.StatusFailed || !strings.Contains(o.Error, "daemon restarted") || o.ResultImageUUID != "" {
				t.Errorf("after restart: status %s error %q result %q, want FAILED/daemon restarted/none", o.Status, o.Error, o.ResultImageUUID)
			}
			evs, _ := e2.st.Events(context.Background(), op, -1, 0)
			if len(evs) == 0 || evs[len(evs)-1].Type != apitypes.EventCompletion {
				t.Errorf("event log does not end with completion: %v", evs)
			}
			if runs := listDir(t, filepath.Join(home, "run")); len(runs) != 0 {
				t.Errorf("stale run dirs: %v", runs)
			}
			if ckpts := listDir(t, filepath.Join(home, "checkpoints")); len(ckpts) != 0 {
				t.Errorf("checkpoints left without their image: %v", ckpts)
			}
			if m := mountsUnder(home + "/run"); m > 0 {
				t.Errorf("%d stale mounts under run/", m)
			}
			ims, _ := e2.ListImages(context.Background(), ImageFilter{Account: acct})
			if tc.mode == "fork-python-restored" {
				// The fork point was committed whole before the crash: it
				// stays, with its layer and files; the copies failed too.
				layersBefore = append(layersBefore, forkPointKept(t, e2, imsBefore, ims))
				slices.Sort(layersBefore)
				imsBefore = ims
			}
			if got := listDir(t, filepath.Join(home, "layers")); strings.Join(got, ",") != strings.Join(layersBefore, ",") {
				t.Errorf("layers after recovery %v, want %v (half-committed layer must be collected)", got, layersBefore)
			}
			if len(ims) != len(imsBefore) {
				t.Errorf("%d images visible, want only the %d from before", len(ims), len(imsBefore))
			}
			nsList, _ := exec.Command("ip", "netns", "list").Output() // ...and is gone after recovery
			if tag := "arbor-" + netns.Tag(home) + "-"; strings.Contains(string(nsList), tag) {
				t.Errorf("network namespaces left: %s", nsList)
			}
			rt := e2.runtimes[tc.rt].(interface{ Path() string })
			list, _ := exec.Command(rt.Path(), "--root="+filepath.Join(home, "runtime", tc.rt), "list", "--quiet").Output()
			if strings.TrimSpace(string(list)) != "" {
				t.Errorf("sandboxes left running: %s", list)
			}
			// Everything committed stays readable and usable.
			if s, err := readFile(t, e2, base, "/etc/hostname"); err != nil || s != "linuxkit\n" {
				t.Errorf("base unreadable after crash: %q %v", s, err)
			}
			_, m := run(t, e2, base, "echo alive")
			if stdout(t, m) != "alive\n" {
				t.Error("engine cannot run after recovery")
			}
		})
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func mountsUnder(dir string) int {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	return strings.Count(string(b), " "+dir+"/")
}
