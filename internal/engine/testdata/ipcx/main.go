// Command ipcx makes System V IPC objects ("make") or reports whether they
// exist ("check"), for the tests of continued sandboxes: IPC objects
// outlive the processes that made them, so a sandbox must not carry them
// from one step into the next.
package main

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

const key = 0x4152424f // "ARBO"

func main() {
	if len(os.Args) != 2 {
		os.Exit(2)
	}
	switch os.Args[1] {
	case "make":
		if _, err := unix.SysvShmGet(key, 4096, unix.IPC_CREAT|0o600); err != nil {
			fmt.Println("shmget:", err)
			os.Exit(1)
		}
		for _, nr := range []uintptr{unix.SYS_SEMGET, unix.SYS_MSGGET} {
			args := []uintptr{key, 1, unix.IPC_CREAT | 0o600}
			if nr == unix.SYS_MSGGET {
				args = []uintptr{key, unix.IPC_CREAT | 0o600, 0}
			}
			if _, _, e := unix.Syscall(nr, args[0], args[1], args[2]); e != 0 {
				fmt.Println("get:", e)
				os.Exit(1)
			}
		}
	case "check":
		// How many objects of each kind exist, found as ipcs finds them:
		// *_INFO gives the highest index in use, *_STAT each slot's object.
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
				fmt.Println("info:", e)
				os.Exit(1)
			}
			for i := uintptr(0); i <= maxIdx; i++ {
				if _, e := call(i, k.stat); e == 0 {
					n++
				}
			}
		}
		fmt.Println(n)
	}
}
