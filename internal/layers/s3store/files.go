package s3store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

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
