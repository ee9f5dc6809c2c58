package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireRoot skips unprivileged runs, except in CI, where a skip would hide
// that the privileged tests never ran.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("archive tests need root; CI=true forbids skipping them")
	}
	t.Skip("requires root")
}

var testTime = time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)

type ent struct {
	hdr  tar.Header
	body []byte
}

type hdrOpt func(*tar.Header)

func mode(m int64) hdrOpt       { return func(h *tar.Header) { h.Mode = m } }
func owner(uid, gid int) hdrOpt { return func(h *tar.Header) { h.Uid, h.Gid = uid, gid } }
func mtime(tm time.Time) hdrOpt {
	return func(h *tar.Header) {
		h.ModTime = tm
		if tm.Nanosecond() != 0 {
			h.Format = tar.FormatPAX // other formats round to seconds
		}
	}
}
func format(f tar.Format) hdrOpt { return func(h *tar.Header) { h.Format = f } }
func atime(tm time.Time) hdrOpt {
	return func(h *tar.Header) { h.AccessTime = tm; h.Format = tar.FormatPAX }
}
func xattr(key, value string) hdrOpt { return paxRecord("SCHILY.xattr."+key, value) }
func paxRecord(key, value string) hdrOpt {
	return func(h *tar.Header) {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords[key] = value
		h.Format = tar.FormatPAX
	}
}

func mk(typ byte, name string, m int64, opts []hdrOpt) tar.Header {
	h := tar.Header{Typeflag: typ, Name: name, Mode: m, ModTime: testTime}
	for _, o := range opts {
		o(&h)
	}
	return h
}

func file(name, body string, opts ...hdrOpt) ent {
	h := mk(tar.TypeReg, name, 0o644, opts)
	h.Size = int64(len(body))
	return ent{hdr: h, body: []byte(body)}
}

func dir(name string, opts ...hdrOpt) ent { return ent{hdr: mk(tar.TypeDir, name, 0o755, opts)} }

func symlink(name, target string, opts ...hdrOpt) ent {
	h := mk(tar.TypeSymlink, name, 0o777, opts)
	h.Linkname = target
	return ent{hdr: h}
}

func hardlink(name, target string) ent {
	h := mk(tar.TypeLink, name, 0o644, nil)
	h.Linkname = target
	return ent{hdr: h}
}

func fifo(name string, opts ...hdrOpt) ent { return ent{hdr: mk(tar.TypeFifo, name, 0o600, opts)} }

func device(typ byte, name string, major, minor int64, opts ...hdrOpt) ent {
	h := mk(typ, name, 0o666, opts)
	h.Devmajor, h.Devminor = major, minor
	return ent{hdr: h}
}

// tarball builds an uncompressed tar stream in memory.
func tarball(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("WriteHeader(%q): %v", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			t.Fatalf("Write(%q): %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawHeader builds a ustar header block by hand, for streams archive/tar
// refuses to write.
func rawHeader(name string, typ byte, size int) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], fmt.Sprintf("%011o\x00", testTime.Unix()))
	b[156] = typ
	copy(b[257:265], "ustar\x0000")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// rawPAXRecord encodes one PAX record, whose length prefix counts itself.
func rawPAXRecord(key, value string) string {
	n := len(key) + len(value) + 3
	for {
		s := fmt.Sprintf("%d %s=%s\n", n, key, value)
		if len(s) == n {
			return s
		}
		n = len(s)
	}
}

func pad512(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("Lstat(%s): %v", p, err)
	}
	return st
}

func fileType(st unix.Stat_t) uint32 { return st.Mode & unix.S_IFMT }

func assertMissing(t *testing.T, p string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Lstat(%s) = %v, want ENOENT", p, err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func getxattr(p, key string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, key, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func mtimeOf(st unix.Stat_t) time.Time { return time.Unix(st.Mtim.Unix()) }

// canary is the name hostile archives try to plant outside the layer.
const canary = "pwned"

// sandbox is a layer directory inside a parent that holds only a victim
// file, so any write outside the layer is visible.
type sandbox struct {
	parent, dir, victim string
}

func newSandbox(t *testing.T) sandbox {
	t.Helper()
	parent := t.TempDir()
	s := sandbox{parent: parent, dir: filepath.Join(parent, "layer"), victim: filepath.Join(parent, "victim")}
	if err := os.Mkdir(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.victim, []byte("victim"), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// assertContained checks that nothing outside the layer changed: the parent
// holds exactly the layer and an untouched, unlinked victim, and no ancestor
// of the layer holds the canary.
func (s sandbox) assertContained(t *testing.T) {
	t.Helper()
	ents, err := os.ReadDir(s.parent)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"layer", "victim"}; !slices.Equal(names, want) {
		t.Errorf("parent holds %v, want %v", names, want)
	}
	st := lstat(t, s.victim)
	if fileType(st) != unix.S_IFREG || st.Nlink != 1 || st.Mode&0o7777 != 0o644 {
		t.Errorf("victim: type %o nlink %d mode %o, want a regular 0644 file with one link", fileType(st), st.Nlink, st.Mode&0o7777)
	}
	if got := readFile(t, s.victim); got != "victim" {
		t.Errorf("victim content = %q, want %q", got, "victim")
	}
	for d := s.parent; ; d = filepath.Dir(d) {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(d, canary), &st); err == nil {
			t.Errorf("%s exists outside the layer", filepath.Join(d, canary))
		}
		if d == "/" {
			break
		}
	}
}
