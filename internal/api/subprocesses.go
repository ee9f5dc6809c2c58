package api

import (
	"net/http"
	"strconv"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/errdefs"
)

// Subprocesses are further processes exec'd into a running instance (spid
// >= 2; spid 1 is the main process). Their events go to the parent
// operation's log. The engine answers 409 when the instance is not running.

// createSubprocess answers POST /v1/operations/{id}/subprocesses with 201 {"spid": N}.
func (s *server) createSubprocess(w http.ResponseWriter, r *http.Request) error {
	id, err := uuidParam("operation", r.PathValue("id"))
	if err != nil {
		return err
	}
	var spec apitypes.ExecSpec
	if err := s.decode(w, r, &spec); err != nil {
		return err
	}
	spid, err := s.e.Exec(r.Context(), accountOf(r), id, execRequest(spec))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, apitypes.SubprocessResponse{Spid: spid})
	return nil
}

// opAndSpid parses the {id} and {spid} path values.
func opAndSpid(r *http.Request) (string, int, error) {
	id, err := uuidParam("operation", r.PathValue("id"))
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(r.PathValue("spid"))
	if err != nil || n < 1 {
		return "", 0, errdefs.InvalidArgument("spid must be a process id >= 1 (1 is the main process), not %q", r.PathValue("spid"))
	}
	return id, n, nil
}

// getSubprocess answers GET /v1/operations/{id}/subprocesses/{spid} with the
// process' InstanceResult, folded from its events: exit_code and signal are
// -1 while it runs, and the answer is 425 before it has started.
func (s *server) getSubprocess(w http.ResponseWriter, r *http.Request) error {
	id, spid, err := opAndSpid(r)
	if err != nil {
		return err
	}
	rec, err := s.e.SubprocessResult(r.Context(), accountOf(r), id, spid)
	if err != nil {
		return err
	}
	res, err := rewire[apitypes.InstanceResult](rec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// killSubprocess answers DELETE /v1/operations/{id}/subprocesses/{spid}[?signal=TERM]
// with 202. Killing spid 1 ends the run; other processes leave it running.
func (s *server) killSubprocess(w http.ResponseWriter, r *http.Request) error {
	id, spid, err := opAndSpid(r)
	if err != nil {
		return err
	}
	if err := s.e.KillSubprocess(r.Context(), accountOf(r), id, spid, r.URL.Query().Get("signal")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// stdinBody is ClosableStreamRepr with value required, as the schema says.
type stdinBody struct {
	Value    *string `json:"value"`
	Encoding string  `json:"encoding"`
	Close    *bool   `json:"close"`
}

// writeStdin answers POST /v1/operations/{id}/subprocesses/{spid}/stdin with
// 202; close:true closes the process' stdin after the write.
func (s *server) writeStdin(w http.ResponseWriter, r *http.Request) error {
	id, spid, err := opAndSpid(r)
	if err != nil {
		return err
	}
	var b stdinBody
	if err := s.decode(w, r, &b); err != nil {
		return err
	}
	if b.Value == nil {
		return errdefs.InvalidArgument(`value is required: {"value": "text", "encoding": "ascii", "close": false}`)
	}
	in := engine.Stdin{Value: *b.Value, Encoding: b.Encoding, Close: b.Close}
	if err := s.e.WriteStdin(r.Context(), accountOf(r), id, spid, in); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
