package initproc

import (
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// EnvInMemory, set to "1" in the init's environment, makes it copy its
// own binary into sandbox memory (a memfd) and re-exec from there before
// it serves. The runtime hands the binary over as a host file, whose
// mapping gVisor cannot checkpoint ("Can't save pma with non-MemoryFile");
// from memory it can, so only sandboxes booted this way can be forked.
const EnvInMemory = "ARBOR_INIT_IN_MEMORY"

// toMemory re-execs the init from a memfd copy of itself, once: the copy
// finds the memfd's number in EnvInMemory and closes it, so the command
// inherits nothing. On any failure the init goes on from the host file.
func toMemory() {
	v, ok := os.LookupEnv(EnvInMemory)
	if !ok {
		return
	}
	if fd, err := strconv.Atoi(v); err == nil && fd > 2 {
		_ = unix.Close(fd) // the copy running: /proc/self/exe holds it
		_ = os.Unsetenv(EnvInMemory)
		return
	}
	_ = os.Unsetenv(EnvInMemory)
	closeSelf() // the copy could not tell the host file's descriptor
	if err := reexecFromMemory(); err != nil {
		fmt.Fprintln(os.Stderr, "arbor init: run from memory:", err)
	}
}

func reexecFromMemory() error {
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("arbor-init", 0)
	if err != nil {
		return err
	}
	dst := os.NewFile(uintptr(fd), "arbor-init")
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	env := append(os.Environ(), EnvInMemory+"="+strconv.Itoa(fd))
	err = unix.Exec("/proc/self/fd/"+strconv.Itoa(fd), os.Args, env)
	dst.Close()
	return err
}
