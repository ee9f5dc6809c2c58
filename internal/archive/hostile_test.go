package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/internal/errdefs"
)

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// A bomb is a gzip stream of several members, as gzip allows and
// compress/gzip reads by default: one for the tar headers, then one member
// of zeros compressed once and repeated. Compressing a gibibyte for real
// took most of this package's two minutes under the race detector; the
// stream decompresses to the same tar either way.

// zeroMember is one gzip member holding zeroChunk zero bytes.
const zeroChunk = 1 << 20

var zeroMember = sync.OnceValue(func() []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := io.CopyN(zw, zeros{}, zeroChunk); err != nil {
		panic(err)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
})

// gzipMember compresses b as one gzip member.
func gzipMember(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// bombOf is a gzipped tar of one file of zeros per size in sizes, each a
// multiple of zeroChunk.
func bombOf(sizes ...int64) []byte {
	var out bytes.Buffer
	for i, size := range sizes {
		var hdr bytes.Buffer
		tw := tar.NewWriter(&hdr)
		name := canary
		if len(sizes) > 1 {
			name = fmt.Sprintf("f%02d", i)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644}); err != nil {
			panic(err)
		}
		out.Write(gzipMember(hdr.Bytes())) // the header's 512 bytes: no Flush, the writer would pad the file
		for range size / zeroChunk {
			out.Write(zeroMember())
		}
	}
	out.Write(gzipMember(make([]byte, 1024))) // the end of the archive: two zero blocks
	return out.Bytes()
}

// bombOnce is one 1 GiB file of zeros in about a megabyte.
var bombOnce = sync.OnceValues(func() ([]byte, error) { return bombOf(1 << 30), nil })

// manyFilesBomb is 64 files of 4 MiB zeros: each is within any per-file
// check, so only the running total can stop it.
func manyFilesBomb(*testing.T) []byte {
	sizes := make([]int64, 64)
	for i := range sizes {
		sizes[i] = 4 << 20
	}
	return bombOf(sizes...)
}

// rawPAXTar is a stream with one PAX-extended file entry, built by hand
// because archive/tar refuses to write such records.
func rawPAXTar(records ...string) []byte {
	pax := []byte(strings.Join(records, ""))
	out := rawHeader("PaxHeaders/x", tar.TypeXHeader, len(pax))
	out = append(out, pad512(pax)...)
	out = append(out, rawHeader("placeholder", tar.TypeReg, 0)...)
	return append(out, make([]byte, 1024)...)
}

func TestApplyTarHostile(t *testing.T) {
	requireRoot(t)
	type tc struct {
		name string
		// in builds the stream; s.parent is the absolute path an attack
		// aims at.
		in      func(t *testing.T, s sandbox) []byte
		opts    Options
		wantErr error  // class; nil means success
		wantMsg string // substring of the error
		check   func(t *testing.T, s sandbox)
	}
	tarOf := func(ents ...ent) func(*testing.T, sandbox) []byte {
		return func(t *testing.T, _ sandbox) []byte { return tarball(t, ents...) }
	}
	inLayer := func(rel string, wantType uint32) func(*testing.T, sandbox) {
		return func(t *testing.T, s sandbox) {
			if st := lstat(t, filepath.Join(s.dir, rel)); fileType(st) != wantType {
				t.Errorf("%s type %o, want %o", rel, fileType(st), wantType)
			}
		}
	}
	validTar := tarball(t, file("a", strings.Repeat("x", 10000)), file("b", "y"))
	tests := []tc{
		{name: "dotdot name", in: tarOf(file("../"+canary, "x")), wantErr: errdefs.ErrInvalidArgument, wantMsg: `"../pwned"`},
		{name: "dotdot after clean", in: tarOf(file("a/../../"+canary, "x")), wantErr: errdefs.ErrInvalidArgument, wantMsg: "outside the image root"},
		{name: "dotdot dir", in: tarOf(dir("..")), wantErr: errdefs.ErrInvalidArgument},
		{name: "absolute dotdot", in: tarOf(file("/../"+canary, "x")), wantErr: errdefs.ErrInvalidArgument},
		{name: "absolute name made relative", in: tarOf(file("/abs/"+canary, "x")), check: inLayer("abs/"+canary, unix.S_IFREG)},
		{name: "dot segments", in: tarOf(file("./a/./b/../"+canary, "x")), check: inLayer("a/"+canary, unix.S_IFREG)},
		{
			name:    "NUL in PAX path",
			in:      func(*testing.T, sandbox) []byte { return rawPAXTar(rawPAXRecord("path", "a\x00/../../"+canary)) },
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name:    "component longer than NAME_MAX",
			in:      tarOf(file(strings.Repeat("n", 300)+"/f", "x")),
			wantErr: errdefs.ErrInvalidArgument, wantMsg: "longer than the filesystem allows",
		},
		{
			name: "symlink to absolute / then write through it",
			in:   tarOf(symlink("a", "/"), file("a/"+canary, "x")),
			// "/" is the layer root, as it will be in the sandbox.
			check: inLayer(canary, unix.S_IFREG),
		},
		{
			name: "symlink to absolute host dir then write through it",
			in: func(t *testing.T, s sandbox) []byte {
				return tarball(t, symlink("a", s.parent), file("a/"+canary, "x"), file("a/victim", "overwritten"))
			},
			wantErr: errdefs.ErrInvalidArgument, wantMsg: "symlink whose target does not exist",
		},
		{
			name: "symlink to absolute host dir that also exists in the layer",
			in: func(t *testing.T, s sandbox) []byte {
				rel := strings.TrimPrefix(s.parent, "/")
				return tarball(t, dir(rel), symlink("a", s.parent), file("a/"+canary, "x"), file("a/victim", "overwritten"))
			},
			check: func(t *testing.T, s sandbox) {
				if got := readFile(t, filepath.Join(s.dir, s.parent, "victim")); got != "overwritten" {
					t.Errorf("in-layer victim = %q, want the write to land inside the layer", got)
				}
			},
		},
		{name: "relative symlink up and out", in: tarOf(symlink("a", "../../.."), file("a/"+canary, "x")), check: inLayer(canary, unix.S_IFREG)},
		{name: "relative symlink to parent", in: tarOf(symlink("a", ".."), file("a/victim", "x")), check: inLayer("victim", unix.S_IFREG)},
		{
			name: "chained symlinks",
			in: tarOf(
				dir("sub"),
				symlink("l2", "/sub/../../.."),
				symlink("l1", "l2/.."),
				symlink("l0", "l1/../../l1"),
				file("l0/"+canary, "x"),
			),
			check: inLayer(canary, unix.S_IFREG),
		},
		{name: "symlink loop", in: tarOf(symlink("a", "b"), symlink("b", "a"), file("a/x", "x")), wantErr: errdefs.ErrInvalidArgument, wantMsg: "symlink loop"},
		{
			name: "file replaces symlink instead of writing through it",
			in: func(t *testing.T, s sandbox) []byte {
				return tarball(t, symlink("v", filepath.Join(s.parent, "victim")), file("v", "overwritten"))
			},
			check: inLayer("v", unix.S_IFREG),
		},
		{
			name: "directory replaces symlink instead of merging through it",
			in: func(t *testing.T, s sandbox) []byte {
				return tarball(t, symlink("d", s.parent), dir("d"), file("d/"+canary, "x"))
			},
			check: inLayer("d/"+canary, unix.S_IFREG),
		},
		{name: "file under a file", in: tarOf(file("f", "x"), file("f/g", "y")), wantErr: errdefs.ErrInvalidArgument, wantMsg: "to be a directory"},
		{name: "hardlink with dotdot", in: tarOf(hardlink("h", "../../etc/passwd")), wantErr: errdefs.ErrInvalidArgument, wantMsg: "outside the image root"},
		{name: "hardlink to absolute host file", in: tarOf(hardlink("h", "/etc/passwd")), wantErr: errdefs.ErrInvalidArgument, wantMsg: "not a regular file earlier"},
		{
			name: "hardlink to symlink pointing out",
			in: func(t *testing.T, s sandbox) []byte {
				return tarball(t, symlink("s", filepath.Join(s.parent, "victim")), hardlink("h", "s"))
			},
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "hardlink through symlinked parent",
			in: func(t *testing.T, s sandbox) []byte {
				return tarball(t, symlink("a", ".."), hardlink("h", "a/victim"))
			},
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "hardlink to file later replaced by symlink",
			in: func(t *testing.T, s sandbox) []byte {
				return tarball(t, file("f", "x"), symlink("f", filepath.Join(s.parent, "victim")), hardlink("h", "f"))
			},
			wantErr: errdefs.ErrInvalidArgument,
		},
		{
			name: "hardlink to file whose parent became a symlink",
			in: func(t *testing.T, s sandbox) []byte {
				return tarball(t, file("d/victim", "x"), symlink("d", ".."), hardlink("h", "d/victim"))
			},
			// d/victim now resolves to the layer's own (absent) victim.
			wantErr: errdefs.ErrInvalidArgument,
		},
		{name: "hardlink to directory", in: tarOf(dir("d"), hardlink("h", "d")), wantErr: errdefs.ErrInvalidArgument},
		{
			name: "whiteout through symlink stays in the layer",
			in:   tarOf(symlink("a", ".."), file("a/.wh.victim", "")),
			opts: Options{ConvertWhiteouts: true},
			check: func(t *testing.T, s sandbox) {
				if st := lstat(t, filepath.Join(s.dir, "victim")); fileType(st) != unix.S_IFCHR {
					t.Errorf("victim type %o, want a whiteout in the layer", fileType(st))
				}
			},
		},
		{
			name: "opaque marker through symlink stays in the layer",
			in:   tarOf(file("keep", "k"), symlink("a", "/"), file("a/.wh..wh..opq", "")),
			opts: Options{ConvertWhiteouts: true},
			check: func(t *testing.T, s sandbox) {
				if got, err := getxattr(s.dir, xattrOpaque); err != nil || got != "y" {
					t.Errorf("layer root opaque = %q, %v, want \"y\"", got, err)
				}
				inLayer("keep", unix.S_IFREG)(t, s)
			},
		},
		{
			name: "opaque marker through symlink to host dir",
			in: func(t *testing.T, s sandbox) []byte {
				return tarball(t, symlink("a", s.parent), file("a/.wh..wh..opq", ""))
			},
			opts:    Options{ConvertWhiteouts: true},
			wantErr: errdefs.ErrInvalidArgument,
		},
		{name: "whiteout of dotdot", in: tarOf(file("d/.wh...", "")), opts: Options{ConvertWhiteouts: true}, wantErr: errdefs.ErrInvalidArgument, wantMsg: "whiteout"},
		{name: "whiteout of dot", in: tarOf(file("d/.wh..", "")), opts: Options{ConvertWhiteouts: true}, wantErr: errdefs.ErrInvalidArgument},
		{
			name: "overlay xattrs are not accepted from the archive",
			in:   tarOf(dir("d", xattr("trusted.overlay.redirect", "/etc")), file("f", "", xattr("trusted.overlay.metacopy", ""))),
			check: func(t *testing.T, s sandbox) {
				for _, p := range []string{"d", "f"} {
					buf := make([]byte, 1024)
					n, err := unix.Llistxattr(filepath.Join(s.dir, p), buf)
					if err != nil || strings.Contains(string(buf[:n]), "overlay") {
						t.Errorf("xattrs of %s = %q, %v, want no overlay xattrs", p, buf[:n], err)
					}
				}
			},
		},
		{
			name:    "gzip bomb: one 1 GiB file",
			in:      func(t *testing.T, _ sandbox) []byte { b, err := bombOnce(); must(t, err); return b },
			opts:    Options{MaxBytes: 100 << 20},
			wantErr: errdefs.ErrTooLarge, wantMsg: "limit of 104857600 bytes",
		},
		{
			name:    "gzip bomb: many files",
			in:      func(t *testing.T, _ sandbox) []byte { return manyFilesBomb(t) },
			opts:    Options{MaxBytes: 30 << 20},
			wantErr: errdefs.ErrTooLarge,
		},
		{
			name: "entry count bomb",
			in: func(t *testing.T, _ sandbox) []byte {
				ents := make([]ent, 500)
				for i := range ents {
					ents[i] = file(fmt.Sprintf("f%d", i), "")
				}
				return gzipped(t, tarball(t, ents...))
			},
			opts:    Options{MaxEntries: 100},
			wantErr: errdefs.ErrTooLarge, wantMsg: "more than 100 entries",
		},
		{
			name:    "truncated tar",
			in:      func(*testing.T, sandbox) []byte { return validTar[:5000] },
			wantErr: errdefs.ErrInvalidArgument, wantMsg: "truncated",
		},
		{
			name:    "truncated gzip",
			in:      func(t *testing.T, _ sandbox) []byte { z := gzipped(t, validTar); return z[:len(z)/2] },
			wantErr: errdefs.ErrInvalidArgument, wantMsg: "truncated",
		},
		{
			name: "corrupt gzip",
			in: func(t *testing.T, _ sandbox) []byte {
				z := bytes.Clone(gzipped(t, validTar))
				for i := 20; i < 40; i++ {
					z[i] ^= 0xff
				}
				return z
			},
			wantErr: errdefs.ErrInvalidArgument, wantMsg: "corrupt",
		},
		{
			name: "corrupt tar header",
			in: func(*testing.T, sandbox) []byte {
				b := bytes.Clone(validTar)
				b[148] ^= 0x7 // checksum
				return b
			},
			wantErr: errdefs.ErrInvalidArgument, wantMsg: "not a valid tar",
		},
		{name: "not a tar", in: func(*testing.T, sandbox) []byte { return bytes.Repeat([]byte("garbage "), 200) }, wantErr: errdefs.ErrInvalidArgument},
		{
			name:    "zstd",
			in:      func(*testing.T, sandbox) []byte { return append([]byte{0x28, 0xb5, 0x2f, 0xfd}, make([]byte, 100)...) },
			wantErr: errdefs.ErrInvalidArgument, wantMsg: "zstd",
		},
		{
			name:    "unsupported entry type",
			in:      tarOf(ent{hdr: tar.Header{Typeflag: 'Z', Name: "weird", Mode: 0o644}}),
			wantErr: errdefs.ErrInvalidArgument, wantMsg: "unsupported type",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			st, err := ApplyTar(context.Background(), bytes.NewReader(tc.in(t, s)), s.dir, tc.opts)
			t.Logf("ApplyTar() = %+v, %v", st, err)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Errorf("ApplyTar() = %v, want success", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("ApplyTar() = %v, want class %v", err, tc.wantErr)
			case err != nil && !strings.Contains(err.Error(), tc.wantMsg):
				t.Errorf("ApplyTar() = %q, want it to mention %q", err, tc.wantMsg)
			}
			if tc.opts.MaxBytes > 0 && st.Bytes > tc.opts.MaxBytes {
				t.Errorf("ApplyTar() wrote %d bytes, over the limit of %d", st.Bytes, tc.opts.MaxBytes)
			}
			if err == nil && tc.check != nil {
				tc.check(t, s)
			}
			s.assertContained(t)
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestApplyTarBombLeavesLittle checks that the single-file bomb is refused
// before any of it reaches the disk.
func TestApplyTarBombLeavesLittle(t *testing.T) {
	requireRoot(t)
	b, err := bombOnce()
	must(t, err)
	if len(b) > 8<<20 {
		t.Fatalf("bomb is %d bytes compressed; the test wants a small one", len(b))
	}
	s := newSandbox(t)
	st, err := ApplyTar(context.Background(), bytes.NewReader(b), s.dir, Options{MaxBytes: 100 << 20})
	if !errdefs.IsInvalidArgument(err) && !errors.Is(err, errdefs.ErrTooLarge) {
		t.Fatalf("ApplyTar(bomb) = %v, want ErrTooLarge", err)
	}
	if st.Bytes != 0 {
		t.Errorf("ApplyTar(bomb) wrote %d bytes, want 0", st.Bytes)
	}
	ents, err := os.ReadDir(s.dir)
	must(t, err)
	if len(ents) != 0 {
		t.Errorf("layer holds %d entries after a refused bomb, want 0", len(ents))
	}
}
