package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/arborsh/arbor/internal/archive"
	"github.com/arborsh/arbor/internal/errdefs"
)

// Memory checkpoints kept with images (a cluster's engine.CheckpointBlobs)
// live beside the layers as <prefix>checkpoints/<image uuid>: the
// checkpoint directory packed as a layer is (a zstd-compressed tar, the
// sha256 of the compressed bytes in the object's metadata, checked while a
// fetch streams), so a restore on any worker finds the checkpoint another
// worker made.

func (s *Store) checkpointKey(image string) string {
	return strings.TrimSuffix(s.prefix, "layers/") + "checkpoints/" + image
}

// PutCheckpoint uploads directory dir as image's checkpoint; it is durable
// in the bucket when PutCheckpoint returns. Uploads are retried while S3
// is unavailable, as a layer's are.
func (s *Store) PutCheckpoint(ctx context.Context, image, dir string) error {
	blob, err := os.CreateTemp(s.staging, "checkpoint-*.tar.zst")
	if err != nil {
		return err
	}
	defer os.Remove(blob.Name())
	defer blob.Close()
	digest, tarSize, err := pack(ctx, blob, dir)
	if err != nil {
		return fmt.Errorf("pack the checkpoint of image %s: %w", image, err)
	}
	size, err := blob.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	meta := map[string]string{metaDigest: digest, metaSize: strconv.FormatInt(tarSize, 10)}
	retried := false
	err = s.retry(ctx, "upload the checkpoint of image "+image, func(attempt int) error {
		retried = attempt > 1
		if _, err := blob.Seek(0, io.SeekStart); err != nil {
			return err
		}
		return s.uploadKey(ctx, s.checkpointKey(image), blob, size, meta)
	})
	if httpStatus(err) == http.StatusPreconditionFailed && retried {
		err = nil // an earlier attempt stored it and its answer was lost
	}
	if err != nil {
		return s.s3Error(err, "upload the checkpoint of image "+image, "retry when S3 is back")
	}
	s.log.Debug("checkpoint uploaded", "image", image, "bytes", size, "tar_bytes", tarSize)
	return nil
}

// GetCheckpoint unpacks image's checkpoint into the new directory dst (on
// the staging filesystem), checking its digest; NotFound if the bucket has
// none. Nothing is left at dst on failure.
func (s *Store) GetCheckpoint(ctx context.Context, image, dst string) error {
	// A checkpoint is runsc's image files: regular files, never devices.
	opts := archive.Options{DropDevices: true}
	tmp, _, err := s.getTar(ctx, s.checkpointKey(image), "the checkpoint of image "+image,
		"spawn a fresh instance from the image instead", opts, nil)
	if errors.Is(err, errdefs.ErrNotFound) {
		return errdefs.NotFound("image %s has no memory checkpoint in %s", image, s.url)
	}
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // after the rename, a no-op
	// A sandbox's memory: root's only.
	if err := os.Chmod(tmp, 0o700); err != nil {
		return err
	}
	// Outside the layer cache, so not under its boot check (boot.go).
	if err := syncfs(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// DeleteCheckpoint deletes image's checkpoint from the bucket (a no-op if
// it has none).
func (s *Store) DeleteCheckpoint(ctx context.Context, image string) error {
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.checkpointKey(image))})
	if err != nil && httpStatus(err) != http.StatusNotFound {
		return s.s3Error(err, "delete the checkpoint of image "+image, "delete it by hand: "+s.checkpointKey(image))
	}
	return nil
}

// StaleCheckpoints lists the checkpoints stored in the bucket longer than
// the grace period ago (a checkpoint being made is younger), by image,
// with when each was stored.
func (s *Store) StaleCheckpoints(ctx context.Context) (map[string]time.Time, error) {
	prefix := s.checkpointKey("")
	cut := time.Now().Add(-s.graceOf())
	out := map[string]time.Time{}
	pg := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(prefix)})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, s.s3Error(err, "list checkpoints", "the next collection retries")
		}
		for _, o := range page.Contents {
			if at := aws.ToTime(o.LastModified); at.Before(cut) {
				out[strings.TrimPrefix(aws.ToString(o.Key), prefix)] = at
			}
		}
	}
	return out, nil
}

// graceOf is the grace period of a shared bucket (0 without a Guard).
func (s *Store) graceOf() time.Duration {
	if s.sh == nil {
		return 0
	}
	return s.sh.grace
}
