package daemon

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layers/s3store"
	"github.com/arborsh/arbor/internal/store/postgres"
)

// openDB opens the PostgreSQL metadata store of --db and, with single,
// makes this node the database's only one (postgres.Store.SingleNode; Run
// stops when another node takes the database over, NodeLost): without
// shared layers (--blobs) and the queue, two nodes would fail each other's
// runs.
func openDB(ctx context.Context, url string, single bool, log *slog.Logger) (*postgres.Store, error) {
	if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") {
		return nil, errdefs.InvalidArgument("--db %q: want a postgres://user:password@host:port/database URL", url)
	}
	st, err := postgres.Open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("--db: %w", err)
	}
	st.SetLogger(log)
	if !single {
		return st, nil
	}
	if err := st.SingleNode(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("--db: %w", err)
	}
	return st, nil
}

// sharedBlobs makes a bucket whose metadata is in PostgreSQL safe to share
// with the database's other nodes: collection goes through the database
// (s3store.Guard: no image row names the layer, no node holds it) and
// spares objects younger than grace (0: s3store.DefaultGrace).
func sharedBlobs(sc *s3store.Config, pg *postgres.Store, grace time.Duration, log *slog.Logger) {
	if pg == nil {
		return
	}
	sc.Guard = pg.LayerGuard("", 0, log)
	sc.Grace = cmp.Or(grace, s3store.DefaultGrace)
}
