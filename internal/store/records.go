package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Account owns images, tags, files and operations.
type Account struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// Token is a bearer token of an account. The secret itself is never stored.
type Token struct {
	UUID      string
	Account   string
	Name      string
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
	RevokedAt time.Time // zero: active
	// Parent is the token that created this one ("" for the daemon's own
	// tokens). Revoking a token revokes every token below it.
	Parent string
}

// HashSecret returns the stored form of a token secret.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// EnsureAccount creates the account name if missing and returns it.
func (s *Store) EnsureAccount(ctx context.Context, id, name string) (Account, error) {
	_, err := s.w.ExecContext(ctx, `INSERT INTO accounts(id, name, created_at) VALUES(?,?,?) ON CONFLICT DO NOTHING`, id, name, now())
	if err != nil {
		return Account{}, err
	}
	return s.AccountByName(ctx, name)
}

// AccountByName finds an account.
func (s *Store) AccountByName(ctx context.Context, name string) (Account, error) {
	var a Account
	var created int64
	err := s.r.QueryRowContext(ctx, `SELECT id, name, created_at FROM accounts WHERE name=?`, name).Scan(&a.ID, &a.Name, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return a, errdefs.NotFound("account %q not found", name)
	}
	a.CreatedAt = time.Unix(0, created)
	return a, err
}

// CreateToken stores a token for account with the given secret. A token
// with a Parent is stored only while that parent is neither revoked nor
// expired, checked in the same statement, so a token cannot be minted by a
// parent whose revocation has already begun.
func (s *Store) CreateToken(ctx context.Context, t Token, secret string) error {
	var exp sql.NullInt64
	if !t.ExpiresAt.IsZero() {
		exp = sql.NullInt64{Int64: t.ExpiresAt.UnixNano(), Valid: true}
	}
	created := now()
	if !t.CreatedAt.IsZero() {
		created = t.CreatedAt.UnixNano()
	}
	if t.Parent == "" {
		_, err := s.w.ExecContext(ctx, `INSERT INTO tokens(uuid, account, secret_sha256, name, created_at, expires_at) VALUES(?,?,?,?,?,?)`,
			t.UUID, t.Account, HashSecret(secret), t.Name, created, exp)
		return tokenErr(err, t)
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO tokens(uuid, account, secret_sha256, name, created_at, expires_at, parent)
		SELECT ?,?,?,?,?,?,? WHERE EXISTS (SELECT 1 FROM tokens WHERE uuid=? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?))`,
		t.UUID, t.Account, HashSecret(secret), t.Name, created, exp, t.Parent, t.Parent, now())
	if err != nil {
		return tokenErr(err, t)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return errdefs.Unauthorized("token %s was revoked or has expired: it cannot create tokens", t.Parent)
	}
	return nil
}

func tokenErr(err error, t Token) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY {
		return errdefs.NotFound("account %q of token %s not found", t.Account, t.UUID)
	}
	return conflict(err, "token %s, or one with the same secret, exists", t.UUID)
}

// TokenBySecret finds an active token by its secret.
func (s *Store) TokenBySecret(ctx context.Context, secret string) (Token, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+tokenCols+` FROM tokens WHERE secret_sha256=?`, HashSecret(secret))
	if err != nil {
		return Token{}, err
	}
	ts, err := scanTokens(rows)
	if err != nil {
		return Token{}, err
	}
	return ActiveToken(ts, time.Now())
}

// ListTokens lists an account's tokens.
func (s *Store) ListTokens(ctx context.Context, account string) ([]Token, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+tokenCols+` FROM tokens WHERE account=? ORDER BY created_at`, account)
	if err != nil {
		return nil, err
	}
	return scanTokens(rows)
}

// RevokeToken revokes one of account's tokens and, in the same
// transaction, every token it created, directly or through others (in any
// account: a default-account token may have made tokens of other accounts).
func (s *Store) RevokeToken(ctx context.Context, account, uuid string) error {
	return s.sqlTx(ctx, func(tx *sql.Tx) error {
		at := now()
		res, err := tx.ExecContext(ctx, `UPDATE tokens SET revoked_at=? WHERE account=? AND uuid=? AND revoked_at IS NULL`, at, account, uuid)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errdefs.NotFound("token %s not found or already revoked", uuid)
		}
		_, err = tx.ExecContext(ctx, `WITH RECURSIVE below(uuid) AS (
				SELECT uuid FROM tokens WHERE parent=?
				UNION SELECT t.uuid FROM tokens t JOIN below b ON t.parent=b.uuid)
			UPDATE tokens SET revoked_at=? WHERE uuid IN below AND revoked_at IS NULL`, uuid, at)
		return err
	})
}

const tokenCols = `uuid, account, name, created_at, expires_at, revoked_at, parent`

func scanTokens(rows *sql.Rows) ([]Token, error) {
	defer rows.Close()
	var out []Token
	for rows.Next() {
		var t Token
		var created int64
		var exp, rev sql.NullInt64
		var parent sql.NullString
		if err := rows.Scan(&t.UUID, &t.Account, &t.Name, &created, &exp, &rev, &parent); err != nil {
			return nil, err
		}
		t.Parent = parent.String
		t.CreatedAt = time.Unix(0, created)
		t.ExpiresAt = nullTime(exp)
		t.RevokedAt = nullTime(rev)
		out = append(out, t)
	}
	return out, rows.Err()
}

// Image is an image row.
type Image struct {
	UUID       string
	Account    string
	Parent     string // "" for a base image
	Layer      string // the layer this image added on top of Parent
	Flat       string // a squashed layer holding the whole chain, "" if none
	Depth      int    // number of layers in the unsquashed chain
	Tag        string
	Operation  string // operation that produced it
	Env        string // JSON object of preserved env, "" if none
	LayerBytes int64
	FlatBytes  int64 // the disk Flat uses (SetFlat); read-only here
	CreatedAt  time.Time
	Deleted    bool
	// Base is the hidden image the layer lies on when Parent is "": the
	// layers below the top one of an imported image. The chain an image
	// mounts continues at Parent, else at Base.
	Base string
	// Hidden marks one layer of an imported chain: an internal row that is
	// never listed, resolved, tagged or deleted through the API, and that
	// lives while a visible image's chain needs it.
	Hidden bool
	// Chain is a hidden row's chain ID (the OCI chain ID of its layer and
	// those below): the key under which an account's imports share it.
	Chain string
}

// MountParent is the image whose chain lies below im's layer.
func (im Image) MountParent() string {
	if im.Parent != "" {
		return im.Parent
	}
	return im.Base
}

const imageCols = `uuid, account, parent, layer, flat, depth, tag, operation, env, layer_bytes, created_at, deleted_at, base, hidden, chain, flat_bytes`

func scanImage(sc interface{ Scan(...any) error }) (Image, error) {
	var im Image
	var parent, flat, tag, op, env, base, chain sql.NullString
	var created int64
	var deleted sql.NullInt64
	err := sc.Scan(&im.UUID, &im.Account, &parent, &im.Layer, &flat, &im.Depth, &tag, &op, &env, &im.LayerBytes, &created, &deleted, &base, &im.Hidden, &chain, &im.FlatBytes)
	im.Parent, im.Flat, im.Tag, im.Operation, im.Env = parent.String, flat.String, tag.String, op.String, env.String
	im.Base, im.Chain = base.String, chain.String
	im.CreatedAt = time.Unix(0, created)
	im.Deleted = deleted.Valid
	return im, err
}

// InsertImage writes a new image row.
func (s *Store) InsertImage(ctx context.Context, im Image) error { return insertImage(ctx, s.w, im) }

func insertImage(ctx context.Context, q querier, im Image) error {
	_, err := q.ExecContext(ctx, `INSERT INTO images(uuid, account, parent, layer, flat, depth, tag, operation, env, layer_bytes, created_at, base, hidden, chain) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		im.UUID, im.Account, nullStr(im.Parent), im.Layer, nullStr(im.Flat), im.Depth, nullStr(im.Tag), nullStr(im.Operation), nullStr(im.Env), im.LayerBytes, im.CreatedAt.UnixNano(),
		nullStr(im.Base), im.Hidden, nullStr(im.Chain))
	if err != nil {
		return conflict(err, "image %s, its tag %q or its chain %q exists in account %s", im.UUID, im.Tag, im.Chain, im.Account)
	}
	return nil
}

// InsertImages writes new image rows in one transaction: all or none.
func (s *Store) InsertImages(ctx context.Context, ims ...Image) error {
	return s.sqlTx(ctx, func(tx *sql.Tx) error {
		for _, im := range ims {
			if err := insertImage(ctx, tx, im); err != nil {
				return fmt.Errorf("record image %s: %w", im.UUID, err)
			}
		}
		return nil
	})
}

// ImageAny returns an image row by uuid regardless of account, deletion or
// hiding (internal use: chains cross deleted ancestors).
func (s *Store) ImageAny(ctx context.Context, uuid string) (Image, error) {
	im, err := scanImage(s.r.QueryRowContext(ctx, `SELECT `+imageCols+` FROM images WHERE uuid=?`, uuid))
	if errors.Is(err, sql.ErrNoRows) {
		return im, errdefs.NotFound("image %s not found", uuid)
	}
	return im, err
}

// Image returns a live image of account.
func (s *Store) Image(ctx context.Context, account, uuid string) (Image, error) {
	im, err := scanImage(s.r.QueryRowContext(ctx, `SELECT `+imageCols+` FROM images WHERE uuid=? AND account=? AND deleted_at IS NULL AND hidden=0`, uuid, account))
	if errors.Is(err, sql.ErrNoRows) {
		return im, errdefs.NotFound("image %s not found", uuid)
	}
	return im, err
}

// ImageByTag returns account's image tagged tag.
func (s *Store) ImageByTag(ctx context.Context, account, tag string) (Image, error) {
	im, err := scanImage(s.r.QueryRowContext(ctx, `SELECT `+imageCols+` FROM images WHERE account=? AND tag=? AND deleted_at IS NULL AND hidden=0`, account, tag))
	if errors.Is(err, sql.ErrNoRows) {
		return im, errdefs.NotFound("no image with tag %q", tag)
	}
	return im, err
}

// ImageFilter selects images to list.
type ImageFilter struct {
	Account    string
	TagPrefix  string
	Tagged     bool
	UUID       string
	UUIDPrefix string // lower-case
	Parent     string
	Since      time.Time
	Until      time.Time
	Limit      int
	Offset     int
}

// ListImages lists live images, newest first; an exact tag match comes first.
func (s *Store) ListImages(ctx context.Context, f ImageFilter) ([]Image, error) {
	q := `SELECT ` + imageCols + ` FROM images WHERE account=? AND deleted_at IS NULL AND hidden=0`
	args := []any{f.Account}
	if f.TagPrefix != "" {
		q += ` AND tag IS NOT NULL AND substr(tag, 1, ?) = ?`
		args = append(args, len(f.TagPrefix), f.TagPrefix)
	}
	if f.Tagged {
		q += ` AND tag IS NOT NULL`
	}
	if f.UUID != "" {
		q += ` AND uuid=?`
		args = append(args, f.UUID)
	}
	if f.UUIDPrefix != "" {
		q += ` AND substr(uuid, 1, ?) = ?`
		args = append(args, len(f.UUIDPrefix), f.UUIDPrefix)
	}
	if f.Parent != "" {
		q += ` AND parent=?`
		args = append(args, f.Parent)
	}
	if !f.Since.IsZero() {
		q += ` AND created_at >= ?`
		args = append(args, f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		q += ` AND created_at <= ?`
		args = append(args, f.Until.UnixNano())
	}
	order := ` ORDER BY created_at DESC, uuid`
	if f.TagPrefix != "" {
		order = ` ORDER BY (tag = ?) DESC, created_at DESC, uuid`
		args = append(args, f.TagPrefix)
	}
	q += order + ` LIMIT ? OFFSET ?`
	if f.Limit <= 0 {
		f.Limit = 100
	}
	args = append(args, f.Limit, f.Offset)
	return s.queryImages(ctx, s.r, q, args...)
}

func (s *Store) queryImages(ctx context.Context, db querier, q string, args ...any) ([]Image, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Image
	for rows.Next() {
		im, err := scanImage(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, im)
	}
	return out, rows.Err()
}

// AllImages returns every image row (GC and chain reconstruction).
func (s *Store) AllImages(ctx context.Context) ([]Image, error) {
	return s.queryImages(ctx, s.r, `SELECT `+imageCols+` FROM images`)
}

// SetTag moves tag to image uuid of account (removing it from any other image).
func (s *Store) SetTag(ctx context.Context, account, uuid, tag string) error {
	return s.sqlTx(ctx, func(tx *sql.Tx) error { return setTag(ctx, tx, account, uuid, tag) })
}

func setTag(ctx context.Context, q querier, account, uuid, tag string) error {
	if _, err := q.ExecContext(ctx, `UPDATE images SET tag=NULL WHERE account=? AND tag=?`, account, tag); err != nil {
		return err
	}
	res, err := q.ExecContext(ctx, `UPDATE images SET tag=? WHERE account=? AND uuid=? AND deleted_at IS NULL AND hidden=0`, tag, account, uuid)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("image %s not found", uuid)
	}
	return nil
}

// RemoveTag clears image uuid's tag; if tag is non-empty it must match.
func (s *Store) RemoveTag(ctx context.Context, account, uuid, tag string) error {
	im, err := s.Image(ctx, account, uuid)
	if err != nil {
		return err
	}
	if tag != "" && im.Tag != tag {
		return errdefs.Conflict("image %s is not tagged %q (its tag is %q)", uuid, tag, im.Tag)
	}
	_, err = s.w.ExecContext(ctx, `UPDATE images SET tag=NULL WHERE account=? AND uuid=?`, account, uuid)
	return err
}

// SetFlat records a squashed layer for an image.
func (s *Store) SetFlat(ctx context.Context, uuid, layer string, bytes int64) error {
	_, err := s.w.ExecContext(ctx, `UPDATE images SET flat=?, flat_bytes=? WHERE uuid=?`, layer, bytes, uuid)
	return err
}

// DeleteImage marks an image deleted and drops its tag. Its layer stays while
// descendants need it; the collector removes it later.
func (s *Store) DeleteImage(ctx context.Context, account, uuid string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE images SET deleted_at=?, tag=NULL WHERE account=? AND uuid=? AND deleted_at IS NULL AND hidden=0`, now(), account, uuid)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errdefs.NotFound("image %s not found", uuid)
	}
	return nil
}

// ExpireImages marks the live images uuids deleted, all or none: when any
// of them is tagged or no longer live (a tag put on it, or a deletion,
// since the caller decided), nothing changes and the error is a Conflict.
func (s *Store) ExpireImages(ctx context.Context, uuids []string) error {
	return s.sqlTx(ctx, func(tx *sql.Tx) error {
		at := now()
		for _, u := range uuids {
			res, err := tx.ExecContext(ctx, `UPDATE images SET deleted_at=? WHERE uuid=? AND tag IS NULL AND deleted_at IS NULL AND hidden=0`, at, u)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				return errdefs.Conflict("image %s is tagged or no longer live: not expired", u)
			}
		}
		return nil
	})
}

// PurgeImages removes rows of deleted images and hidden import layers that
// no live image needs (their layers already collected), except the image
// of an operation in flight and its ancestors: a run pins its image by
// UUID from its admission to its end.
func (s *Store) PurgeImages(ctx context.Context, uuids []string) error {
	return s.sqlTx(ctx, func(tx *sql.Tx) error {
		pinned, err := inFlightChains(ctx, tx)
		if err != nil {
			return err
		}
		for _, u := range uuids {
			if pinned[u] {
				continue
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM images WHERE uuid=? AND (deleted_at IS NOT NULL OR hidden=1)`, u); err != nil {
				return err
			}
		}
		return nil
	})
}

// inFlightChains returns the images operations in flight name, with every
// row their chains lie on.
func inFlightChains(ctx context.Context, tx *sql.Tx) (map[string]bool, error) {
	rows, err := tx.QueryContext(ctx, `WITH RECURSIVE pinned(u) AS (
			SELECT image_uuid FROM operations WHERE status IN ('PENDING','ASSIGNED','EXECUTING') AND image_uuid IS NOT NULL
			UNION SELECT i.parent FROM images i JOIN pinned p ON i.uuid = p.u WHERE i.parent IS NOT NULL
			UNION SELECT i.base FROM images i JOIN pinned p ON i.uuid = p.u WHERE i.base IS NOT NULL)
		SELECT u FROM pinned`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out[u] = true
	}
	return out, rows.Err()
}

// File is an uploaded file record.
type File struct {
	UUID      string
	Account   string
	SHA256    string
	Size      int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

const fileCols = `uuid, account, sha256, size, created_at, updated_at`

func scanFile(sc interface{ Scan(...any) error }) (File, error) {
	var f File
	var c, u int64
	err := sc.Scan(&f.UUID, &f.Account, &f.SHA256, &f.Size, &c, &u)
	f.CreatedAt, f.UpdatedAt = time.Unix(0, c), time.Unix(0, u)
	return f, err
}

// PutFile records an upload, returning the existing record for the same content.
func (s *Store) PutFile(ctx context.Context, f File) (File, error) {
	t := now()
	if !f.UpdatedAt.IsZero() {
		t = f.UpdatedAt.UnixNano() // the engine's clock
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO files(uuid, account, sha256, size, created_at, updated_at) VALUES(?,?,?,?,?,?)
		ON CONFLICT(account, sha256) DO UPDATE SET updated_at=excluded.updated_at`, f.UUID, f.Account, f.SHA256, f.Size, t, t)
	if err != nil {
		return File{}, err
	}
	return s.FileBySHA(ctx, f.Account, f.SHA256)
}

// FileBySHA finds account's file by content hash.
func (s *Store) FileBySHA(ctx context.Context, account, sha string) (File, error) {
	f, err := scanFile(s.w.QueryRowContext(ctx, `SELECT `+fileCols+` FROM files WHERE account=? AND sha256=?`, account, strings.ToLower(sha)))
	if errors.Is(err, sql.ErrNoRows) {
		return f, errdefs.NotFound("file with sha256 %s not found: upload it first (POST /v1/files)", sha)
	}
	return f, err
}

// FileByUUID finds account's file by uuid.
func (s *Store) FileByUUID(ctx context.Context, account, uuid string) (File, error) {
	f, err := scanFile(s.r.QueryRowContext(ctx, `SELECT `+fileCols+` FROM files WHERE account=? AND uuid=?`, account, uuid))
	if errors.Is(err, sql.ErrNoRows) {
		return f, errdefs.NotFound("file %s not found: upload it first (POST /v1/files)", uuid)
	}
	return f, err
}

// ListFiles lists account's files, newest first.
func (s *Store) ListFiles(ctx context.Context, account string, since, until time.Time, limit, offset int) ([]File, error) {
	q := `SELECT ` + fileCols + ` FROM files WHERE account=?`
	args := []any{account}
	if !since.IsZero() {
		q += ` AND created_at >= ?`
		args = append(args, since.UnixNano())
	}
	if !until.IsZero() {
		q += ` AND created_at <= ?`
		args = append(args, until.UnixNano())
	}
	q += ` ORDER BY created_at DESC, uuid LIMIT ? OFFSET ?`
	args = append(args, limit, offset)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []File
	for rows.Next() {
		f, err := scanFile(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// AccountBytes is the stored bytes attributed to an account: the distinct
// layers of its images (hidden import layers included, each shared layer
// once), the flat layers of its squashed chains, and its uploaded files.
func (s *Store) AccountBytes(ctx context.Context, account string) (int64, error) {
	var a, f, b sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT SUM(b) FROM (SELECT MAX(layer_bytes) AS b FROM images WHERE account=? AND deleted_at IS NULL GROUP BY layer)`, account).Scan(&a); err != nil {
		return 0, err
	}
	if err := s.r.QueryRowContext(ctx, `SELECT SUM(b) FROM (SELECT MAX(flat_bytes) AS b FROM images WHERE account=? AND deleted_at IS NULL AND flat IS NOT NULL GROUP BY flat)`, account).Scan(&f); err != nil {
		return 0, err
	}
	if err := s.r.QueryRowContext(ctx, `SELECT SUM(size) FROM files WHERE account=?`, account).Scan(&b); err != nil {
		return 0, err
	}
	return a.Int64 + f.Int64 + b.Int64, nil
}
