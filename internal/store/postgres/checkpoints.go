package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// RecordCheckpoint records the size of image's checkpoint (see
// store.Cluster).
func (q *Queue) RecordCheckpoint(ctx context.Context, image, account string, bytes int64) error {
	_, err := q.s.pool.Exec(ctx, `INSERT INTO checkpoints(image, account, bytes) VALUES ($1, $2, $3)
		ON CONFLICT (image) DO UPDATE SET account = EXCLUDED.account, bytes = EXCLUDED.bytes, stored_at = clock_timestamp()`, image, account, bytes)
	return err
}

// ForgetCheckpoint deletes image's checkpoint record.
func (q *Queue) ForgetCheckpoint(ctx context.Context, image string) error {
	_, err := q.s.pool.Exec(ctx, `DELETE FROM checkpoints WHERE image = $1`, image)
	return err
}

// CheckpointSizes returns the recorded sizes of those of images that have one.
func (q *Queue) CheckpointSizes(ctx context.Context, images []string) (map[string]int64, error) {
	out := map[string]int64{}
	if len(images) == 0 {
		return out, nil
	}
	rows, err := q.s.pool.Query(ctx, `SELECT image, bytes FROM checkpoints WHERE image = ANY($1)`, images)
	if err != nil {
		return nil, err
	}
	var (
		id string
		n  int64
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error { out[id] = n; return nil })
	return out, err
}

// AccountCheckpointBytes sums the recorded checkpoints of account's live
// images.
func (q *Queue) AccountCheckpointBytes(ctx context.Context, account string) (int64, error) {
	var n int64
	err := q.s.pool.QueryRow(ctx, `SELECT COALESCE(sum(c.bytes), 0)::bigint FROM checkpoints c JOIN images i ON i.uuid = c.image
		WHERE c.account = $1 AND i.deleted_at IS NULL AND NOT i.hidden`, account).Scan(&n)
	return n, err
}
