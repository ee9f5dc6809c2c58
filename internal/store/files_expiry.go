package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"
)

// FileExpiry selects the uploaded files retention deletes.
type FileExpiry struct {
	// Account limits the selection to one account; "" selects every
	// account but those in Except.
	Account string
	Except  []string
	// UsedBefore: files last uploaded or named by a run (UpdatedAt, see
	// TouchFiles) before this time.
	UsedBefore time.Time
	// DryRun selects without deleting.
	DryRun bool
}

func (f FileExpiry) where() (string, []any) {
	cond, args := accountFilter(f.Account, f.Except)
	return ` FROM files WHERE updated_at < ?` + cond, append([]any{f.UsedBefore.UnixNano()}, args...)
}

// accountFilter is the condition (to follow others with AND) that
// selects account, or every account but except when account is "".
func accountFilter(account string, except []string) (string, []any) {
	switch {
	case account != "":
		return ` AND account=?`, []any{account}
	case len(except) > 0:
		args := make([]any, 0, len(except))
		for _, a := range except {
			args = append(args, a)
		}
		return ` AND account NOT IN (?` + strings.Repeat(",?", len(except)-1) + `)`, args
	}
	return "", nil
}

// ExpireFiles deletes the file records f selects, in one transaction, and
// returns them and the contents (sha256) no record names any more, whose
// blobs the caller removes. With f.DryRun it deletes nothing and reports
// what would go.
func (s *Store) ExpireFiles(ctx context.Context, f FileExpiry) (gone []File, orphans []string, err error) {
	q, args := f.where()
	err = s.sqlTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+fileCols+q, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			r, err := scanFile(rows)
			if err != nil {
				rows.Close()
				return err
			}
			gone = append(gone, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(gone) == 0 {
			return err
		}
		if !f.DryRun {
			if _, err := tx.ExecContext(ctx, `DELETE`+q, args...); err != nil {
				return err
			}
		}
		// Contents no record outside the selection names.
		seen := map[string]bool{}
		for _, r := range gone {
			if seen[r.SHA256] {
				continue
			}
			seen[r.SHA256] = true
			var n int
			// Not in the selection: NOT (its condition), args in order.
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM files WHERE sha256=? AND NOT (`+strings.TrimPrefix(q, ` FROM files WHERE `)+`)`,
				append([]any{r.SHA256}, args...)...).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				orphans = append(orphans, r.SHA256)
			}
		}
		if f.DryRun {
			return errDryRun // roll back: a dry run writes nothing
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

// TouchFiles sets UpdatedAt of account's files uuids to at: a run named
// them, so they count as used. It returns how many records it found.
func (s *Store) TouchFiles(ctx context.Context, account string, uuids []string, at time.Time) (int, error) {
	if len(uuids) == 0 {
		return 0, nil
	}
	args := []any{at.UnixNano(), account}
	for _, u := range uuids {
		args = append(args, u)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE files SET updated_at=MAX(updated_at, ?) WHERE account=? AND uuid IN (?`+strings.Repeat(",?", len(uuids)-1)+`)`, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// errDryRun rolls back a dry run's transaction.
var errDryRun = errors.New("dry run")

// NamedContents returns those of shas that a file record names.
func (s *Store) NamedContents(ctx context.Context, shas []string) (map[string]bool, error) {
	out := map[string]bool{}
	for start := 0; start < len(shas); start += 500 { // well under SQLite's bound on parameters
		batch := shas[start:min(start+500, len(shas))]
		args := make([]any, len(batch))
		for i, sha := range batch {
			args[i] = sha
		}
		rows, err := s.r.QueryContext(ctx, `SELECT DISTINCT sha256 FROM files WHERE sha256 IN (?`+strings.Repeat(",?", len(batch)-1)+`)`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var sha string
			if err := rows.Scan(&sha); err != nil {
				rows.Close()
				return nil, err
			}
			out[sha] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
