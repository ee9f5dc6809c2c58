package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/initproc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// CheckpointOptions says where and how [Runtime.Checkpoint] saves a sandbox.
type CheckpointOptions struct {
	// Image is the directory the image goes to. It must not exist yet (its
	// parent must): an image is never written over another.
	Image string
	// Quiet, if set, is called once the image is written, while every
	// process of the sandbox is still stopped and its writes have reached
	// the root filesystem: what the root holds then is what the image
	// expects at Restore, so this is the moment to copy or freeze it. The
	// sandbox resumes after Quiet returns; an error from it fails the
	// Checkpoint (the image is removed).
	Quiet func() error
	// KeepPaused leaves the sandbox stopped after a successful checkpoint,
	// until Resume.
	KeepPaused bool
}

// NotCheckpointable is the error of a runtime that cannot checkpoint.
func NotCheckpointable(name string) error {
	return errdefs.FailedPrecondition("runtime %s cannot checkpoint or restore a running sandbox: live forks and memory checkpoints need runsc (spawn the instance with runtime runsc)", name)
}

// Checkpoint implements Runtime: under runsc, pause (when opt.Quiet needs
// the sandbox stopped), checkpoint --leave-running, Quiet, resume.
func (o *OCI) Checkpoint(ctx context.Context, id string, opt CheckpointOptions) (err error) {
	if o.name != "runsc" {
		return NotCheckpointable(o.name)
	}
	if !validID.MatchString(id) {
		return errdefs.InvalidArgument("sandbox id %q: use 1 to 128 characters of [a-zA-Z0-9_-]", id)
	}
	if opt.Image == "" {
		return errdefs.InvalidArgument("checkpoint of sandbox %s: no image directory given", id)
	}
	if _, err := os.Lstat(opt.Image); !errors.Is(err, os.ErrNotExist) {
		return errdefs.Conflict("checkpoint of sandbox %s: image directory %s exists already: give a new one", id, opt.Image)
	}
	if !o.exists(id) {
		return errdefs.NotFound("checkpoint: no sandbox %s in %s", id, o.name)
	}
	if !o.alive(id) {
		return errdefs.FailedPrecondition("checkpoint: sandbox %s has stopped", id)
	}
	// The copies must be configured as the sandbox was (runsc refuses
	// other arguments, mounts or limits): its config goes with the image.
	// Read now, not while the sandbox is stopped.
	config, err := o.bundleConfig(id)
	if err != nil {
		return err
	}
	if opt.Quiet != nil || opt.KeepPaused {
		// checkpoint --leave-running resumes the sandbox once saved; a
		// paused one stays paused, so its root stays as the image has it.
		if err := o.runsc(ctx, nil, "pause", id); err != nil {
			return err
		}
		defer func() {
			if err != nil || !opt.KeepPaused {
				// Paused here: no state query first (as Resume makes).
				if rerr := o.runsc(context.WithoutCancel(ctx), nil, "resume", id); rerr != nil {
					err = errors.Join(err, rerr)
				}
			}
		}()
	}
	if err := o.runsc(ctx, nil, "checkpoint", "--leave-running", "--image-path", opt.Image, id); err != nil {
		_ = os.RemoveAll(opt.Image)
		return err
	}
	if err := os.WriteFile(filepath.Join(opt.Image, configFile), config, 0o600); err != nil {
		_ = os.RemoveAll(opt.Image)
		return err
	}
	if opt.Quiet != nil {
		if err := opt.Quiet(); err != nil {
			_ = os.RemoveAll(opt.Image)
			return err
		}
	}
	return nil
}

// Resume implements Runtime.
func (o *OCI) Resume(ctx context.Context, id string) error {
	if o.name != "runsc" {
		return NotCheckpointable(o.name)
	}
	if !o.exists(id) {
		return errdefs.NotFound("resume: no sandbox %s in %s", id, o.name)
	}
	out, err := o.command(ctx, nil, "state", id).Output()
	var st struct {
		Status string `json:"status"`
	}
	if err == nil && json.Unmarshal(out, &st) == nil && st.Status != "paused" {
		return nil // running (or stopped): nothing to resume
	}
	return o.runsc(ctx, nil, "resume", id)
}

// runsc runs one runsc command to completion, its stderr in the error.
func (o *OCI) runsc(ctx context.Context, extra []string, args ...string) error {
	var stderr strings.Builder
	cmd := o.command(ctx, extra, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return fmt.Errorf("%s %s: %w: %s", o.name, args[0], err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Restore implements Runtime: runsc restore --detach into a new sandbox
// made from s, as Boot makes one with run --detach.
func (o *OCI) Restore(ctx context.Context, s Spec, image string) error {
	if o.name != "runsc" {
		return NotCheckpointable(o.name)
	}
	cfg, err := o.restoreConfig(s, image)
	if err != nil {
		return err
	}
	s.Args = cfg.Process.Args // for checkNew: the image's process runs
	if err := o.checkNew(s); err != nil {
		return err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.Bundle, "config.json"), b, 0o600); err != nil {
		return err
	}
	// As in Boot: the sandbox outlives the runtime and keeps its stderr.
	errf, err := os.CreateTemp(s.Bundle, "restore-stderr-*")
	if err != nil {
		return err
	}
	defer errf.Close()
	pidFile := filepath.Join(s.Bundle, "init.pid")
	cmd := o.command(ctx, o.networkFlags(s), "restore", "--detach", "--image-path", image, "--pid-file", pidFile, "--bundle", s.Bundle, s.ID)
	// Host pipes as stdio: a restored file keeps the saved offset, a pipe has none.
	return o.launchDetached(ctx, cmd, s, errf, pidFile, "restore")
}

// launchDetached runs cmd, a runtime command that creates sandbox s and
// returns leaving it running (run --detach, restore --detach). Files
// given as s's stdin and stdout are handed to the sandbox's main process;
// the runtime's stderr goes to errf, whose content a failure reports,
// after destroying what was made.
func (o *OCI) launchDetached(ctx context.Context, cmd *exec.Cmd, s Spec, errf *os.File, pidFile, what string) error {
	cmd.Stderr = errf
	if f, ok := s.Stdin.(*os.File); ok {
		cmd.Stdin = f
	}
	if f, ok := s.Stdout.(*os.File); ok {
		cmd.Stdout = f
	}
	// A failed launch kills every process in the sandbox's cgroup (see
	// clearLaunch): it must be the new sandbox's alone, not one of the
	// same id another runtime root keeps.
	if rel := o.cgroupsPath(s.ID); cgroupInUse(cgroupDirs(rel)) {
		return errdefs.Conflict("sandbox %s: cgroup %s is in use already (a sandbox of that id outside %s?)", s.ID, rel, o.root)
	}
	// Its own process group: see clearLaunch.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err := cmd.Start()
	leader, start := 0, ""
	if err == nil {
		leader = cmd.Process.Pid
		start = procStart(leader) // read before the runtime is reaped
		err = cmd.Wait()
	}
	if err != nil {
		// Killed when ctx ended (so a hung runtime is not waited for), or
		// failed: either way what it made is unmade, whether recorded or not.
		derr := o.clearLaunch(s, pidFile, leader, start)
		msg, _ := os.ReadFile(errf.Name())
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return errors.Join(fmt.Errorf("%s %s: %w: %s", o.name, what, err, strings.TrimSpace(string(msg))), derr)
	}
	o.watchInit(s.ID, pidFile)
	return nil
}

// configFile is the sandbox's OCI config as Checkpoint saves it in the image.
const configFile = "arbor-config.json"

// bundleConfig reads sandbox id's config.json from its bundle, which
// runsc's state file for it names (as runscPids reads it; no runsc call).
func (o *OCI) bundleConfig(id string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(o.root, id+"_sandbox:"+id+".state"))
	if err != nil {
		return nil, fmt.Errorf("%s state of sandbox %s: %w", o.name, id, err)
	}
	var st struct {
		Bundle string `json:"bundleDir"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Bundle == "" {
		return nil, fmt.Errorf("%s state of sandbox %s: no bundle dir in it (%v)", o.name, id, err)
	}
	return os.ReadFile(filepath.Join(st.Bundle, "config.json"))
}

// restoreConfig is the config image was checkpointed with, moved to s's
// root, hostname, network namespace and cgroup: what may differ per copy.
func (o *OCI) restoreConfig(s Spec, image string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(image, configFile))
	if err != nil {
		return nil, errdefs.NotFound("restore of sandbox %s: no checkpoint image in %s", s.ID, image)
	}
	var cfg specs.Spec
	if err := json.Unmarshal(b, &cfg); err != nil || cfg.Process == nil || cfg.Root == nil || cfg.Linux == nil {
		return nil, fmt.Errorf("restore of sandbox %s: bad config in image %s: %v", s.ID, image, err)
	}
	cfg.Root.Path = s.Rootfs
	if s.Hostname != "" {
		cfg.Hostname = s.Hostname
	}
	cfg.Linux.CgroupsPath = o.cgroupsPath(s.ID)
	for i, ns := range cfg.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			cfg.Linux.Namespaces[i].Path = s.NetNS
		}
	}
	if tmp, ok := o.tmpMount(s.Rootfs); ok {
		for i, m := range cfg.Mounts {
			if m.Destination == tmp.Destination && m.Type == tmp.Type {
				cfg.Mounts[i].Source = tmp.Source
			}
		}
	}
	return &cfg, nil
}

// forkable makes a Checkpointable runsc sandbox booted with arbor's init
// checkpointable:
// the init moves itself into sandbox memory (see initproc.EnvInMemory).
func (o *OCI) forkable(spec *specs.Spec, s Spec) {
	if o.name == "runsc" && s.InitBinary != "" && s.Checkpointable {
		spec.Process.Env = append(spec.Process.Env, initproc.EnvInMemory+"=1")
	}
}
