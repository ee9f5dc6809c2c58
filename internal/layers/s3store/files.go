package s3store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/arborsh/arbor/internal/errdefs"
)

// Uploaded files (POST /v1/files) of a cluster live beside the layers, as
// objects <prefix>files/<sha256>, so that a run on any worker finds the
// files an upload to any API node stored (engine.FileBlobs).

func (s *Store) fileKey(sha string) string {
	return strings.TrimSuffix(s.prefix, "layers/") + "files/" + strings.ToLower(sha)
}

// PutFile uploads the file at path as content sha, unless it is stored.
func (s *Store) PutFile(ctx context.Context, sha, path string) error {
	key := s.fileKey(sha)
	_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err == nil {
		return nil
	}
	if httpStatus(err) != http.StatusNotFound {
		return s.s3Error(err, "look up uploaded file "+sha, "retry the upload when S3 is back")
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	err = s.uploadKey(ctx, key, f, fi.Size(), map[string]string{metaDigest: strings.ToLower(sha)})
	if httpStatus(err) == http.StatusPreconditionFailed {
		return nil // stored meanwhile by another node: the same content
	}
	if err != nil {
		return s.s3Error(err, "store uploaded file "+sha, "retry the upload when S3 is back")
	}
	return nil
}

// GetFile writes content sha to dst, checking its digest.
func (s *Store) GetFile(ctx context.Context, sha, dst string) error {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.fileKey(sha))})
	if httpStatus(err) == http.StatusNotFound {
		return errdefs.NotFound("uploaded file %s is not in %s: upload it again", sha, s.url)
	}
	if err != nil {
		return s.s3Error(err, "fetch uploaded file "+sha, "retry when S3 is back")
	}
	defer out.Body.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), out.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return s.s3Error(err, "fetch uploaded file "+sha, "retry when S3 is back")
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, sha) {
		return fmt.Errorf("uploaded file %s in %s is corrupt (its sha256 is %s): upload it again", sha, s.url, got)
	}
	return nil
}

// HoldFile holds content sha for this node until release, so that no
// collection deletes its object between an upload's lookup of it and the
// record that names it (a no-op without a Guard). Holds are renewed with
// the layers' and expire if this node dies.
func (s *Store) HoldFile(ctx context.Context, sha string) (release func(), err error) {
	if s.sh == nil {
		return func() {}, nil
	}
	id := fileHold(sha)
	if _, err := s.sh.guard.Hold(ctx, []string{id}); err != nil {
		return nil, errdefs.Unavailable("layer storage %s: hold uploaded file %s in the metadata database: %v; retry when the database is back", s.url, sha, err)
	}
	return func() {
		if err := s.sh.guard.Release(context.WithoutCancel(ctx), []string{id}); err != nil {
			s.log.Warn("release the hold on an uploaded file", "sha256", sha, "err", err) // it expires by itself
		}
	}, nil
}

// fileHold is the id content sha is held under (the guard's collection
// of files checks it).
func fileHold(sha string) string { return "files/" + strings.ToLower(sha) }

// CollectFiles deletes the uploaded contents stored in the bucket that no
// file record names and no node holds, stored longer than the grace period
// ago, one collection at a time across the nodes (Guard.CollectFiles),
// and returns how many and their bytes. dry deletes nothing and counts the
// contents in unnamed as named by no record (their records go first in
// the pass it stands for); only limits the candidates to those in unnamed
// (a pass over one account's uploads). Without a Guard (a bucket of one
// node, whose uploads stay on its disk) there is nothing to collect.
func (s *Store) CollectFiles(ctx context.Context, dry bool, unnamed []string, only bool) (n int, bytes int64, err error) {
	if s.sh == nil || (only && len(unnamed) == 0) {
		return 0, 0, nil
	}
	in := map[string]bool{}
	for _, sha := range unnamed {
		in[strings.ToLower(sha)] = true
	}
	prefix := s.fileKey("")
	sizes := map[string]int64{}
	var old []string
	cut := time.Now().Add(-s.sh.grace)
	pg := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(prefix)})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return 0, 0, s.s3Error(err, "list uploaded files", "the next collection retries")
		}
		for _, o := range page.Contents {
			sha := strings.TrimPrefix(aws.ToString(o.Key), prefix)
			if !isSHA256(sha) || (only && !in[sha]) || (s.sh.grace > 0 && !aws.ToTime(o.LastModified).Before(cut)) {
				continue
			}
			sizes[sha] = aws.ToInt64(o.Size)
			old = append(old, sha)
		}
	}
	var gone []string
	if dry {
		gone, err = s.sh.guard.CollectableFiles(ctx, old, unnamed)
	} else {
		gone, err = s.sh.guard.CollectFiles(ctx, old, s.deleteFiles)
	}
	for _, sha := range gone {
		bytes += sizes[sha]
	}
	return len(gone), bytes, err
}

// deleteFiles deletes the stored objects of contents shas and returns
// those it deleted.
func (s *Store) deleteFiles(ctx context.Context, shas []string) ([]string, error) {
	out, errs := s.deleteKeys(ctx, shas, s.fileKey, "uploaded file")
	slices.Sort(out)
	return out, errors.Join(errs...)
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}
