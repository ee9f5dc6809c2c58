// Command probe tries one privileged operation inside a sandbox and prints
// "ok" or the error, for the runtime-hardening tests. Built static
// (CGO_ENABLED=0) and placed into busybox images, which lack these tools.
package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

func main() {
	var err error
	switch os.Args[1] {
	case "addkey": // addkey NAME VALUE: into the user keyring
		_, err = unix.AddKey("user", os.Args[2], []byte(os.Args[3]), unix.KEY_SPEC_USER_KEYRING)
	case "findkey": // findkey NAME: search the user keyring and print the payload
		var id int
		if id, err = unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, "user", os.Args[2], 0); err == nil {
			buf := make([]byte, 256)
			var n int
			if n, err = unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0); err == nil {
				fmt.Printf("found %s\n", buf[:n])
				return
			}
		}
	case "ptrace": // ptrace PID: attach
		pid, _ := strconv.Atoi(os.Args[2])
		if err = unix.PtraceAttach(pid); err == nil {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, unix.WALL, nil) // stopped: it may be detached now
			_ = unix.PtraceDetach(pid)
		}
	case "userns": // a new user namespace
		err = unix.Unshare(unix.CLONE_NEWUSER)
	case "fds": // open pid 1's open files
		var ents []os.DirEntry
		if ents, err = os.ReadDir("/proc/1/fd"); err == nil {
			err = fmt.Errorf("pid 1 has no open files")
			for _, ent := range ents {
				var f *os.File
				if f, err = os.Open("/proc/1/fd/" + ent.Name()); err == nil {
					f.Close()
					break
				}
			}
		}
	case "ipcmake": // a System V shared memory segment, semaphore set and message queue
		err = ipcMake()
	case "httpserve": // httpserve ADDR: answer every request with "hi", keeping connections
		err = http.ListenAndServe(os.Args[2], http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("hi\n")) }))
	case "udpfrom": // udpfrom SRC DST PORT PAYLOAD: one datagram, from any source address
		err = udpFrom(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
	case "mmapwrite": // mmapwrite PATH TEXT [msync]: write TEXT at PATH's start through a shared mapping whose descriptor is closed first, msync if asked
		err = mmapWrite(os.Args[2], os.Args[3], len(os.Args) > 4 && os.Args[4] == "msync")
	case "ipccount": // print how many System V IPC objects exist
		n, err := ipcCount()
		if err == nil {
			fmt.Println(n)
			return
		}
	default:
		err = fmt.Errorf("unknown probe %q", os.Args[1])
	}
	if err != nil {
		fmt.Printf("%s: %v\n", os.Args[1], err)
		return
	}
	fmt.Printf("%s: ok\n", os.Args[1])
}

// mmapWrite writes text over the start of the file at path through a
// shared mapping, closing the file first: no write call, no close after
// the write, and no unmap (left to the exit) nor msync unless sync.
// Neither is needed for the write to reach the host's file, under runsc
// too: gVisor maps the host file itself.
func mmapWrite(path, text string, sync bool) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, len(text), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	f.Close()
	if err != nil {
		return err
	}
	copy(mem, text)
	if !sync {
		return nil
	}
	return unix.Msync(mem, unix.MS_SYNC)
}
