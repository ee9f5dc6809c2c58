package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
	"github.com/jackc/pgx/v5"
)

// EnsureAccount creates the account unless its id or name exists, and
// returns the account named name.
func (s *Store) EnsureAccount(ctx context.Context, id, name string) (store.Account, error) {
	_, err := s.pool.Exec(ctx, `INSERT INTO accounts(id, name, created_at) VALUES($1,$2,clock_timestamp()) ON CONFLICT DO NOTHING`, id, name)
	if err != nil {
		return store.Account{}, err
	}
	return s.AccountByName(ctx, name)
}

// AccountByName finds an account.
func (s *Store) AccountByName(ctx context.Context, name string) (store.Account, error) {
	var a store.Account
	err := s.pool.QueryRow(ctx, `SELECT id, name, created_at FROM accounts WHERE name=$1`, name).Scan(&a.ID, &a.Name, &a.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return a, errdefs.NotFound("account %q not found", name)
	}
	return a, err
}

// CreateToken stores a token. One with a Parent is stored only while the
// parent is neither revoked nor expired; the token-tree lock orders it
// with revocations, so a revocation's subtree always includes a child
// created before it, and a child created after it is refused.
func (s *Store) CreateToken(ctx context.Context, t store.Token, secret string) error {
	created := t.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	insert := func(q querier) (int64, error) {
		tag, err := q.Exec(ctx, `INSERT INTO tokens(uuid, account, secret_sha256, name, created_at, expires_at, parent)
			SELECT $1::text,$2::text,$3::text,$4::text,$5::timestamptz,$6::timestamptz,$7::text WHERE $7::text IS NULL OR EXISTS (
				SELECT 1 FROM tokens WHERE uuid=$7::text AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > clock_timestamp()))`,
			t.UUID, t.Account, store.HashSecret(secret), t.Name, created, nullTime(t.ExpiresAt), nullStr(t.Parent))
		if isForeignKey(err) {
			return 0, errdefs.NotFound("account %q of token %s not found", t.Account, t.UUID)
		}
		return tag.RowsAffected(), classify(err, "token %s, or one with the same secret, exists", t.UUID)
	}
	if t.Parent == "" {
		_, err := insert(s.pool)
		return err
	}
	return inTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lock(ctx, tx, lockTokens, ""); err != nil {
			return err
		}
		n, err := insert(tx)
		if err != nil {
			return err
		}
		if n == 0 {
			return errdefs.Unauthorized("token %s was revoked or has expired: it cannot create tokens", t.Parent)
		}
		return nil
	})
}

const tokenCols = `uuid, account, name, created_at, expires_at, revoked_at, parent`

func scanTokens(rows pgx.Rows) ([]store.Token, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Token, error) {
		var t store.Token
		var exp, rev *time.Time
		var parent *string
		err := r.Scan(&t.UUID, &t.Account, &t.Name, &t.CreatedAt, &exp, &rev, &parent)
		t.ExpiresAt, t.RevokedAt, t.Parent = tm(exp), tm(rev), str(parent)
		return t, err
	})
}

// TokenBySecret finds an active token by its secret.
func (s *Store) TokenBySecret(ctx context.Context, secret string) (store.Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenCols+` FROM tokens WHERE secret_sha256=$1`, store.HashSecret(secret))
	if err != nil {
		return store.Token{}, err
	}
	ts, err := scanTokens(rows)
	if err != nil {
		return store.Token{}, err
	}
	return store.ActiveToken(ts, time.Now())
}

// ListTokens lists an account's tokens, oldest first.
func (s *Store) ListTokens(ctx context.Context, account string) ([]store.Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenCols+` FROM tokens WHERE account=$1 ORDER BY created_at, uuid`, account)
	if err != nil {
		return nil, err
	}
	return scanTokens(rows)
}

// RevokeToken revokes account's token uuid and every token below it.
func (s *Store) RevokeToken(ctx context.Context, account, uuid string) error {
	return inTx(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lock(ctx, tx, lockTokens, ""); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE tokens SET revoked_at=clock_timestamp() WHERE account=$1 AND uuid=$2 AND revoked_at IS NULL`, account, uuid)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errdefs.NotFound("token %s not found or already revoked", uuid)
		}
		_, err = tx.Exec(ctx, `WITH RECURSIVE below(uuid) AS (
				SELECT uuid FROM tokens WHERE parent=$1
				UNION SELECT t.uuid FROM tokens t JOIN below b ON t.parent=b.uuid)
			UPDATE tokens SET revoked_at=clock_timestamp() WHERE uuid IN (SELECT uuid FROM below) AND revoked_at IS NULL`, uuid)
		return err
	})
}

const imageCols = `uuid, account, parent, layer, flat, depth, tag, operation, env, layer_bytes, created_at, deleted_at, base, hidden, chain, flat_bytes`

func scanImage(row pgx.Row) (store.Image, error) {
	var im store.Image
	var parent, flat, tag, op, env, base, chain *string
	var deleted *time.Time
	err := row.Scan(&im.UUID, &im.Account, &parent, &im.Layer, &flat, &im.Depth, &tag, &op, &env, &im.LayerBytes, &im.CreatedAt, &deleted,
		&base, &im.Hidden, &chain, &im.FlatBytes)
	im.Parent, im.Flat, im.Tag, im.Operation, im.Env = str(parent), str(flat), str(tag), str(op), str(env)
	im.Base, im.Chain = str(base), str(chain)
	im.Deleted = deleted != nil
	return im, err
}

func (s *Store) queryImages(ctx context.Context, q string, args ...any) ([]store.Image, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Image, error) { return scanImage(r) })
}

func (s *Store) oneImage(ctx context.Context, notFound error, q string, args ...any) (store.Image, error) {
	im, err := scanImage(s.pool.QueryRow(ctx, q, args...))
	if errors.Is(err, pgx.ErrNoRows) {
		return im, notFound
	}
	return im, err
}

// InsertImage writes a new image row.
func (s *Store) InsertImage(ctx context.Context, im store.Image) error {
	return insertImage(ctx, s.pool, im)
}

func insertImage(ctx context.Context, q querier, im store.Image) error {
	write := func(q querier) error {
		_, err := q.Exec(ctx, `INSERT INTO images(uuid, account, parent, layer, flat, depth, tag, operation, env, layer_bytes, created_at, base, hidden, chain)
			VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)`,
			im.UUID, im.Account, nullStr(im.Parent), im.Layer, nullStr(im.Flat), im.Depth, nullStr(im.Tag), nullStr(im.Operation), nullStr(im.Env),
			im.LayerBytes, im.CreatedAt, nullStr(im.Base), im.Hidden, nullStr(im.Chain))
		return classify(err, "image %s, its tag %q or its chain %q exists in account %s", im.UUID, im.Tag, im.Chain, im.Account)
	}
	if im.Tag == "" {
		return write(q)
	}
	// A tagged insert waits for a retag of the same tag to commit, so it
	// meets the tag where the retag put it.
	return inTx(ctx, q, func(tx pgx.Tx) error {
		if err := lock(ctx, tx, lockTag, im.Account+"\n"+im.Tag); err != nil {
			return err
		}
		return write(tx)
	})
}

// InsertImages writes new image rows in one transaction: all or none.
func (s *Store) InsertImages(ctx context.Context, ims ...store.Image) error {
	return inTx(ctx, s.pool, func(tx pgx.Tx) error {
		for _, im := range ims {
			if err := insertImage(ctx, tx, im); err != nil {
				return fmt.Errorf("record image %s: %w", im.UUID, err)
			}
		}
		return nil
	})
}

// ImageAny returns an image row by uuid whatever its account, deletion or
// hiding.
func (s *Store) ImageAny(ctx context.Context, uuid string) (store.Image, error) {
	return s.oneImage(ctx, errdefs.NotFound("image %s not found", uuid), `SELECT `+imageCols+` FROM images WHERE uuid=$1`, uuid)
}

// Image returns a live image of account.
func (s *Store) Image(ctx context.Context, account, uuid string) (store.Image, error) {
	return s.oneImage(ctx, errdefs.NotFound("image %s not found", uuid),
		`SELECT `+imageCols+` FROM images WHERE uuid=$1 AND account=$2 AND deleted_at IS NULL AND NOT hidden`, uuid, account)
}

// ImageByTag returns account's live image tagged tag.
func (s *Store) ImageByTag(ctx context.Context, account, tag string) (store.Image, error) {
	return s.oneImage(ctx, errdefs.NotFound("no image with tag %q", tag),
		`SELECT `+imageCols+` FROM images WHERE account=$1 AND tag=$2 AND deleted_at IS NULL AND NOT hidden`, account, tag)
}

// args builds a query's positional arguments.
type args []any

// add appends v and returns its placeholder.
func (a *args) add(v any) string {
	*a = append(*a, v)
	return fmt.Sprintf("$%d", len(*a))
}

// ListImages lists live images, newest first; an exact tag match first.
func (s *Store) ListImages(ctx context.Context, f store.ImageFilter) ([]store.Image, error) {
	var a args
	q := `SELECT ` + imageCols + ` FROM images WHERE account=` + a.add(f.Account) + ` AND deleted_at IS NULL AND NOT hidden`
	if f.TagPrefix != "" {
		q += ` AND starts_with(tag, ` + a.add(f.TagPrefix) + `)`
	}
	if f.Tagged {
		q += ` AND tag IS NOT NULL`
	}
	if f.UUID != "" {
		q += ` AND uuid=` + a.add(f.UUID)
	}
	if f.UUIDPrefix != "" {
		q += ` AND starts_with(uuid, ` + a.add(f.UUIDPrefix) + `)`
	}
	if f.Parent != "" {
		q += ` AND parent=` + a.add(f.Parent)
	}
	if !f.Since.IsZero() {
		q += ` AND created_at >= ` + a.add(f.Since)
	}
	if !f.Until.IsZero() {
		q += ` AND created_at <= ` + a.add(f.Until)
	}
	order := ` ORDER BY created_at DESC, uuid`
	if f.TagPrefix != "" {
		order = ` ORDER BY tag = ` + a.add(f.TagPrefix) + ` DESC, created_at DESC, uuid`
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q += order + ` LIMIT ` + a.add(f.Limit) + ` OFFSET ` + a.add(f.Offset)
	return s.queryImages(ctx, q, a...)
}

// AllImages returns every image row.
func (s *Store) AllImages(ctx context.Context) ([]store.Image, error) {
	return s.queryImages(ctx, `SELECT `+imageCols+` FROM images`)
}

// SetTag moves tag to account's live image uuid.
func (s *Store) SetTag(ctx context.Context, account, uuid, tag string) error {
	return setTag(ctx, s.pool, account, uuid, tag)
}

func setTag(ctx context.Context, q querier, account, uuid, tag string) error {
	return inTx(ctx, q, func(tx pgx.Tx) error {
		// Two retags of one tag run one after the other: each untags what
		// the other committed, so the unique index never sees two.
		if err := lock(ctx, tx, lockTag, account+"\n"+tag); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE images SET tag=NULL WHERE account=$1 AND tag=$2`, account, tag); err != nil {
			return err
		}
		res, err := tx.Exec(ctx, `UPDATE images SET tag=$1 WHERE account=$2 AND uuid=$3 AND deleted_at IS NULL AND NOT hidden`, tag, account, uuid)
		if err != nil {
			return classify(err, "tag %q is on another image of account %s", tag, account)
		}
		if res.RowsAffected() == 0 {
			return errdefs.NotFound("image %s not found", uuid)
		}
		return nil
	})
}

// RemoveTag clears account's image uuid's tag; with tag non-empty, only
// if the image carries exactly that tag.
func (s *Store) RemoveTag(ctx context.Context, account, uuid, tag string) error {
	res, err := s.pool.Exec(ctx, `UPDATE images SET tag=NULL WHERE account=$1 AND uuid=$2 AND deleted_at IS NULL AND NOT hidden AND ($3 = '' OR tag = $3)`,
		account, uuid, tag)
	if err != nil || res.RowsAffected() == 1 {
		return err
	}
	im, err := s.Image(ctx, account, uuid)
	if err != nil {
		return err
	}
	return errdefs.Conflict("image %s is not tagged %q (its tag is %q)", uuid, tag, im.Tag)
}

// SetFlat records a squashed layer for an image.
func (s *Store) SetFlat(ctx context.Context, uuid, layer string, bytes int64) error {
	_, err := s.pool.Exec(ctx, `UPDATE images SET flat=$1, flat_bytes=$2 WHERE uuid=$3`, layer, bytes, uuid)
	return err
}

// DeleteImage marks account's live image deleted and drops its tag.
func (s *Store) DeleteImage(ctx context.Context, account, uuid string) error {
	res, err := s.pool.Exec(ctx, `UPDATE images SET deleted_at=clock_timestamp(), tag=NULL WHERE account=$1 AND uuid=$2 AND deleted_at IS NULL AND NOT hidden`,
		account, uuid)
	if err != nil {
		return err
	}
	if res.RowsAffected() == 0 {
		return errdefs.NotFound("image %s not found", uuid)
	}
	return nil
}

// ExpireImages marks the live untagged images uuids deleted, all or none.
func (s *Store) ExpireImages(ctx context.Context, uuids []string) error {
	return inTx(ctx, s.pool, func(tx pgx.Tx) error {
		for _, u := range uuids {
			res, err := tx.Exec(ctx, `UPDATE images SET deleted_at=clock_timestamp() WHERE uuid=$1 AND tag IS NULL AND deleted_at IS NULL AND NOT hidden`, u)
			if err != nil {
				return err
			}
			if res.RowsAffected() == 0 {
				return errdefs.Conflict("image %s is tagged or no longer live: not expired", u)
			}
		}
		return nil
	})
}

// PurgeImages removes the deleted or hidden rows among uuids, except those
// another row lies on (as its parent or base): with several nodes on one
// database, a node's engine does not know every image the others made, and
// a purged row would break their chains (and free their layers for
// collection); and except the image of an operation in flight (a queued
// run pinned it by UUID at admission, see holdQueuedImage), whose row, and
// so its chain, stays until the run ends. Rows go leaves first, so a whole
// chain goes in one call.
func (s *Store) PurgeImages(ctx context.Context, uuids []string) error {
	for {
		res, err := s.pool.Exec(ctx, `DELETE FROM images WHERE uuid = ANY($1) AND (deleted_at IS NOT NULL OR hidden)
			AND NOT EXISTS (SELECT 1 FROM images c WHERE c.parent = images.uuid OR c.base = images.uuid)
			AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.image_uuid = images.uuid AND o.status IN `+inFlight+`)`, uuids)
		if err != nil || res.RowsAffected() == 0 {
			return err
		}
	}
}

const fileCols = `uuid, account, sha256, size, created_at, updated_at`

func scanFile(row pgx.Row) (store.File, error) {
	var f store.File
	err := row.Scan(&f.UUID, &f.Account, &f.SHA256, &f.Size, &f.CreatedAt, &f.UpdatedAt)
	return f, err
}

// PutFile records an upload and returns the account's record of its content.
func (s *Store) PutFile(ctx context.Context, f store.File) (store.File, error) {
	// A zero f.UpdatedAt is the database's clock (NULL → clock_timestamp()).
	var at *time.Time
	if !f.UpdatedAt.IsZero() {
		at = &f.UpdatedAt
	}
	return scanFile(s.pool.QueryRow(ctx, `INSERT INTO files(uuid, account, sha256, size, created_at, updated_at)
		VALUES($1,$2,$3,$4,COALESCE($5::timestamptz, clock_timestamp()),COALESCE($5::timestamptz, clock_timestamp()))
		ON CONFLICT (account, sha256) DO UPDATE SET updated_at=excluded.updated_at
		RETURNING `+fileCols, f.UUID, f.Account, strings.ToLower(f.SHA256), f.Size, at))
}

func (s *Store) oneFile(ctx context.Context, notFound error, q string, args ...any) (store.File, error) {
	f, err := scanFile(s.pool.QueryRow(ctx, q, args...))
	if errors.Is(err, pgx.ErrNoRows) {
		return f, notFound
	}
	return f, err
}

// FileBySHA finds account's file by content hash.
func (s *Store) FileBySHA(ctx context.Context, account, sha string) (store.File, error) {
	return s.oneFile(ctx, errdefs.NotFound("file with sha256 %s not found: upload it first (POST /v1/files)", sha),
		`SELECT `+fileCols+` FROM files WHERE account=$1 AND sha256=$2`, account, strings.ToLower(sha))
}

// FileByUUID finds account's file by uuid.
func (s *Store) FileByUUID(ctx context.Context, account, uuid string) (store.File, error) {
	return s.oneFile(ctx, errdefs.NotFound("file %s not found: upload it first (POST /v1/files)", uuid),
		`SELECT `+fileCols+` FROM files WHERE account=$1 AND uuid=$2`, account, uuid)
}

// ListFiles lists account's files, newest first.
func (s *Store) ListFiles(ctx context.Context, account string, since, until time.Time, limit, offset int) ([]store.File, error) {
	var a args
	q := `SELECT ` + fileCols + ` FROM files WHERE account=` + a.add(account)
	if !since.IsZero() {
		q += ` AND created_at >= ` + a.add(since)
	}
	if !until.IsZero() {
		q += ` AND created_at <= ` + a.add(until)
	}
	q += ` ORDER BY created_at DESC, uuid LIMIT ` + a.add(limit) + ` OFFSET ` + a.add(offset)
	rows, err := s.pool.Query(ctx, q, a...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.File, error) { return scanFile(r) })
}

// AccountBytes is the storage charged to account (see [store.Usage]).
func (s *Store) AccountBytes(ctx context.Context, account string) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT (
		COALESCE((SELECT SUM(b) FROM (SELECT MAX(layer_bytes) AS b FROM images WHERE account=$1 AND deleted_at IS NULL GROUP BY layer) l), 0) +
		COALESCE((SELECT SUM(b) FROM (SELECT MAX(flat_bytes) AS b FROM images WHERE account=$1 AND deleted_at IS NULL AND flat IS NOT NULL GROUP BY flat) f), 0) +
		COALESCE((SELECT SUM(size) FROM files WHERE account=$1), 0))::bigint`, account).Scan(&n)
	return n, err
}
