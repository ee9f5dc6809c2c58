package runtime

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// execReady delays an exec's OnStart until the runtime process has written
// its pid file (runc and runsc write it once the process runs and their
// signal forwarding is set up), or until the exec is over.
type execReady struct {
	pidFile   string
	dir       string // made for the pid files; removed by close
	onStartFn func(pid int)
	// internalPidFile, if set, receives the command's pid inside the
	// sandbox; onInternal is called with it before onStartFn.
	internalPidFile string
	onInternal      func(pid int)
	stop            chan struct{}
	stopOnce        sync.Once
	wg              sync.WaitGroup
}

func newExecReady(onStart func(int)) *execReady {
	r := &execReady{onStartFn: onStart, stop: make(chan struct{})}
	if dir, err := os.MkdirTemp("", "arbor-exec-"); err == nil {
		r.dir, r.pidFile = dir, filepath.Join(dir, "exec.pid")
	} else {
		// No file to wait for: OnStart runs at once.
		r.pidFile = ""
	}
	return r
}

// onStart is the exec's OnStart: it waits for the pid file in the
// background and calls the caller's OnStart then.
func (r *execReady) onStart(pid int) {
	if r.onStartFn == nil {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for r.pidFile != "" {
			if _, err := os.Stat(r.pidFile); err == nil {
				break
			}
			select {
			case <-r.stop:
			case <-time.After(2 * time.Millisecond):
				continue
			}
			break
		}
		if r.onInternal != nil {
			if b, err := os.ReadFile(r.internalPidFile); err == nil {
				if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
					r.onInternal(n)
				}
			}
		}
		r.onStartFn(pid)
	}()
}

// close ends the wait (the exec is over: the runtime wrote its pid file
// or never will), waits for OnStart to have run, and removes the file.
func (r *execReady) close() {
	r.stopOnce.Do(func() { close(r.stop) })
	r.wg.Wait()
	if r.dir != "" {
		_ = os.RemoveAll(r.dir)
	}
}
