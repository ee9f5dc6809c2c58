package daemon

import (
	"context"
	"fmt"
	"strings"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store/postgres"
)

// openDB opens the PostgreSQL metadata store of --db and, with single,
// makes this node the database's only one (postgres.Store.SingleNode):
// without shared layers (--blobs) and the queue, two nodes would fail each
// other's runs.
func openDB(ctx context.Context, url string, single bool) (*postgres.Store, error) {
	if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") {
		return nil, errdefs.InvalidArgument("--db %q: want a postgres://user:password@host:port/database URL", url)
	}
	st, err := postgres.Open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("--db: %w", err)
	}
	if !single {
		return st, nil
	}
	if err := st.SingleNode(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("--db: %w", err)
	}
	return st, nil
}
