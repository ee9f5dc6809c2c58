package runtime

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// deleteGather is how long a dead runsc sandbox's delete waits for others
// to share its runsc process. Each `runsc delete` costs ~10 ms of CPU,
// most of it the binary starting; sandboxes of a fan-out die one every
// 100-200 ms on a busy 2-core host, so without the wait nearly every one
// paid for a process of its own (99 deletes for 111 runs in `arbor bench
// --section fanout --fan-out 16`). Nothing waits for the delete: the
// sandbox's processes are dead and its pidfds closed; only its state file
// and cgroup directory stay this much longer. Close deletes at once.
const deleteGather = time.Second

// deleteQueue holds the ids of dead sandboxes whose runtime state (state
// files, cgroups) is still to be deleted, off the runs' paths.
type deleteQueue struct {
	mu      sync.Mutex
	ids     []string
	running bool          // a deleter goroutine drains ids
	closing chan struct{} // closed by Close: no more gathering
	// gather, if set, replaces the wait for deleteGather (tests).
	gather func() <-chan time.Time
}

// closingCh returns the channel Close closes, made on first use.
func (q *deleteQueue) closingCh() chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closing == nil {
		q.closing = make(chan struct{})
	}
	return q.closing
}

// close makes the deleter delete what is queued at once, and from then on.
func (q *deleteQueue) close() {
	ch := q.closingCh()
	q.mu.Lock() // two Closes at once must not both close ch
	defer q.mu.Unlock()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// wait waits for deleteGather (or the test's gather) unless closed.
func (q *deleteQueue) wait() {
	closing := q.closingCh()
	var t <-chan time.Time
	if q.gather != nil {
		t = q.gather()
	} else {
		timer := time.NewTimer(deleteGather)
		defer timer.Stop()
		t = timer.C
	}
	select {
	case <-t:
	case <-closing:
	}
}

// deleteLater deletes dead sandbox id's runtime state in the background.
// runsc deletes every id queued meanwhile in one process, after waiting
// deleteGather for more to join (see there). runc and crun take one id
// per call, and are deleted at once.
func (o *OCI) deleteLater(id string) {
	q := &o.dead
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ids = append(q.ids, id)
	if q.running {
		return
	}
	q.running = true
	o.bg.Add(1)
	go func() {
		defer o.bg.Done()
		for {
			if o.name == "runsc" {
				q.wait()
			}
			q.mu.Lock()
			ids := q.ids
			q.ids = nil
			if len(ids) == 0 {
				q.running = false
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			o.deleteAll(ids)
		}
	}()
}

// deleteAll deletes the runtime state of the dead sandboxes ids.
func (o *OCI) deleteAll(ids []string) {
	all := slices.Clone(ids)
	if o.name == "runsc" && len(ids) > 1 {
		_ = o.forceDelete(context.Background(), ids[0], ids[1:]...)
		// runsc stops at the first id it does not find, quietly: the
		// others are left for one call each.
		left := ids[:0]
		for _, id := range ids {
			if o.hasState(id) {
				left = append(left, id)
			}
		}
		ids = left
	}
	for _, id := range ids {
		if !o.removeRuncState(id) {
			o.delete(id)
		}
	}
	// runsc leaves a cgroup whose processes had not all finished exiting
	// (busy) when it tried to remove it: an empty directory per sandbox.
	ctx, cancel := context.WithTimeout(context.Background(), clearLimit)
	defer cancel()
	for _, id := range all {
		_ = removeCgroup(ctx, cgroupDirs(o.cgroupsPath(id)))
	}
}

// removeRuncState deletes a dead runc sandbox's state as `runc delete`
// does, its cgroup directories and then its state directory, without a
// runc process: one costs ~5 ms of CPU, a fifth of a whole `runc run` of
// /bin/true, which made it a tenth of a cold runc run's CPU in a fan-out.
// It reports false if the state is not as runc writes it for arbor's
// sandboxes (cgroups under /arbor/<id>, no Intel RDT group) or a cgroup is
// still busy (a process of the sandbox has not finished dying): the caller
// then runs `runc delete`, which copes with whatever was removed here.
func (o *OCI) removeRuncState(id string) bool {
	if o.name != "runc" {
		return false
	}
	dir := filepath.Join(o.root, id)
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return false
	}
	var st struct {
		ID          string            `json:"id"`
		CgroupPaths map[string]string `json:"cgroup_paths"`
		IntelRdt    string            `json:"intel_rdt_path"`
	}
	if json.Unmarshal(b, &st) != nil || st.ID != id || st.IntelRdt != "" || len(st.CgroupPaths) == 0 {
		return false
	}
	for _, p := range st.CgroupPaths {
		if filepath.Clean(p) != p || !strings.HasPrefix(p, "/sys/fs/cgroup/") || !strings.HasSuffix(p, o.cgroupsPath(id)) {
			return false
		}
	}
	for _, p := range st.CgroupPaths {
		if err := unix.Rmdir(p); err != nil && err != unix.ENOENT {
			return false
		}
	}
	return os.RemoveAll(dir) == nil
}
