package initproc

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestExecWrap: the wrapper reports the command's own wait status (a
// death by signal as the signal, exit 137 as 137) on its status
// descriptor, and exits as a runtime would report it.
func TestExecWrap(t *testing.T) {
	for _, tc := range []struct {
		script        string
		code, sig, rc int
	}{
		{"exit 3", 3, 0, 3},
		{"exit 137", 137, 0, 137},
		{"kill -9 $$", -1, 9, 137},
		{"kill -TERM $$", -1, 15, 143},
	} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], Arg, ExecMode, "3", strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid()), "/bin/sh", "-c", tc.script)
		cmd.ExtraFiles = []*os.File{w}
		err = cmd.Run()
		w.Close()
		x, ok := ReadExecStatus(r)
		r.Close()
		if !ok || x.Code != tc.code || x.Signal != tc.sig || cmd.ProcessState.ExitCode() != tc.rc {
			t.Errorf("%s: status %+v %v, exit %d (%v); want code %d signal %d, exit %d", tc.script, x, ok, cmd.ProcessState.ExitCode(), err, tc.code, tc.sig, tc.rc)
		}
	}
}

// TestReadExecStatusHostile: only one valid exit is accepted.
func TestReadExecStatusHostile(t *testing.T) {
	for _, in := range []string{"", "{", `{"code":256}`, `{"code":0,"signal":9}`, `{"code":-1,"signal":0}`, `{"code":1}` + strings.Repeat(" ", maxExecStatus)} {
		if x, ok := ReadExecStatus(strings.NewReader(in)); ok {
			t.Errorf("ReadExecStatus(%.20q) = %+v, accepted", in, x)
		}
	}
}

// FuzzReadExecStatus: arbitrary status bytes never yield an impossible exit.
func FuzzReadExecStatus(f *testing.F) {
	f.Add([]byte(`{"code":-1,"signal":9}`))
	f.Add([]byte(`{"code":137,"rusage":{"Maxrss":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if x, ok := ReadExecStatus(strings.NewReader(string(b))); ok && !x.valid() {
			t.Fatalf("accepted %+v", x)
		}
	})
}
