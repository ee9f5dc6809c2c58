package api_test

import (
	"archive/tar"
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
)

// TestImagesAndTags covers listing filters and the tag endpoints.
func TestImagesAndTags(t *testing.T) {
	d := sharedDaemon(t)
	c, secret, _ := d.account(t, "images-test")
	base, err := d.importBusybox(ctxT(t), c, "team/base:1")
	if err != nil {
		t.Fatal(err)
	}
	child := deref(d.run(t, c, base, "echo 1 > /root/one").ResultImageUUID)
	other := deref(d.run(t, c, base, "echo 2 > /root/two").ResultImageUUID)
	for _, tc := range []struct {
		query string
		want  int
	}{{"tagged=1", 1}, {"tagged=true", 1}, {"tagged=0", 3}, {"tagged=false", 3}, {"tagged=", 3}} {
		r := do(t, http.MethodGet, d.srv.URL+"/v1/images?"+tc.query, secret, nil)
		if got := len(r.object(t)["images"].([]any)); got != tc.want {
			t.Errorf("GET /v1/images?%s = %d images, want %d", tc.query, got, tc.want)
		}
	}
	wantError(t, d.get(t, "/v1/images?tagged=maybe"), http.StatusBadRequest, "tagged")
	for id, tag := range map[string]string{child: "team/base:10", other: "team/base"} {
		if im, err := c.SetTag(ctxT(t), id, tag); err != nil || deref(im.Tag) != tag || im.UUID != id {
			t.Fatalf("SetTag(%s) = %+v, %v", tag, im, err)
		}
	}

	list := func(o client.ImageListOptions) []string {
		t.Helper()
		ims, err := c.ListImages(ctxT(t), o)
		if err != nil {
			t.Fatalf("ListImages(%+v): %v", o, err)
		}
		var out []string
		for _, im := range ims {
			out = append(out, im.UUID)
		}
		return out
	}
	if got := list(client.ImageListOptions{}); len(got) != 3 || got[0] != other || got[2] != base {
		t.Errorf("all images = %v, want newest first [%s %s %s]", got, other, child, base)
	}
	if got := list(client.ImageListOptions{TagPrefix: "team/base"}); len(got) != 3 || got[0] != other {
		t.Errorf("tag prefix team/base = %v, want the exact match %s first", got, other)
	}
	if got := list(client.ImageListOptions{TagPrefix: "team/base:1"}); len(got) != 2 || got[0] != base {
		t.Errorf("tag prefix team/base:1 = %v, want exact match %s first, then team/base:10", got, base)
	}
	if got := list(client.ImageListOptions{UUID: strings.ToUpper(child)}); len(got) != 1 || got[0] != child {
		t.Errorf("uuid filter = %v", got)
	}
	if got := list(client.ImageListOptions{Page: client.Page{Limit: 2, Offset: 1}}); len(got) != 2 || got[0] != child {
		t.Errorf("limit 2 offset 1 = %v", got)
	}
	if got := list(client.ImageListOptions{Page: client.Page{Until: "1d"}}); len(got) != 0 {
		t.Errorf("until 1d ago = %v, want none", got)
	}
	// Moving a tag takes it off the other image.
	if _, err := c.SetTag(ctxT(t), base, "team/base"); err != nil {
		t.Fatal(err)
	}
	if im, _ := c.Image(ctxT(t), other); im.Tag != nil {
		t.Errorf("moved tag still on %s: %v", other, *im.Tag)
	}
	if id, err := c.FindImageByTag(ctxT(t), "tag:team/base"); err != nil || id != base {
		t.Errorf("FindImageByTag after move = %s, %v", id, err)
	}
	// ConTree's CLI puts a tag raw into the URL: its '+' is a '+'.
	if _, err := c.SetTag(ctxT(t), other, "v1.0+build"); err != nil {
		t.Fatal(err)
	}
	if r := do(t, http.MethodGet, d.srv.URL+"/v1/images?tag=v1.0+build", secret, nil); len(r.object(t)["images"].([]any)) != 1 {
		t.Errorf("GET /v1/images?tag=v1.0+build: %s, want the tagged image", r.body)
	}
	if r := do(t, http.MethodGet, d.srv.URL+"/v1/inspect/?tag=v1.0+build", secret, nil); r.StatusCode != http.StatusFound || !strings.Contains(r.Header.Get("Location"), other) {
		t.Errorf("GET /v1/inspect/?tag=v1.0+build = %d Location %q, want 302 to %s", r.StatusCode, r.Header.Get("Location"), other)
	}
	r := do(t, http.MethodDelete, d.srv.URL+"/v1/images/"+other+"/tag?tag=v1.0+build", secret, nil)
	wantStatus(t, r, http.StatusOK)
	if im, _ := c.Image(ctxT(t), other); im.Tag != nil {
		t.Errorf("raw DELETE ?tag=v1.0+build left tag %q", *im.Tag)
	}
	// DELETE with a tag that is not the image's is a conflict; without one
	// it clears whatever tag there is (the SDK sends none).
	if _, err := c.RemoveTag(ctxT(t), base, "nope"); !client.IsConflict(err) {
		t.Errorf("RemoveTag(wrong tag) = %v, want 409", err)
	}
	if im, err := c.RemoveTag(ctxT(t), base, ""); err != nil || im.Tag != nil || im.UUID != base {
		t.Errorf("RemoveTag() = %+v, %v; want the image without tag", im, err)
	}
	if im, err := c.RemoveTag(ctxT(t), child, "team/base:10"); err != nil || im.Tag != nil {
		t.Errorf("RemoveTag(its tag) = %+v, %v", im, err)
	}
	if _, err := c.FindImageByTag(ctxT(t), "team/base"); !client.IsNotFound(err) {
		t.Errorf("FindImageByTag(removed) = %v, want 404", err)
	}
	if _, err := c.SetTag(ctxT(t), base, "bad tag!"); !client.IsBadRequest(err) {
		t.Errorf("SetTag(invalid) = %v, want 400", err)
	}
	if id, err := c.FindImageByTag(ctxT(t), "busybox:latest"); err == nil {
		t.Errorf("account images-test sees the default account's tag: %s", id)
	}
	wantError(t, d.get(t, "/v1/inspect/"), http.StatusBadRequest, "tag is required")
}

// TestInspect reads an image without starting a sandbox.
func TestInspect(t *testing.T) {
	d := realDaemon(t) // the image's files belong to root
	ctx := ctxT(t)
	img := d.base
	root, err := d.c.ListDir(ctx, img, "/")
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]apitypes.FileItem{}
	for _, f := range root.Files {
		byName[f.Path] = f
	}
	if root.Path != "/" || !byName["etc"].IsDir || byName["etc"].Mode != 0o40755 || byName["etc"].Owner != "root" {
		t.Errorf("ListDir(/) = path %q etc %+v", root.Path, byName["etc"])
	}
	// A path that is not a directory lists itself; the final symlink is
	// followed, so /bin/sh shows the busybox binary.
	sh, err := d.c.ListDir(ctx, img, "/bin/sh")
	if err != nil || len(sh.Files) != 1 || sh.Files[0].Path != "busybox" || !sh.Files[0].IsRegular {
		t.Errorf("ListDir(/bin/sh) = %+v, %v", sh, err)
	}
	etc, err := d.c.ListDir(ctx, img, "etc")
	if err != nil || etc.Path != "/etc" || len(etc.Files) < 4 {
		t.Errorf("ListDir(etc) = %+v, %v", etc, err)
	}

	text, err := d.c.ListDirText(ctx, img, "/etc")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "-rw-r--r--") || !strings.Contains(text, " root ") || !strings.Contains(text, " passwd\n") {
		t.Errorf("ls text = %q", text)
	}
	r := d.get(t, "/v1/inspect/"+img+"/list?path=/bin&text=")
	if !strings.Contains(string(r.body), "sh -> /bin/busybox") || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("mcp-style text= listing = %q (%s)", r.body, r.Header.Get("Content-Type"))
	}

	t.Run("download", func(t *testing.T) {
		r := d.get(t, "/v1/inspect/"+img+"/download?path=/etc/hostname")
		wantStatus(t, r, http.StatusOK)
		if string(r.body) != "linuxkit\n" || r.Header.Get("Content-Length") != "9" || r.Header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("download = %q, Content-Length %q, type %q", r.body, r.Header.Get("Content-Length"), r.Header.Get("Content-Type"))
		}
		h := do(t, http.MethodHead, d.srv.URL+"/v1/inspect/"+img+"/download?path=/etc/hostname", d.token, nil)
		if h.StatusCode != http.StatusOK || h.Header.Get("Content-Length") != "9" {
			t.Errorf("HEAD download = %d, Content-Length %q", h.StatusCode, h.Header.Get("Content-Length"))
		}
		rc, size, err := d.c.Download(ctx, img, "/bin/busybox")
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil || n != size || size < 100000 {
			t.Errorf("Download(busybox) read %d of %d: %v", n, size, err)
		}
		// HEAD is ConTree's existence probe: 200 for a directory too, which
		// arbor's header marks, so the Go client still knows a file.
		for path, want := range map[string]string{"/etc": "directory", "/": "directory", "/etc/passwd": "", "/bin/sh": ""} {
			h := do(t, http.MethodHead, d.srv.URL+"/v1/inspect/"+img+"/download?path="+path, d.token, nil)
			if h.StatusCode != http.StatusOK || h.Header.Get(apitypes.PathTypeHeader) != want {
				t.Errorf("HEAD download %s = %d, %s %q; want 200 and %q", path, h.StatusCode, apitypes.PathTypeHeader, h.Header.Get(apitypes.PathTypeHeader), want)
			}
		}
		for path, want := range map[string]bool{"/etc/passwd": true, "/etc/nope": false, "/bin/sh": true, "/etc": false} {
			if got, err := d.c.FileExistsIn(ctx, img, path); err != nil || got != want {
				t.Errorf("FileExistsIn(%s) = %v, %v; want %v", path, got, err, want)
			}
		}
		wantError(t, d.get(t, "/v1/inspect/"+img+"/download?path=/etc/nope"), http.StatusNotFound, "file not found")
		wantError(t, d.get(t, "/v1/inspect/"+img+"/download"), http.StatusBadRequest, "path is required")
		wantError(t, d.get(t, "/v1/inspect/"+img+"/download?path=/etc"), http.StatusBadRequest, "is a directory: list it")
		wantError(t, d.get(t, "/v1/inspect/"+img+"/download?path=/../../../../etc/shadow"), http.StatusNotFound, "")
	})

	t.Run("archive", func(t *testing.T) {
		rc, err := d.c.Archive(ctx, img, "/etc")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(bytes.NewReader(b))
		files := map[string]string{}
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(tr)
			files[h.Name] = string(body)
		}
		if files["hostname"] != "linuxkit\n" || files["hosts"] == "" {
			t.Errorf("archive of /etc has %v", keysOf(files))
		}
		for path, want := range map[string]bool{"/etc": true, "/": true, "/nope": false} {
			if got, err := d.c.PathExists(ctx, img, path); err != nil || got != want {
				t.Errorf("PathExists(%s) = %v, %v; want %v", path, got, err, want)
			}
		}
		wantError(t, d.get(t, "/v1/inspect/"+img+"/archive?path=/nope"), http.StatusNotFound, "path not found")
		if got := d.get(t, "/v1/inspect/"+img+"/archive?path=/etc/hostname"); got.Header.Get("Content-Type") != "application/x-tar" ||
			!contains(tarNames(t, got.body), "hostname") {
			t.Errorf("archive of one file = %v", tarNames(t, got.body))
		}
	})

	t.Run("grep", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			o    client.GrepOptions
			want []string // path:line:type
		}{
			{"one pattern", client.GrepOptions{Patterns: []string{"^root"}, Paths: []string{"/etc/passwd"}}, []string{"/etc/passwd:1:match"}},
			{"repeated patterns", client.GrepOptions{Patterns: []string{"^root", "^nobody"}, Paths: []string{"/etc/passwd"}},
				[]string{"/etc/passwd:1:match", "/etc/passwd:2:match"}},
			{"globs and paths", client.GrepOptions{Patterns: []string{"localhost"}, Paths: []string{"/etc", "/root"}, Globs: []string{"host*"}},
				[]string{"/etc/hosts:1:match", "/etc/hosts:2:match"}},
			{"case", client.GrepOptions{Patterns: []string{"ROOT"}, Paths: []string{"/etc/group"}, Case: "insensitive"}, []string{"/etc/group:1:match"}},
			{"context", client.GrepOptions{Patterns: []string{"^nobody"}, Paths: []string{"/etc/passwd"}, Before: 1},
				[]string{"/etc/passwd:1:context", "/etc/passwd:2:match"}},
			{"max_count", client.GrepOptions{Patterns: []string{"o"}, Paths: []string{"/etc/passwd"}, MaxCount: 1}, []string{"/etc/passwd:1:match"}},
			{"no match", client.GrepOptions{Patterns: []string{"zzz-none"}, Paths: []string{"/etc"}}, nil},
		} {
			res, err := d.c.Grep(ctx, img, tc.o)
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			var got []string
			for _, m := range res.Matches {
				got = append(got, m.Path+":"+strconv.Itoa(m.LineNumber)+":"+m.Type)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") || res.Matches == nil {
				t.Errorf("%s: matches %v, want %v", tc.name, got, tc.want)
			}
		}
		r := d.get(t, "/v1/inspect/"+img+"/grep?pattern=root&path=/etc/passwd").object(t)
		wantKeys(t, "grep", r, []string{"path", "patterns", "matches", "truncated"})
		if r["path"] != "/etc/passwd" {
			t.Errorf("grep path = %v, want /etc/passwd", r["path"])
		}
		m := r["matches"].([]any)[0].(map[string]any)
		wantKeys(t, "grep match", m, []string{"path", "line_number", "absolute_offset", "line_text", "line_bytes", "submatches", "type"})
		wantKeys(t, "submatch", m["submatches"].([]any)[0].(map[string]any), []string{"text", "start", "end"})
		wantError(t, d.get(t, "/v1/inspect/"+img+"/grep"), http.StatusBadRequest, "pattern is required")
		wantError(t, d.get(t, "/v1/inspect/"+img+"/grep?pattern=(unclosed"), http.StatusBadRequest, "pattern")
		wantError(t, d.get(t, "/v1/inspect/"+img+"/grep?pattern=x&max_count=-1"), http.StatusBadRequest, "max_count")
		wantError(t, d.get(t, "/v1/inspect/"+img+"/grep?pattern=x&case=loud"), http.StatusBadRequest, "case")
	})
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestLineageDiffDelete covers arbor's image extensions.
func TestLineageDiffDelete(t *testing.T) {
	d := sharedDaemon(t)
	ctx := ctxT(t)
	c := d.otherClient(t, "lineage-test")
	base, err := d.importBusybox(ctx, c, "")
	if err != nil {
		t.Fatal(err)
	}
	op1 := d.run(t, c, base, "echo a > /root/a; echo keep > /etc/motd; rm /etc/hostname")
	mid := deref(op1.ResultImageUUID)
	op2 := d.run(t, c, mid, "echo b > /root/b; echo changed > /etc/motd")
	top := deref(op2.ResultImageUUID)

	l, err := c.Lineage(ctx, top)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Ancestors) != 2 || l.Ancestors[0].UUID != mid || l.Ancestors[1].UUID != base || len(l.Children) != 0 {
		t.Fatalf("Lineage(top) = ancestors %v children %v", l.Ancestors, l.Children)
	}
	if l.Image.Operation == nil || l.Image.Operation.UUID != op2.UUID || l.Ancestors[0].Operation.UUID != op1.UUID ||
		l.Ancestors[1].Operation != nil || deref(l.Image.OperationUUID) != op2.UUID {
		t.Errorf("lineage operations: top %+v mid %+v base %+v", l.Image.Operation, l.Ancestors[0].Operation, l.Ancestors[1].Operation)
	}
	if l, err := c.Lineage(ctx, base); err != nil || len(l.Children) != 1 || l.Children[0].UUID != mid {
		t.Errorf("Lineage(base).Children = %+v, %v", l, err)
	}

	kinds := func(df *apitypes.ImageDiff) string {
		var s []string
		for _, ch := range df.Changes {
			s = append(s, ch.Kind+" "+ch.Path)
		}
		return strings.Join(s, ", ")
	}
	for _, tc := range []struct {
		name string
		id   string
		o    client.DiffOptions
		want string
	}{
		{"from the parent", mid, client.DiffOptions{}, "deleted /etc/hostname, added /etc/motd, added /root/a"},
		{"to", base, client.DiffOptions{To: top}, "deleted /etc/hostname, added /etc/motd, added /root/a, added /root/b"},
		{"from", top, client.DiffOptions{From: mid}, "modified /etc/motd, added /root/b"},
		{"path", top, client.DiffOptions{From: base, Path: "/root"}, "added /root/a, added /root/b"},
	} {
		df, err := c.Diff(ctx, tc.id, tc.o)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := kinds(df); got != tc.want {
			t.Errorf("%s: Diff = %q, want %q", tc.name, got, tc.want)
		}
	}
	df, _ := c.Diff(ctx, top, client.DiffOptions{})
	for _, ch := range df.Changes {
		if ch.Path == "/etc/motd" && (!strings.Contains(ch.Diff, "-keep") || !strings.Contains(ch.Diff, "+changed") || ch.OldSize != 5 || ch.NewSize != 8) {
			t.Errorf("modified /etc/motd change = %+v", ch)
		}
	}
	if _, err := c.Diff(ctx, base, client.DiffOptions{}); !client.IsBadRequest(err) {
		t.Errorf("Diff(base image, no other side) = %v, want 400", err)
	}
	if _, err := c.Diff(ctx, base, client.DiffOptions{To: top, From: mid}); !client.IsBadRequest(err) {
		t.Errorf("Diff(to and from) = %v, want 400", err)
	}

	// Deleting the middle image keeps what its child needs.
	if err := c.DeleteImage(ctx, mid); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Image(ctx, mid); !client.IsNotFound(err) {
		t.Errorf("deleted image = %v, want 404", err)
	}
	if err := c.DeleteImage(ctx, mid); !client.IsNotFound(err) {
		t.Errorf("second delete = %v, want 404", err)
	}
	if b, err := c.ReadFile(ctx, top, "/root/a"); err != nil || string(b) != "a\n" {
		t.Errorf("child of a deleted image lost /root/a: %q, %v", b, err)
	}
	if got := stdoutOf(t, d.run(t, c, top, "cat /root/a /root/b")); got != "a\nb\n" {
		t.Errorf("run on the child of a deleted image saw %q", got)
	}
	if l, err := c.Lineage(ctx, top); err != nil || len(l.Ancestors) != 2 || !l.Ancestors[0].Deleted {
		t.Errorf("lineage across a deleted ancestor = %+v, %v", l, err)
	}
}
