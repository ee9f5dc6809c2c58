package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
)

// TestRestartUnavailableThenBack: while PostgreSQL is down the store's
// calls fail as unavailable, naming the database; once it is back the
// same store works again, and the single-node lock, which went with its
// connection, is held again: a second node is still refused.
func TestRestartUnavailableThenBack(t *testing.T) {
	cl := pgtest.NewCluster(t)
	ctx := context.Background()
	s := openDSN(t, cl.DSN())
	must(t, s.SingleNode(ctx))
	must(t, s.InsertImage(ctx, store.Image{UUID: "before", Account: "a", Layer: "l", Depth: 1, CreatedAt: time.Now()}))

	cl.Stop(t)
	_, err := s.ImageAny(ctx, "before")
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "metadata database unavailable (PostgreSQL") || !strings.Contains(err.Error(), "/arbor") {
		t.Errorf("a read with PostgreSQL down = %v, want unavailable naming the database", err)
	}
	err = s.Update(ctx, func(tx store.Tx) error {
		return tx.InsertImage(ctx, store.Image{UUID: "during", Account: "a", Layer: "l", Depth: 1, CreatedAt: time.Now()})
	})
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("a write with PostgreSQL down = %v, want unavailable", err)
	}
	cl.Start(t)

	if _, err := s.ImageAny(ctx, "before"); err != nil {
		t.Errorf("a read after the restart: %v", err)
	}
	s.checkNode <- struct{}{}
	deadline := time.Now().Add(30 * time.Second)
	for !nodeLockHeld(t, s) {
		if time.Now().After(deadline) {
			t.Fatal("the single-node lock was not taken again after the restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	other := openDSN(t, cl.DSN())
	if err := other.SingleNode(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a second node after the restart: %v, want it refused", err)
	}
	select {
	case err := <-s.NodeLost():
		t.Errorf("node lost: %v", err)
	default:
	}
}

// TestNodeLockTakenOver: a node whose lock another node took while its
// connection was down says so on NodeLost (the daemon then stops).
func TestNodeLockTakenOver(t *testing.T) {
	cl := pgtest.NewCluster(t)
	ctx := context.Background()
	s := openDSN(t, cl.DSN())
	must(t, s.SingleNode(ctx))
	cl.Stop(t)
	cl.Start(t)
	other := openDSN(t, cl.DSN())
	must(t, other.SingleNode(ctx)) // before s notices its connection is gone
	s.checkNode <- struct{}{}
	select {
	case err := <-s.NodeLost():
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "another arbor node took this database") {
			t.Errorf("NodeLost = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the node never noticed it lost the database")
	}
}

// nodeLockHeld reports whether some session holds the single-node lock.
func nodeLockHeld(t *testing.T, s *Store) bool {
	var n int
	err := s.pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_locks WHERE locktype='advisory' AND classid=$1 AND objid=0 AND objsubid=2 AND granted`, lockNode).Scan(&n)
	if errors.Is(err, errdefs.ErrUnavailable) {
		return false // a pooled connection from before the restart
	}
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestNodeLockRetakenAfterOutage: a node that notices during the outage
// that its lock's connection is gone takes the lock again once the
// database is back, and stays the only node.
func TestNodeLockRetakenAfterOutage(t *testing.T) {
	cl := pgtest.NewCluster(t)
	ctx := context.Background()
	s := openDSN(t, cl.DSN())
	must(t, s.SingleNode(ctx))
	cl.Stop(t)
	s.checkNode <- struct{}{} // notices now, while the database is down
	cl.Start(t)
	deadline := time.Now().Add(30 * time.Second)
	for !nodeLockHeld(t, s) {
		select {
		case err := <-s.NodeLost():
			t.Fatalf("node lost: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the single-node lock was not taken again after the outage")
		}
		time.Sleep(50 * time.Millisecond)
	}
	other := openDSN(t, cl.DSN())
	if err := other.SingleNode(ctx); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a second node after the outage: %v, want it refused", err)
	}
}
