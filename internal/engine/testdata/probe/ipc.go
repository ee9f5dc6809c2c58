package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// System V IPC objects outlive the processes that made them, so a sandbox
// continued into the next step must not carry them along.

const ipcKey = 0x4152424f // "ARBO"

func ipcMake() error {
	if _, err := unix.SysvShmGet(ipcKey, 4096, unix.IPC_CREAT|0o600); err != nil {
		return err
	}
	if _, _, e := unix.Syscall(unix.SYS_SEMGET, ipcKey, 1, unix.IPC_CREAT|0o600); e != 0 {
		return e
	}
	if _, _, e := unix.Syscall(unix.SYS_MSGGET, ipcKey, unix.IPC_CREAT|0o600, 0); e != 0 {
		return e
	}
	return nil
}

// ipcCount counts the objects as ipcs finds them: *_INFO gives the highest
// index in use, *_STAT each slot's object.
func ipcCount() (int, error) {
	var buf [512]byte
	p := uintptr(unsafe.Pointer(&buf[0]))
	n := 0
	for _, k := range []struct {
		nr, info, stat uintptr
		sem            bool
	}{{unix.SYS_SHMCTL, 14, 13, false}, {unix.SYS_SEMCTL, 19, 18, true}, {unix.SYS_MSGCTL, 12, 11, false}} {
		call := func(id, cmd uintptr) (uintptr, unix.Errno) {
			if k.sem {
				r, _, e := unix.Syscall6(k.nr, id, 0, cmd, p, 0, 0)
				return r, e
			}
			r, _, e := unix.Syscall(k.nr, id, cmd, p)
			return r, e
		}
		maxIdx, e := call(0, k.info)
		if e != 0 {
			return 0, e
		}
		for i := uintptr(0); i <= maxIdx; i++ {
			if _, e := call(i, k.stat); e == 0 {
				n++
			}
		}
	}
	return n, nil
}
