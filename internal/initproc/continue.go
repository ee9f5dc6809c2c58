package initproc

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A served sandbox whose init is PID 1 may run several commands in turn
// (the engine continues a sandbox in the next step of a chain). What a
// fresh sandbox has outside its image must then be as fresh for the next
// command as for the first: after each command exits and everything it
// left is killed and reaped, the init empties /dev/shm and /dev/mqueue,
// removes System V IPC objects, and checks that no process but itself is
// left and that /dev is as it was at boot. It does this after it has
// reported the exit (the result does not wait for it) and then says what
// it could not put back, if anything (frame 'f'); the engine then destroys
// the sandbox instead of continuing in it.

// devState is /dev's top level at boot: name → mode and device number.
type devState map[string][2]uint64

func readDev() devState {
	ents, err := os.ReadDir("/dev")
	if err != nil {
		return nil
	}
	out := devState{}
	for _, ent := range ents {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join("/dev", ent.Name()), &st) == nil {
			out[ent.Name()] = [2]uint64{uint64(st.Mode), st.Rdev}
		}
	}
	return out
}

// freshen puts back the sandbox's non-image state after a command (see
// above) and returns what it could not, "" when the sandbox is as fresh as
// at boot.
func freshen(boot devState) string {
	for _, d := range []string{"/dev/shm", "/dev/mqueue"} {
		if err := emptyDir(d); err != nil {
			return fmt.Sprintf("cannot empty %s: %v", d, err)
		}
	}
	if err := removeIPC(); err != nil {
		return err.Error()
	}
	if boot == nil {
		return "/dev was not readable at boot"
	}
	now := readDev()
	if len(now) != len(boot) {
		return "/dev changed"
	}
	for name, st := range now {
		if b, ok := boot[name]; !ok || b != st {
			return "/dev changed: " + name
		}
	}
	if n := othersAlive(); n != 0 {
		return fmt.Sprintf("%d processes left after the command", n)
	}
	return ""
}

// emptyDir removes what is in d; a d that does not exist is empty.
func emptyDir(d string) error {
	ents, err := os.ReadDir(d)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, ent := range ents {
		if err := os.RemoveAll(filepath.Join(d, ent.Name())); err != nil {
			return err
		}
	}
	return nil
}

// othersAlive counts the processes in /proc other than this init. One
// that is dead but not yet reaped counts only if it stays so for
// zombieWait: a process the runtime exec'd into the sandbox (a preview's
// relay) is killed with the rest, but reaped by the runtime's exec outside
// the sandbox, which may take a moment longer than this init's check.
func othersAlive() int {
	deadline := time.Now().Add(zombieWait)
	for {
		live, dead := countOthers()
		if live != 0 || dead == 0 || time.Now().After(deadline) {
			return live + dead
		}
		time.Sleep(time.Millisecond) // the reaper is outside the sandbox: nothing to wait on
	}
}

// zombieWait bounds the wait for dead processes to be reaped.
const zombieWait = 200 * time.Millisecond

// countOthers counts the processes in /proc other than this init, live
// and dead (zombies); an unreadable /proc counts as one live.
func countOthers() (live, dead int) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 1, 0
	}
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + ent.Name() + "/stat")
		if os.IsNotExist(err) {
			continue // reaped meanwhile
		}
		// The state follows the command's name in parentheses, which may
		// itself hold ") ".
		if i := bytes.LastIndex(b, []byte(") ")); err == nil && i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			dead++
		} else {
			live++
		}
	}
	return live, dead
}

// System V IPC commands (linux/ipc.h, shm.h, sem.h, msg.h).
const (
	ipcRMID = 0
	msgStat = 11
	msgInfo = 12
	semStat = 18
	semInfo = 19
	shmStat = 13
	shmInfo = 14
)

// removeIPC removes every System V shared memory segment, semaphore set
// and message queue: they outlive the processes that made them.
func removeIPC() error {
	var buf [512]byte // big enough for any *_ds or *_info the kernel fills
	p := uintptr(unsafe.Pointer(&buf[0]))
	for _, k := range []struct {
		name           string
		nr, info, stat uintptr
		sem            bool // semctl takes the buffer as its 4th argument
	}{
		{"shared memory", unix.SYS_SHMCTL, shmInfo, shmStat, false},
		{"semaphores", unix.SYS_SEMCTL, semInfo, semStat, true},
		{"message queues", unix.SYS_MSGCTL, msgInfo, msgStat, false},
	} {
		call := func(id, cmd uintptr) (uintptr, syscall.Errno) {
			if k.sem {
				r, _, e := unix.Syscall6(k.nr, id, 0, cmd, p, 0, 0)
				return r, e
			}
			r, _, e := unix.Syscall(k.nr, id, cmd, p)
			return r, e
		}
		maxIdx, e := call(0, k.info)
		if e == syscall.ENOSYS {
			continue // no System V IPC here: nothing can have been made
		}
		if e != 0 {
			return fmt.Errorf("%s: %v", k.name, e)
		}
		for i := uintptr(0); i <= maxIdx; i++ {
			id, e := call(i, k.stat)
			if e != 0 {
				continue // a free slot
			}
			if _, e := call(id, ipcRMID); e != 0 {
				return fmt.Errorf("remove %s %d: %v", k.name, id, e)
			}
		}
	}
	return nil
}
