package cli

import (
	"archive/tar"
	"compress/gzip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
)

func TestImagesListsAndFilters(t *testing.T) {
	t.Parallel()
	d := fakeDaemon(t)
	untagged := d.runImage(t, "busybox", "echo 1 > /one")
	d.runImage(t, "busybox", "echo 2 > /two", "--tag", "imgs-two")

	ims := okJSON[[]apitypes.Image](t, d, "images")
	tags := map[string]string{}
	for _, im := range ims {
		if im.Tag == nil {
			t.Errorf("images without --all lists untagged image %s", im.UUID)
			continue
		}
		tags[*im.Tag] = im.UUID
	}
	if tags["busybox"] != d.busybox || tags["imgs-two"] == "" {
		t.Errorf("images = %v, want busybox and imgs-two", tags)
	}
	all := okJSON[[]apitypes.Image](t, d, "images", "--all", "--since", "1h")
	if !slices.ContainsFunc(all, func(im apitypes.Image) bool { return im.UUID == untagged }) {
		t.Errorf("images --all does not list untagged image %s", untagged)
	}
	pre := okJSON[[]apitypes.Image](t, d, "images", "--prefix", "imgs-")
	if len(pre) != 1 || deref(pre[0].Tag) != "imgs-two" {
		t.Errorf("images --prefix imgs- = %+v, want imgs-two only", pre)
	}
	if got := d.ok(t, "images", "-q", "--prefix", "imgs-"); got != tags["imgs-two"]+"\n" {
		t.Errorf("images -q = %q, want the full uuid", got)
	}
	table := d.ok(t, "images")
	wantContains(t, "images", table, "IMAGE", "TAG", "CREATED", "busybox", "imgs-two", shortID(d.busybox))
	if r := d.arbor(t, "images", "--limit", "0"); r.code != 1 || !strings.Contains(r.stderr, "--limit") {
		t.Errorf("images --limit 0: %v", r)
	}
}

func TestTagAndRmi(t *testing.T) {
	t.Parallel()
	d := fakeDaemon(t)
	id := d.runImage(t, "busybox", "echo t > /t")
	im := okJSON[apitypes.Image](t, d, "tag", id[:8], "tagrm-a")
	if im.UUID != id || deref(im.Tag) != "tagrm-a" {
		t.Fatalf("tag --json = %+v, want %s tagged tagrm-a", im, id)
	}
	wantContains(t, "tag", d.ok(t, "tag", "tagrm-a", "tagrm-b"), "tagged "+id+" as tagrm-b")
	if r := d.arbor(t, "ls", "tagrm-a"); r.code != 1 || !strings.Contains(r.stderr, "did you mean tagrm-b") {
		t.Errorf("the replaced tag still resolves, or no suggestion: %v", r)
	}
	if r := d.arbor(t, "tag", "--rm", "tagrm-b", "other"); r.code != 1 {
		t.Errorf("tag --rm with the wrong tag: %v", r)
	}
	im = okJSON[apitypes.Image](t, d, "tag", "--rm", "tagrm-b", "tagrm-b")
	if im.Tag != nil {
		t.Errorf("tag --rm --json = %+v, want no tag", im)
	}
	if r := d.arbor(t, "tag", id); r.code != 1 || !strings.Contains(r.stderr, "IMAGE and TAG") {
		t.Errorf("tag with one argument: %v", r)
	}
	if r := d.arbor(t, "tag", id, "bad tag"); r.code != 1 || !strings.Contains(r.stderr, "invalid tag") {
		t.Errorf("tag with a space: %v", r)
	}

	other := d.runImage(t, "busybox", "echo u > /u", "--tag", "tagrm-c")
	r := d.arbor(t, "--json", "rmi", id, "tagrm-c", "no-such-image-tag")
	if r.code != 1 {
		t.Fatalf("rmi with one unknown image: exit %d, want 1\n%v", r.code, r)
	}
	rows := decode[[]struct {
		Ref     string  `json:"ref"`
		Image   string  `json:"image"`
		Tag     *string `json:"tag"`
		Deleted bool    `json:"deleted"`
		Error   string  `json:"error"`
	}](t, r.stdout)
	if len(rows) != 3 || !rows[0].Deleted || rows[1].Image != other || !rows[1].Deleted || rows[2].Deleted || !strings.Contains(rows[2].Error, "no image has tag") {
		t.Errorf("rmi --json = %+v", rows)
	}
	if _, err := d.c.Image(t.Context(), id); err == nil {
		t.Errorf("image %s still exists after rmi", id)
	}
	if out := d.ok(t, "rmi", d.runImage(t, "busybox", "echo v > /v")); !strings.HasPrefix(out, "deleted ") {
		t.Errorf("rmi = %q, want deleted UUID", out)
	}
}

func TestImportDirectoryAndArchive(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, p := range []string{"etc", "data/sub"} {
		if err := os.MkdirAll(filepath.Join(rootfs, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "data/sub/x"), []byte("hello\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/x", filepath.Join(rootfs, "data/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(rootfs, "data/sub/x"), filepath.Join(rootfs, "data/hard")); err != nil {
		t.Fatal(err)
	}

	r := d.arbor(t, "import", rootfs, "--tag", "imp-dir")
	if r.code != 0 {
		t.Fatalf("import DIR: %v", r)
	}
	wantContains(t, "import output", r.stdout, "imported "+rootfs, "tag imp-dir", "image ")
	wantContains(t, "import progress", r.stderr, "arbor: upload")
	for p, want := range map[string]string{"/data/sub/x": "hello\n", "/data/link": "hello\n", "/data/hard": "hello\n"} {
		if got := d.ok(t, "cat", "imp-dir:"+p); got != want {
			t.Errorf("cat imp-dir:%s = %q, want %q", p, got, want)
		}
	}
	list := okJSON[apitypes.DirectoryList](t, d, "ls", "imp-dir:/data/sub")
	if len(list.Files) != 1 || list.Files[0].Mode&0o777 != 0o640 {
		t.Errorf("ls imp-dir:/data/sub = %+v, want x with mode 0640", list)
	}

	// A gzip-compressed tar, with --json.
	tgz := filepath.Join(dir, "rootfs.tar.gz")
	writeTarGz(t, tgz, map[string]string{"hello.txt": "from a tarball\n"})
	res := okJSON[importResult](t, d, "import", tgz, "--tag", "imp-tgz")
	if res.Status != apitypes.StatusSuccess || res.Image == nil || deref(res.Tag) != "imp-tgz" || res.Source != tgz || !apitypes.IsUUID(res.Operation) {
		t.Fatalf("import --json = %+v", res)
	}
	if got := d.ok(t, "cat", "imp-tgz:/hello.txt"); got != "from a tarball\n" {
		t.Errorf("cat imp-tgz:/hello.txt = %q", got)
	}
	// The same content again is not uploaded twice and imports fine.
	if res2 := okJSON[importResult](t, d, "import", tgz); res2.Image == nil || res2.Tag != nil {
		t.Errorf("second import = %+v, want a new untagged image", res2)
	}
}

func TestImportMistakes(t *testing.T) {
	t.Parallel()
	d := fakeDaemon(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing archive", []string{"import", "/nonexistent/rootfs.tar"}, "no such file"},
		{"no ref", []string{"import"}, "--busybox"},
		{"username without password", []string{"import", "example.com/x:1", "--username", "u"}, "--password-stdin"},
		{"bad tag", []string{"import", "--busybox", "--tag", "no spaces"}, "invalid tag"},
		// A registry that is not there (a closed loopback port): the server's reason comes through.
		{"registry", []string{"import", "127.0.0.1:1/library/none:1"}, "127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := d.arbor(t, tc.args...)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1\n%v", r.code, r)
			}
			wantContains(t, "stderr", r.stderr, tc.want)
		})
	}
}

func writeTarGz(t *testing.T, path string, files map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []interface{ Close() error }{tw, zw, f} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
