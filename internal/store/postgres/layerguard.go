package postgres

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
)

// Advisory lock classes of the shared layer collection (kept apart from
// lockMigrate..lockNode and from what other features add there).
const (
	// lockLayerGC: one collection pass at a time across nodes (a try-lock
	// held by the pass's transaction).
	lockLayerGC = 20
	// lockLayerHolds: taken shared by a Hold, exclusive by a batch of a
	// collection while it decides and deletes, so a hold is either seen
	// by the batch or written after its objects are gone.
	lockLayerHolds = 21
)

// DefaultHoldTTL is how long a layer hold lasts without renewal.
const DefaultHoldTTL = 2 * time.Minute

// gcBatch bounds the layers one locked batch of a collection decides and
// deletes: holds on every node wait for the batch.
const gcBatch = 64

// LayerGuard is the database side of a bucket shared by the nodes of one
// database (s3store.Guard): this node's holds on layers, and the
// collection that deletes a layer only when no image row names it and no
// node holds it.
type LayerGuard struct {
	pool *Store
	node string
	ttl  time.Duration
	log  *slog.Logger
}

// LayerGuard returns the guard of node (unique among the database's
// nodes; "" makes one from the host name and a random suffix) whose holds
// last ttl (0: DefaultHoldTTL) unless renewed.
func (s *Store) LayerGuard(node string, ttl time.Duration, log *slog.Logger) *LayerGuard {
	if node == "" {
		host, _ := os.Hostname()
		node = host + "-" + rand.Text()[:8]
	}
	if ttl <= 0 {
		ttl = DefaultHoldTTL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &LayerGuard{pool: s, node: node, ttl: ttl, log: log}
}

// Node returns the name this guard holds layers under.
func (g *LayerGuard) Node() string { return g.node }

// TTL is how long a hold lasts without renewal.
func (g *LayerGuard) TTL() time.Duration { return g.ttl }

// Hold holds ids for this node until Release or TTL after the last
// renewal, and returns those of ids no image row names. Holds, their
// renewals and releases commit asynchronously (see async.go).
func (g *LayerGuard) Hold(ctx context.Context, ids []string) (unnamed []string, err error) {
	// One round trip: a batch runs in one implicit transaction (a hold is
	// on the path of every commit of a layer).
	b := &pgx.Batch{}
	b.Queue(asyncCommit)
	b.Queue(`SELECT pg_advisory_xact_lock_shared($1, 0)`, lockLayerHolds)
	b.Queue(`INSERT INTO layer_holds(layer, node, expires_at)
		SELECT DISTINCT l, $2, clock_timestamp() + make_interval(secs => $3) FROM unnest($1::text[]) l
		ON CONFLICT (layer, node) DO UPDATE SET expires_at = EXCLUDED.expires_at`, ids, g.node, g.ttl.Seconds())
	b.Queue(`SELECT l FROM unnest($1::text[]) l
		WHERE NOT EXISTS (SELECT 1 FROM images i WHERE i.layer = l) AND NOT EXISTS (SELECT 1 FROM images i WHERE i.flat = l)`, ids)
	br := g.pool.pool.SendBatch(ctx, b)
	for range 3 {
		if _, err = br.Exec(); err != nil {
			break
		}
	}
	if err == nil {
		var rows pgx.Rows
		if rows, err = br.Query(); err == nil {
			unnamed, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return unnamed, g.pool.pool.classify(err)
}

// Release ends this node's holds on ids.
func (g *LayerGuard) Release(ctx context.Context, ids []string) error {
	_, err := g.pool.pool.execAsync(ctx, `DELETE FROM layer_holds WHERE node=$1 AND layer = ANY($2)`, g.node, ids)
	return err
}

// Renew extends this node's holds by TTL from now and returns how many
// there are.
func (g *LayerGuard) Renew(ctx context.Context) (int, error) {
	tag, err := g.pool.pool.execAsync(ctx, `UPDATE layer_holds SET expires_at = clock_timestamp() + make_interval(secs => $2) WHERE node=$1`,
		g.node, g.ttl.Seconds())
	return int(tag.RowsAffected()), err
}

// layerFree is when collection may delete layer l's object: no image row
// (live, deleted or hidden: a row is purged only once nothing needs it)
// names it as its layer or flat layer, and no unexpired hold holds it.
const layerFree = `NOT EXISTS (SELECT 1 FROM images i WHERE i.layer = l)
	AND NOT EXISTS (SELECT 1 FROM images i WHERE i.flat = l)
	AND NOT EXISTS (SELECT 1 FROM layer_holds h WHERE h.layer = l AND h.expires_at > clock_timestamp())`

// fileFree is when collection may delete the object of uploaded content l
// (its sha256): no file record names it, and no node holds it (a hold on
// "files/<sha256>": an upload of that content between its lookup and its
// record).
const fileFree = `NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = l)
	AND NOT EXISTS (SELECT 1 FROM layer_holds h WHERE h.layer = ` + "'" + fileHoldPrefix + "'" + ` || l AND h.expires_at > clock_timestamp())`

// fileHoldPrefix keys a hold on uploaded content in layer_holds (a layer
// id never contains a slash; s3store.Store.HoldFile holds these).
const fileHoldPrefix = "files/"

// Collect deletes through del those of ids that no image row names and no
// live hold holds (layerFree). The pass holds a transaction-level advisory
// lock: a node that finds another collecting deletes nothing. Each batch
// decides and deletes under the exclusive holds lock, so a node's Hold
// waits for at most one batch.
func (g *LayerGuard) Collect(ctx context.Context, ids []string, del func(ctx context.Context, ids []string) ([]string, error)) ([]string, error) {
	return g.collect(ctx, "layer", ids, layerFree, del)
}

// Collectable returns those of ids a Collect would delete now, deleting
// nothing (a dry run).
func (g *LayerGuard) Collectable(ctx context.Context, ids []string) ([]string, error) {
	return g.free(ctx, ids, layerFree, nil)
}

// CollectFiles is Collect for uploaded contents (by sha256): those no file
// record names and no node holds (fileFree), under the same lock.
func (g *LayerGuard) CollectFiles(ctx context.Context, shas []string, del func(ctx context.Context, shas []string) ([]string, error)) ([]string, error) {
	return g.collect(ctx, "file", shas, fileFree, del)
}

// CollectableFiles returns those of shas a CollectFiles would delete now,
// counting the contents in unnamed as named by no record (a dry run of a
// pass that deletes their records first).
func (g *LayerGuard) CollectableFiles(ctx context.Context, shas, unnamed []string) ([]string, error) {
	if unnamed == nil {
		unnamed = []string{}
	}
	return g.free(ctx, shas, `(l = ANY($2) OR NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = l))
		AND NOT EXISTS (SELECT 1 FROM layer_holds h WHERE h.layer = `+"'"+fileHoldPrefix+"'"+` || l AND h.expires_at > clock_timestamp())`, unnamed)
}

// free returns those of ids that cond (on l) lets go; unnamed, if not
// nil, is its $2.
func (g *LayerGuard) free(ctx context.Context, ids []string, cond string, unnamed []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	args := []any{ids}
	if unnamed != nil {
		args = append(args, unnamed)
	}
	rows, err := g.pool.pool.Query(ctx, `SELECT l FROM unnest($1::text[]) l WHERE `+cond, args...)
	if err != nil {
		return nil, fmt.Errorf("shared collection: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// collect deletes through del those of ids that cond lets go, one pass at
// a time across the nodes (see Collect).
func (g *LayerGuard) collect(ctx context.Context, what string, ids []string, cond string, del func(ctx context.Context, ids []string) ([]string, error)) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	pass, err := g.pool.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s collection: %w", what, err)
	}
	defer pass.Rollback(context.WithoutCancel(ctx))
	var mine bool
	if err := pass.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1, 0)`, lockLayerGC).Scan(&mine); err != nil {
		return nil, fmt.Errorf("%s collection: %w", what, err)
	}
	if !mine {
		g.log.Info("gc: another node is collecting the shared bucket; leaving it to that one", "objects", what)
		return nil, nil
	}
	var out []string
	for start := 0; start < len(ids); start += gcBatch {
		batch := ids[start:min(start+gcBatch, len(ids))]
		err := inTx(ctx, g.pool.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, 0)`, lockLayerHolds); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `SELECT l FROM unnest($1::text[]) l WHERE `+cond, batch)
			if err != nil {
				return err
			}
			free, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil || len(free) == 0 {
				return err
			}
			gone, err := del(ctx, free)
			out = append(out, gone...)
			return err
		})
		if err != nil {
			return out, fmt.Errorf("%s collection: %w", what, err)
		}
	}
	// Holds of nodes that died long ago.
	if _, err := pass.Exec(ctx, `DELETE FROM layer_holds WHERE expires_at < clock_timestamp() - interval '1 hour'`); err != nil {
		return out, fmt.Errorf("%s collection: %w", what, err)
	}
	return out, pass.Commit(ctx)
}

// lockGCPass: one retention and collection pass of the engine at a time
// across the nodes (store.PassLocker).
const lockGCPass = 22

// TryPassLock takes the engine's pass lock (a transaction-level advisory
// lock, held by a transaction open for the pass) unless another node holds
// it (see store.PassLocker).
func (s *Store) TryPassLock(ctx context.Context) (release func(), ok bool, err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("collection lock: %w", err)
	}
	end := func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1, 0)`, lockGCPass).Scan(&ok); err != nil || !ok {
		end()
		if err != nil {
			return nil, false, fmt.Errorf("collection lock: %w", err)
		}
		return nil, false, nil
	}
	return end, true, nil
}
