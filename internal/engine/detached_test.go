package engine

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/runtime"
)

// heldDestroy holds every Destroy until release is closed, and says when
// the first one was entered and when it returned.
type heldDestroy struct {
	runtime.Runtime
	release   chan struct{}
	entered   chan struct{}
	destroyed chan struct{}
	once      sync.Once
}

func (h *heldDestroy) Destroy(ctx context.Context, id string) error {
	h.once.Do(func() { close(h.entered) })
	<-h.release
	err := h.Runtime.Destroy(ctx, id)
	close(h.destroyed)
	return err
}

// unmountAfter records, at each unmount, whether the sandbox was destroyed.
type unmountAfter struct {
	RootFS
	destroyed <-chan struct{}
	unmounted chan bool // one value per unmount: destroyed before it?
}

func (u unmountAfter) Unmount(merged string) error {
	select {
	case <-u.destroyed:
		u.unmounted <- true
	default:
		u.unmounted <- false
	}
	return u.RootFS.Unmount(merged)
}

// TestColdResultBeforeTeardown: a disposable cold run's result is out
// once the init has reported the command's exit, without waiting for the
// sandbox's destruction (killing the sentry and gofer, or runc's init),
// and its root filesystem is unmounted only after that destruction.
func TestColdResultBeforeTeardown(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			e, base := newEngine(t, rt)
			h := &heldDestroy{Runtime: e.runtimes[rt], release: make(chan struct{}), entered: make(chan struct{}), destroyed: make(chan struct{})}
			e.runtimes[rt] = h
			u := unmountAfter{RootFS: e.rootfs, destroyed: h.destroyed, unmounted: make(chan bool, 1)}
			e.rootfs = u
			released := false
			release := func() {
				if !released {
					released = true
					close(h.release)
				}
			}
			defer release()

			sh, yes := true, true
			op, _, err := e.Spawn(context.Background(), acct, SpawnRequest{Command: "echo done", Image: base, Shell: &sh, Disposable: &yes})
			if err != nil {
				t.Fatal(err)
			}
			<-h.entered // the command has exited and the teardown began
			// The result needs nothing more; the bound only keeps a
			// regression from hanging the suite.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			o, err := e.WaitOperation(ctx, acct, op)
			if err != nil {
				t.Fatalf("no result while the sandbox's destruction was held: %v", err)
			}
			if o.Status != apitypes.StatusSuccess {
				t.Fatalf("status %s (%s), want SUCCESS", o.Status, o.Error)
			}
			select {
			case <-u.unmounted:
				t.Fatal("the root filesystem was unmounted while the sandbox was being destroyed")
			default:
			}
			release()
			if after := <-u.unmounted; !after {
				t.Fatal("the root filesystem was unmounted before the sandbox was destroyed")
			}
		})
	}
}

// TestInitIgnoresSignalsFromInside: the command cannot end the sandbox's
// init (PID 1) with a signal, standard or real-time. Under runsc, signals
// 32 and 34 do end it (before the init listened to fewer signals too): the
// sandbox then ends as if killed, which harms only the run that sent them.
func TestInitIgnoresSignalsFromInside(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			t.Parallel()
			skip := "9|19"
			if rt == "runsc" {
				skip += "|32|34"
			}
			cmd := `for s in $(seq 1 64); do case $s in ` + skip + `) ;; *) kill -$s 1 ;; esac; done; sleep 0.2; echo alive`
			e, base := newEngine(t, rt)
			_, m := run(t, e, base, cmd, disposable)
			if got := stdout(t, m); got != "alive\n" || m.Result.State.ExitCode != 0 {
				t.Fatalf("stdout %q, exit %d, signal %d: want the init to outlive every signal", got, m.Result.State.ExitCode, m.Result.State.Signal)
			}
		})
	}
}
