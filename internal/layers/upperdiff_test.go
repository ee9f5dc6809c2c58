package layers

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/layerfs"
	"github.com/arborsh/arbor/internal/testutil"
)

// TestDiffUpper makes two steps of changes through a real overlay mount and
// requires the layers DiffUpper cuts from its live upper directory, stacked
// on the lower one, to show exactly what the upper directory shows: new,
// changed, renamed and deleted files, modes, xattrs, times, directories
// emptied and recreated, and a file and a directory swapping kinds. The
// second layer holds only the second step's changes.
func TestDiffUpper(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	lower, upper, work, merged := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, "", "mkdir -p "+lower+"/etc "+lower+"/low && echo host > "+lower+"/etc/hostname && echo l > "+lower+"/low/l && echo f > "+lower+"/lowfile")
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(merged, unix.MNT_DETACH) })

	// setx sets an xattr on k: there is no setfattr to script it.
	setx := func(name, value string) {
		if err := unix.Lsetxattr(filepath.Join(merged, "k"), name, []byte(value), 0); err != nil {
			t.Fatal(err)
		}
	}
	step := func(script string, prev Manifest, then ...func()) (string, Manifest, int) {
		t.Helper()
		sh(t, merged, script)
		for _, f := range then {
			f()
		}
		l := filepath.Join(dir, "layer-"+rand8(t))
		if err := os.Mkdir(l, 0o700); err != nil {
			t.Fatal(err)
		}
		m, n, err := DiffUpper(upper, prev, l)
		if err != nil {
			t.Fatal(err)
		}
		return l, m, n
	}
	same := func(layers []string) {
		t.Helper()
		ctx := context.Background()
		got := layerfs.New(append(layers, lower))
		want := layerfs.New([]string{upper, lower})
		changes, err := layerfs.Diff(ctx, want, got, layerfs.DiffOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(changes) != 0 {
			t.Errorf("layers differ from the upper dir: %+v", changes)
		}
	}

	l1, m1, n1 := step("mkdir -p d/sub && echo a > d/sub/a && echo b > d/b && echo k > k && echo g > g && "+
		"mkdir d2f && echo x > d2f/x && echo y > f2d && ln -s k lnk && "+
		"echo changed > etc/hostname && rm low/l && touch -d '2001-02-03 04:05' d/b", nil, func() { setx("user.one", "1") })
	if n1 == 0 {
		t.Fatal("first layer empty")
	}
	same([]string{l1})

	l2, _, n2 := step("rm g && mv d/b d/b2 && chmod 700 k && rm -rf d/sub && mkdir d/sub && echo n > d/sub/n && "+
		"rm -r d2f && echo f > d2f && rm f2d && mkdir f2d && echo z > f2d/z && "+
		"rm etc/hostname && rm -r low && mkdir low && echo again > lowfile", m1, func() { setx("user.two", "2") })
	same([]string{l2, l1})
	if _, err := os.Lstat(filepath.Join(l2, "lnk")); err == nil {
		t.Error("the second layer holds an entry the second step did not touch")
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(l2, "d/sub/a"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Error("a file gone with its recreated directory is no whiteout in the second layer")
	}
	if n2 >= n1+4 {
		t.Errorf("second layer has %d entries, the first %d: it should hold only the second step's changes", n2, n1)
	}

	// Nothing changed: an empty layer.
	if _, _, n := step("true", nil); n == 0 {
		t.Error("a nil manifest must copy the whole upper dir")
	}
	_, m3, _ := step("true", m1)
	if _, _, n := step("true", m3); n != 0 {
		t.Errorf("an unchanged upper dir gave a layer of %d entries", n)
	}
}

func sh(t *testing.T, dir, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
}

func rand8(t *testing.T) string {
	d, err := os.MkdirTemp("", "x")
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(d)
	return filepath.Base(d)
}

// TestSettleCoarseClock: where ctimes come from the coarse clock, DiffUpper
// returns only once that clock has passed every ctime it recorded, so a
// change right after it cannot carry a ctime the manifest already holds.
func TestSettleCoarseClock(t *testing.T) {
	defer func(f func(string) bool) { fineCtimes = f }(fineCtimes)
	fineCtimes = func(string) bool { return false }
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &now); err != nil {
		t.Fatal(err)
	}
	settle(t.TempDir(), Manifest{"f": {ctime: now}})
	var after unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &after); err != nil {
		t.Fatal(err)
	}
	if after.Nano() <= now.Nano() {
		t.Fatalf("settle returned in the tick of the newest ctime (%d ≤ %d)", after.Nano(), now.Nano())
	}
}
