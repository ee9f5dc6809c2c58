package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/arborsh/arbor/internal/store"
)

// fileExpiry is the selection's condition (after WHERE) with its args.
func fileExpiry(f store.FileExpiry, a *args) string {
	q := `updated_at < ` + a.add(f.UsedBefore)
	if f.Account != "" {
		q += ` AND account=` + a.add(f.Account)
	} else if len(f.Except) > 0 {
		q += ` AND NOT (account = ANY(` + a.add(f.Except) + `))`
	}
	return q
}

// ExpireFiles deletes the file records f selects in one transaction and
// returns them and the contents no record names any more (see
// [store.Files]); a dry run rolls its transaction back.
func (s *Store) ExpireFiles(ctx context.Context, f store.FileExpiry) (gone []store.File, orphans []string, err error) {
	var a args
	cond := fileExpiry(f, &a)
	err = inTx(ctx, s.pool, func(tx pgx.Tx) error {
		// FOR UPDATE: a concurrent upload of the same content waits, so
		// an orphan reported here has no record when the caller removes it.
		rows, err := tx.Query(ctx, `SELECT `+fileCols+` FROM files WHERE `+cond+` ORDER BY uuid FOR UPDATE`, a...)
		if err != nil {
			return err
		}
		if gone, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.File, error) { return scanFile(r) }); err != nil || len(gone) == 0 {
			return err
		}
		if !f.DryRun {
			if _, err := tx.Exec(ctx, `DELETE FROM files WHERE `+cond, a...); err != nil {
				return err
			}
		}
		shas := make([]string, 0, len(gone))
		for _, r := range gone {
			shas = append(shas, r.SHA256)
		}
		// Contents no record outside the selection names.
		b := append(args{}, a...)
		rows, err = tx.Query(ctx, `SELECT DISTINCT s FROM unnest(`+b.add(shas)+`::text[]) AS s
			WHERE NOT EXISTS (SELECT 1 FROM files WHERE sha256=s AND NOT (`+cond+`)) ORDER BY s`, b...)
		if err != nil {
			return err
		}
		if orphans, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if f.DryRun {
			return errDryRun
		}
		return nil
	})
	if errors.Is(err, errDryRun) {
		err = nil
	}
	if err != nil {
		return nil, nil, err
	}
	return gone, orphans, nil
}

// errDryRun rolls back a dry run's transaction.
var errDryRun = errors.New("dry run")

// TouchFiles marks account's files uuids used at at (never earlier than
// they were) and returns how many it found.
func (s *Store) TouchFiles(ctx context.Context, account string, uuids []string, at time.Time) (int, error) {
	if len(uuids) == 0 {
		return 0, nil
	}
	res, err := s.pool.Exec(ctx, `UPDATE files SET updated_at=GREATEST(updated_at, $1) WHERE account=$2 AND uuid = ANY($3)`, at, account, uuids)
	if err != nil {
		return 0, err
	}
	return int(res.RowsAffected()), nil
}

// NamedContents returns those of shas that a file record names.
func (s *Store) NamedContents(ctx context.Context, shas []string) (map[string]bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT sha256 FROM files WHERE sha256 = ANY($1)`, shas)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	var sha string
	_, err = pgx.ForEachRow(rows, []any{&sha}, func() error { out[sha] = true; return nil })
	return out, err
}
