package mcp

import (
	"context"
	"fmt"
	"slices"
	"strings"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// instructions is sent to clients when they connect.
const instructions = `arbor runs commands in sandboxes that branch like git. Every non-disposable run (the default) saves the whole filesystem afterwards as a new immutable image (result_image). Any image can be run again, branched, inspected, diffed or named; nothing is lost by trying.

Workflow: checkpoint -> branch -> compare -> keep the winner -> roll back.
1. run setup steps from a base image (list_images tagged=true, or import_image); each result_image is the new state.
2. checkpoint name="env" image=<result_image>.
3. branch image="env" commands=["fix A && test", "fix B && test", ...]: parallel sandboxes, a PASS/FAIL table with each result image.
4. diff from="env" to=<winner>; read_file any image.
5. checkpoint name="best" image=<winner> and continue from "best".
6. when a path fails: rollback name="env" and continue from the image it returns.

FREE (no sandbox): list_images, get_image, lineage, diff, list_files, read_file, grep, get_operation, list_operations, wait_operations, checkpoint, rollback, set_tag, upload, get_guide. STARTS SANDBOXES: run (one), branch (one per command).
Refer to images by UUID, "tag:NAME" or a checkpoint name. get_guide has more.`

// guide sections, in the order get_guide lists them.
var guideSections = []struct{ name, text string }{
	{"workflow", `# The arbor workflow

Sandboxes branch like git. A run starts from an image; with disposable=false (the default) the filesystem after the command becomes a new image, result_image. Images are immutable, so every state you reach stays available.

1. Start: list_images tagged=true shows named bases and checkpoints; import_image pulls a new base (alpine:3.20, python:3.12-slim).
2. Prepare: run image=<base> command="install tools, build" -> result_image E. Steps chain: run the next from E.
3. Checkpoint: checkpoint name="env" image=E.
4. Branch: branch image="env" commands=[one command per candidate, each applying a fix and running the tests]. All start at once; the table shows exit code, time, result image and PASS/FAIL.
5. Compare: diff from="env" to=<candidate result image> shows what a candidate changed; read_file/grep inspect it.
6. Keep: checkpoint name="best" image=<winner>; continue with run image="best".
7. Back up: rollback name="env" returns env's image; continue from it. Nothing is deleted.

Beam search: from a checkpoint branch 5 candidates, checkpoint the best 2 (cand-1, cand-2), branch from each, repeat.
Crash recovery: after a restart, list_images tagged=true shows your checkpoints, lineage shows the commands that led to an image, list_operations shows recent runs.`},
	{"tools", `# Tools

Free (no sandbox, instant):
- list_images, get_image: find images; names resolve to UUIDs.
- lineage: ancestors (with the command that produced each) and children.
- diff: what changed between two images (paths, sizes, unified diffs).
- list_files, read_file, grep: inspect any image's files.
- get_operation, list_operations, wait_operations, cancel_operation: runs and imports.
- checkpoint, rollback, set_tag: names for images.
- upload (and sync, download where the server runs on your machine): files.

Sandboxes:
- run: one command; returns exit_code, timed_out, stdout/stderr, result_image.
- branch: N commands from one image in parallel; returns a PASS/FAIL table.
- run keep_stdin=true (runtime=runsc to fork or save it): a long-running instance (a REPL, a server); run returns at once.
- send_input: write to a running instance's stdin (or signal it) and read what it printed after; free.
- fork_instance: N copies of a running instance (a REPL, a server), memory and all.
- save_instance, restore_instance: keep a running instance, memory and all, as an image; start copies of it later.
- expose_port: a signed URL (HTTP, WebSocket) to a server listening inside a running instance.

Network: import_image pulls from registries.`},
	{"state", `# State, images and checkpoints

- An image is an immutable filesystem snapshot with a UUID. Processes and memory are not saved, only files.
- run with disposable=false (default) saves result_image; if nothing changed it equals the input image. disposable=true saves nothing (use it for pure checks).
- A failed command (exit code != 0) still saves its filesystem, so you can inspect what went wrong.
- Environment variables do not persist between runs: pass env= each time or write them to a file you source.
- A checkpoint is a tag: one name points to one image, and an image carries at most one name. checkpoint refuses to rename an already named image unless retag=true; reusing a name moves it (the answer says from where).
- image= accepts a UUID, "tag:NAME" or a bare name.`},
	{"files", `# Getting files in and out

- upload content="..." (or content_base64) returns a file uuid; run files={"/root/app.py": uuid} places it before the command.
- sync source=<local dir> destination=/root/project (only via arbor mcp on your machine) uploads only files whose content the server lacks and returns a sync_id; run syncs=[sync_id]. Re-sync after editing: only changes travel.
- To keep files in the image, run with disposable=false (e.g. command="true") and checkpoint the result.
- read_file/list_files/grep read any image without a sandbox; download copies a file to your machine.`},
	{"async", `# Background work

- run wait=false returns an operation_id at once; start several, then wait_operations operation_ids=[...] (mode=all, or mode=any for the first to finish; cancel_pending=true stops the rest).
- branch already runs its commands in parallel and waits for all.
- get_operation shows one operation; max_output shows more of its output (up to 1 MiB is kept).
- cancel_operation stops a run; a cancelled run saves nothing.`},
	{"errors", `# Errors

- "image not found": use a UUID from list_images, "tag:NAME", or one of the checkpoint names the error lists.
- exit_code != 0 is your command failing, not arbor: read stderr; the filesystem is still saved in result_image.
- timed_out=true: the command hit timeout; raise it or run in the background (wait=false).
- status FAILED: the sandbox itself failed; the error field says why.
- "operations in flight (limit N)": wait for or cancel some operations.
- "daemon not reachable": the user must start arbor (arbor serve).`},
}

func guideNames() []string {
	names := make([]string, len(guideSections))
	for i, g := range guideSections {
		names[i] = g.name
	}
	return names
}

func guideText(name string) (string, bool) {
	for _, g := range guideSections {
		if g.name == name {
			return g.text, true
		}
	}
	return "", false
}

// GuideIn is the input of get_guide.
type GuideIn struct {
	Section string `json:"section" jsonschema:"workflow, tools, state, files, async or errors"`
}

// GuideOut is the output of get_guide.
type GuideOut struct {
	Section           string   `json:"section"`
	Content           string   `json:"content"`
	AvailableSections []string `json:"available_sections"`
}

func (s *server) addGuide(ms *mcpsdk.Server) {
	addTool(ms, &mcpsdk.Tool{
		Name:        "get_guide",
		Annotations: readOnly,
		Description: "Read arbor's guide: workflow (checkpoint, branch, compare, keep, roll back), tools (free vs. sandbox), state, files, async, errors. FREE.",
	}, map[string]any{"section": "workflow"}, func(_ context.Context, _ *mcpsdk.CallToolRequest, in GuideIn) (*mcpsdk.CallToolResult, GuideOut, error) {
		sec := strings.ToLower(strings.TrimSpace(in.Section))
		text, ok := guideText(sec)
		if !ok {
			return nil, GuideOut{}, fmt.Errorf("unknown section %q: choose one of %s", in.Section, strings.Join(guideNames(), ", "))
		}
		return textResult("%s", text), GuideOut{Section: sec, Content: text, AvailableSections: guideNames()}, nil
	})
}

// prompt is one workflow prompt: its arguments (required ones marked) and
// a template filled with fmt-style %[name] placeholders.
type prompt struct {
	name, title, desc string
	args              []*mcpsdk.PromptArgument
	defaults          map[string]string
	text              string
}

var prompts = []prompt{
	{
		name:  "explore-fixes",
		title: "Explore fixes in parallel",
		desc:  "Checkpoint the current state, try N candidate fixes in parallel sandboxes, compare them, keep the winner.",
		args: []*mcpsdk.PromptArgument{
			{Name: "task", Description: "what to fix", Required: true},
			{Name: "image", Description: "the image holding the project (UUID or checkpoint name)", Required: true},
			{Name: "test_command", Description: "command that passes when the task is done"},
			{Name: "candidates", Description: "number of candidate fixes (default 3)"},
		},
		defaults: map[string]string{"test_command": "(find the project's test command first)", "candidates": "3"},
		text: `Task: {task}
Use arbor's sandboxes to explore {candidates} candidate fixes from the same state and keep the best.

1. checkpoint name="explore-base" image="{image}" (if the image is already named, use that name).
2. Inspect for free: list_files, read_file, grep on "explore-base" to understand the code. Do not run cat/ls in sandboxes.
3. Write {candidates} different candidate fixes. For each, build one shell command that applies it (e.g. a heredoc or sed) and then runs: {test_command}
4. branch image="explore-base" commands=[...] with all candidates at once. Read the PASS/FAIL table.
5. For each PASS, diff from="explore-base" to=<its result image> and judge the change (smallest, cleanest, fixes the cause).
6. checkpoint name="explore-winner" image=<best result image>, and continue from it.
7. If every candidate fails, read their stderr, then rollback name="explore-base" and branch new candidates informed by the failures.
Report the winner's result image, its diff, and why it won.`,
	},
	{
		name:  "beam-search",
		title: "Beam search over candidate changes",
		desc:  "Expand several candidates per round from the best checkpoints, keep the top K, repeat.",
		args: []*mcpsdk.PromptArgument{
			{Name: "task", Description: "the goal", Required: true},
			{Name: "image", Description: "starting image (UUID or checkpoint name)", Required: true},
			{Name: "score_command", Description: "command whose output or exit code scores a state"},
			{Name: "width", Description: "candidates per round (default 5)"},
			{Name: "keep", Description: "states kept per round (default 2)"},
		},
		defaults: map[string]string{"score_command": "(define one: e.g. run the tests and count passes)", "width": "5", "keep": "2"},
		text: `Goal: {task}
Run a beam search with arbor. Start: checkpoint name="beam-0" image="{image}".
Each round r:
1. For each kept checkpoint, propose candidates (in total {width}) as shell commands that apply a change and then run: {score_command}
2. branch from each kept checkpoint with its candidates (one branch call per checkpoint).
3. Score every branch from its exit code and output; keep the best {keep}: checkpoint name="beam-<r>-<k>" image=<result image>.
4. Stop when a state fully solves the goal or scores stop improving; rollback to the best checkpoint if a round made things worse.
Use lineage on the final image to report the sequence of commands that led to it.`,
	},
	{
		name:  "resume",
		title: "Resume after a crash",
		desc:  "Find where previous work stopped (checkpoints, lineage, recent runs) and continue from the last good state.",
		args: []*mcpsdk.PromptArgument{
			{Name: "checkpoint", Description: "the checkpoint to resume from, if known"},
		},
		defaults: map[string]string{"checkpoint": "(unknown: find it)"},
		text: `Resume earlier arbor work. Checkpoint to resume from: {checkpoint}
1. list_images tagged=true shows the checkpoints; list_operations limit=20 shows the last runs and their result images.
2. lineage image=<candidate> shows the commands that produced it; read_file/diff confirm its state.
3. rollback name=<the last good checkpoint> and continue from the image it returns. Operations still EXECUTING can be collected with wait_operations.`,
	},
	{
		name:  "debug-failure",
		title: "Debug a failed run",
		desc:  "Explain why a run failed using its output and its saved filesystem.",
		args: []*mcpsdk.PromptArgument{
			{Name: "operation_id", Description: "the failed run", Required: true},
		},
		text: `Debug arbor operation {operation_id}.
1. get_operation operation_id="{operation_id}" max_output=32000: read exit_code, timed_out, stderr.
2. Its result_image keeps the filesystem as the command left it: list_files, read_file and grep it for logs and partial outputs (free).
3. diff to=<result_image> shows what the command changed.
4. Form a hypothesis, then test fixes with branch from the run's input image, one command per fix.`,
	},
	{
		name:  "inspect-image",
		title: "Inspect an image",
		desc:  "Summarize an image's contents and history without starting a sandbox.",
		args: []*mcpsdk.PromptArgument{
			{Name: "image", Description: "UUID or checkpoint name", Required: true},
		},
		text: `Inspect arbor image {image} without starting sandboxes:
get_image, lineage (how it was built), list_files on / and on the interesting directories, read_file of key files (package manifests, configs), diff against its parent. Summarize what is installed and what the last commands changed.`,
	},
}

func addPrompts(ms *mcpsdk.Server) {
	for _, p := range prompts {
		ms.AddPrompt(&mcpsdk.Prompt{Name: p.name, Title: p.title, Description: p.desc, Arguments: p.args},
			func(_ context.Context, req *mcpsdk.GetPromptRequest) (*mcpsdk.GetPromptResult, error) {
				vals := map[string]string{}
				for k, v := range p.defaults {
					vals[k] = v
				}
				for k, v := range req.Params.Arguments {
					if strings.TrimSpace(v) != "" {
						vals[k] = v
					}
				}
				var repl []string
				for _, a := range p.args {
					v, ok := vals[a.Name]
					if !ok && a.Required {
						return nil, fmt.Errorf("prompt %s needs argument %q", p.name, a.Name)
					}
					repl = append(repl, "{"+a.Name+"}", v)
				}
				text := strings.NewReplacer(repl...).Replace(p.text)
				return &mcpsdk.GetPromptResult{
					Description: p.desc,
					Messages:    []*mcpsdk.PromptMessage{{Role: "user", Content: &mcpsdk.TextContent{Text: text}}},
				}, nil
			})
	}
}

// promptNames lists the prompts (for tests and docs).
func promptNames() []string {
	var names []string
	for _, p := range prompts {
		names = append(names, p.name)
	}
	slices.Sort(names)
	return names
}
