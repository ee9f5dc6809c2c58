package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"sync"

	"github.com/google/jsonschema-go/jsonschema"
	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

// Backend is the part of arbor's API the MCP server uses. *client.Client
// satisfies it; every method has the client's semantics (errors are
// *client.Error values, tested with client.IsNotFound and friends).
type Backend interface {
	// Images.
	ListImages(ctx context.Context, o client.ImageListOptions) ([]apitypes.Image, error)
	ResolveImage(ctx context.Context, ref string) (*apitypes.Image, error)
	ImportImage(ctx context.Context, req apitypes.ImageImportRequest) (string, error)
	SetTag(ctx context.Context, id, tag string) (*apitypes.Image, error)
	RemoveTag(ctx context.Context, id, tag string) (*apitypes.Image, error)
	Lineage(ctx context.Context, id string) (*apitypes.Lineage, error)
	Diff(ctx context.Context, id string, o client.DiffOptions) (*apitypes.ImageDiff, error)

	// Inspection of an image's files, without a sandbox.
	ListDir(ctx context.Context, id, path string) (*apitypes.DirectoryList, error)
	ListDirText(ctx context.Context, id, path string) (string, error)
	Download(ctx context.Context, id, path string) (rc io.ReadCloser, size int64, err error)
	Grep(ctx context.Context, id string, o client.GrepOptions) (*apitypes.GrepResult, error)

	// Content-addressed uploads.
	File(ctx context.Context, ref string) (*apitypes.File, error)
	UploadFile(ctx context.Context, r io.Reader) (*apitypes.FileResponse, error)

	// Runs and operations.
	Spawn(ctx context.Context, req apitypes.InstanceSpawnRequest) (*apitypes.InstanceSpawnResponse, error)
	// Run spawns req and waits for its end, cancelling it if ctx ends first
	// (one request to arbor: client.Client.Run).
	Run(ctx context.Context, req apitypes.InstanceSpawnRequest) (*apitypes.OperationResponse, error)
	Operation(ctx context.Context, id string) (*apitypes.OperationResponse, error)
	ListOperations(ctx context.Context, o client.OperationListOptions) ([]apitypes.OperationSummary, error)
	Wait(ctx context.Context, id string) (*apitypes.OperationResponse, error)
	Cancel(ctx context.Context, id string) error
	StreamEvents(ctx context.Context, id string, o client.EventsOptions, fn func(apitypes.OperationEvent) error) error
	WriteStdin(ctx context.Context, id string, spid int, in apitypes.ClosableStreamRepr) error
	KillSubprocess(ctx context.Context, id string, spid int, signal string) error
	Expose(ctx context.Context, id string, port, ttlSeconds int) (*apitypes.Preview, error) // port previews
	Fork(ctx context.Context, id string, req apitypes.ForkRequest) (*apitypes.ForkResponse, error)
	Checkpoint(ctx context.Context, id string) (*apitypes.CheckpointResponse, error)
	Restore(ctx context.Context, image string, req apitypes.RestoreRequest) (*apitypes.RestoreResponse, error)
}

var _ Backend = (*client.Client)(nil)

// Options configures [NewServer]. The zero value serves every tool except
// the ones that touch the local filesystem.
type Options struct {
	// LocalFiles enables the tools that read or write files of the machine
	// the server runs on: sync, download, and upload's path argument.
	// Enable it only when the server runs as the user on the user's machine,
	// as `arbor mcp` does; never on a shared daemon.
	LocalFiles bool
	// MaxOutput is how many bytes of stdout and of stderr a run shows by
	// default (the head and the tail, with a note on what was cut); 8000
	// unless set. Agents may ask for more per call.
	MaxOutput int
	// Version is reported to clients as the server version; "dev" unless set.
	Version string
	// Logger receives the SDK's diagnostics; nil discards them.
	Logger *slog.Logger
}

// Defaults.
const (
	defaultMaxOutput = 8000
	// captureBytes is how much output the daemon keeps per stream for runs
	// started here, so that get_operation can show more than the default.
	captureBytes = 1 << 20
	maxBranches  = 16
)

// server holds what every tool handler needs.
type server struct {
	b    Backend
	opts Options
	// syncs maps sync ids (from the sync tool) to the files they place.
	syncs *syncStore
	// hashes caches local file hashes by path, size and mtime.
	hashes *hashCache
}

// schemaCache is shared by every server, so that building one per HTTP
// request does not repeat schema inference and resolution.
var schemaCache = mcpsdk.NewSchemaCache()

// NewServer returns an MCP server whose tools, resources and prompts drive
// arbor through b.
func NewServer(b Backend, opts Options) *mcpsdk.Server {
	if opts.MaxOutput <= 0 {
		opts.MaxOutput = defaultMaxOutput
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &server{b: b, opts: opts, syncs: newSyncStore(), hashes: newHashCache()}
	ms := mcpsdk.NewServer(&mcpsdk.Implementation{Name: "arbor", Title: "arbor sandboxes", Version: opts.Version},
		&mcpsdk.ServerOptions{
			Instructions: instructions,
			Logger:       opts.Logger,
			SchemaCache:  schemaCache,
			Capabilities: &mcpsdk.ServerCapabilities{},
		})
	ms.AddReceivingMiddleware(guard(opts.Logger))
	s.addImageTools(ms)
	s.addInspectTools(ms)
	s.addRunTools(ms)
	s.addForkTools(ms)
	s.addInputTools(ms)
	s.addCheckpointTools(ms)
	s.addPreviewTools(ms)
	s.addFileTools(ms)
	s.addGuide(ms)
	s.addResources(ms)
	addPrompts(ms)
	return ms
}

// guard protects the server from two failures of the SDK's request
// handling: tools/call with "arguments": null, which go-sdk v1.8.0 crashes
// on (a nil map meets the schema defaults), is treated as {}; and a panic
// in any handler becomes an error answer instead of killing the process
// (the daemon's, for the HTTP endpoint).
func guard(log *slog.Logger) mcpsdk.Middleware {
	return func(next mcpsdk.MethodHandler) mcpsdk.MethodHandler {
		return func(ctx context.Context, method string, req mcpsdk.Request) (res mcpsdk.Result, err error) {
			defer func() {
				if p := recover(); p != nil {
					log.ErrorContext(ctx, "mcp handler panicked", "method", method, "panic", p, "stack", string(debug.Stack()))
					res, err = nil, fmt.Errorf("internal error in %s: %v", method, p)
				}
			}()
			if ct, ok := req.(*mcpsdk.CallToolRequest); ok && ct.Params != nil {
				if a := bytes.TrimSpace(ct.Params.Arguments); len(a) == 0 || string(a) == "null" {
					ct.Params.Arguments = json.RawMessage("{}")
				}
			}
			return next(ctx, method, req)
		}
	}
}

// ServeStdio serves one MCP session over the process's stdin and stdout
// until the client disconnects or ctx ends, with the local-file tools
// enabled. A client that closes the session is not an error. Nothing else
// may write to stdout meanwhile.
func ServeStdio(ctx context.Context, b Backend) error {
	return ServeIO(ctx, b, os.Stdin, os.Stdout)
}

// ServeIO is [ServeStdio] over the given streams (newline-delimited
// JSON-RPC), for callers such as the CLI that carry their own stdin and
// stdout.
func ServeIO(ctx context.Context, b Backend, in io.Reader, out io.Writer) error {
	rc, ok := in.(io.ReadCloser)
	if !ok {
		rc = io.NopCloser(in)
	}
	t := &mcpsdk.IOTransport{Reader: rc, Writer: nopWriteCloser{out}}
	return serve(ctx, NewServer(b, Options{LocalFiles: true}), t)
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// serve runs srv on t, treating the end of ctx or of the input as a clean stop.
func serve(ctx context.Context, srv *mcpsdk.Server, t mcpsdk.Transport) error {
	err := srv.Run(ctx, t)
	if err == nil || errors.Is(err, io.EOF) || ctx.Err() != nil {
		return nil
	}
	return err
}

// serverKey carries the per-request server to the SDK's handler.
type serverKey struct{}

// HTTPHandler returns the streamable-HTTP MCP endpoint. It is stateless:
// every request is authenticated on its own by newBackend, which returns a
// backend acting as the caller (for arbor, a client bound to the request's
// bearer token) or an error, answered 401. Tools that touch the server's
// filesystem are not offered over HTTP.
func HTTPHandler(newBackend func(r *http.Request) (Backend, error)) http.Handler {
	h := mcpsdk.NewStreamableHTTPHandler(func(r *http.Request) *mcpsdk.Server {
		s, _ := r.Context().Value(serverKey{}).(*mcpsdk.Server)
		return s
	}, &mcpsdk.StreamableHTTPOptions{Stateless: true})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := newBackend(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="arbor"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(apitypes.Error{Error: err.Error(), Status: http.StatusUnauthorized})
			return
		}
		srv := NewServer(b, Options{})
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), serverKey{}, srv)))
	})
}

// schemas memoizes input schemas by Go type, so that every server shares
// one *jsonschema.Schema per tool (and the SDK resolves it once).
var schemas sync.Map // reflect.Type -> *jsonschema.Schema

// inputSchema infers In's schema and sets defaults (JSON values by property
// name), which the SDK applies to absent arguments. It panics on a bad
// type or property: that is a programming error caught by any test.
func inputSchema[In any](defaults map[string]any) *jsonschema.Schema {
	t := reflect.TypeFor[In]()
	if s, ok := schemas.Load(t); ok {
		return s.(*jsonschema.Schema)
	}
	s, err := jsonschema.For[In](nil)
	if err != nil {
		panic(err)
	}
	for name, v := range defaults {
		p, ok := s.Properties[name]
		if !ok {
			panic("mcp: default for unknown property " + name + " of " + t.String())
		}
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		p.Default = b
		// A property with a default is optional (and the SDK applies
		// defaults only to optional properties).
		s.Required = slices.DeleteFunc(s.Required, func(r string) bool { return r == name })
	}
	actual, _ := schemas.LoadOrStore(t, s)
	return actual.(*jsonschema.Schema)
}

// addTool registers a typed tool whose input schema carries defaults.
func addTool[In, Out any](ms *mcpsdk.Server, t *mcpsdk.Tool, defaults map[string]any, h mcpsdk.ToolHandlerFor[In, Out]) {
	t.InputSchema = inputSchema[In](defaults)
	mcpsdk.AddTool(ms, t, h)
}

// Tool annotations.
var (
	readOnly   = &mcpsdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: ptr(false)}
	additive   = &mcpsdk.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)}
	naming     = &mcpsdk.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)}
	openWorld  = &mcpsdk.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(true)}
	localWrite = &mcpsdk.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)}
)

func ptr[T any](v T) *T { return &v }
