package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// clusterNodeOn runs a cluster node (role all) on cl and a fresh bucket,
// with a lease that outlasts a PostgreSQL restart, and imports busybox.
func clusterNodeOn(ctx context.Context, t *testing.T, cl *pgtest.Cluster) (*client.Client, string) {
	t.Helper()
	_, _, blobs := s3Bucket(t, "arbor")
	c, _ := runDaemonWith(t, testutil.Home(t), func(cfg *Config) {
		blobs(cfg)
		cfg.DB = cl.DSN()
		cfg.LeaseTTL = time.Minute
		cfg.Engine.GCInterval = -1
	})
	img, err := testdaemon.ImportBusybox(ctx, c, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	return c, img
}

// stepDurableCommits is what a saved step in a cluster may wait for the
// disk for: the API node's insert of the queued run, the worker's claim,
// and the outcome (images, operation row, completion event).
const stepDurableCommits = 3

// TestClusterStepSyncCommits: a chained saved step on a cluster node with
// PostgreSQL's durable defaults makes no more commits that wait for the
// WAL flush than its insert, claim and outcome; its start and its events
// commit without waiting, and so do the layer holds of the shared bucket's
// collection.
func TestClusterStepSyncCommits(t *testing.T) {
	testutil.RequiresRoot(t)
	cl := pgtest.NewCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, img := clusterNodeOn(ctx, t, cl)
	step := func(i int) {
		t.Helper()
		op, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Image: img, Command: fmt.Sprintf("echo %d >> /log; echo step %d", i, i), Shell: ptr(true)})
		if err != nil || op.Status != apitypes.StatusSuccess || op.ResultImageUUID == nil {
			t.Fatalf("step %d: %v %+v", i, err, op)
		}
		img = *op.ResultImageUUID
	}
	step(0) // the chain's first layers are fetched and held
	pgtest.InstallCommitProbe(t, cl.DSN())
	step(1)
	pgtest.Commits(t, cl.DSN())
	step(2)
	var durable, holds, async []string
	for _, p := range pgtest.Commits(t, cl.DSN()) {
		what := strings.Join(p.Tables, "+")
		switch {
		case !p.Sync:
			async = append(async, what)
		case len(p.Tables) == 1 && p.Tables[0] == "layer_holds":
			holds = append(holds, what)
		default:
			durable = append(durable, what)
		}
	}
	t.Logf("durable commits: %v; layer holds (durable): %v; asynchronous: %v", durable, holds, async)
	if len(holds) > 0 {
		t.Errorf("the step's layer holds waited for the WAL flush %d times (%v), want none: they commit asynchronously", len(holds), holds)
	}
	if !slices.Contains(async, "layer_holds") {
		t.Errorf("no layer hold was written with an asynchronous commit: %v", async)
	}
	if len(durable) > stepDurableCommits {
		t.Errorf("a chained step made %d commits that wait for the WAL flush (%v), want at most %d: the insert, the claim and the outcome",
			len(durable), durable, stepDurableCommits)
	}
	if !slices.Contains(async, "events") {
		t.Errorf("no event was written with an asynchronous commit: %v", async)
	}
}

// TestClusterStepPostgresCrash: PostgreSQL crashes (immediate stop) after
// a saved run's asynchronous writes (its start, its first output) and
// before its outcome, and is started again. The run still ends exactly
// once, SUCCESS with its image, and its log is whole: the events the
// crash lost are written again with the outcome.
func TestClusterStepPostgresCrash(t *testing.T) {
	testutil.RequiresRoot(t)
	// The WAL writer writes asynchronous commits only every 10 s here, so
	// the crash loses them.
	cl := pgtest.NewClusterWith(t, "wal_writer_delay=10s", "wal_writer_flush_after=1GB", "bgwriter_lru_maxpages=0", "autovacuum=off")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, img := clusterNodeOn(ctx, t, cl)
	sp, err := c.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: img, Command: "echo before; sleep 6; echo after; echo x > /x", Shell: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	errSeen := errors.New("seen")
	err = c.StreamEvents(ctx, sp.UUID, client.EventsOptions{After: -1, Follow: true}, func(ev apitypes.OperationEvent) error {
		if outputOf(ev) == "before\n" {
			return errSeen
		}
		return nil
	})
	if !errors.Is(err, errSeen) {
		t.Fatalf("waiting for the run's first output: %v", err)
	}
	cl.Crash(t)
	cl.Start(t)
	if status, _, err := placement(ctx, cl.DSN(), sp.UUID); err == nil {
		n, _ := countEvents(ctx, cl.DSN(), sp.UUID)
		t.Logf("after the crash: the run is %s with %d events stored", status, n)
	}

	op, err := c.Wait(ctx, sp.UUID)
	if err != nil || op.Status != apitypes.StatusSuccess || op.ResultImageUUID == nil {
		t.Fatalf("the run across the crash: %v %+v", err, op)
	}
	if got, err := c.ReadFile(ctx, *op.ResultImageUUID, "/x"); err != nil || string(got) != "x\n" {
		t.Errorf("/x of its image = %q, %v", got, err)
	}
	var ids []int64
	var out strings.Builder
	completions := 0
	err = c.StreamEvents(ctx, sp.UUID, client.EventsOptions{After: -1}, func(ev apitypes.OperationEvent) error {
		ids = append(ids, ev.ID)
		if ev.Spid == 1 {
			out.WriteString(outputOf(ev))
		}
		if ev.Type == apitypes.EventCompletion {
			completions++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if id != int64(i) {
			t.Errorf("event IDs %v: a gap at %d", ids, i)
			break
		}
	}
	if completions != 1 || out.String() != "before\nafter\n" {
		t.Errorf("log: %d completion events, stdout %q; want one, and before and after", completions, out.String())
	}
	conn, err := pgx.Connect(ctx, cl.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var images int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM images WHERE operation=$1`, sp.UUID).Scan(&images); err != nil || images != 1 {
		t.Errorf("image rows of the run: %d (%v), want 1", images, err)
	}
}

func countEvents(ctx context.Context, dsn, op string) (int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM events WHERE operation=$1`, op).Scan(&n)
	return n, err
}
