package layers

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A continued sandbox's upper directory grows with every step, so a diff
// that walks it (DiffUpper) costs more and more per step. A Tracker keeps
// an inotify watch on every directory of the upper directory, so a diff
// visits only the entries named by events since the last one (and their
// directories) and walks only directories that are new: O(change).
//
// Every change a sandbox makes reaches the upper directory through
// overlayfs, which makes it with the VFS's own calls on the upper
// directory's entries, and those report to the watch on the entry's
// directory: creating, removing and renaming entries, writes and
// truncation, and every change of metadata (mode, owner, times, xattrs,
// overlay's own opaque and whiteout marks). A write through a shared
// memory mapping reports nothing by itself; its file was opened for
// writing, which reports when the last reference to it (the mapping's
// included) is gone, as it is once the step's processes are: IN_CLOSE_WRITE.
// Unless another process still holds the file open, as gVisor's sentry
// does every file it caches: the caller names such files (Changed).
// (TestTrackerSeesEveryChange proves each of these on the kernel it runs on.)
//
// What a Tracker cannot vouch for it does not guess: when the kernel's
// event queue overflowed, a watch could not be added, or a visited file
// has several names and changed (the other names' changes report to no
// directory), the diff walks the whole upper directory as DiffUpper does.

// trackMask is what a Tracker watches on each directory (events of the
// directory itself and of its entries).
const trackMask = unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CLOSE_WRITE | unix.IN_CREATE | unix.IN_DELETE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW

// Tracker follows the changes to one upper directory (see above). It is
// not safe for concurrent use.
type Tracker struct {
	upper string
	fd    int              // the inotify instance
	dirs  map[int32]string // watch → its directory, relative to upper ("": upper)
	wdOf  map[string]int32 // the reverse: a directory without a watch is new
	dirty map[string]bool  // entries named by events since the last diff
	lost  error            // why events may have been missed: the next diff walks all
	off   error            // why tracking was given up: every diff walks
	// visits counts the entries the last Diff looked at (lstat), for tests.
	visits int
	held   int // watches taken from inotifyBudget
}

// NewTracker watches every directory of upper.
func NewTracker(upper string) (*Tracker, error) {
	t := &Tracker{upper: upper, fd: -1, dirs: map[int32]string{}, wdOf: map[string]int32{}, dirty: map[string]bool{}}
	if err := t.rewatch(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// Close releases the watches. A nil Tracker is closed.
func (t *Tracker) Close() {
	if t != nil && t.fd >= 0 {
		unix.Close(t.fd)
		t.fd = -1
		giveInotify(1, t.held)
		t.held = 0
	}
}

// watch watches directory rel of upper.
func (t *Tracker) watch(rel string) error {
	if len(t.dirs) >= maxWatches {
		return errTooManyDirs
	}
	if !takeInotify(0, 1) {
		return errInotifyBudget
	}
	wd, err := unix.InotifyAddWatch(t.fd, filepath.Join(t.upper, rel), trackMask)
	if err != nil {
		giveInotify(0, 1)
		return &os.PathError{Op: "inotify_add_watch", Path: rel, Err: err}
	}
	if _, ok := t.dirs[int32(wd)]; ok {
		giveInotify(0, 1) // a directory moved keeps its one watch
	} else {
		t.held++
	}
	// The same directory moved keeps its watch: its path is now rel.
	if old, ok := t.dirs[int32(wd)]; ok && old != rel && t.wdOf[old] == int32(wd) {
		delete(t.wdOf, old)
	}
	t.dirs[int32(wd)], t.wdOf[rel] = rel, int32(wd)
	return nil
}

// drop forgets watch wd, which the kernel has removed (IN_IGNORED, or
// after InotifyRmWatch), and gives it back to the budget.
func (t *Tracker) drop(wd int32) {
	rel, ok := t.dirs[wd]
	if !ok {
		return
	}
	if t.wdOf[rel] == wd {
		delete(t.wdOf, rel)
	}
	delete(t.dirs, wd)
	t.held--
	giveInotify(0, 1)
}

// maxWatches bounds the watches of one Tracker: they come out of the
// host's per-user budget (fs.inotify.max_user_watches, shared with every
// other process of the daemon's user), which a sandbox making directories
// must not be able to exhaust. Beyond it, the diffs walk.
var maxWatches = 8192

var errTooManyDirs = errors.New("the upper directory has more directories than a tracker watches")

// watchTree watches directory rel of upper and every directory below it.
func (t *Tracker) watchTree(rel string) error {
	return filepath.WalkDir(filepath.Join(t.upper, rel), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return t.watch(relOf(t.upper, p))
	})
}

func relOf(upper, p string) string {
	if p == upper {
		return ""
	}
	return p[len(upper)+1:]
}

// drain reads the queued events into t.dirty.
func (t *Tracker) drain() {
	if t.fd < 0 {
		return // given up: lost says so
	}
	var buf [64 << 10]byte
	for {
		n, err := unix.Read(t.fd, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN || n == 0 {
			return
		}
		if err != nil {
			t.lose(&os.SyscallError{Syscall: "read inotify", Err: err})
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				b := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				if i := strings.IndexByte(string(b), 0); i >= 0 {
					b = b[:i]
				}
				name = string(b)
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
			t.event(ev.Wd, ev.Mask, name)
		}
	}
}

// event notes one event.
func (t *Tracker) event(wd int32, mask uint32, name string) {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		t.lose(errors.New("inotify queue overflowed"))
		return
	}
	dir, ok := t.dirs[wd]
	if !ok {
		return // a watch already dropped
	}
	if mask&unix.IN_IGNORED != 0 {
		t.drop(wd) // the directory is gone: its parent's event named it
		return
	}
	if mask&unix.IN_MOVE_SELF != 0 {
		// Its parent's event named it, and its new place (if in upper)
		// is walked as new: drop the watch, whose path is stale now.
		_, _ = unix.InotifyRmWatch(t.fd, uint32(wd))
		t.drop(wd)
		return
	}
	t.dirty[dir] = true // its times changed with its entries
	if name != "" {
		t.dirty[joinRel(dir, name)] = true
	}
}

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// lose notes that events may have been missed.
func (t *Tracker) lose(err error) {
	if t.lost == nil {
		t.lost = err
	}
}

// Changed names entries of upper (paths relative to it) that may have
// changed without an event, as a file written through a shared mapping
// while another process holds it open for writing does: the next Diff
// visits them as if an event had named them.
func (t *Tracker) Changed(rels ...string) {
	for _, rel := range rels {
		if rel = filepath.Clean(rel); rel != "." && filepath.IsLocal(rel) {
			t.dirty[filepath.ToSlash(rel)] = true
		}
	}
}

// errWalk makes Diff walk the whole upper directory after all.
var errWalk = errors.New("walk the whole upper directory")

// Diff is DiffUpper(upper, prev, dst) for the tracked upper directory: the
// same layer and manifest, visiting only what changed since prev was taken
// by the last Diff. prev is updated in place and returned: the caller
// keeps the result and drops prev (on an error, both).
func (t *Tracker) Diff(prev Manifest, dst string) (Manifest, int, error) {
	t.visits = 0
	t.drain()
	if prev != nil && t.lost == nil {
		undo := map[string]*entryState{}
		now, n, err := t.diff(prev, dst, undo)
		if err != errWalk {
			t.dirty = map[string]bool{}
			return now, n, err
		}
		// Put prev back as it was and start dst over.
		for rel, s := range undo {
			if s == nil {
				delete(prev, rel)
			} else {
				prev[rel] = *s
			}
		}
		if err := clearDir(dst); err != nil {
			return nil, 0, err
		}
	}
	// Walk it all, watching every directory anew for the next diff,
	// unless tracking was given up.
	t.Close()
	t.dirs, t.wdOf, t.dirty, t.lost = map[int32]string{}, map[string]int32{}, map[string]bool{}, t.off
	if t.off == nil {
		if err := t.rewatch(); err != nil {
			t.Close() // its watches go back to the host's budget
			t.dirs, t.wdOf = map[int32]string{}, map[string]int32{}
			t.off, t.lost = err, err
		}
	}
	now, n, err := DiffUpper(t.upper, prev, dst)
	t.visits += len(now)
	return now, n, err
}

// rewatch watches every directory of upper with a new inotify instance.
func (t *Tracker) rewatch() error {
	if !takeInotify(1, 0) {
		return errInotifyBudget
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		giveInotify(1, 0)
		return &os.SyscallError{Syscall: "inotify_init1", Err: err}
	}
	t.fd = fd
	return t.watchTree("")
}

// clearDir removes everything in dir.
func clearDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// diff is Diff's tracked path; undo records each changed key of prev's
// old value (nil: absent), so the caller can put prev back.
func (t *Tracker) diff(prev Manifest, dst string, undo map[string]*entryState) (Manifest, int, error) {
	now := prev
	set := func(rel string, s *entryState) {
		if _, ok := undo[rel]; !ok {
			if old, had := now[rel]; had {
				undo[rel] = &old
			} else {
				undo[rel] = nil
			}
		}
		if s == nil {
			delete(now, rel)
		} else {
			now[rel] = *s
		}
	}
	// dropBelow removes the entries below directory rel from now.
	dropBelow := func(rel string) {
		pre := rel + "/"
		for k := range now {
			if strings.HasPrefix(k, pre) {
				set(k, nil)
			}
		}
	}
	d := &differ{upper: t.upper, dst: dst, prev: nil, now: now, made: map[string]bool{"": true}, links: map[uint64]string{}}
	var root unix.Stat_t
	if err := unix.Lstat(t.upper, &root); err != nil {
		return nil, 0, &os.PathError{Op: "lstat", Path: t.upper, Err: err}
	}
	d.dirs = append(d.dirs, "")
	if err := setMeta(t.upper, dst, &root, false); err != nil {
		return nil, 0, err
	}
	paths := make([]string, 0, len(t.dirty))
	for rel := range t.dirty {
		if rel != "" {
			paths = append(paths, rel)
		}
	}
	sort.Strings(paths) // a directory before its entries
	walked := map[string]bool{}
	isDirNow := map[string]bool{"": true} // directories of upper seen in this diff, and not
	var gone []string
	for _, rel := range paths {
		if under(rel, walked) {
			continue // copied with its new directory
		}
		var st unix.Stat_t
		var err error = unix.ENOENT
		if t.inDirs(rel, isDirNow) {
			t.visits++
			err = unix.Lstat(filepath.Join(t.upper, rel), &st)
			isDirNow[rel] = err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
		}
		old, had := prev[rel]
		if err == unix.ENOENT || err == unix.ENOTDIR {
			if had {
				set(rel, nil)
				if old.mode&unix.S_IFMT == unix.S_IFDIR {
					dropBelow(rel)
				}
				gone = append(gone, rel)
			}
			continue
		}
		if err != nil {
			return nil, 0, &os.PathError{Op: "lstat", Path: rel, Err: err}
		}
		s := stateOf(&st)
		isDir, wasDir := s.mode&unix.S_IFMT == unix.S_IFDIR, had && old.mode&unix.S_IFMT == unix.S_IFDIR
		if s.mode&unix.S_IFMT == unix.S_IFREG && s.links > 1 && !(had && s.same(old)) {
			// Its other names changed too, unreported. (Unchanged, as a
			// file the sandbox merely holds open is, so are they.)
			return nil, 0, errWalk
		}
		_, watched := t.wdOf[rel]
		replaced := wasDir && (!isDir || old.ino != s.ino || !watched)
		if replaced {
			// Replaced: what was below it is gone with it.
			for k := range now {
				if strings.HasPrefix(k, rel+"/") {
					set(k, nil)
					gone = append(gone, k)
				}
			}
		}
		if isDir && (!wasDir || replaced) {
			// A new directory (its inode number may be the old one's,
			// reused: it has no watch): all of it is new, and unwatched.
			walked[rel] = true
			if err := t.walkNew(d, rel, set); err != nil {
				return nil, 0, err
			}
			continue
		}
		set(rel, &s)
		if had && s.same(old) {
			continue
		}
		if err := d.copy(rel, &st); err != nil {
			return nil, 0, err
		}
	}
	// Gone entries as in DiffUpper (a replaced directory's entries, too,
	// as a new directory of that name does not hide them by itself).
	if err := d.whiteouts(gone); err != nil {
		return nil, 0, err
	}
	if err := d.finishDirs(); err != nil {
		return nil, 0, err
	}
	settle(filepath.Dir(dst), now)
	return now, d.n, nil
}

// inDirs reports whether every directory above rel is one in upper now
// (dirs caches what was found). An event's path is where its entry was
// when it happened: should a directory above it have been replaced since
// by a symlink, the path must not be followed out of upper, to the host.
// Checked from the top, so that each lstat's own path is all directories.
func (t *Tracker) inDirs(rel string, dirs map[string]bool) bool {
	parent := filepath.Dir(rel)
	if parent == "." {
		return true
	}
	if ok, seen := dirs[parent]; seen {
		return ok
	}
	ok := t.inDirs(parent, dirs)
	if ok {
		var st unix.Stat_t
		t.visits++
		ok = unix.Lstat(filepath.Join(t.upper, parent), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
	}
	dirs[parent] = ok
	return ok
}

// under reports whether rel is below one of the directories in dirs.
func under(rel string, dirs map[string]bool) bool {
	for p := filepath.Dir(rel); p != "."; p = filepath.Dir(p) {
		if dirs[p] {
			return true
		}
	}
	return false
}

// walkNew copies the new directory rel of upper and everything below it,
// records them in the manifest (set) and watches its directories.
func (t *Tracker) walkNew(d *differ, rel string, set func(string, *entryState)) error {
	return filepath.WalkDir(filepath.Join(t.upper, rel), func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r := relOf(t.upper, p)
		var st unix.Stat_t
		t.visits++
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: r, Err: err}
		}
		s := stateOf(&st)
		if s.mode&unix.S_IFMT == unix.S_IFREG && s.links > 1 {
			return errWalk
		}
		if de.IsDir() {
			if err := t.watch(r); err != nil {
				return errWalk // cannot follow it: walk everything, and again next time
			}
		}
		set(r, &s)
		return d.copy(r, &st)
	})
}
