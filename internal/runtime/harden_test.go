package runtime

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"testing"

	"github.com/arborsh/arbor/internal/testutil"
)

// compatProbe is a static x86-64 ELF that calls exit(42) through the
// 32-bit ABI (int 0x80) and, if that call returns, exit(7) through the
// native one: 42 means the compat ABI ran, 7 that it answered an error,
// and a death by SIGSYS that seccomp refused it.
func compatProbe() []byte {
	code := []byte{
		0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1 (i386 exit)
		0xbb, 0x2a, 0x00, 0x00, 0x00, // mov ebx, 42
		0xcd, 0x80, // int 0x80
		0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60 (x86-64 exit)
		0xbf, 0x07, 0x00, 0x00, 0x00, // mov edi, 7
		0x0f, 0x05, // syscall
	}
	const base, hdrs = 0x400000, 64 + 56
	le := binary.LittleEndian
	b := make([]byte, hdrs, hdrs+len(code))
	copy(b, "\x7fELF\x02\x01\x01") // 64-bit, little endian, version 1
	le.PutUint16(b[16:], 2)        // ET_EXEC
	le.PutUint16(b[18:], 62)       // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], base+hdrs) // entry
	le.PutUint64(b[32:], 64)        // program headers
	le.PutUint16(b[52:], 64)        // header size
	le.PutUint16(b[54:], 56)        // program header size
	le.PutUint16(b[56:], 1)         // one program header
	ph := b[64:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5) // R|X
	le.PutUint64(ph[16:], base)
	le.PutUint64(ph[24:], base)
	le.PutUint64(ph[32:], uint64(hdrs+len(code)))
	le.PutUint64(ph[40:], uint64(hdrs+len(code)))
	le.PutUint64(ph[48:], 0x1000)
	return append(b, code...)
}

// TestCompatABIRefused: no sandbox reaches the kernel through the 32-bit
// x86 ABI: runc's seccomp filter covers the native architecture only, so
// the call kills the process (SIGSYS, reported as 128+31), and gVisor
// answers ENOSYS. On the host, the same probe exits 42, so the probe
// works.
func TestCompatABIRefused(t *testing.T) {
	testutil.RequiresRoot(t)
	if goruntime.GOARCH != "amd64" {
		t.Skip("the probe is x86-64 code")
	}
	host := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(host, compatProbe(), 0o755); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := exec.Command(host).Run(); !errors.As(err, &ee) || ee.ExitCode() != 42 {
		t.Skipf("this kernel does not run the 32-bit ABI (probe: %v), so there is nothing to refuse", err)
	}
	for kind, want := range map[string]int{"runc": 128 + 31, "runsc": 7} {
		t.Run(kind, func(t *testing.T) {
			o, rootfs, bundle := busyboxOCI(t, kind)
			if err := os.WriteFile(filepath.Join(rootfs, "probe"), compatProbe(), 0o755); err != nil {
				t.Fatal(err)
			}
			res, err := o.Run(context.Background(), Spec{ID: "compat-" + kind, Bundle: bundle, Rootfs: rootfs, Args: []string{"/probe"},
				Env: []string{"PATH=/bin"}, Cwd: "/", Hostname: "t"})
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != want {
				t.Fatalf("probe exited %d under %s, want %d (42: the 32-bit ABI ran)", res.ExitCode, kind, want)
			}
		})
	}
}
