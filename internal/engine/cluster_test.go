package engine

import (
	"context"
	"encoding/json"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/store"
)

// notifyRecorder is a store.Cluster that records notifications; its first
// Notify blocks until released, as a slow database would.
type notifyRecorder struct {
	store.Cluster
	mu      sync.Mutex
	calls   [][]string
	entered chan struct{}
	release chan struct{}
}

func (r *notifyRecorder) Notify(ctx context.Context, channel string, payloads []string) error {
	r.mu.Lock()
	first := len(r.calls) == 0
	r.calls = append(r.calls, append([]string(nil), payloads...))
	r.mu.Unlock()
	if first {
		close(r.entered)
		<-r.release
	}
	return nil
}

// TestClusterNotifyCoalesced: the events of an operation wake other nodes
// with one notification per operation per flush, however many events the
// flush covers: 500 events appended while one notification is on its way
// cost one more, not 500.
func TestClusterNotifyCoalesced(t *testing.T) {
	rec := &notifyRecorder{entered: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := &Engine{log: slog.New(slog.DiscardHandler)}
	c := newCluster(e, ClusterConfig{Store: rec})
	done := make(chan struct{})
	go func() { c.notifier(ctx); close(done) }()
	c.grew("op1")
	<-rec.entered
	for range 500 {
		c.grew("op1")
		c.grew("op2")
	}
	close(rec.release)
	deadline := time.After(10 * time.Second)
	for {
		rec.mu.Lock()
		n := len(rec.calls)
		rec.mu.Unlock()
		if n >= 2 {
			break
		}
		select {
		case <-deadline:
			t.Fatal("no second notification")
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	<-done
	rec.mu.Lock()
	defer rec.mu.Unlock()
	count := map[string]int{}
	for _, call := range rec.calls {
		seen := map[string]bool{}
		for _, p := range call {
			if seen[p] {
				t.Errorf("operation %s twice in one flush: %v", p, call)
			}
			seen[p] = true
			count[p]++
		}
	}
	if len(rec.calls) != 2 || count["op1"] != 2 || count["op2"] != 1 {
		t.Errorf("notifications %v (per operation %v), want 2 flushes: op1, then op1 and op2 once", rec.calls, count)
	}
}

// TestSpawnRequestQueuedRoundTrip: a run's request survives the queue (its
// JSON in the operation's row) field by field, so a worker runs exactly
// what the API node validated.
func TestSpawnRequestQueuedRoundTrip(t *testing.T) {
	b, i64, f, s, i := true, int64(7), 2.5, "x", 3
	req := SpawnRequest{Command: "c", Image: "u", Disposable: &b, Hostname: &s, Args: []string{"a", ""}, Shell: &b,
		Env: map[string]string{"K": "v"}, PreserveEnv: &b, Cwd: &s, UID: &i, GID: &i,
		ResourcesLimits: &oplog.ResourcesLimits{MaxLayerBytes: &i64, MemoryBytes: &i64, Pids: &i64, CPUs: &f},
		Networking:      &Networking{Enabled: &b, Egress: &Egress{Allow: []string{"pypi.org"}, Deny: []string{"tcp:25"}}},
		Stdin:           &Stdin{Value: "aGk=", Encoding: "base64", Close: &b}, Timeout: &f, TruncateOutputAt: &i64,
		Files:   map[string]oplog.FileSpec{"/f": {UUID: "id", Mode: 0o755, UID: 1, GID: 2}},
		Runtime: &s, ResultTag: &s}
	raw, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var back SpawnRequest
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(req, back) {
		t.Errorf("request changed through the queue:\n got %+v\nwant %+v", back, req)
	}
}

// TestClusterWatchRelease: a follower's watch of an operation run elsewhere
// is dropped once its last follower lets go, so a wait on an operation that
// had already finished (never notified again) leaves no entry; a wake-up
// still reaches every follower, and a release after it leaves a newer
// follower's watch alone.
func TestClusterWatchRelease(t *testing.T) {
	c := newCluster(&Engine{log: slog.New(slog.DiscardHandler)}, ClusterConfig{})
	entries := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.watches)
	}
	a, releaseA := c.watch("op")
	b, releaseB := c.watch("op")
	if a != b {
		t.Fatal("two followers of one operation got different channels")
	}
	releaseA()
	if entries() != 1 {
		t.Fatal("watch dropped while a follower still waits")
	}
	releaseB()
	if entries() != 0 {
		t.Fatalf("%d watches left after every follower let go", entries())
	}

	old, releaseOld := c.watch("op")
	c.wake("op")
	select {
	case <-old:
	default:
		t.Fatal("wake-up did not close the follower's channel")
	}
	newer, releaseNewer := c.watch("op")
	releaseOld() // after the wake-up: must not touch the newer watch
	if entries() != 1 {
		t.Fatal("a release after a wake-up dropped a newer follower's watch")
	}
	c.wakeAll()
	select {
	case <-newer:
	default:
		t.Fatal("wakeAll did not close the newer follower's channel")
	}
	releaseNewer()
	if entries() != 0 {
		t.Fatalf("%d watches left", entries())
	}
}
