package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/errdefs"
)

// statusOf maps an error to its HTTP status and client-facing message. It is
// the only place where error classes become statuses; anything unclassified
// is a 500 whose detail stays in the log.
func statusOf(err error) (int, string) {
	var he *httpError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		return he.status, he.msg
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds this server's limit of %d bytes", mbe.Limit)
	case errors.Is(err, errdefs.ErrInvalidArgument):
		return http.StatusBadRequest, err.Error()
	case errors.Is(err, errdefs.ErrUnauthorized):
		return http.StatusUnauthorized, err.Error()
	case errors.Is(err, errdefs.ErrForbidden):
		return http.StatusForbidden, err.Error()
	case errors.Is(err, errdefs.ErrNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, errdefs.ErrConflict), errors.Is(err, errdefs.ErrFailedPrecondition):
		return http.StatusConflict, err.Error()
	case errors.Is(err, errdefs.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, err.Error()
	case errors.Is(err, errdefs.ErrTooEarly):
		return http.StatusTooEarly, err.Error()
	case errors.Is(err, errdefs.ErrResourceExhausted):
		return http.StatusTooManyRequests, err.Error()
	case errors.Is(err, errdefs.ErrUnavailable):
		return http.StatusServiceUnavailable, err.Error()
	case errors.Is(err, errdefs.ErrInsufficientStorage):
		return http.StatusInsufficientStorage, err.Error()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "request cancelled before it completed: retry it"
	}
	return http.StatusInternalServerError, "internal server error"
}

// writeError answers with {"error": ..., "status": N}. Statuses that clients
// retry get a Retry-After, as ConTree's contract promises for 425 and 429.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := statusOf(err)
	id := requestIDOf(r.Context())
	switch {
	case status == http.StatusInternalServerError:
		s.log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err, "request_id", id)
		msg = fmt.Sprintf("internal server error (request id %s): the daemon log has the details", id)
	case r.Context().Err() != nil:
		s.log.DebugContext(r.Context(), "request ended by client", "method", r.Method, "path", r.URL.Path, "err", err, "request_id", id)
	}
	switch status {
	case http.StatusTooEarly, http.StatusTooManyRequests, http.StatusServiceUnavailable:
		after := 1
		if ra := (*retryAfterError)(nil); errors.As(err, &ra) {
			after = ra.after
		}
		w.Header().Set("Retry-After", strconv.Itoa(after))
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="arbor"`)
	}
	w.Header().Del("Content-Length")
	writeJSON(w, status, apitypes.Error{Error: msg, Status: status})
}

// writeJSON answers with v as JSON. It never sets Content-Length itself, so
// large answers go out chunked (contree-mcp rejects a Content-Length over
// 64 KiB but reads chunked bodies).
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only a programming error gets here; say so rather than send half a body.
		status = http.StatusInternalServerError
		buf.Reset()
		msg, _ := json.Marshal("internal server error: cannot encode the response: " + err.Error())
		fmt.Fprintf(&buf, `{"error":%s,"status":500}`+"\n", msg)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// decode reads one JSON value from r's body into v, bounded by
// MaxBodyBytes. Unknown fields are ignored; malformed JSON and wrong types
// are 400 errors that name the field.
func (s *server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	body := http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	dec := json.NewDecoder(s.body(w, body))
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		if err != nil {
			return jsonError(err)
		}
		return errdefs.InvalidArgument("request body has data after the JSON object: send exactly one JSON object")
	}
	return nil
}

// errEmptyBody is the error for a request without a body; a few endpoints
// take an empty body as {}.
var errEmptyBody = errdefs.InvalidArgument("request body is empty: send a JSON object")

// jsonError turns a decoding error into a classified, readable one.
func jsonError(err error) error {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.Is(err, io.EOF):
		return errEmptyBody
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errdefs.InvalidArgument("malformed JSON: the body ends in the middle of a value")
	case errors.As(err, &se):
		return errdefs.InvalidArgument("malformed JSON at byte %d: %v", se.Offset, se)
	case errors.As(err, &te):
		if te.Field == "" {
			return errdefs.InvalidArgument("request body must be a JSON object, not %s", te.Value)
		}
		return errdefs.InvalidArgument("field %q must be %s, not %s", te.Field, jsonKind(te.Type), te.Value)
	}
	return errdefs.InvalidArgument("invalid request body: %v", err)
}

// jsonKind names a Go type the way a JSON user thinks of it.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a " + t.String()
}
