package postgres

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
)

// TestCheckpointRecords: a checkpoint's recorded size is read back by
// image and counts in its account's total only while its image is live
// (not before the image is committed, not once it is deleted), and goes
// with ForgetCheckpoint.
func TestCheckpointRecords(t *testing.T) {
	ctx := context.Background()
	s := openDSN(t, pgtest.DSN(t))
	q := NewQueue(s, store.QueueConfig{})
	total := func(account string) int64 {
		t.Helper()
		n, err := q.AccountCheckpointBytes(ctx, account)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	must(t, q.RecordCheckpoint(ctx, "i1", "a", 100))
	must(t, q.RecordCheckpoint(ctx, "i2", "a", 20))
	must(t, q.RecordCheckpoint(ctx, "i3", "b", 7))
	if n := total("a"); n != 0 {
		t.Errorf("account a's checkpoints before their images are committed: %d bytes, want 0", n)
	}
	for _, im := range []store.Image{{UUID: "i1", Account: "a"}, {UUID: "i2", Account: "a"}, {UUID: "i3", Account: "b"}} {
		im.Layer, im.Depth, im.CreatedAt = "l-"+im.UUID, 1, time.Now()
		must(t, s.InsertImage(ctx, im))
	}
	if a, b := total("a"), total("b"); a != 120 || b != 7 {
		t.Errorf("accounts' checkpoints: a %d, b %d; want 120 and 7", a, b)
	}
	sizes, err := q.CheckpointSizes(ctx, []string{"i1", "i3", "none"})
	if err != nil || !maps.Equal(sizes, map[string]int64{"i1": 100, "i3": 7}) {
		t.Errorf("CheckpointSizes = %v, %v", sizes, err)
	}
	must(t, s.DeleteImage(ctx, "a", "i2"))
	if n := total("a"); n != 100 {
		t.Errorf("account a's checkpoints with i2 deleted: %d bytes, want 100", n)
	}
	must(t, q.ForgetCheckpoint(ctx, "i1"))
	must(t, q.ForgetCheckpoint(ctx, "i1")) // a no-op
	if sizes, err := q.CheckpointSizes(ctx, []string{"i1"}); err != nil || len(sizes) != 0 {
		t.Errorf("CheckpointSizes after ForgetCheckpoint = %v, %v", sizes, err)
	}
	if n := total("a"); n != 0 {
		t.Errorf("account a's checkpoints with i1 forgotten: %d bytes, want 0", n)
	}
}
