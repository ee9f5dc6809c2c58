package api

import (
	"errors"
	"net/http"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
)

// fork answers POST /v1/operations/{id}/fork (an arbor extension) with 201
// and the fork point's image and the copies' operations. The body is
// optional: no body forks into one copy.
func (s *server) fork(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("operation", r.PathValue("id"))
	if err != nil {
		return err
	}
	var req apitypes.ForkRequest
	if err := s.decode(w, r, &req); err != nil && !errors.Is(err, errEmptyBody) {
		return err
	}
	res, err := s.e.Fork(r.Context(), accountOf(r), id, engine.ForkRequest{Count: req.Count, PauseParent: req.PauseParent})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apitypes.ForkResponse{Image: res.Image, Operations: res.Operations, CheckpointBytes: res.CheckpointBytes})
	return nil
}
