package layers

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
)

// inotifyBudget is what this process's Trackers may take of the host's
// per-user inotify limits (fs.inotify.max_user_instances and
// max_user_watches). Every process of the daemon's user shares them, and
// on a host running arbor as root that is systemd, journald, udev and the
// rest: with a Tracker per warm sandbox and hundreds of sandboxes, an
// unbounded daemon would leave them none (the default is 128 instances).
// Trackers take a quarter of each limit, and at most 32 instances; past
// it, diffs walk.
var inotifyBudget struct {
	once               sync.Once
	mu                 sync.Mutex
	instances, watches int // what is left
}

var errInotifyBudget = errors.New("this daemon's share of the host's inotify instances or watches is in use")

// sysctlInt reads an integer from /proc/sys (def if it cannot).
func sysctlInt(name string, def int) int {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return def
	}
	return n
}

// takeInotify takes instances and watches from the budget, or nothing and
// false if either is short.
func takeInotify(instances, watches int) bool {
	b := &inotifyBudget
	b.once.Do(func() {
		b.instances = min(sysctlInt("fs/inotify/max_user_instances", 128)/4, 32)
		b.watches = sysctlInt("fs/inotify/max_user_watches", 8192) / 4
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.instances < instances || b.watches < watches {
		return false
	}
	b.instances -= instances
	b.watches -= watches
	return true
}

// giveInotify returns what takeInotify took.
func giveInotify(instances, watches int) {
	b := &inotifyBudget
	b.mu.Lock()
	b.instances += instances
	b.watches += watches
	b.mu.Unlock()
}
