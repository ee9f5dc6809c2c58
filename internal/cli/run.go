package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// spawnFlags are the sandbox settings run and branch share.
type spawnFlags struct {
	fs          *pflag.FlagSet // tells a flag given as 0 from one not given
	env         []string
	cwd         string
	timeout     string
	files       []string
	runtime     string
	network     bool
	egress      egressFlags
	memory      string
	cpus        float64
	pids        int64
	maxLayer    string
	truncate    string
	hostname    string
	uid, gid    int
	preserveEnv bool
	disposable  bool
}

// The daemon's bounds on pids, truncate_output_at and uid/gid
// (internal/engine/run.go), checked here too so that a mistake is named
// before anything is sent.
const (
	maxPids     = 1 << 16
	maxTruncate = 64 << 20
	maxID       = 1<<31 - 2
)

func (f *spawnFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	f.fs = fl
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable, K=V (K alone copies it from this shell); repeatable")
	fl.StringVarP(&f.cwd, "workdir", "C", "", "working directory inside the sandbox (absolute; default /root)")
	fl.StringVar(&f.timeout, "timeout", "", "kill the command after this long: seconds or 90s, 5m, 1h (default: the server's, 60s)")
	fl.StringArrayVarP(&f.files, "file", "f", nil, "copy a local file in, LOCAL:/PATH[:MODE] (mode in octal, default the local file's); repeatable")
	fl.StringVar(&f.runtime, "runtime", "", "sandbox runtime: runsc (gVisor), runc or crun (default: the daemon's)")
	fl.BoolVar(&f.network, "network", false, "allow outbound network access (inbound is never possible)")
	f.egress.register(fl)
	fl.StringVar(&f.memory, "memory", "", "memory limit: bytes or 512M, 2G (default: the server's)")
	fl.Float64Var(&f.cpus, "cpus", 0, "CPU limit in cores, e.g. 1.5 (default: none)")
	fl.Int64Var(&f.pids, "pids", 0, fmt.Sprintf("most processes and threads the sandbox may have at once, 1 to %d (default 4096)", maxPids))
	fl.StringVar(&f.maxLayer, "max-layer-bytes", "", "most the command may write to the filesystem: bytes or 100M, 2G; past it writes fail and a size_cap event says so (default and ceiling: the server's --max-layer-bytes)")
	fl.StringVar(&f.truncate, "truncate-output-at", "", "keep at most this much of stdout and of stderr each: bytes or 64K, 1M, up to 64M; 0 keeps none (default 1M)")
	fl.StringVar(&f.hostname, "hostname", "", "the sandbox's host name, up to 64 letters, digits, dots and dashes (default linuxkit)")
	fl.IntVar(&f.uid, "uid", 0, fmt.Sprintf("run the command as this user ID, 0 to %d (default 0, root in the sandbox)", maxID))
	fl.IntVar(&f.gid, "gid", 0, fmt.Sprintf("run the command with this group ID, 0 to %d (default 0)", maxID))
	fl.BoolVar(&f.preserveEnv, "preserve-env", false, "save the command's environment (the image's plus -e) with the result image: later runs on it start with it")
	fl.BoolVar(&f.disposable, "disposable", false, "save nothing: no result image, output and exit code only")
}

// spawnRequest builds the spawn request these flags describe, but for the
// image and the -f files: everything that needs no daemon, so a mistake is
// named before anything is sent.
func (f *spawnFlags) spawnRequest() (apitypes.InstanceSpawnRequest, error) {
	var req apitypes.InstanceSpawnRequest
	changed := func(name string) bool { return f.fs != nil && f.fs.Changed(name) }
	if len(f.env) > 0 {
		req.Env = map[string]string{}
		for _, kv := range f.env {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				if v, ok = os.LookupEnv(k); !ok {
					return req, fmt.Errorf("-e %s: %s is not set in this shell: pass -e %s=VALUE", kv, k, k)
				}
			}
			if k == "" {
				return req, fmt.Errorf("-e %q: use NAME=VALUE", kv)
			}
			req.Env[k] = v
		}
	}
	if f.cwd != "" {
		if !strings.HasPrefix(f.cwd, "/") {
			return req, fmt.Errorf("-C %s: the working directory must be an absolute path inside the sandbox, like /root/src", f.cwd)
		}
		req.Cwd = &f.cwd
	}
	if f.timeout != "" {
		t, err := parseSeconds("--timeout", f.timeout)
		if err != nil {
			return req, err
		}
		req.Timeout = &t
	}
	if f.runtime != "" {
		req.Runtime = &f.runtime
	}
	if f.network || f.egress.set() {
		req.Networking = &apitypes.Networking{Enabled: ptr(true), Egress: f.egress.policy()}
	}
	var rl apitypes.ResourcesLimits
	if f.memory != "" {
		n, err := parseBytes(f.memory)
		if err != nil {
			return req, fmt.Errorf("--memory: %w", err)
		}
		rl.MemoryBytes = &n
	}
	if f.cpus != 0 {
		if f.cpus < 0 {
			return req, fmt.Errorf("--cpus %v must be positive", f.cpus)
		}
		rl.CPUs = &f.cpus
	}
	if changed("pids") {
		if f.pids < 1 || f.pids > maxPids {
			return req, fmt.Errorf("--pids %d: use 1 to %d", f.pids, maxPids)
		}
		rl.Pids = &f.pids
	}
	if f.maxLayer != "" {
		n, err := parseBytes(f.maxLayer)
		if err != nil {
			return req, fmt.Errorf("--max-layer-bytes: %w", err)
		}
		rl.MaxLayerBytes = &n
	}
	if rl != (apitypes.ResourcesLimits{}) {
		req.ResourcesLimits = &rl
	}
	if f.truncate != "" {
		var n int64
		if strings.TrimSpace(f.truncate) != "0" { // parseBytes takes no 0, which keeps no output
			var err error
			if n, err = parseBytes(f.truncate); err != nil {
				return req, fmt.Errorf("--truncate-output-at: %w (0 keeps none)", err)
			}
		}
		if n > maxTruncate {
			return req, fmt.Errorf("--truncate-output-at %s: the server keeps at most 64M of each stream; ask for that or less", f.truncate)
		}
		req.TruncateOutputAt = &n
	}
	if changed("hostname") {
		if err := validHostname(f.hostname); err != nil {
			return req, err
		}
		req.Hostname = &f.hostname
	}
	for _, id := range []struct {
		name string
		v    int
		dst  **int
	}{{"uid", f.uid, &req.UID}, {"gid", f.gid, &req.GID}} {
		if !changed(id.name) {
			continue
		}
		if id.v < 0 || id.v > maxID {
			return req, fmt.Errorf("--%s %d: use 0 to %d", id.name, id.v, maxID)
		}
		*id.dst = ptr(id.v)
	}
	if f.preserveEnv {
		req.PreserveEnv = ptr(true)
	}
	if f.disposable {
		req.Disposable = ptr(true)
	}
	return req, nil
}

// validHostname checks --hostname as the daemon does, with the same
// advice (letters, digits, dots and dashes).
func validHostname(h string) error {
	if h == "" || len(h) > 64 || strings.ContainsAny(h, " \t\n/\x00") {
		return fmt.Errorf("--hostname %q: use up to 64 letters, digits, dots and dashes, like build-1", h)
	}
	return nil
}

// addFiles uploads the -f files the daemon does not have yet and names
// them in req.
func (f *spawnFlags) addFiles(ctx context.Context, c *client.Client, req *apitypes.InstanceSpawnRequest) error {
	for _, spec := range f.files {
		dst, fs, err := uploadSpec(ctx, c, spec)
		if err != nil {
			return err
		}
		if req.Files == nil {
			req.Files = map[string]apitypes.FileSpec{}
		}
		req.Files[dst] = fs
	}
	return nil
}

// uploadSpec parses LOCAL:/PATH[:MODE] and makes LOCAL available on the
// daemon.
func uploadSpec(ctx context.Context, c *client.Client, spec string) (string, apitypes.FileSpec, error) {
	i := strings.Index(spec, ":/")
	if i <= 0 {
		return "", apitypes.FileSpec{}, fmt.Errorf("-f %q: use LOCAL:/PATH[:MODE], e.g. -f ./fix.py:/root/fix.py or -f run.sh:/root/run.sh:0755", spec)
	}
	local, dst := spec[:i], spec[i+1:]
	var mode apitypes.FileMode
	hasMode := false
	if j := strings.LastIndex(dst, ":"); j > 0 {
		m, err := apitypes.ParseMode(dst[j+1:])
		if err != nil {
			return "", apitypes.FileSpec{}, fmt.Errorf("-f %q: %v", spec, err)
		}
		mode, hasMode, dst = m, true, dst[:j]
	}
	fi, err := os.Stat(local)
	if err != nil {
		return "", apitypes.FileSpec{}, fmt.Errorf("-f %s: %w", spec, err)
	}
	if !fi.Mode().IsRegular() {
		return "", apitypes.FileSpec{}, fmt.Errorf("-f %s: %s is not a regular file (copy directories in with `arbor import DIR` or a tar)", spec, local)
	}
	if !hasMode {
		mode = apitypes.FileMode(fi.Mode().Perm())
	}
	up, err := c.EnsureFile(ctx, local)
	if err != nil {
		return "", apitypes.FileSpec{}, fmt.Errorf("upload %s: %w", local, err)
	}
	return dst, apitypes.FileSpec{UUID: up.UUID, Mode: mode}, nil
}

// needsShell reports whether a single command argument is a shell command
// line rather than a program name.
func needsShell(s string) bool {
	return strings.ContainsAny(s, " \t\n|&;<>()$`\\\"'*?[]~{}!#=")
}

// commandOf turns the words after -- into the spawn request's command.
func commandOf(req *apitypes.InstanceSpawnRequest, words []string, shell bool) {
	if shell || (len(words) == 1 && needsShell(words[0])) {
		req.Command = strings.Join(words, " ")
		req.Shell = ptr(true)
		return
	}
	req.Command, req.Args = words[0], words[1:]
}

func ptr[T any](v T) *T { return &v }

// outcome is what following an operation's events found.
type outcome struct {
	op        string
	status    string
	exitCode  int
	signal    int
	timedOut  bool
	image     *string
	errMsg    *string
	duration  float64 // seconds
	stdout    strings.Builder
	stderr    strings.Builder
	truncated []string                        // streams the server cut at truncate_output_at
	egress    *apitypes.EventDataEgressDenied // the run's totals, if its egress policy blocked anything
}

// follow reads op's events until completion, copying the output to stdout
// and stderr as it arrives (when they are not nil) and recording it.
func follow(ctx context.Context, c *client.Client, op string, stdout, stderr io.Writer) (*outcome, error) {
	o := &outcome{op: op, exitCode: -1}
	err := c.FollowEvents(ctx, op, -1, func(ev apitypes.OperationEvent) error {
		switch ev.Type {
		case apitypes.EventStdout, apitypes.EventStderr:
			b, err := ev.StreamBytes()
			if err != nil {
				return err
			}
			w, rec := stdout, &o.stdout
			if ev.Type == apitypes.EventStderr {
				w, rec = stderr, &o.stderr
			}
			rec.Write(b)
			if w != nil {
				_, _ = w.Write(b)
			}
		case apitypes.EventTruncated:
			var d apitypes.EventDataTruncated
			if json.Unmarshal(ev.Data, &d) == nil {
				o.truncated = append(o.truncated, fmt.Sprintf("%s (%d bytes dropped)", d.Stream, d.BytesDropped))
			}
		case apitypes.EventEgressDenied:
			var d apitypes.EventDataEgressDenied
			if json.Unmarshal(ev.Data, &d) == nil && !d.Live { // live events are parts of the final one
				o.egress = &d
			}
		case apitypes.EventExit:
			var d apitypes.EventDataExit
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return fmt.Errorf("decode exit event: %w", err)
			}
			if ev.Spid <= 1 {
				o.exitCode, o.signal, o.timedOut = d.Code, d.Signal, d.TimedOut
			}
		case apitypes.EventCompletion:
			var d apitypes.EventDataCompletion
			if err := json.Unmarshal(ev.Data, &d); err != nil {
				return fmt.Errorf("decode completion event: %w", err)
			}
			o.status, o.image, o.errMsg, o.duration = d.Status, d.ResultImageUUID, d.Error, float64(d.DurationMs)/1000
		}
		return nil
	})
	return o, err
}

// code is the exit status that reports o: the command's own exit code,
// 124 for a timeout, 128+N for a signal, 130 when cancelled, 1 on failure.
func (o *outcome) code() int {
	switch {
	case o.status == apitypes.StatusCancelled:
		return 130
	case o.status != apitypes.StatusSuccess:
		return 1
	case o.timedOut:
		return 124
	case o.exitCode < 0 && o.signal > 0:
		return 128 + o.signal
	case o.exitCode < 0:
		return 1
	}
	return o.exitCode
}

// tagBlocker returns why o's result image did not take tag want, or "" if
// it may: the daemon's rule for result_tag. A failed command's result must
// not take over a tag that names a good state, and a run that changed
// nothing has no new image (its result is its input in, whose own tag
// would go: an image holds one tag).
func (o *outcome) tagBlocker(in *apitypes.Image, want string) string {
	switch {
	case o.status != apitypes.StatusSuccess:
		return fmt.Sprintf("the run ended %s; a tag moves only onto the result of a command that exits 0", o.status)
	case o.timedOut:
		return "the command timed out; a tag moves only onto the result of a command that exits 0"
	case o.exitCode < 0 && o.signal > 0:
		return fmt.Sprintf("the command was killed by signal %d; a tag moves only onto the result of a command that exits 0", o.signal)
	case o.exitCode != 0:
		return fmt.Sprintf("the command exited %d; a tag moves only onto the result of a command that exits 0", o.exitCode)
	case o.image == nil:
		return "the run saved no image"
	case *o.image == in.UUID:
		return fmt.Sprintf("the run changed nothing, so it made no new image (its result is its input %s); to name that image: arbor tag %s %s",
			shortID(in.UUID), shortID(in.UUID), want)
	}
	return ""
}

// resultTag reports how tag want fared on operation op, spawned with
// result_tag want: the daemon tags in the transaction that records the
// run. A daemon without that extension tagged nothing; then the tag is
// set here, under the same rule.
func resultTag(ctx context.Context, c *client.Client, op string, o *outcome, in *apitypes.Image, want string) (tagged *string, notSet string, err error) {
	res, err := c.Operation(ctx, op)
	if err != nil {
		return nil, "", fmt.Errorf("read operation %s for its tag: %w", op, err)
	}
	if res.Result.Tag != nil {
		return res.Result.Tag, "", nil
	}
	if notSet = o.tagBlocker(in, want); notSet != "" {
		return nil, notSet, nil
	}
	if _, err := c.SetTag(ctx, *o.image, want); err != nil {
		return nil, "", fmt.Errorf("the run succeeded (image %s) but tagging it %q failed: %w", *o.image, want, err)
	}
	return &want, "", nil
}

// cancelAndWait cancels op after the user interrupted and waits (bounded)
// for it to end, so the daemon has stopped it when the CLI exits.
func (g *globals) cancelAndWait(ctx context.Context, c *client.Client, ops ...string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	for _, op := range ops {
		g.errorf("interrupted: cancelling operation %s", op)
		if err := c.Cancel(cctx, op); err != nil && !client.IsConflict(err) {
			g.errorf("cancel %s: %v", op, err)
		}
	}
	for _, op := range ops {
		if res, err := c.Wait(cctx, op); err == nil {
			g.errorf("operation %s %s", op, res.Status)
		}
	}
}

// runResult is run's --json output.
type runResult struct {
	Operation string  `json:"operation"`
	Status    string  `json:"status"`
	ExitCode  int     `json:"exit_code"`
	Signal    int     `json:"signal,omitempty"`
	TimedOut  bool    `json:"timed_out"`
	Image     *string `json:"image"`
	Tag       *string `json:"tag,omitempty"`
	// TagNotSet is why --tag was not set, absent if it was or none was asked.
	TagNotSet string  `json:"tag_not_set,omitempty"`
	Stdout    string  `json:"stdout"`
	Stderr    string  `json:"stderr"`
	Truncated bool    `json:"truncated,omitempty"`
	Duration  float64 `json:"duration"`
	Error     *string `json:"error,omitempty"`
	// EgressDenied is what the run's egress policy blocked (its final
	// egress_denied event), absent if nothing.
	EgressDenied *apitypes.EventDataEgressDenied `json:"egress_denied,omitempty"`
}

func newRun(g *globals) *cobra.Command {
	var (
		sf         spawnFlags
		image, tag string
		shell      bool
		stdin      bool
		keepStdin  bool
		quiet      bool
	)
	cmd := &cobra.Command{
		Use:   "run [flags] [--] COMMAND [ARG...]",
		Short: "Run a command in a fresh sandbox and snapshot the result",
		Long: `Run one command in a fresh sandbox on an image, stream its output live, and
exit with the command's exit status. Unless --disposable, the resulting
filesystem becomes a new image, printed on stderr when the run ends (stdout
stays the command's own output); a run that changed nothing results in its
input image.

--tag names the result, but only when the command exits 0 and the run
succeeded: a failed attempt never takes over a tag that names a good state.
Nor does it take a tag off the input image: when the run changed nothing and
its input image has a tag of its own, the tag is not set (an image holds one
tag). Either way stderr says the tag was not set and why, and the exit status
stays the command's.

The words after -- run as a program with its arguments (exec form). With
--shell, or when they are a single argument containing spaces or shell
characters ('make && make test'), they run through /bin/sh -c.

The image is --image, else $ARBOR_IMAGE: a UUID, a unique UUID prefix (at
least 4 characters), tag:NAME or a bare tag.

Exit status: the command's; 124 if it timed out; 128+N if a signal killed it;
130 if interrupted (Ctrl-C cancels the run on the daemon); 1 if the run
failed. With --json one object is printed at the end: operation, status,
exit_code, signal (when one killed it), timed_out, image, tag, tag_not_set
(why --tag was not set), stdout, stderr, truncated, duration (seconds),
error, and egress_denied when an egress policy (--allow/--deny) blocked
something, which is otherwise reported on stderr.`,
		Example: `  arbor run --image busybox -- ls -l /
  arbor run --image python-base --tag with-pytest -- 'pip install pytest && pytest --version'
  arbor run --image with-pytest -f ./fix.py:/src/fix.py -C /src -- python fix.py
  arbor run --image busybox --disposable --timeout 5s -- sleep 10   # exits 124
  arbor run --image busybox --disposable --uid 1000 --gid 1000 --pids 64 --hostname ci -- id
  ARBOR_IMAGE=busybox arbor run --json -- cat /etc/os-release`,
		Args: cobra.MinimumNArgs(1),
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			if image == "" {
				image = os.Getenv("ARBOR_IMAGE")
			}
			if image == "" {
				return errors.New("no image to run on: pass --image REF (a tag such as busybox, tag:NAME, a UUID or prefix) or set ARBOR_IMAGE; list images with `arbor images`")
			}
			if tag != "" {
				if sf.disposable {
					return errors.New("--tag with --disposable: a disposable run saves no image to tag; drop one of them")
				}
				if err := apitypes.ValidTag(tag); err != nil {
					return err
				}
			}
			req, err := sf.spawnRequest()
			if err != nil {
				return err
			}
			if tag != "" {
				// The daemon tags as it records the run: even one that ends
				// after this command (--keep-stdin), or after a crash here.
				req.ResultTag = &tag
			}
			im, err := resolveImage(ctx, c, image)
			if err != nil {
				return err
			}
			req.Image = im.UUID
			if err := sf.addFiles(ctx, c, &req); err != nil {
				return err
			}
			commandOf(&req, args, shell)
			if stdin {
				b, err := io.ReadAll(g.stdin)
				if err != nil {
					return fmt.Errorf("read stdin: %w", err)
				}
				r := apitypes.NewStreamRepr(b, false)
				req.Stdin = &apitypes.ClosableStreamRepr{Value: r.Value, Encoding: r.Encoding}
			}
			if keepStdin {
				if req.Stdin == nil {
					req.Stdin = &apitypes.ClosableStreamRepr{}
				}
				req.Stdin.Close = ptr(false)
			}
			sp, err := c.Spawn(ctx, req)
			if err != nil {
				return err
			}
			if keepStdin { // it runs until its stdin is closed: don't wait here
				if g.json {
					return g.printJSON(runResult{Operation: sp.UUID, Status: apitypes.StatusPending, ExitCode: -1})
				}
				fmt.Fprintln(g.stdout, sp.UUID)
				return nil
			}
			var out, errw io.Writer
			if !g.json {
				out, errw = g.stdout, g.stderr
			}
			o, err := follow(ctx, c, sp.UUID, out, errw)
			if ctx.Err() != nil {
				g.cancelAndWait(ctx, c, sp.UUID)
				return exitError{130}
			}
			if err != nil {
				return fmt.Errorf("following operation %s: %w (check it with `arbor wait %s`)", sp.UUID, err, sp.UUID)
			}
			var tagged *string
			var notTagged string
			if tag != "" {
				if tagged, notTagged, err = resultTag(ctx, c, sp.UUID, o, im, tag); err != nil {
					return err
				}
			}
			if g.json {
				err := g.printJSON(runResult{Operation: o.op, Status: o.status, ExitCode: o.exitCode, Signal: max(o.signal, 0), TimedOut: o.timedOut,
					Image: o.image, Tag: tagged, TagNotSet: notTagged, Stdout: o.stdout.String(), Stderr: o.stderr.String(), Truncated: len(o.truncated) > 0,
					Duration: o.duration, Error: o.errMsg, EgressDenied: o.egress})
				if err != nil {
					return err
				}
			} else {
				g.reportRun(o, tagged, quiet)
			}
			if notTagged != "" {
				g.errorf("tag %s not set: %s", tag, notTagged)
			}
			if code := o.code(); code != 0 {
				return exitError{code}
			}
			return nil
		}),
	}
	sf.register(cmd)
	fl := cmd.Flags()
	fl.SetInterspersed(false) // everything after COMMAND belongs to it
	fl.StringVar(&image, "image", "", "image to run on (default $ARBOR_IMAGE)")
	fl.StringVar(&tag, "tag", "", "tag the result image with this name if the command exits 0 and changed the image (the daemon does it as it records the run; moves the tag if another image has it)")
	fl.BoolVarP(&shell, "shell", "s", false, "run the words as one /bin/sh -c command line")
	fl.BoolVarP(&stdin, "stdin", "i", false, "send this process' standard input (read to EOF) to the command")
	fl.BoolVar(&keepStdin, "keep-stdin", false, "leave the command's stdin open: a long-running instance (a REPL, a server); prints its operation id and returns at once (arbor input OP talks to it, arbor logs -f OP follows it, arbor fork forks it under runsc)")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print nothing but the command's output")
	_ = cmd.RegisterFlagCompletionFunc("image", g.completeImages)
	_ = cmd.RegisterFlagCompletionFunc("runtime", cobra.FixedCompletions([]string{"runsc", "runc", "crun"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// reportRun tells a person how a run ended, on stderr.
func (g *globals) reportRun(o *outcome, tag *string, quiet bool) {
	for _, t := range o.truncated {
		g.errorf("output truncated: %s; the full output was not kept", t)
	}
	if o.egress != nil {
		g.errorf("egress policy blocked %s (the run's egress_denied events list them all)", o.egress.Summary())
	}
	switch {
	case o.status == apitypes.StatusCancelled:
		g.errorf("operation %s was cancelled", o.op)
		return
	case o.status != apitypes.StatusSuccess:
		g.errorf("run failed: %s (operation %s)", deref(o.errMsg), o.op)
		return
	case o.timedOut:
		g.errorf("timed out after %s: the sandbox was killed; raise --timeout", seconds(o.duration))
	case o.exitCode < 0 && o.signal > 0:
		g.errorf("killed by signal %d", o.signal)
	}
	if quiet {
		return
	}
	if o.image == nil {
		if o.exitCode != 0 {
			g.errorf("exit %d (%s, disposable)", o.exitCode, seconds(o.duration))
		}
		return
	}
	t := ""
	if tag != nil {
		t = " tag:" + *tag
	}
	g.errorf("image %s%s (exit %d, %s)", *o.image, t, o.exitCode, seconds(o.duration))
}
