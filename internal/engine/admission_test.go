package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/testutil"
)

// waitQueue waits, on the queue's change notifications, until cond holds.
func waitQueue(t *testing.T, a *admission, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		ch := a.watch()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// acquireAsync queues op and returns a channel that yields wait's error.
func acquireAsync(ctx context.Context, a *admission, op string, memory int64) <-chan error {
	w := a.enqueue(op, memory)
	done := make(chan error, 1)
	go func() { done <- a.wait(ctx, w) }()
	return done
}

// TestAdmissionOrder: waiters are admitted strictly in arrival order, a
// small one does not overtake a large one at the head, and a cancelled
// waiter leaves the queue and lets the next one in.
func TestAdmissionOrder(t *testing.T) {
	ctx := context.Background()
	a := newAdmission(2, 100)
	if err := <-acquireAsync(ctx, a, "a", 60); err != nil {
		t.Fatal(err)
	}
	bctx, cancelB := context.WithCancel(ctx)
	b := acquireAsync(bctx, a, "b", 50) // needs more memory than is free
	c := acquireAsync(ctx, a, "c", 10)  // would fit, but b is first
	if pb, pc := a.position("b"), a.position("c"); pb != 1 || pc != 2 {
		t.Fatalf("positions b %d c %d, want 1 2", pb, pc)
	}
	select {
	case <-c:
		t.Fatal("c overtook b at the head of the queue")
	default:
	}
	cancelB()
	if err := <-b; err == nil {
		t.Fatal("cancelled b was admitted")
	}
	if err := <-c; err != nil {
		t.Fatalf("c after b left: %v", err)
	}
	if a.position("c") != 0 || len(a.queue) != 0 {
		t.Fatalf("queue after admission: %v", a.queue)
	}
	// Both slots are taken now (a and c): d waits for a slot, not memory.
	d := acquireAsync(ctx, a, "d", 1)
	a.release(10)
	if err := <-d; err != nil {
		t.Fatal(err)
	}
	a.release(60)
	a.release(1)
	if a.slots != 2 || a.memory != 100 {
		t.Fatalf("after every release: %d slots, %d bytes free, want 2 and 100", a.slots, a.memory)
	}
}

// TestQueuePosition: three runs behind one slot; the two waiting show
// positions 1 and 2 and then run in that order.
func TestQueuePosition(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	e, err := New(ctx, Config{Home: testutil.Home(t), Runtime: "runc", Slots: 1, WarmPerImage: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	base := busybox(t, e)
	open := &Stdin{Close: ptr(false)}
	spawn := func(cmd string, stdin *Stdin) string {
		op, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: base, Command: cmd, Shell: ptr(true), Disposable: ptr(true), Stdin: stdin})
		if err != nil {
			t.Fatal(err)
		}
		return op
	}
	position := func(op string) int {
		o, err := e.Operation(ctx, acct, op)
		if err != nil {
			t.Fatal(err)
		}
		return o.QueuePosition
	}
	first := spawn("cat", open)
	if _, err := e.runningOp(ctx, acct, first); err != nil {
		t.Fatal(err)
	}
	second := spawn("cat", open)
	waitQueue(t, e.queue, "second queued", func() bool { return position(second) == 1 })
	third := spawn("true", nil)
	waitQueue(t, e.queue, "third queued", func() bool { return position(third) == 2 })
	ops, err := e.ListOperations(ctx, OperationFilter{Account: acct, Statuses: []string{apitypes.StatusPending}})
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]int{}
	for _, o := range ops {
		listed[o.UUID] = o.QueuePosition
	}
	if listed[second] != 1 || listed[third] != 2 {
		t.Fatalf("listed positions %v, want %s:1 %s:2", listed, second, third)
	}
	if position(first) != 0 {
		t.Fatalf("the running run has queue position %d, want none", position(first))
	}

	closeStdin := func(op string) {
		if err := e.WriteStdin(ctx, acct, op, 1, Stdin{Close: ptr(true)}); err != nil {
			t.Fatal(err)
		}
	}
	closeStdin(first)
	if _, err := e.runningOp(ctx, acct, second); err != nil {
		t.Fatal(err)
	}
	waitQueue(t, e.queue, "third moves up", func() bool { return position(third) == 1 })
	if o, _ := e.Operation(ctx, acct, third); o.Status != apitypes.StatusPending {
		t.Fatalf("third is %s while second holds the only slot", o.Status)
	}
	closeStdin(second)
	for _, op := range []string{first, second, third} {
		if o := waitOp(t, e, op); o.Status != apitypes.StatusSuccess {
			t.Fatalf("%s: %s %s", op, o.Status, o.Error)
		}
	}
	s, _ := e.Operation(ctx, acct, second)
	th, _ := e.Operation(ctx, acct, third)
	if !th.StartedAt.After(s.StartedAt) {
		t.Fatalf("third started at %v, not after second at %v", th.StartedAt, s.StartedAt)
	}
}

// TestCPUWeights: a sandbox's cgroup gets cpu.shares in proportion to the
// CPUs its run asks (1024 per CPU, one CPU's worth when it asks none), so
// contended CPU is shared by weight; cpus stays its ceiling (quota).
func TestCPUWeights(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	e, err := New(ctx, Config{Home: testutil.Home(t), Runtime: "runc", WarmPerImage: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	base := busybox(t, e)
	for _, tc := range []struct {
		cpus          *float64
		shares, quota string
	}{
		{cpus: nil, shares: "1024", quota: "-1"},
		{cpus: ptr(0.5), shares: "512", quota: "50000"},
		{cpus: ptr(2.0), shares: "2048", quota: "200000"},
	} {
		op, _, err := e.Spawn(ctx, acct, SpawnRequest{Image: base, Command: "echo up; cat", Shell: ptr(true), Disposable: ptr(true),
			Stdin: &Stdin{Close: ptr(false)}, ResourcesLimits: &oplog.ResourcesLimits{CPUs: tc.cpus}})
		if err != nil {
			t.Fatal(err)
		}
		// The command runs, so its cgroup is in place.
		up := errors.New("up")
		if err := e.FollowEvents(ctx, acct, op, FollowOptions{After: -1, Follow: true}, func(ev Event) error {
			if ev.Type == apitypes.EventStdout {
				return up
			}
			return nil
		}); !errors.Is(err, up) {
			t.Fatalf("no output from the run: %v", err)
		}
		a := e.activeOf(op)
		a.mu.Lock()
		cid := a.sandbox.cid
		a.mu.Unlock()
		// cgroup v1 (these hosts are hybrid: the cpu controller is v1);
		// its name is the runtime's scope, then the sandbox's id.
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/cpu/arbor", "*-"+cid))
		if len(dirs) != 1 {
			t.Fatalf("cpu cgroups of sandbox %s: %v, want one", cid, dirs)
		}
		dir := dirs[0]
		shares, err := os.ReadFile(filepath.Join(dir, "cpu.shares"))
		if err != nil {
			t.Fatalf("read the sandbox's cpu cgroup: %v", err)
		}
		quota, err := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(shares)); got != tc.shares {
			t.Errorf("cpus %v: cpu.shares %s, want %s", deref(tc.cpus), got, tc.shares)
		}
		if got := strings.TrimSpace(string(quota)); got != tc.quota {
			t.Errorf("cpus %v: cpu.cfs_quota_us %s, want %s", deref(tc.cpus), got, tc.quota)
		}
		if err := e.WriteStdin(ctx, acct, op, 1, Stdin{Close: ptr(true)}); err != nil {
			t.Fatal(err)
		}
		if o := waitOp(t, e, op); o.Status != apitypes.StatusSuccess {
			t.Fatalf("%s %s", o.Status, o.Error)
		}
	}
}

func deref(f *float64) float64 {
	if f == nil {
		return 0
	}
	return *f
}

// TestAdmissionDefaults: the slots follow the memory budget (64 MiB of
// it each), not only the CPU count, while the default memory limit still
// lets max(8, 4 × CPUs) runs at the default, overheads included, fill the
// budget.
func TestAdmissionDefaults(t *testing.T) {
	testutil.RequiresRoot(t)
	const budget = 18 << 30
	e, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: "runc", MemoryBudget: budget, WarmPerImage: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	cpuSlots := max(8, 4*goruntime.NumCPU())
	if want := max(cpuSlots, budget/(64<<20)); e.cfg.Slots != want {
		t.Errorf("default slots %d with an 18 GiB budget, want %d", e.cfg.Slots, want)
	}
	if want := min(4<<30, int64(budget/cpuSlots)-runOverhead); e.cfg.DefaultMemoryBytes != want {
		t.Errorf("default memory %d, want %d (the budget over %d, less the overhead)", e.cfg.DefaultMemoryBytes, want, cpuSlots)
	}
	if n := int64(cpuSlots) * e.queue.charge(e.cfg.DefaultMemoryBytes); n > budget {
		t.Errorf("%d runs at the default memory take %d bytes of the %d-byte budget", cpuSlots, n, budget)
	}
	if e.queue.slots != e.cfg.Slots || e.queue.memory != budget || e.queue.overhead != runOverhead {
		t.Errorf("admission holds %d slots, %d bytes and a %d-byte overhead, want %d, %d and %d", e.queue.slots, e.queue.memory, e.queue.overhead, e.cfg.Slots, budget, runOverhead)
	}
}

// TestAdmissionOverhead: each run takes its limit plus the overhead out of
// the budget, and gives back as much; a run asking for the whole budget is
// charged the budget, so it runs alone instead of never.
func TestAdmissionOverhead(t *testing.T) {
	a := newAdmission(10, 100).withOverhead(10)
	ctx := context.Background()
	if err := <-acquireAsync(ctx, a, "a", 45); err != nil {
		t.Fatal(err)
	}
	if a.memory != 45 {
		t.Fatalf("after a 45-byte run: %d bytes free, want 45 (limit and overhead taken)", a.memory)
	}
	b := acquireAsync(ctx, a, "b", 45)
	waitQueue(t, a, "b waits: 55 more do not fit in 45", func() bool { return a.position("b") == 1 })
	a.release(45)
	if err := <-b; err != nil {
		t.Fatal(err)
	}
	a.release(45)
	if a.memory != 100 || a.slots != 10 {
		t.Fatalf("after every release: %d bytes and %d slots free, want 100 and 10", a.memory, a.slots)
	}
	if err := <-acquireAsync(ctx, a, "all", 100); err != nil {
		t.Fatal(err)
	}
	if a.memory != 0 {
		t.Fatalf("a run asking for the whole budget left %d bytes, want 0", a.memory)
	}
	a.release(100)
	if a.memory != 100 {
		t.Fatalf("after it: %d bytes free, want 100", a.memory)
	}
}
