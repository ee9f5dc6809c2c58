package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/overlay"
)

// cgroupsPath is the cgroup of sandbox id (the OCI config's cgroupsPath),
// the same in every hierarchy. Its name starts with a digest of the
// runtime's state directory, so two daemons on one host (cluster workers,
// each with its own home) never share a cgroup, not even for the same
// operation run again by another worker after a lost lease: what clears
// one sandbox's cgroup never touches the other's.
func (o *OCI) cgroupsPath(id string) string {
	if o.scope == "" { // a driver without a state directory
		return "/arbor/" + id
	}
	return "/arbor/" + o.scope + "-" + id
}

// clearLimit bounds clearLaunch: SIGKILL ends a process within moments
// unless it is stuck in the kernel, and the engine's Close waits for it.
const clearLimit = 10 * time.Second

// clearLaunch makes sure nothing is left of sandbox s after the runtime
// process that was creating it (run --detach, restore --detach) failed or
// was killed, which launchDetached does when the caller's context ends.
// Killed between forking the sandbox and recording its state, the runtime
// leaves processes no Destroy can find (runsc's sandbox and gofer, runc's
// init) and files that fail the next boot (runc's pid temp file in the
// bundle). They are found by what exists from the start: the sandbox's
// cgroup, which runsc joins before it forks the gofer and the sandbox and
// runc places its init in before the init makes anything; and the
// runtime's process group (leader, group id, started at start), for a
// runc init forked but not yet placed.
//
// The runtime process must have been reaped: no part of the sandbox is
// forked after that but by processes in the cgroup, which are killed until
// none is left.
func (o *OCI) clearLaunch(s Spec, pidFile string, leader int, start string) error {
	ctx, cancel := context.WithTimeout(context.Background(), clearLimit)
	defer cancel()
	if leader > 1 && start != "" {
		killGroup(leader, start)
	}
	rel := o.cgroupsPath(s.ID)
	dirs := cgroupDirs(rel)
	var errs []error
	if err := killCgroup(ctx, rel, dirs); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, o.clearKilled(ctx, s.ID, dirs))
	// runc writes the pid file as a temporary ".<name>" it creates with
	// O_EXCL and then renames: left behind, it fails the bundle's next boot.
	for _, f := range []string{pidFile, filepath.Join(filepath.Dir(pidFile), "."+filepath.Base(pidFile))} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// clearKilled removes what the runtime keeps of sandbox id, every process
// of which was killed (its cgroup, dirs, emptied), and then the cgroup.
func (o *OCI) clearKilled(ctx context.Context, id string, dirs []string) error {
	if o.recorded(id) {
		// The runtime got as far as recording the sandbox: its delete
		// removes the rest as for any sandbox, if it can read the record
		// (if not, removeState does: its processes are dead).
		_ = o.Destroy(ctx, id)
	}
	return errors.Join(o.removeState(id), removeCgroup(ctx, dirs))
}

// recorded reports whether the runtime has recorded sandbox id's state:
// runsc a state file, runc and crun a state.json in the sandbox's
// directory (which they create earlier, empty).
func (o *OCI) recorded(id string) bool {
	p := filepath.Join(o.root, id, "state.json")
	if o.name == "runsc" {
		p = filepath.Join(o.root, id+"_sandbox:"+id+".state")
	}
	_, err := os.Lstat(p)
	return err == nil
}

// removeState removes what the runtime keeps for sandbox id, whose
// processes are dead, that its delete did not: all of it when the runtime
// was killed before it recorded the sandbox (runsc's lock file and the
// sandbox's control socket, runc's and crun's directory for id), and the
// state itself when it was killed writing it (runsc's delete then fails).
func (o *OCI) removeState(id string) error {
	if o.name != "runsc" {
		return os.RemoveAll(filepath.Join(o.root, id))
	}
	var errs []error
	for _, f := range []string{id + "_sandbox:" + id + ".state", id + "_sandbox:" + id + ".lock", "runsc-" + id + ".sock"} {
		if err := os.Remove(filepath.Join(o.root, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cgroupDirs returns the directories of cgroup rel in every cgroup
// hierarchy mounted here (cgroup v1 controllers and v2: on a hybrid host
// runsc uses the v1 ones, runc both), whether or not they exist.
func cgroupDirs(rel string) []string {
	var dirs []string
	for _, m := range cgroupMounts() {
		dirs = append(dirs, filepath.Join(m, rel))
	}
	return dirs
}

// cgroupMounts are the mount points of the cgroup hierarchies' roots,
// read once: they are mounted at boot.
var cgroupMounts = sync.OnceValue(func() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mounts []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, fs := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(fs) < 1 || (fs[0] != "cgroup" && fs[0] != "cgroup2") || fields[3] != "/" {
			continue
		}
		if m := overlay.UnescapeMountField(fields[4]); !seen[m] {
			seen[m] = true
			mounts = append(mounts, m)
		}
	}
	return mounts
})

// cgroupInUse reports whether cgroup dirs has a process.
func cgroupInUse(dirs []string) bool {
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return true
		}
	}
	return false
}

// killCgroup kills every process in cgroup rel (its directories dirs)
// until none is left alive, or ctx ends. Processes forked meanwhile by
// those being killed land in the cgroup, and the next pass gets them.
func killCgroup(ctx context.Context, rel string, dirs []string) error {
	for {
		alive := 0
		for _, d := range dirs {
			// cgroup v2 kills the whole cgroup at once, forks in progress
			// included; v1 has no such file.
			if f, err := os.OpenFile(filepath.Join(d, "cgroup.kill"), os.O_WRONLY, 0); err == nil {
				_, _ = f.WriteString("1")
				f.Close()
			}
			b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			if err != nil {
				continue // no such cgroup in this hierarchy
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && killIfIn(pid, rel) {
					alive++
				}
			}
		}
		if alive == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kill the processes of cgroup %s: %d still alive: %w", rel, alive, context.Cause(ctx))
		case <-time.After(10 * time.Millisecond): // their deaths have no event to wait on
		}
	}
}

// removeCgroup removes a dead sandbox's cgroup directories dirs. A
// process killed has left cgroup.procs before it has finished exiting,
// and until then the directory is busy: it retries until ctx ends.
func removeCgroup(ctx context.Context, dirs []string) error {
	for _, d := range dirs {
		for {
			err := unix.Rmdir(d)
			if err == nil || err == unix.ENOENT {
				break
			}
			if err != unix.EBUSY || ctx.Err() != nil {
				return fmt.Errorf("remove cgroup %s: %w", d, err)
			}
			time.Sleep(5 * time.Millisecond) // no event tells when it empties (cgroup v1)
		}
	}
	return nil
}

// killIfIn sends SIGKILL to process pid if it is in cgroup rel, and
// reports whether it was alive (not a zombie) and in it. The pidfd is
// opened before the process's cgroup is read: if pid was reused by another
// process meanwhile, the pidfd's process is dead and the signal fails.
func killIfIn(pid int, rel string) bool {
	if pid <= 1 || pid == os.Getpid() {
		return false
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-id:controllers:path
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && f[2] == rel {
			in = true
		}
	}
	if !in || unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) != nil {
		return false
	}
	return !zombie(pid)
}

// zombie reports whether process pid has exited and waits to be reaped
// (or is gone).
func zombie(pid int) bool {
	f := procStat(pid)
	return len(f) == 0 || f[0] == "Z"
}
