package api

import (
	"errors"
	"net/http"

	"github.com/arborsh/arbor/client/apitypes"
)

// checkpoint answers POST /v1/operations/{id}/checkpoint (an arbor
// extension) with 201, the new image and its kept checkpoint's size.
func (s *server) checkpoint(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("operation", r.PathValue("id"))
	if err != nil {
		return err
	}
	res, err := s.e.CheckpointImage(r.Context(), accountOf(r), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apitypes.CheckpointResponse{Image: res.Image, CheckpointBytes: res.CheckpointBytes})
	return nil
}

// restore answers POST /v1/images/{id}/restore (an arbor extension) with
// 201 and the new instances' operations. The body is optional.
func (s *server) restore(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("image", r.PathValue("uuid"))
	if err != nil {
		return err
	}
	var req apitypes.RestoreRequest
	if err := s.decode(w, r, &req); err != nil && !errors.Is(err, errEmptyBody) {
		return err
	}
	ops, err := s.e.RestoreImage(r.Context(), accountOf(r), id, req.Count)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apitypes.RestoreResponse{Operations: ops})
	return nil
}
