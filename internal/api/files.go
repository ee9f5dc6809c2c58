package api

import (
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
)

func fileView(f engine.File) apitypes.File {
	return apitypes.File{UUID: f.UUID, SHA256: f.SHA256, Size: f.Size,
		CreatedAt: apitypes.Timestamp(f.CreatedAt), UpdatedAt: apitypes.Timestamp(f.UpdatedAt)}
}

// uploadFile answers POST /v1/files. The raw body (often chunked, without a
// Content-Length) streams to disk while it is hashed; identical content
// yields the existing record.
func (s *server) uploadFile(w http.ResponseWriter, r *http.Request) error {
	if r.ContentLength > s.opts.MaxUploadBytes {
		return errdefs.TooLarge("upload of %d bytes exceeds this server's limit of %d bytes", r.ContentLength, s.opts.MaxUploadBytes)
	}
	body := s.body(w, r.Body)
	f, err := s.e.PutFile(r.Context(), accountOf(r), body, s.opts.MaxUploadBytes)
	if err != nil {
		if body.err != nil && !errors.Is(err, errdefs.ErrTooLarge) {
			// The engine discarded the partial file; the client is most
			// likely gone, but say what happened if it is not.
			return errdefs.InvalidArgument("upload interrupted: the request body could not be read to its end (%v)", body.err)
		}
		return err
	}
	writeJSON(w, http.StatusCreated, apitypes.FileResponse{UUID: f.UUID, SHA256: f.SHA256, Size: f.Size})
	return nil
}

// bodyReader reads a request body, failing once the client has sent
// nothing for the idle timeout, and remembers a read error, which tells an
// interrupted upload from a server-side failure.
type bodyReader struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
	err  error
}

func (s *server) body(w http.ResponseWriter, r io.Reader) *bodyReader {
	return &bodyReader{r: r, rc: http.NewResponseController(w), idle: s.opts.BodyIdleTimeout}
}

func (b *bodyReader) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// listFiles answers GET /v1/files: {"files": [...]}. The legacy forms
// ?sha256=H and ?uuid=U answer one File or 404 (contree-mcp, old SDKs).
func (s *server) listFiles(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	for _, key := range []string{"sha256", "uuid"} {
		if v := q.Get(key); v != "" {
			f, err := s.e.File(r.Context(), accountOf(r), v)
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, fileView(f))
			return nil
		}
	}
	limit, offset, err := page(q)
	if err != nil {
		return err
	}
	since, until, err := timeRange(q, time.Now())
	if err != nil {
		return err
	}
	fs, err := s.e.ListFiles(r.Context(), accountOf(r), since, until, limit, offset)
	if err != nil {
		return err
	}
	out := apitypes.FilesListResponse{Files: make([]apitypes.File, 0, len(fs))}
	for _, f := range fs {
		out.Files = append(out.Files, fileView(f))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getFile answers GET /v1/files/{sha256} (a file uuid works too): the dedup
// probe clients make before uploading.
func (s *server) getFile(w http.ResponseWriter, r *http.Request) error {
	f, err := s.e.File(r.Context(), accountOf(r), r.PathValue("sha256"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, fileView(f))
	return nil
}

// headFile answers HEAD /v1/files/{sha256}: 200 or 404, no body.
func (s *server) headFile(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.e.File(r.Context(), accountOf(r), r.PathValue("sha256")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}
