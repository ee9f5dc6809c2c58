package initproc

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ExecMode is the mode that wraps a process exec'd into a running sandbox
// (`runc exec`, `runsc exec`): args are the number of a descriptor for the
// status, the uid and gid to run the command as (the wrapper runs as
// root, so it can be exec'd whatever the binary's mode), then the command. The runtime can only report a death by signal
// n as exit code 128+n, like an exit with that code; the wrapper waits for
// the command itself and writes its exact [Exit] as JSON to the status
// descriptor, forwarding every signal it gets to the command meanwhile.
const ExecMode = "exec"

// maxExecStatus bounds the status a wrapper may write.
const maxExecStatus = maxExitJSON

// ReadExecStatus reads a wrapper's status from r (at most a few KiB). It
// reports false unless r held exactly one valid exit: r is reachable from
// the sandbox only through the wrapper, but is read as hostile all the same.
func ReadExecStatus(r io.Reader) (Exit, bool) {
	b, err := io.ReadAll(io.LimitReader(r, maxExecStatus+1))
	if err != nil || len(b) == 0 || len(b) > maxExecStatus {
		return Exit{}, false
	}
	var x Exit
	if json.Unmarshal(b, &x) != nil || !x.valid() {
		return Exit{}, false
	}
	return x, true
}

// execWrap runs args[3:] as uid args[1], gid args[2] and reports its wait
// status on descriptor args[0]; it exits as the runtime would report the
// command.
func execWrap(args []string) int {
	closeSelf()
	// Not dumpable: the command cannot open the status descriptor through
	// /proc/<wrapper>/fd.
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	if len(args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: init exec STATUS-FD UID GID COMMAND [ARG...]")
		return 2
	}
	fd, err := strconv.Atoi(args[0])
	uid, uerr := strconv.ParseUint(args[1], 10, 32)
	gid, gerr := strconv.ParseUint(args[2], 10, 32)
	if err != nil || fd < 3 || uerr != nil || gerr != nil {
		fmt.Fprintln(os.Stderr, "arbor init: exec: bad arguments", args[:3])
		return 2
	}
	unix.CloseOnExec(fd)
	status := os.NewFile(uintptr(fd), "status")
	report := func(x Exit) int {
		js, _ := json.Marshal(x)
		_, _ = status.Write(js)
		status.Close()
		if x.Signal > 0 {
			return 128 + x.Signal
		}
		return x.Code
	}
	argv := args[3:]
	// Caught before the command starts, so none is lost; forwarded below.
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs)
	path, err := lookPath(argv[0], os.Environ())
	if err != nil {
		fmt.Fprintln(os.Stderr, "arbor:", err)
		return report(Exit{Code: 127})
	}
	attr := &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}}
	if uid != uint64(os.Getuid()) || gid != uint64(os.Getgid()) {
		attr.Sys = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	}
	pid, err := syscall.ForkExec(path, argv, attr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "arbor: %s: %v\n", argv[0], err)
		return report(Exit{Code: 127})
	}
	go func() {
		for s := range sigs {
			// SIGCHLD is the command's own; SIGURG the Go runtime's.
			if s != syscall.SIGCHLD && s != syscall.SIGURG {
				_ = syscall.Kill(pid, s.(syscall.Signal))
			}
		}
	}()
	for {
		var ws syscall.WaitStatus
		var ru syscall.Rusage
		_, err := syscall.Wait4(pid, &ws, 0, &ru)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return report(Exit{Code: 127})
		}
		if ws.Exited() || ws.Signaled() {
			return report(exitOf(ws, ru))
		}
	}
}
