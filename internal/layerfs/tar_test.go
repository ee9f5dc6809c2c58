package layerfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

type member struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	link     string
	body     string
	major    int64
	minor    int64
}

func readTar(t *testing.T, data []byte) ([]member, []*tar.Header) {
	t.Helper()
	var members []member
	var hdrs []*tar.Header
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return members, hdrs
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, member{
			name: h.Name, typ: h.Typeflag, mode: h.Mode, uid: h.Uid, gid: h.Gid,
			link: h.Linkname, body: string(body), major: h.Devmajor, minor: h.Devminor,
		})
		hdrs = append(hdrs, h)
	}
}

func TestWriteTar(t *testing.T) {
	f := New(newImage(t).layers)
	tests := []struct {
		path string
		want []member
	}{
		{path: "/etc", want: []member{
			{name: "hosts", typ: tar.TypeReg, mode: 0o644, body: "127.0.0.1 localhost\n10.0.0.1 db\n"},
			{name: "motd", typ: tar.TypeReg, mode: 0o644, body: "Welcome to arbor\n"},
			{name: "passwd", typ: tar.TypeReg, mode: 0o644, body: "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n"},
			{name: "selflink", typ: tar.TypeSymlink, mode: 0o777, link: "."},
			{name: "ssl/", typ: tar.TypeDir, mode: 0o755},
			{name: "ssl/new.pem", typ: tar.TypeReg, mode: 0o644, body: "NEW\n"},
		}},
		{path: "/bin/sh", want: []member{{name: "sh", typ: tar.TypeReg, mode: 0o755, body: "#!dash\n"}}},
		{path: "etc/../usr/bin/", want: []member{{name: "sudo", typ: tar.TypeReg, mode: 0o4755, body: "sudo\n"}}},
		{path: "/home", want: []member{
			{name: "user/", typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 1000},
			{name: "user/.bashrc", typ: tar.TypeReg, mode: 0o600, uid: 1000, gid: 1000, body: "alias ll='ls -la'\n"},
		}},
		{path: "/dev", want: []member{{name: "null", typ: tar.TypeChar, mode: 0o644, major: 1, minor: 3}}},
		{path: "/var/run", want: []member{{name: "initctl", typ: tar.TypeFifo, mode: 0o644}}},
		{path: "/lib", want: []member{{name: "libc.so", typ: tar.TypeReg, mode: 0o644, body: "\x7fELF\x00\x01binary"}}},
		{path: "/var/cache", want: []member{{name: "new.txt", typ: tar.TypeReg, mode: 0o644, body: "fresh\n"}}},
	}
	for _, tc := range tests {
		var buf bytes.Buffer
		if err := f.WriteTar(context.Background(), &buf, tc.path); err != nil {
			t.Fatalf("WriteTar(%q): %v", tc.path, err)
		}
		got, _ := readTar(t, buf.Bytes())
		if !slices.Equal(got, tc.want) {
			t.Errorf("WriteTar(%q) =\n%+v\nwant\n%+v", tc.path, got, tc.want)
		}
	}
}

func TestWriteTarMetadata(t *testing.T) {
	f := New(newImage(t).layers)
	var buf bytes.Buffer
	if err := f.WriteTar(context.Background(), &buf, "/etc"); err != nil {
		t.Fatal(err)
	}
	_, hdrs := readTar(t, buf.Bytes())
	for _, h := range hdrs {
		e, err := f.Lstat("/etc/" + strings.TrimSuffix(h.Name, "/"))
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(e.ModTime) {
			t.Errorf("%s: tar mtime %v, want %v", h.Name, h.ModTime, e.ModTime)
		}
		if h.Name == "motd" && h.PAXRecords["SCHILY.xattr.user.origin"] != "test" {
			t.Errorf("motd: PAX records %v lack the user.origin xattr", h.PAXRecords)
		}
	}
}

// TestWriteTarWholeImage checks that archiving "/" yields exactly the walk,
// with safe member names.
func TestWriteTarWholeImage(t *testing.T) {
	f := New(newImage(t).layers)
	var buf bytes.Buffer
	if err := f.WriteTar(context.Background(), &buf, "/"); err != nil {
		t.Fatal(err)
	}
	got, _ := readTar(t, buf.Bytes())
	var names []string
	for _, m := range got {
		if strings.HasPrefix(m.name, "/") || slices.Contains(strings.Split(m.name, "/"), "..") {
			t.Errorf("unsafe member name %q", m.name)
		}
		names = append(names, m.name)
	}
	var want []string
	err := f.Walk(context.Background(), "/", func(e Entry) error {
		switch {
		case e.Path == "/":
		case e.Mode.IsDir():
			want = append(want, e.Path[1:]+"/")
		default:
			want = append(want, e.Path[1:])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, want) {
		t.Errorf("WriteTar(/) members =\n%v\nwant\n%v", names, want)
	}
}

func TestWriteTarErrors(t *testing.T) {
	f := New(newImage(t).layers)
	if err := f.WriteTar(context.Background(), io.Discard, "/nope"); !isNotFound(err) {
		t.Errorf("WriteTar(/nope) = %v, want not found", err)
	}
	if err := f.WriteTar(context.Background(), io.Discard, "/loop1"); !isInvalidArgument(err) {
		t.Errorf("WriteTar(/loop1) = %v, want invalid argument", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.WriteTar(ctx, io.Discard, "/"); !isCanceled(err) {
		t.Errorf("WriteTar with a canceled context = %v, want context.Canceled", err)
	}
	boom := errors.New("boom")
	if err := f.WriteTar(context.Background(), failWriter{boom}, "/etc"); !errors.Is(err, boom) {
		t.Errorf("WriteTar to a failing writer = %v, want %v", err, boom)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }
