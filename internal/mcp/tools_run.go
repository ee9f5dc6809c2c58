package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

// RunIn is the input of run.
type RunIn struct {
	Image      string            `json:"image" jsonschema:"image to start from: UUID, tag:NAME or checkpoint name"`
	Command    string            `json:"command" jsonschema:"shell command (with shell=true) or executable"`
	Shell      bool              `json:"shell" jsonschema:"run command with /bin/sh -c"`
	Args       []string          `json:"args,omitempty" jsonschema:"arguments, with shell=false"`
	Env        map[string]string `json:"env,omitempty" jsonschema:"environment variables"`
	Cwd        string            `json:"cwd" jsonschema:"working directory"`
	Timeout    int               `json:"timeout" jsonschema:"seconds before the command is killed"`
	Disposable bool              `json:"disposable" jsonschema:"false (default) saves the filesystem afterwards as a new image (result_image); true discards it"`
	Stdin      string            `json:"stdin,omitempty" jsonschema:"text fed to the command's standard input"`
	KeepStdin  bool              `json:"keep_stdin,omitempty" jsonschema:"leave standard input open after stdin: the command keeps running (a REPL, a server, a loop reading commands) and run returns at once (as wait=false); talk to it with send_input, fork it with fork_instance, save it with save_instance, end it with send_input close=true or cancel_operation"`
	Runtime    string            `json:"runtime,omitempty" jsonschema:"runsc (gVisor; fork_instance and save_instance need it), runc or crun; default: the server's"`
	Files      map[string]string `json:"files,omitempty" jsonschema:"files to place before the command: absolute sandbox path -> file uuid from upload"`
	Syncs      []string          `json:"syncs,omitempty" jsonschema:"sync_id values from sync: place those directories' files before the command"`
	Network    bool              `json:"network,omitempty" jsonschema:"allow outbound network access (if the server permits it)"`
	Allow      []string          `json:"allow,omitempty" jsonschema:"network access to these only (implies network): domain names (pypi.org, *.pythonhosted.org), CIDRs, ports (tcp:443); names resolve only through arbor's resolver"`
	Deny       []string          `json:"deny,omitempty" jsonschema:"no network access to these (implies network): names, CIDRs or ports as for allow; wins over allow"`
	Wait       bool              `json:"wait" jsonschema:"wait for the command to finish; false returns an operation_id for wait_operations"`
	MaxOutput  int               `json:"max_output,omitempty" jsonschema:"bytes of stdout and of stderr to show (head and tail); default 8000"`
	Checkpoint string            `json:"checkpoint,omitempty" jsonschema:"name the result image with this checkpoint name if the command exits 0"`
}

// RunOut is the output of run.
type RunOut struct {
	OperationInfo
	Checkpoint string `json:"checkpoint,omitempty" jsonschema:"the checkpoint name given to result_image"`
	Next       string `json:"next" jsonschema:"what to do next"`
}

// BranchIn is the input of branch.
type BranchIn struct {
	Image      string            `json:"image" jsonschema:"common starting image: UUID, tag:NAME or checkpoint name"`
	Commands   []string          `json:"commands" jsonschema:"one shell command per branch (1-16), e.g. apply candidate fix N && run the tests; all start at once"`
	Shell      bool              `json:"shell" jsonschema:"run commands with /bin/sh -c"`
	Env        map[string]string `json:"env,omitempty"`
	Cwd        string            `json:"cwd"`
	Timeout    int               `json:"timeout" jsonschema:"seconds each branch may run"`
	Disposable bool              `json:"disposable" jsonschema:"false (default) keeps every branch's filesystem as its result_image, so the winner can be kept"`
	Files      map[string]string `json:"files,omitempty" jsonschema:"files placed in every branch: sandbox path -> file uuid"`
	Syncs      []string          `json:"syncs,omitempty" jsonschema:"sync_id values from sync, placed in every branch"`
	Network    bool              `json:"network,omitempty"`
	Allow      []string          `json:"allow,omitempty" jsonschema:"egress allow list of every branch, as for run"`
	Deny       []string          `json:"deny,omitempty" jsonschema:"egress deny list of every branch, as for run"`
	MaxOutput  int               `json:"max_output" jsonschema:"bytes of stdout and of stderr to show per branch"`
}

// BranchResult is one branch's outcome.
type BranchResult struct {
	Index       int     `json:"index" jsonschema:"1-based, in the order of commands"`
	Command     string  `json:"command"`
	Verdict     string  `json:"verdict" jsonschema:"PASS (exit code 0) or FAIL"`
	ExitCode    *int    `json:"exit_code,omitempty"`
	TimedOut    bool    `json:"timed_out"`
	DurationS   float64 `json:"duration_s"`
	ResultImage string  `json:"result_image,omitempty" jsonschema:"this branch's filesystem; checkpoint it to keep it"`
	OperationID string  `json:"operation_id,omitempty"`
	Status      string  `json:"status"`
	Stdout      string  `json:"stdout,omitempty"`
	Stderr      string  `json:"stderr,omitempty"`
	Error       string  `json:"error,omitempty"`
}

// BranchOut is the output of branch.
type BranchOut struct {
	Image   string         `json:"image" jsonschema:"the common starting image"`
	Results []BranchResult `json:"results"`
	Passed  int            `json:"passed"`
	Failed  int            `json:"failed"`
	Table   string         `json:"table" jsonschema:"the results as a compact table"`
	Next    string         `json:"next"`
}

// GetOperationIn is the input of get_operation.
type GetOperationIn struct {
	OperationID string `json:"operation_id"`
	MaxOutput   int    `json:"max_output,omitempty" jsonschema:"bytes of stdout and of stderr to show; default 8000, up to 1048576"`
}

// ListOperationsIn is the input of list_operations.
type ListOperationsIn struct {
	Limit  int    `json:"limit" jsonschema:"page size, 1-1000"`
	Offset int    `json:"offset,omitempty"`
	Status string `json:"status,omitempty" jsonschema:"only this status: PENDING, ASSIGNED, EXECUTING, SUCCESS, FAILED or CANCELLED"`
	Kind   string `json:"kind,omitempty" jsonschema:"instance (runs) or image_import"`
	Since  string `json:"since,omitempty" jsonschema:"created after: RFC 3339 time or a duration ago like 15m, 2h"`
}

// OperationSummary is one row of list_operations.
type OperationSummary struct {
	OperationID string  `json:"operation_id"`
	Kind        string  `json:"kind"`
	Status      string  `json:"status"`
	CreatedAt   string  `json:"created_at"`
	DurationS   float64 `json:"duration_s"`
	Image       string  `json:"image,omitempty"`
	ResultImage string  `json:"result_image,omitempty"`
	Error       string  `json:"error,omitempty"`
}

// ListOperationsOut is the output of list_operations.
type ListOperationsOut struct {
	Operations []OperationSummary `json:"operations"`
	Count      int                `json:"count"`
}

// WaitIn is the input of wait_operations.
type WaitIn struct {
	OperationIDs  []string `json:"operation_ids" jsonschema:"operations to wait for (from run or import_image with wait=false)"`
	Timeout       int      `json:"timeout" jsonschema:"seconds to wait at most"`
	Mode          string   `json:"mode" jsonschema:"all: wait for every operation; any: return when the first finishes"`
	CancelPending bool     `json:"cancel_pending,omitempty" jsonschema:"cancel the operations still running when the wait ends"`
	MaxOutput     int      `json:"max_output" jsonschema:"bytes of stdout and of stderr to show per operation"`
}

// WaitOut is the output of wait_operations.
type WaitOut struct {
	Results   []OperationInfo `json:"results" jsonschema:"every operation, in the order asked"`
	Completed []string        `json:"completed"`
	Pending   []string        `json:"pending"`
	Cancelled []string        `json:"cancelled,omitempty"`
	TimedOut  bool            `json:"timed_out"`
}

// CancelIn is the input of cancel_operation.
type CancelIn struct {
	OperationID string `json:"operation_id"`
}

// CancelOut is the output of cancel_operation.
type CancelOut struct {
	OperationID string `json:"operation_id"`
	Cancelled   bool   `json:"cancelled" jsonschema:"false when it had already finished"`
	Status      string `json:"status"`
	Note        string `json:"note,omitempty"`
}

func (s *server) addRunTools(ms *mcpsdk.Server) {
	addTool(ms, &mcpsdk.Tool{
		Name:        "run",
		Annotations: additive,
		Description: "Run one command in a fresh sandbox started from an image. STARTS A SANDBOX (well under a second). " +
			"By default (disposable=false) the whole filesystem afterwards is saved as a new image, result_image: run the next step from it to keep state " +
			"(installed packages, edited files), or from the old image to undo. Returns exit_code, timed_out, stdout/stderr (head and tail, 8000 bytes) and result_image. " +
			"No network unless network=true and allowed; no state leaks between sandboxes. " +
			"To try several alternatives from one state use branch; to look at files use the free list_files/read_file/grep instead of running cat or ls.",
	}, map[string]any{"shell": true, "cwd": "/root", "timeout": 60, "disposable": false, "wait": true}, s.run)

	addTool(ms, &mcpsdk.Tool{
		Name:        "branch",
		Annotations: additive,
		Description: "Run N commands from the same image in parallel, one sandbox each (STARTS N SANDBOXES), and return a compact table: command, exit code, duration, result image, PASS/FAIL. " +
			"This is best-of-N / tree search in one call: checkpoint the state, branch candidate fixes (each command applies one fix and runs the tests), " +
			"diff the winner against the checkpoint, checkpoint the winner to keep it, and rollback to the checkpoint if all fail. Branches never see each other's changes.",
	}, map[string]any{"shell": true, "cwd": "/root", "timeout": 60, "disposable": false, "max_output": 1000}, s.branch)

	addTool(ms, &mcpsdk.Tool{
		Name:        "get_operation",
		Annotations: readOnly,
		Description: "Show a run or import: status, exit code, stdout/stderr, result image. FREE. Use max_output to see more of a long output.",
	}, nil, s.getOperation)

	addTool(ms, &mcpsdk.Tool{
		Name:        "list_operations",
		Annotations: readOnly,
		Description: "List recent runs and imports, newest first, with status and result image. FREE. status=EXECUTING shows what is still running.",
	}, map[string]any{"limit": 20}, s.listOperations)

	addTool(ms, &mcpsdk.Tool{
		Name:        "wait_operations",
		Annotations: readOnly,
		Description: "Wait for operations started with wait=false: mode=all waits for every one, mode=any returns at the first to finish (cancel_pending=true then cancels the rest, for races). " +
			"FREE itself; returns each operation's result.",
	}, map[string]any{"timeout": 300, "mode": "all", "max_output": 2000}, s.waitOperations)

	addTool(ms, &mcpsdk.Tool{
		Name:        "cancel_operation",
		Annotations: &mcpsdk.ToolAnnotations{DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(false)},
		Description: "Cancel a running run or import; a cancelled run saves no image. Harmless on a finished operation (reports cancelled=false).",
	}, nil, s.cancelOperation)
}

// spawnSpec is what run and branch share.
type spawnSpec struct {
	image      string
	shell      bool
	args       []string
	env        map[string]string
	cwd        string
	timeout    int
	disposable bool
	stdin      string
	files      map[string]string
	syncs      []string
	network    bool
	egress     *apitypes.Egress
	keepStdin  bool   // leave stdin open: a long-running instance
	runtime    string // "" for the server's default
}

// request builds the spawn request for command.
func (s *server) request(sp spawnSpec, command string) (apitypes.InstanceSpawnRequest, error) {
	if strings.TrimSpace(command) == "" {
		return apitypes.InstanceSpawnRequest{}, errors.New("command is required")
	}
	if sp.timeout <= 0 {
		return apitypes.InstanceSpawnRequest{}, errors.New("timeout must be a positive number of seconds")
	}
	req := apitypes.InstanceSpawnRequest{
		Command:          command,
		Image:            sp.image,
		Disposable:       ptr(sp.disposable),
		Shell:            ptr(sp.shell),
		Args:             sp.args,
		Env:              sp.env,
		Cwd:              ptr(sp.cwd),
		Timeout:          ptr(float64(sp.timeout)),
		TruncateOutputAt: ptr(int64(captureBytes)),
	}
	if sp.network || sp.egress != nil {
		req.Networking = &apitypes.Networking{Enabled: ptr(true), Egress: sp.egress}
	}
	if sp.stdin != "" || sp.keepStdin {
		r := apitypes.NewStreamRepr([]byte(sp.stdin), false)
		req.Stdin = &apitypes.ClosableStreamRepr{Value: r.Value, Encoding: r.Encoding, Close: ptr(!sp.keepStdin)}
	}
	if sp.runtime != "" {
		req.Runtime = ptr(sp.runtime)
	}
	files := map[string]apitypes.FileSpec{}
	for _, id := range sp.syncs {
		set, ok := s.syncs.get(id)
		if !ok {
			return apitypes.InstanceSpawnRequest{}, fmt.Errorf("unknown sync_id %q: sync ids live as long as this MCP server; call sync again (unchanged files are not uploaded twice)", id)
		}
		for p, f := range set {
			files[p] = f
		}
	}
	for p, id := range sp.files {
		if !strings.HasPrefix(p, "/") {
			return apitypes.InstanceSpawnRequest{}, fmt.Errorf("files: sandbox path %q must be absolute, e.g. /root/%s", p, p)
		}
		files[p] = apitypes.FileSpec{UUID: id, Mode: 0o644}
	}
	if len(files) > 0 {
		req.Files = files
	}
	return req, nil
}

// spawnError explains a failed spawn.
func spawnError(err error) error {
	if client.IsNotFound(err) {
		return fmt.Errorf("%s: a file uuid in files may be wrong (upload returns valid ones) or the image was deleted", message(err))
	}
	if client.IsBadRequest(err) {
		return fmt.Errorf("the sandbox request was rejected: %s", message(err))
	}
	return explain(err)
}

// wait waits for operation id; if the caller gives up first, the operation
// is cancelled, since nobody will read its result.
func (s *server) wait(ctx context.Context, id string) (*apitypes.OperationResponse, error) {
	op, err := s.b.Wait(ctx, id)
	if err != nil && ctx.Err() != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.b.Cancel(cctx, id)
	}
	return op, err
}

func (s *server) run(ctx context.Context, _ *mcpsdk.CallToolRequest, in RunIn) (*mcpsdk.CallToolResult, RunOut, error) {
	im, err := s.resolve(ctx, in.Image)
	if err != nil {
		return nil, RunOut{}, err
	}
	req, err := s.request(spawnSpec{image: im.UUID, shell: in.Shell, args: in.Args, env: in.Env, cwd: in.Cwd, timeout: in.Timeout,
		disposable: in.Disposable, stdin: in.Stdin, files: in.Files, syncs: in.Syncs, network: in.Network, egress: egressOf(in.Allow, in.Deny),
		keepStdin: in.KeepStdin, runtime: in.Runtime}, in.Command)
	if err != nil {
		return nil, RunOut{}, err
	}
	maxOut := in.MaxOutput
	if maxOut <= 0 {
		maxOut = s.opts.MaxOutput
	}
	var op *apitypes.OperationResponse
	if in.Wait && !in.KeepStdin {
		// The step in one request: the daemon answers once it has ended (Run
		// cancels the run if the caller gives up first: nobody would read it).
		if op, err = s.b.Run(ctx, req); err != nil {
			return nil, RunOut{}, spawnError(err)
		}
	} else {
		sp, err := s.b.Spawn(ctx, req)
		if err != nil {
			return nil, RunOut{}, spawnError(err)
		}
		out := RunOut{OperationInfo: OperationInfo{OperationID: sp.UUID, Kind: apitypes.KindInstance, Status: apitypes.StatusPending,
			Command: commandLine(in.Command, in.Args, in.Shell), Image: im.UUID, Disposable: in.Disposable}}
		out.Next = fmt.Sprintf("started in the background: wait_operations operation_ids=[%q] returns the result", sp.UUID)
		if in.KeepStdin {
			out.Next = fmt.Sprintf("running with its stdin open: send_input operation_id=%q talks to it (until= waits for a marker); "+
				"fork_instance, save_instance and expose_port act on it; send_input close=true or cancel_operation ends it", sp.UUID)
		}
		return textResult("%s", renderOperation(out.OperationInfo, out.Next)), out, nil
	}
	out := RunOut{OperationInfo: operationInfo(op, maxOut)}
	s.egressDenials(ctx, &out.OperationInfo)
	if name := strings.TrimPrefix(strings.TrimSpace(in.Checkpoint), "tag:"); name != "" {
		var why string
		switch {
		case out.ResultImage == "":
			why = "the run saved no image"
		case out.ExitCode == nil || *out.ExitCode != 0 || out.TimedOut:
			why = "the command did not exit 0"
		default:
			res, err := s.b.ResolveImage(ctx, out.ResultImage)
			if err == nil {
				_, err = s.name(ctx, res, name, false)
			}
			if err != nil {
				why = explain(err).Error()
			}
		}
		if why == "" {
			out.Checkpoint = name
		} else {
			out.Note = strings.TrimPrefix(out.Note+"; not checkpointed as "+strconv.Quote(name)+": "+why, "; ")
		}
	}
	out.Next = runNext(out.OperationInfo, im.UUID)
	res := textResult("%s", renderOperation(out.OperationInfo, out.Next))
	res.IsError = op.Status == apitypes.StatusFailed || op.Status == apitypes.StatusCancelled
	return res, out, nil
}

// runNext suggests what to do after a run.
func runNext(oi OperationInfo, from string) string {
	switch {
	case oi.Status == apitypes.StatusCancelled:
		return "the run was cancelled and saved nothing; run it again from image " + from
	case oi.Status == apitypes.StatusFailed:
		return "the sandbox failed (not your command): read error, then retry; if it repeats, check the image with list_files"
	case oi.TimedOut:
		return "the command was killed at its timeout: raise timeout, or start it with wait=false and collect it with wait_operations"
	case oi.Disposable:
		return "disposable run: nothing was saved; use disposable=false to keep the filesystem as a new image"
	case oi.ResultImage == "":
		return ""
	case oi.ResultImage == from:
		return fmt.Sprintf("no file changed, so result_image is the same image %s", from)
	case oi.ExitCode != nil && *oi.ExitCode != 0:
		return fmt.Sprintf("the command failed; its filesystem is still saved as %s (inspect it with read_file/list_files). To retry from before, run from image %s", oi.ResultImage, from)
	}
	return fmt.Sprintf("state saved as %s: continue with run image=%q; checkpoint name=... image=%q to name it; diff to=%q shows what changed", oi.ResultImage, oi.ResultImage, oi.ResultImage, oi.ResultImage)
}

func (s *server) branch(ctx context.Context, req *mcpsdk.CallToolRequest, in BranchIn) (*mcpsdk.CallToolResult, BranchOut, error) {
	n := len(in.Commands)
	if n == 0 || n > maxBranches {
		return nil, BranchOut{}, fmt.Errorf("commands must hold 1 to %d commands, one per branch (got %d)", maxBranches, n)
	}
	if in.MaxOutput < 0 {
		return nil, BranchOut{}, fmt.Errorf("max_output must not be negative")
	}
	im, err := s.resolve(ctx, in.Image)
	if err != nil {
		return nil, BranchOut{}, err
	}
	spec := spawnSpec{image: im.UUID, shell: in.Shell, env: in.Env, cwd: in.Cwd, timeout: in.Timeout, disposable: in.Disposable,
		files: in.Files, syncs: in.Syncs, network: in.Network, egress: egressOf(in.Allow, in.Deny)}
	reqs := make([]apitypes.InstanceSpawnRequest, n)
	for i, c := range in.Commands {
		if reqs[i], err = s.request(spec, c); err != nil {
			return nil, BranchOut{}, fmt.Errorf("commands[%d]: %w", i, err)
		}
	}
	results := make([]BranchResult, n)
	ids := make([]string, n)
	// Start every branch before waiting for any.
	for i := range reqs {
		results[i] = BranchResult{Index: i + 1, Command: in.Commands[i], Verdict: "FAIL", Status: "NOT STARTED"}
		sp, err := s.b.Spawn(ctx, reqs[i])
		if err != nil {
			results[i].Error = spawnError(err).Error()
			continue
		}
		ids[i] = sp.UUID
		results[i].OperationID = sp.UUID
	}
	var (
		mu   sync.Mutex
		done int
		wg   sync.WaitGroup
	)
	for i, id := range ids {
		if id == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, err := s.wait(ctx, id)
			r := &results[i]
			if err != nil {
				r.Status, r.Error = "UNKNOWN", explain(err).Error()
			} else {
				oi := operationInfo(op, in.MaxOutput)
				r.Status, r.Error, r.ExitCode, r.TimedOut, r.DurationS = oi.Status, oi.Error, oi.ExitCode, oi.TimedOut, oi.DurationS
				r.ResultImage, r.Stdout, r.Stderr = oi.ResultImage, oi.Stdout, oi.Stderr
				if oi.Status == apitypes.StatusSuccess && oi.ExitCode != nil && *oi.ExitCode == 0 && !oi.TimedOut {
					r.Verdict = "PASS"
				}
			}
			mu.Lock()
			done++
			progress(ctx, req, done, n, fmt.Sprintf("branch %d finished: %s", i+1, r.Verdict))
			mu.Unlock()
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, BranchOut{}, explain(ctx.Err())
	}
	out := BranchOut{Image: im.UUID, Results: results}
	for _, r := range results {
		if r.Verdict == "PASS" {
			out.Passed++
		} else {
			out.Failed++
		}
	}
	out.Table = branchTable(results)
	out.Next = branchNext(out, im)
	return textResult("%s", renderBranch(out)), out, nil
}

// progress reports progress if the client asked for it.
func progress(ctx context.Context, req *mcpsdk.CallToolRequest, done, total int, msg string) {
	if req == nil || req.Session == nil || req.Params == nil {
		return
	}
	tok := req.Params.GetProgressToken()
	if tok == nil {
		return
	}
	_ = req.Session.NotifyProgress(ctx, &mcpsdk.ProgressNotificationParams{ProgressToken: tok, Progress: float64(done), Total: float64(total), Message: msg})
}

// branchTable renders results as a markdown table.
func branchTable(rs []BranchResult) string {
	var b strings.Builder
	b.WriteString("| # | command | exit | time | result image | verdict |\n|---|---|---|---|---|---|\n")
	for _, r := range rs {
		exit := "-"
		switch {
		case r.TimedOut:
			exit = "timeout"
		case r.ExitCode != nil:
			exit = fmt.Sprint(*r.ExitCode)
		case r.Error != "":
			exit = "error"
		}
		img := r.ResultImage
		if img == "" {
			img = "-"
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %.2fs | %s | %s |\n", r.Index, strings.ReplaceAll(short(r.Command, 60), "|", `\|`), exit, r.DurationS, img, r.Verdict)
	}
	return b.String()
}

func branchNext(out BranchOut, from *apitypes.Image) string {
	base := from.UUID
	if t := deref(from.Tag); t != "" {
		base = t
	}
	var pass []string
	for _, r := range out.Results {
		if r.Verdict == "PASS" && r.ResultImage != "" {
			pass = append(pass, r.ResultImage)
		}
	}
	switch {
	case len(pass) > 0:
		return fmt.Sprintf("compare with diff from=%q to=<result image> (e.g. %s), keep the winner with checkpoint name=... image=<result image>, then continue from it; the other branches cost nothing to leave", base, pass[0])
	case out.Passed > 0:
		return "branches passed but were disposable: rerun the winner with disposable=false to keep its filesystem"
	}
	return fmt.Sprintf("every branch failed: read their stderr (get_operation shows more), inspect a result image with read_file, then branch new candidates from %q", base)
}

// renderBranch writes the table and each branch's output for the agent.
func renderBranch(out BranchOut) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d branches from %s: %d PASS, %d FAIL\n\n%s\n", len(out.Results), out.Image, out.Passed, out.Failed, out.Table)
	for _, r := range out.Results {
		if r.Stdout == "" && r.Stderr == "" && r.Error == "" {
			continue
		}
		fmt.Fprintf(&b, "--- #%d %s (operation %s)\n", r.Index, short(r.Command, 60), r.OperationID)
		if r.Error != "" {
			fmt.Fprintf(&b, "error: %s\n", r.Error)
		}
		if r.Stdout != "" {
			fmt.Fprintf(&b, "stdout:\n%s\n", strings.TrimRight(r.Stdout, "\n"))
		}
		if r.Stderr != "" {
			fmt.Fprintf(&b, "stderr:\n%s\n", strings.TrimRight(r.Stderr, "\n"))
		}
	}
	fmt.Fprintf(&b, "next: %s\n", out.Next)
	return b.String()
}

// operation fetches one operation, explaining an unknown id.
func (s *server) operation(ctx context.Context, id string) (*apitypes.OperationResponse, error) {
	id = strings.TrimSpace(id)
	if id == "" {
		return nil, errors.New("operation_id is required (run, branch and import_image return them; list_operations lists them)")
	}
	op, err := s.b.Operation(ctx, id)
	if client.IsNotFound(err) || client.IsBadRequest(err) {
		return nil, operationNotFound(id)
	}
	if err != nil {
		return nil, explain(err)
	}
	return op, nil
}

func (s *server) getOperation(ctx context.Context, _ *mcpsdk.CallToolRequest, in GetOperationIn) (*mcpsdk.CallToolResult, OperationInfo, error) {
	if in.MaxOutput < 0 || in.MaxOutput > captureBytes {
		return nil, OperationInfo{}, fmt.Errorf("max_output must be between 0 and %d", captureBytes)
	}
	op, err := s.operation(ctx, in.OperationID)
	if err != nil {
		return nil, OperationInfo{}, err
	}
	maxOut := in.MaxOutput
	if maxOut == 0 {
		maxOut = s.opts.MaxOutput
	}
	oi := operationInfo(op, maxOut)
	s.egressDenials(ctx, &oi)
	next := ""
	if !oi.Done {
		next = fmt.Sprintf("still %s: wait_operations operation_ids=[%q]", strings.ToLower(oi.Status), oi.OperationID)
	}
	return textResult("%s", renderOperation(oi, next)), oi, nil
}

var statuses = []string{apitypes.StatusPending, apitypes.StatusAssigned, apitypes.StatusExecuting, apitypes.StatusSuccess, apitypes.StatusFailed, apitypes.StatusCancelled}

func (s *server) listOperations(ctx context.Context, _ *mcpsdk.CallToolRequest, in ListOperationsIn) (*mcpsdk.CallToolResult, ListOperationsOut, error) {
	if in.Limit < 1 || in.Limit > 1000 {
		return nil, ListOperationsOut{}, fmt.Errorf("limit must be between 1 and 1000")
	}
	o := client.OperationListOptions{Page: client.Page{Limit: in.Limit, Offset: in.Offset, Since: in.Since}}
	if in.Status != "" {
		st := strings.ToUpper(strings.TrimSpace(in.Status))
		if !slices.Contains(statuses, st) {
			return nil, ListOperationsOut{}, fmt.Errorf("status %q is not one of %s", in.Status, strings.Join(statuses, ", "))
		}
		o.Status = []string{st}
	}
	switch k := strings.ToLower(strings.TrimSpace(in.Kind)); k {
	case "":
	case apitypes.KindInstance, apitypes.KindImageImport:
		o.Kind = k
	default:
		return nil, ListOperationsOut{}, fmt.Errorf("kind %q is not instance or image_import", in.Kind)
	}
	ops, err := s.b.ListOperations(ctx, o)
	if err != nil {
		return nil, ListOperationsOut{}, explain(err)
	}
	out := ListOperationsOut{Operations: make([]OperationSummary, 0, len(ops)), Count: len(ops)}
	for _, op := range ops {
		out.Operations = append(out.Operations, OperationSummary{
			OperationID: op.UUID, Kind: op.Kind, Status: op.Status, CreatedAt: op.CreatedAt, DurationS: round2(op.Duration),
			Image: deref(op.ImageUUID), ResultImage: deref(op.ResultImageUUID), Error: deref(op.Error),
		})
	}
	return nil, out, nil
}

func (s *server) waitOperations(ctx context.Context, req *mcpsdk.CallToolRequest, in WaitIn) (*mcpsdk.CallToolResult, WaitOut, error) {
	if len(in.OperationIDs) == 0 || len(in.OperationIDs) > 64 {
		return nil, WaitOut{}, fmt.Errorf("operation_ids must hold 1 to 64 operation ids")
	}
	if in.Timeout <= 0 {
		return nil, WaitOut{}, fmt.Errorf("timeout must be a positive number of seconds")
	}
	if in.Mode != "all" && in.Mode != "any" {
		return nil, WaitOut{}, fmt.Errorf("mode must be \"all\" or \"any\"")
	}
	n := len(in.OperationIDs)
	ops := make([]*apitypes.OperationResponse, n)
	for i, id := range in.OperationIDs {
		op, err := s.operation(ctx, id)
		if err != nil {
			return nil, WaitOut{}, err
		}
		ops[i] = op
	}
	wctx, cancel := context.WithTimeout(ctx, time.Duration(in.Timeout)*time.Second)
	defer cancel()
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		done int
	)
	for _, op := range ops {
		if apitypes.IsTerminal(op.Status) {
			done++
		}
	}
	if in.Mode == "any" && done > 0 {
		cancel()
	}
	for i, op := range ops {
		if apitypes.IsTerminal(op.Status) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.b.Wait(wctx, op.UUID)
			if err != nil {
				return
			}
			mu.Lock()
			ops[i] = res
			done++
			progress(ctx, req, done, n, fmt.Sprintf("operation %s finished: %s", op.UUID, res.Status))
			mu.Unlock()
			if in.Mode == "any" {
				cancel()
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, WaitOut{}, explain(ctx.Err())
	}
	out := WaitOut{Results: make([]OperationInfo, 0, n), Completed: []string{}, Pending: []string{}}
	out.TimedOut = errors.Is(wctx.Err(), context.DeadlineExceeded)
	for i, op := range ops {
		if !apitypes.IsTerminal(op.Status) {
			// Refresh what is still running, and cancel it if asked.
			if in.CancelPending {
				if err := s.b.Cancel(ctx, op.UUID); err == nil {
					out.Cancelled = append(out.Cancelled, op.UUID)
				}
			}
			if cur, err := s.b.Operation(ctx, op.UUID); err == nil {
				ops[i] = cur
			}
		}
		oi := operationInfo(ops[i], in.MaxOutput)
		s.egressDenials(ctx, &oi)
		out.Results = append(out.Results, oi)
		if oi.Done {
			out.Completed = append(out.Completed, oi.OperationID)
		} else {
			out.Pending = append(out.Pending, oi.OperationID)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d finished", len(out.Completed), n)
	if out.TimedOut {
		b.WriteString(" (timed out; call wait_operations again for the pending ones)")
	}
	if len(out.Cancelled) > 0 {
		fmt.Fprintf(&b, "; cancelled %s", strings.Join(out.Cancelled, ", "))
	}
	b.WriteString("\n\n")
	for _, oi := range out.Results {
		b.WriteString(renderOperation(oi, ""))
		b.WriteString("\n")
	}
	return textResult("%s", b.String()), out, nil
}

func (s *server) cancelOperation(ctx context.Context, _ *mcpsdk.CallToolRequest, in CancelIn) (*mcpsdk.CallToolResult, CancelOut, error) {
	op, err := s.operation(ctx, in.OperationID)
	if err != nil {
		return nil, CancelOut{}, err
	}
	out := CancelOut{OperationID: op.UUID, Status: op.Status}
	if apitypes.IsTerminal(op.Status) {
		out.Note = "already finished (" + op.Status + "): nothing to cancel"
		return nil, out, nil
	}
	if err := s.b.Cancel(ctx, op.UUID); err != nil {
		if client.IsConflict(err) {
			out.Note = "it finished before the cancel arrived"
			if cur, err := s.b.Operation(ctx, op.UUID); err == nil {
				out.Status = cur.Status
			}
			return nil, out, nil
		}
		return nil, CancelOut{}, explain(err)
	}
	out.Cancelled = true
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if cur, err := s.b.Wait(wctx, op.UUID); err == nil {
		out.Status = cur.Status
	} else if cur, err := s.b.Operation(ctx, op.UUID); err == nil {
		out.Status = cur.Status
	}
	return nil, out, nil
}

// egressDenials fills oi.EgressDenied for a finished run under an egress
// policy from the run's final egress_denied event (an event of spid 0, so
// the output's events are not read). A failure to read leaves it empty.
func (s *server) egressDenials(ctx context.Context, oi *OperationInfo) {
	if !oi.egress || !oi.Done {
		return
	}
	spid := 0
	_ = s.b.StreamEvents(ctx, oi.OperationID, client.EventsOptions{After: -1, Spid: &spid}, func(ev apitypes.OperationEvent) error {
		var d apitypes.EventDataEgressDenied
		if ev.Type == apitypes.EventEgressDenied && json.Unmarshal(ev.Data, &d) == nil && !d.Live {
			oi.EgressDenied = d.Summary()
		}
		return nil
	})
}
