package initproc

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"testing"

	"github.com/arborsh/arbor/internal/testutil"
)

// TestColdInitBadRequests: the C init answers every malformed compact
// request with an error frame and stays able to run a good one; a JSON
// request (meant for the Go init) is refused the same way.
func TestColdInitBadRequests(t *testing.T) {
	testutil.RequiresRoot(t)
	bin, err := testutil.ColdInit()
	if err != nil {
		t.Fatal(err)
	}
	good := encodeCompact(Request{Args: []string{"/bin/true"}, Cwd: "/", UID: uint32(os.Getuid()), GID: uint32(os.Getgid())})
	counts := func(nargs, nenv uint32) []byte {
		b := bytes.Clone(good)
		binary.BigEndian.PutUint32(b[16:], nargs)
		binary.BigEndian.PutUint32(b[20:], nenv)
		return b
	}
	long := bytes.Clone(good)
	binary.BigEndian.PutUint32(long[24:], 1<<31) // cwd's length
	bad := []struct {
		name string
		typ  byte
		p    []byte
	}{
		{"empty", frameCompact, nil},
		{"short header", frameCompact, good[:23]},
		{"truncated", frameCompact, good[:len(good)-1]},
		{"trailing bytes", frameCompact, append(bytes.Clone(good), 0)},
		{"more args than bytes", frameCompact, counts(1<<30, 0)},
		{"huge env count", frameCompact, counts(1, 0xffffffff)},
		{"one arg too many", frameCompact, counts(2, 0)},
		{"string past the end", frameCompact, long},
		{"json", frameRun, []byte(`{"args":["/bin/true"]}`)},
	}
	cmd := exec.Command(bin, Arg, "serve", ExitAfterRun)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	fw := &frameWriter{w: in}
	for _, tc := range bad {
		if err := fw.write(tc.typ, tc.p); err != nil {
			t.Fatal(err)
		}
		typ, p, err := readFrame(out, maxMessage)
		if err != nil || typ != frameError {
			t.Fatalf("%s: reply %q %q %v, want an error frame", tc.name, typ, p, err)
		}
	}
	if err := fw.write(frameCompact, good); err != nil {
		t.Fatal(err)
	}
	if typ, p, err := readFrame(out, maxMessage); err != nil || typ != frameStarted {
		t.Fatalf("after the bad requests: reply %q %q %v, want the start", typ, p, err)
	}
	if typ, p, err := readFrame(out, maxExitJSON); err != nil || typ != frameExit {
		t.Fatalf("reply %q %q %v, want the exit", typ, p, err)
	}
}
