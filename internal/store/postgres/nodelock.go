package postgres

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/arborsh/arbor/internal/errdefs"
)

// The single-node lock is a session lock: it goes with its connection. A
// PostgreSQL restart, a failover or a dropped TCP connection ends it
// without a word, and a second node could then take the database while
// this one still runs. watchNode checks the connection and, when it is
// gone, takes the lock again on a new one as soon as the database answers;
// if another node took it meanwhile, NodeLost reports it and the node must
// stop.

// nodeCheckEvery is how often the lock's connection is checked.
var nodeCheckEvery = 2 * time.Second

// SetLogger sets where the store reports on its single-node lock.
func (s *Store) SetLogger(l *slog.Logger) { s.log = l }

// NodeLost returns a channel that receives an error once this node's
// single-node lock was taken by another node while its connection was
// down; nil before SingleNode.
func (s *Store) NodeLost() <-chan error { return s.lost }

func (s *Store) logger() *slog.Logger {
	if s.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.log
}

func (s *Store) watchNode(conn *pgx.Conn) {
	defer close(s.watchDone)
	t := time.NewTicker(nodeCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopWatch:
			conn.Close(context.Background())
			return
		case <-t.C:
		case <-s.checkNode:
		}
		ctx, cancel := context.WithTimeout(context.Background(), nodeCheckEvery)
		err := conn.Ping(ctx)
		cancel()
		if err == nil {
			continue
		}
		conn.Close(context.Background())
		s.logger().Warn("the single-node lock's connection to PostgreSQL is gone; taking the lock again once the database answers", "err", err)
		var taken bool
		conn, taken = s.retakeNode()
		if conn == nil {
			if taken {
				s.lost <- errdefs.FailedPrecondition("another arbor node took this database while this node's connection to it was down: stopping this node (one node per database for now)")
			}
			return
		}
		s.logger().Info("single-node lock taken again")
	}
}

// retakeNode connects and takes the lock again, retrying while the
// database does not answer. It returns nil when stopped or when another
// node holds the lock (taken).
func (s *Store) retakeNode() (conn *pgx.Conn, taken bool) {
	wait := 100 * time.Millisecond
	for {
		select {
		case <-s.stopWatch:
			return nil, false
		default:
		}
		c, got, err := s.takeNode(context.Background())
		switch {
		case err == nil && got:
			return c, false
		case err == nil:
			return nil, true
		}
		select {
		case <-s.stopWatch:
			return nil, false
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// takeNode opens a connection and tries the session lock on it; the
// connection is returned only when got.
func (s *Store) takeNode(ctx context.Context) (conn *pgx.Conn, got bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err = pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, false, err
	}
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, 0)`, lockNode).Scan(&got); err != nil || !got {
		conn.Close(ctx)
		return nil, false, err
	}
	return conn, true, nil
}
