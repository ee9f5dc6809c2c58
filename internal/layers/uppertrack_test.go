package layers

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/testutil"
)

// trackedOverlay mounts an overlay of lower (filled by script, may be "")
// and returns upper, merged and a Tracker following upper from the start.
func trackedOverlay(t *testing.T, script string) (dir, lower, upper, merged string, tr *Tracker) {
	t.Helper()
	testutil.RequiresRoot(t)
	dir = t.TempDir()
	lower, upper, work, merged := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{lower, upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if script != "" {
		sh(t, lower, script)
	}
	// The options the engine mounts with (overlay.Mount).
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work+",redirect_dir=off,metacopy=off,index=off,xino=off"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(merged, unix.MNT_DETACH) })
	tr, err := NewTracker(upper)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	return dir, lower, upper, merged, tr
}

// trackedStep diffs upper with the tracker and, on a copy of prev, with
// DiffUpper, and requires the same layer, entry count and manifest.
func trackedStep(t *testing.T, dir, upper string, tr *Tracker, prev Manifest) (string, Manifest, int) {
	t.Helper()
	mk := func() string {
		l, err := os.MkdirTemp(dir, "layer-")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	walked, tracked := mk(), mk()
	var wantM Manifest
	if prev != nil {
		wantM = maps.Clone(prev)
	}
	wantM, wantN, err := DiffUpper(upper, wantM, walked)
	if err != nil {
		t.Fatal(err)
	}
	gotM, gotN, err := tr.Diff(prev, tracked)
	if err != nil {
		t.Fatal(err)
	}
	if w, g := treeOf(t, walked), treeOf(t, tracked); !reflect.DeepEqual(w, g) {
		t.Errorf("tracked layer differs from the walked one:\n walked  %v\n tracked %v", w, g)
	}
	if gotN != wantN {
		t.Errorf("tracked layer has %d entries, the walked one %d", gotN, wantN)
	}
	if !sameManifest(gotM, wantM) {
		t.Errorf("tracked manifest differs from the walked one:\n walked  %v\n tracked %v", wantM, gotM)
	}
	return tracked, gotM, gotN
}

// sameManifest compares manifests as a diff does (entryState.same).
func sameManifest(a, b Manifest) bool {
	if len(a) != len(b) {
		return false
	}
	for k, s := range a {
		if o, ok := b[k]; !ok || !s.same(o) {
			return false
		}
	}
	return true
}

// treeOf describes every entry below dir: type, mode, owner, size,
// contents, device, times and xattrs.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("%o %d:%d %d rdev=%d", st.Mode, st.Uid, st.Gid, st.Size, st.Rdev)
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			desc += fmt.Sprintf(" mtime=%d", st.Mtim.Nano()) // a whiteout's is when the diff made it
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(b)
		}
		if sz, _ := unix.Llistxattr(p, nil); sz > 0 {
			names := make([]byte, sz)
			n, _ := unix.Llistxattr(p, names)
			for _, name := range bytes.Split(names[:n], []byte{0}) {
				if len(name) > 0 {
					v := make([]byte, 256)
					vn, _ := unix.Lgetxattr(p, string(name), v)
					desc += fmt.Sprintf(" %s=%q", name, v[:max(vn, 0)])
				}
			}
		}
		out[p[len(dir):]] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTrackerSeesEveryChange makes one kind of change per step through a
// real overlay mount, each to entries an earlier step committed, and
// requires the tracked diff to give what a walk of the upper directory
// gives (layer, count, manifest): writes in place, truncation, modes,
// owners, xattrs, times, a write through a shared mapping whose file
// descriptor was closed before the write, renames, removals, copy-ups of
// lower entries, directories replaced, moved and removed, hard links.
func TestTrackerSeesEveryChange(t *testing.T) {
	dir, _, upper, merged, tr := trackedOverlay(t, "mkdir -p ld/sub && echo l > ld/lf && echo s > ld/sub/s && echo f > lowfile")
	_, m, n := trackedStep(t, dir, upper, tr, nil)
	if n != 0 {
		t.Fatalf("an untouched upper dir gave a first layer of %d entries", n)
	}
	steps := []struct {
		name string
		do   func()
	}{
		{"new files and directories", func() {
			sh(t, merged, "mkdir -p d/e && echo a > a && echo b > d/b && echo c > d/e/c && echo m > mapped && echo r > root.f")
		}},
		{"write in place", func() { sh(t, merged, "echo A >> a") }},
		{"truncate", func() { sh(t, merged, "truncate -s 0 d/b") }},
		{"chmod", func() { sh(t, merged, "chmod 600 d/e/c") }},
		{"chown", func() { sh(t, merged, "chown 7:8 a") }},
		{"touch", func() { sh(t, merged, "touch -d '2001-02-03 04:05' d/b") }},
		{"xattr", func() {
			if err := unix.Lsetxattr(filepath.Join(merged, "a"), "user.k", []byte("v"), 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"shared mapping", func() {
			f, err := os.OpenFile(filepath.Join(merged, "mapped"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			mem, err := unix.Mmap(int(f.Fd()), 0, 2, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond) // the write's mtime must differ from the file's
			mem[0] = 'M'
			if err := unix.Munmap(mem); err != nil {
				t.Fatal(err)
			}
		}},
		{"rename", func() { sh(t, merged, "mv d/b d/b2 && mv root.f d/e/") }},
		{"remove", func() { sh(t, merged, "rm d/e/c") }},
		{"copy up and whiteout", func() { sh(t, merged, "echo up > ld/lf && rm ld/sub/s && rm lowfile") }},
		{"replace a directory", func() { sh(t, merged, "rm -rf d/e && mkdir d/e && echo new > d/e/n") }},
		{"directory becomes a file", func() { sh(t, merged, "rm -rf d/e && echo x > d/e") }},
		{"move a directory", func() { sh(t, merged, "mkdir -p m1/m2 && echo q > m1/m2/q") }},
		{"… and its moved tree changes", func() { sh(t, merged, "mv m1 m3 && echo w > m3/m2/w") }},
		{"remove a tree", func() { sh(t, merged, "rm -rf m3 ld/sub") }},
		{"hard link", func() { sh(t, merged, "ln a d/a2") }},
		{"nothing", func() {}},
	}
	for _, s := range steps {
		s.do()
		_, m, n = trackedStep(t, dir, upper, tr, m)
		if t.Failed() {
			t.Fatalf("step %q", s.name)
		}
		if s.name != "nothing" && n == 0 {
			t.Fatalf("step %q: the tracked diff saw no change", s.name)
		}
	}
}

// TestTrackerVisitsOnlyChange: in an upper directory of thousands of
// entries, a step that changes one file is diffed by looking at that file
// and its directory only (a count, not a time).
func TestTrackerVisitsOnlyChange(t *testing.T) {
	dir, _, upper, merged, tr := trackedOverlay(t, "")
	sh(t, merged, "for d in $(seq 50); do mkdir d$d; for f in $(seq 60); do echo $f > d$d/f$f; done; done")
	_, m, _ := trackedStep(t, dir, upper, tr, nil)
	if len(m) < 3000 {
		t.Fatalf("upper holds %d entries, want ≥ 3000", len(m))
	}
	sh(t, merged, "echo changed > d17/f3")
	l := filepath.Join(dir, "step")
	if err := os.Mkdir(l, 0o700); err != nil {
		t.Fatal(err)
	}
	_, n, err := tr.Diff(m, l)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || tr.visits > 2 {
		t.Errorf("a one-file step gave %d entries after %d visits; want 2 entries (the file, its directory) and 2 visits", n, tr.visits)
	}
	if b, err := os.ReadFile(filepath.Join(l, "d17/f3")); err != nil || string(b) != "changed\n" {
		t.Errorf("the step's layer lacks the changed file: %q, %v", b, err)
	}
}

// TestTrackerOverflowWalks: when the kernel dropped events (its queue
// overflowed), the diff walks the whole upper directory instead.
func TestTrackerOverflowWalks(t *testing.T) {
	dir, _, upper, merged, tr := trackedOverlay(t, "")
	sh(t, merged, "echo a > a")
	_, m, _ := trackedStep(t, dir, upper, tr, nil)
	sh(t, merged, "echo b > b")
	tr.lose(fmt.Errorf("test"))
	_, m, _ = trackedStep(t, dir, upper, tr, m)
	if tr.visits < len(m) {
		t.Errorf("after lost events the diff visited %d entries of %d", tr.visits, len(m))
	}
	sh(t, merged, "echo c > c") // tracked again after the walk
	if _, _, n := trackedStep(t, dir, upper, tr, m); n != 1 || tr.visits > 1 {
		t.Errorf("after the walk, a one-file step gave %d entries after %d visits", n, tr.visits)
	}
}

// TestTrackerSymlinkedParent: a step that writes a file in a directory
// and then replaces the directory with a symlink to a host directory
// holding a file of the same name: the event names the file below the
// directory, and the diff must not follow the symlink out of the upper
// directory to copy the host's file.
func TestTrackerSymlinkedParent(t *testing.T) {
	dir, _, upper, merged, tr := trackedOverlay(t, "")
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "secret"), []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh(t, merged, "mkdir -p x/y")
	_, m, _ := trackedStep(t, dir, upper, tr, nil)
	sh(t, merged, "echo mine > x/secret && echo mine > x/y/secret && rm -rf x && ln -s "+host+" x")
	l, _, _ := trackedStep(t, dir, upper, tr, m)
	for p, desc := range treeOf(t, l) {
		if strings.HasPrefix(p, "/x/") || strings.Contains(desc, "secret") {
			t.Errorf("the layer holds %s: %s", p, desc)
		}
	}
}

// TestTrackerWatchBound: an upper directory with more directories than a
// Tracker may watch (the host's inotify budget is shared) is diffed by
// walking, and its watches are given back.
func TestTrackerWatchBound(t *testing.T) {
	defer func(n int) { maxWatches = n }(maxWatches)
	maxWatches = 4
	dir, _, upper, merged, tr := trackedOverlay(t, "")
	sh(t, merged, "mkdir a b")
	_, m, _ := trackedStep(t, dir, upper, tr, nil)
	sh(t, merged, "mkdir c d e && echo x > a/x")
	_, m, _ = trackedStep(t, dir, upper, tr, m)
	if tr.off == nil || tr.fd >= 0 || len(tr.dirs) != 0 {
		t.Fatalf("6 directories with room for 4 watches: tracking not given up (off %v, fd %d, %d watches)", tr.off, tr.fd, len(tr.dirs))
	}
	sh(t, merged, "echo y > b/y")
	if _, _, n := trackedStep(t, dir, upper, tr, m); n != 2 || tr.visits < len(m) {
		t.Errorf("after giving up: %d entries after %d visits, want 2 after a walk", n, tr.visits)
	}
}

// TestTrackerInotifyBudget: Trackers take no more of the host's per-user
// inotify instances and watches than the daemon's share, and give back
// what they took when closed, so that hundreds of warm sandboxes cannot
// leave the host's other processes of the same user without inotify.
func TestTrackerInotifyBudget(t *testing.T) {
	b := &inotifyBudget
	takeInotify(0, 0) // read the limits now, so the test's values stay
	b.mu.Lock()
	saved := [2]int{b.instances, b.watches}
	b.instances, b.watches = 1, 3
	b.mu.Unlock()
	defer func() { b.mu.Lock(); b.instances, b.watches = saved[0], saved[1]; b.mu.Unlock() }()
	left := func() [2]int { b.mu.Lock(); defer b.mu.Unlock(); return [2]int{b.instances, b.watches} }

	one, two := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(two, "a/b/c"), 0o755); err != nil {
		t.Fatal(err)
	}
	a, err := NewTracker(one)
	if err != nil {
		t.Fatal(err)
	}
	if got := left(); got != [2]int{0, 2} {
		t.Fatalf("a tracker of one directory left %v of the budget, want [0 2]", got)
	}
	if _, err := NewTracker(one); !errors.Is(err, errInotifyBudget) {
		t.Fatalf("a second tracker with no instance left: %v, want errInotifyBudget", err)
	}
	a.Close()
	if got := left(); got != [2]int{1, 3} {
		t.Fatalf("after Close the budget is %v, want [1 3]", got)
	}
	if _, err := NewTracker(two); !errors.Is(err, errInotifyBudget) { // 4 directories, 3 watches
		t.Fatalf("a tracker of 4 directories with 3 watches left: %v, want errInotifyBudget", err)
	}
	if got := left(); got != [2]int{1, 3} {
		t.Fatalf("a tracker that could not be made kept %v of the budget, want [1 3] back", got)
	}
	// A watch the kernel removes with its directory goes back at once, so
	// a sandbox making and removing directories does not drain the budget.
	if err := os.Mkdir(filepath.Join(one, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := NewTracker(one)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := left(); got != [2]int{0, 1} {
		t.Fatalf("a tracker of two directories left %v, want [0 1]", got)
	}
	if err := os.Remove(filepath.Join(one, "d")); err != nil {
		t.Fatal(err)
	}
	c.drain()
	if got := left(); got != [2]int{0, 2} {
		t.Fatalf("after its directory was removed the budget is %v, want the watch back: [0 2]", got)
	}
}

// TestTrackerChanged writes a file through a shared mapping while another
// descriptor holds it open for writing, as gVisor's sentry holds the files
// it caches: no event reports the write, and the diff has it only because
// the file is named to Changed.
func TestTrackerChanged(t *testing.T) {
	dir, _, upper, merged, tr := trackedOverlay(t, "")
	sh(t, merged, "echo held > held && echo other > other")
	_, m, _ := trackedStep(t, dir, upper, tr, nil)
	f, err := os.OpenFile(filepath.Join(merged, "held"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // after the diff, as the sentry closes it
	for i, b := range []byte("HE") {
		mem, err := unix.Mmap(int(f.Fd()), 0, 2, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		mem[i] = b
		if err := unix.Munmap(mem); err != nil {
			t.Fatal(err)
		}
		tr.Changed("held", "../outside", "/abs")
		var layer string
		layer, m, _ = trackedStep(t, dir, upper, tr, m)
		if got, err := os.ReadFile(filepath.Join(layer, "held")); string(got) != "HEld\n"[:i+1]+"held\n"[i+1:] {
			t.Errorf("step %d: layer's held = %q (%v)", i+1, got, err)
		}
	}
}

// TestTrackerChangedLinked names an unchanged file with two names to
// Changed, as a file the sandbox holds open after an earlier step is
// named at every step: the diff must not walk the upper dir for it (its
// other name cannot have changed if its inode did not), and must when it
// changed.
func TestTrackerChangedLinked(t *testing.T) {
	dir, _, upper, merged, tr := trackedOverlay(t, "")
	sh(t, merged, "mkdir d && for i in $(seq 20); do echo $i > d/f$i; done && echo a > a && ln a d/b")
	_, m, _ := trackedStep(t, dir, upper, tr, nil)
	tr.Changed("a")
	if _, m, _ = trackedStep(t, dir, upper, tr, m); tr.visits > 1 {
		t.Errorf("an unchanged linked file named to Changed made the diff visit %d entries", tr.visits)
	}
	f, err := os.OpenFile(filepath.Join(merged, "a"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, 1, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	mem[0] = 'A'
	if err := unix.Munmap(mem); err != nil {
		t.Fatal(err)
	}
	tr.Changed("a")
	layer, _, _ := trackedStep(t, dir, upper, tr, m)
	if got, err := os.ReadFile(filepath.Join(layer, "d", "b")); string(got) != "A\n" {
		t.Errorf("the other name in the layer: %q (%v)", got, err)
	}
}
