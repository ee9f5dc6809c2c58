package cli

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
)

func TestLs(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	got := d.ok(t, "ls", "busybox")
	wantContains(t, "ls busybox", got, "bin/\n", "etc/\n", "tmp/\n")
	got = d.ok(t, "ls", "busybox:/etc")
	if got != "group\nhostname\nhosts\nos-release\npasswd\n" {
		t.Errorf("ls busybox:/etc = %q", got)
	}
	wantContains(t, "ls /bin", d.ok(t, "ls", "busybox:/bin"), "sh -> /bin/busybox\n")
	long := d.ok(t, "ls", "-l", "busybox:/etc")
	wantContains(t, "ls -l", long, "-rw-r--r-- 1 root root", "passwd\n")
	list := okJSON[apitypes.DirectoryList](t, d, "ls", "busybox:/etc/passwd")
	if list.Path != "/etc/passwd" || len(list.Files) != 1 || !list.Files[0].IsRegular || list.Files[0].Size == 0 {
		t.Errorf("ls --json of a file = %+v, want the file itself", list)
	}
	r := d.arbor(t, "ls", "busybox:/nope")
	if r.code != 1 {
		t.Fatalf("ls of a missing path: %v", r)
	}
	wantContains(t, "stderr", r.stderr, "/nope: no such file or directory", "arbor ls")
}

func TestCat(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.runImage(t, "busybox", "printf 'a\\000b' > /bin.dat; echo text > /t.txt")
	if got := d.ok(t, "cat", id[:8]+":/t.txt", "busybox:/etc/hostname"); got != "text\nlinuxkit\n" {
		t.Errorf("cat two files = %q", got)
	}
	if got := d.ok(t, "cat", id+":/bin.dat"); got != "a\x00b" {
		t.Errorf("cat binary = %q", got)
	}
	type file struct {
		Image, Path, Content, Encoding string
		Size                           int
	}
	files := okJSON[[]file](t, d, "cat", id+":/bin.dat", id+":/t.txt")
	if len(files) != 2 || files[0].Encoding != "base64" || files[0].Content != "YQBi" || files[0].Size != 3 ||
		files[1].Encoding != "ascii" || files[1].Content != "text\n" || files[1].Image != id {
		t.Errorf("cat --json = %+v", files)
	}
	for _, tc := range []struct{ arg, want string }{
		{"busybox:/etc", "not a regular file"},
		{"busybox:/missing", "no such file"},
		{"busybox", "IMAGE:/PATH"},
		{"bussybox:/etc/passwd", "did you mean busybox"},
	} {
		r := d.arbor(t, "cat", tc.arg)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("cat %s: %v, want exit 1 and %q", tc.arg, r, tc.want)
		}
	}
}

func TestCp(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	id := d.runImage(t, "busybox", "mkdir -p /p/sub && echo one > /p/one && chmod 750 /p/one && echo two > /p/sub/two && ln -s one /p/link && ln -s /etc/passwd /p/abs && mkdir /p/ro && chmod 500 /p/ro")
	dir := t.TempDir()

	// A file to a new name, then into an existing directory.
	d.ok(t, "cp", id+":/p/one", filepath.Join(dir, "copy"))
	checkFile(t, filepath.Join(dir, "copy"), "one\n", 0o750)
	d.ok(t, "cp", id+":/p/one", dir)
	checkFile(t, filepath.Join(dir, "one"), "one\n", 0o750)

	// A directory: created as LOCAL, or inside an existing directory.
	out := okJSON[struct {
		Image, Path, Destination, Type string
		extractStats
	}](t, d, "cp", id+":/p", filepath.Join(dir, "tree"))
	if out.Type != "dir" || out.Files < 4 || out.Destination != filepath.Join(dir, "tree") {
		t.Errorf("cp --json = %+v", out)
	}
	checkFile(t, filepath.Join(dir, "tree/sub/two"), "two\n", 0o644)
	if l, err := os.Readlink(filepath.Join(dir, "tree/link")); err != nil || l != "one" {
		t.Errorf("tree/link -> %q, %v; want one", l, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "tree/abs")); err != nil || l != "/etc/passwd" {
		t.Errorf("tree/abs -> %q, %v; want /etc/passwd kept as a link", l, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tree/ro")); err != nil || fi.Mode().Perm() != 0o500 {
		t.Errorf("tree/ro: %v, %v; want mode 0500", fi, err)
	}
	d.ok(t, "cp", id+":/p/sub", dir)
	checkFile(t, filepath.Join(dir, "sub/two"), "two\n", 0o644)

	// "-": a tar on stdout.
	tarOut := d.ok(t, "cp", "busybox:/etc", "-")
	tr := tar.NewReader(strings.NewReader(tarOut))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("cp - output is not a tar: %v", err)
		}
		names = append(names, h.Name)
	}
	if strings.Join(names, ",") != "group,hostname,hosts,os-release,passwd" {
		t.Errorf("cp busybox:/etc - members = %v", names)
	}
	if r := d.arbor(t, "cp", "busybox:/nope", dir); r.code != 1 || !strings.Contains(r.stderr, "no such file") {
		t.Errorf("cp of a missing path: %v", r)
	}
}

func checkFile(t *testing.T, path, want string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || string(b) != want {
		t.Errorf("%s = %q, %v; want %q", path, b, err, want)
		return
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
		t.Errorf("%s mode = %v, want %v", path, fi.Mode().Perm(), mode)
	}
}

func TestExtractTarStaysInside(t *testing.T) {
	dst := t.TempDir()
	outside := t.TempDir()
	for _, tc := range []struct {
		name    string
		members []tar.Header
	}{
		{"dot-dot name", []tar.Header{{Name: "../escape", Typeflag: tar.TypeReg}}},
		{"write through an escaping symlink", []tar.Header{
			{Name: "out", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "out/pwned", Typeflag: tar.TypeReg},
		}},
		{"hard link to a file outside", []tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, h := range tc.members {
				if err := tw.WriteHeader(&h); err != nil {
					t.Fatal(err)
				}
			}
			tw.Close()
			if _, err := extractTar(&buf, dst); err == nil {
				t.Errorf("extractTar accepted a member escaping the destination")
			}
			if ents, _ := os.ReadDir(outside); len(ents) > 0 {
				t.Errorf("extractTar wrote outside the destination: %v", ents)
			}
		})
	}
	// Absolute names are taken relative to the destination.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "/abs/file", Typeflag: tar.TypeReg, Size: 2, Mode: 0o600})
	tw.Write([]byte("ok"))
	tw.Close()
	dst2 := t.TempDir()
	if _, err := extractTar(&buf, dst2); err != nil {
		t.Fatal(err)
	}
	checkFile(t, filepath.Join(dst2, "abs/file"), "ok", 0o600)
}

func TestGrep(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	got := d.ok(t, "grep", "root", "busybox:/etc")
	if got != "/etc/group:1:root:x:0:\n/etc/passwd:1:root:x:0:0:root:/root:/bin/sh\n" {
		t.Errorf("grep root busybox:/etc = %q", got)
	}
	got = d.ok(t, "grep", "-i", "ROOT", "-A", "1", "busybox:/etc/passwd")
	if got != "/etc/passwd:1:root:x:0:0:root:/root:/bin/sh\n/etc/passwd-2-nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n" {
		t.Errorf("grep -i -A 1 = %q", got)
	}
	if got := d.ok(t, "grep", "ID", "busybox", "--glob", "os-*"); got != "/etc/os-release:2:ID=busybox\n" {
		t.Errorf("grep --glob = %q", got)
	}
	res := okJSON[apitypes.GrepResult](t, d, "grep", "nobody", "busybox:/etc")
	if len(res.Matches) != 1 || res.Matches[0].Path != "/etc/passwd" || res.Matches[0].LineNumber != 2 || len(res.Matches[0].Submatches) != 2 {
		t.Errorf("grep --json = %+v", res)
	}
	if r := d.arbor(t, "grep", "no-such-text-anywhere", "busybox:/etc"); r.code != 1 || r.stdout != "" {
		t.Errorf("grep without matches: %v, want exit 1 and no output", r)
	}
	if r := d.arbor(t, "grep", "(", "busybox:/etc"); r.code != 1 || !strings.Contains(r.stderr, "(") {
		t.Errorf("grep with a bad pattern: %v", r)
	}
}

func TestDiff(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	a := d.runImage(t, "busybox", "echo one > /f; echo keep > /k; echo gone > /g")
	b := d.runImage(t, a, "echo two > /f; rm /g; echo new > /n")
	got := d.ok(t, "diff", a, b)
	for _, want := range []string{" M /f ", " D /g ", " A /n ", "3 changes: 1 added, 1 modified, 1 deleted", "--- a/f\n+++ b/f\n", "-one\n+two\n"} {
		wantContains(t, "diff", got, want)
	}
	if strings.Contains(got, "/k") {
		t.Errorf("diff lists the unchanged /k:\n%s", got)
	}
	// One argument: against the parent. --stat: no unified diff.
	stat := d.ok(t, "diff", "--stat", b[:8])
	if strings.Contains(stat, "+++") || !strings.Contains(stat, " M /f ") {
		t.Errorf("diff --stat = %q", stat)
	}
	res := okJSON[apitypes.ImageDiff](t, d, "diff", a, b, "--path", "/f")
	if res.From != a || res.To != b || len(res.Changes) != 1 || res.Changes[0].Kind != apitypes.ChangeModified || res.Changes[0].Diff == "" {
		t.Errorf("diff --json --path /f = %+v", res)
	}
	if r := d.arbor(t, "diff", "--exit-code", a, b); r.code != 1 {
		t.Errorf("diff --exit-code with changes: exit %d, want 1", r.code)
	}
	if r := d.arbor(t, "diff", "--exit-code", a, a); r.code != 0 || !strings.Contains(r.stdout, "no changes") {
		t.Errorf("diff of an image with itself: %v", r)
	}
	if r := d.arbor(t, "diff", "busybox"); r.code != 1 || !strings.Contains(r.stderr, "no parent") {
		t.Errorf("diff of a base image alone: %v", r)
	}
}

func TestLog(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	a := d.runImage(t, "busybox", "echo a > /a", "--tag", "log-a")
	b := d.runImage(t, a, "echo b > /b")
	c1 := d.runImage(t, b, "echo c1 > /c1")
	c2 := d.runImage(t, b, "echo c2 > /c2", "--tag", "log-c2")
	got := d.ok(t, "log", b[:8])
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 6 {
		t.Fatalf("log has %d lines, want 2 children (with a branch), head, 2 ancestors:\n%s", len(lines), got)
	}
	// Children newest first, the second drawn as a branch.
	wantContains(t, "first child", lines[0], "* "+shortID(c2)+" (tag: log-c2) echo c2 > /c2 [exit 0]")
	wantContains(t, "second child", lines[1], "| * "+shortID(c1)+" echo c1 > /c1 [exit 0]")
	wantContains(t, "merge", lines[2], "|/")
	wantContains(t, "head line", got, "* "+shortID(b)+" (HEAD) echo b > /b [exit 0]")
	wantContains(t, "ancestor", got, "* "+shortID(a)+" (tag: log-a) echo a > /a [exit 0]")
	wantContains(t, "base", lines[len(lines)-1], "* "+shortID(d.busybox)+" (tag: busybox) [base image]")

	type node struct {
		apitypes.LineageImage
		Command  string `json:"command"`
		ExitCode *int   `json:"exit_code"`
	}
	l := okJSON[struct {
		Image     node   `json:"image"`
		Ancestors []node `json:"ancestors"`
		Children  []node `json:"children"`
	}](t, d, "log", "-n", "1", b)
	if l.Image.UUID != b || l.Image.Command != "echo b > /b" || l.Image.ExitCode == nil || *l.Image.ExitCode != 0 {
		t.Errorf("log --json image = %+v", l.Image)
	}
	if len(l.Ancestors) != 1 || l.Ancestors[0].UUID != a {
		t.Errorf("log -n 1 --json ancestors = %+v, want only %s", l.Ancestors, a)
	}
	if len(l.Children) != 2 || l.Children[0].UUID != c2 || l.Children[1].UUID != c1 || l.Children[1].Operation == nil {
		t.Errorf("log --json children = %+v, want %s and %s with their operations", l.Children, c2, c1)
	}
	wantContains(t, "log -n 1", d.ok(t, "log", "-n", "1", b), "1 more ancestors")
}
