// Package initproc is the tiny init that runs as pid 1 of every sandbox,
// cold and pre-booted ("warm"). The runtime starts it from a file
// descriptor (see runtime.InitPath): no mount or file in the sandbox names
// it, so it never lands in a snapshot and the command cannot read it. It
// has these modes:
//
//	pause            block until killed, reaping orphans
//	place            read a tar from stdin and write its files into the
//	                 sandbox's root (files must be written from inside under
//	                 gVisor, whose file cache would not see host writes)
//	serve            place files and run one command for the engine, told
//	                 over stdin and answered over stdout (see proto.go and
//	                 [Agent]), then reap like pause
//	exec             wrap a process exec'd into a running sandbox and
//	                 report its exact wait status (see [ExecMode])
//	relay            carry connections to the sandbox's ports for port
//	                 previews (see [RelayMode])
//
// It must be a static binary: images need not contain a libc.
//
// Cold batch runs (serve --exit, not forkable) start arbor's C init
// instead when one is found (cmd/arbor-init-c, see [FindColdInit]): the
// same protocol, the request in its compact form ([Agent.CompactRequests]),
// at a fraction of the Go runtime's CPU under gVisor. The protocol tests
// run against both.
package initproc

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Arg is the first argument that selects init mode in a binary that embeds it.
const Arg = "__arbor_init"

// ExitAfterRun, after "serve", makes the init exit once it has reported the
// command's exit (a cold sandbox, which ends with its command), instead of
// waiting to be killed (a warm one).
const ExitAfterRun = "--exit"

// Main runs the init mode named by args[0] and returns the exit code.
func Main(args []string) int {
	if len(args) > 0 && args[0] == Arg {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: init pause|place|serve")
		return 2
	}
	switch args[0] {
	case "pause":
		pause()
		return 0
	case "serve":
		toMemory()
		closeSelf()
		serve(os.Stdin, os.Stdout, len(args) > 1 && args[1] == ExitAfterRun)
		return 0
	case ExecMode:
		return execWrap(args[1:])
	case RelayMode:
		return relay()
	case "place":
		if err := place(os.Stdin); err != nil {
			fmt.Fprintln(os.Stderr, "arbor init: place:", err)
			return 1
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "arbor init: unknown mode", args[0])
	return 2
}

// closeSelf closes the descriptor of this binary that runc and crun
// exec'd it from (fd 3, see runtime.InitPath), so the command inherits no
// way to read the daemon's binary. It checks that fd 3 really is this
// executable before closing it.
func closeSelf() {
	var fd, exe unix.Stat_t
	if unix.Fstat(3, &fd) != nil || unix.Stat("/proc/self/exe", &exe) != nil {
		return
	}
	if fd.Mode&unix.S_IFMT == unix.S_IFREG && fd.Dev == exe.Dev && fd.Ino == exe.Ino {
		_ = unix.Close(3)
	}
}

// pause waits forever as pid 1, reaping children re-parented to it.
func pause() {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT)
	for sig := range ch {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

// place writes regular files and directories from a tar stream. Names are
// absolute paths inside the sandbox; the engine has validated them.
func place(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean("/" + h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(name, os.FileMode(h.Mode)&os.ModePerm); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
				return err
			}
			_ = os.Remove(name)
			f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if err == nil {
				err = f.Chown(h.Uid, h.Gid)
			}
			if err == nil {
				err = f.Chmod(fileMode(h.Mode))
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
}

func fileMode(m int64) os.FileMode {
	mode := os.FileMode(m) & os.ModePerm
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}
