package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestApplyTarDropDevices: with DropDevices, character and block devices
// (0/0 included: in a tar it is a device, not a whiteout) and hard links
// to them are left out and reported; fifos, files and OCI whiteouts are
// created as usual.
func TestApplyTarDropDevices(t *testing.T) {
	requireRoot(t) // an overlay whiteout is a 0/0 device: mknod needs CAP_MKNOD
	s := newSandbox(t)
	in := tarball(t,
		dir("dev"),
		device(tar.TypeChar, "dev/null", 1, 3, mode(0o666)),
		device(tar.TypeChar, "dev/full", 1, 7),
		device(tar.TypeChar, "dev/zero-zero", 0, 0),
		device(tar.TypeBlock, "dev/sda", 8, 0),
		hardlink("dev/null2", "dev/null"),
		fifo("dev/initctl"),
		file("etc/hostname", "box\n"),
		file("gone/.wh.victim", ""),
	)
	var dropped []string
	st, err := ApplyTar(context.Background(), bytes.NewReader(in), s.dir, Options{ConvertWhiteouts: true, DropDevices: true,
		DeviceDropped: func(p string) { dropped = append(dropped, p) }})
	if err != nil {
		t.Fatalf("ApplyTar() = %v", err)
	}
	want := []string{"/dev/null", "/dev/full", "/dev/zero-zero", "/dev/sda", "/dev/null2"}
	if st.Devices != len(want) || !slices.Equal(dropped, want) {
		t.Errorf("dropped %d: %q, want %q", st.Devices, dropped, want)
	}
	for _, p := range want {
		assertMissing(t, filepath.Join(s.dir, p))
	}
	if st := lstat(t, filepath.Join(s.dir, "dev/initctl")); fileType(st) != unix.S_IFIFO {
		t.Errorf("fifo has type %o", fileType(st))
	}
	if st := lstat(t, filepath.Join(s.dir, "gone/victim")); fileType(st) != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout has type %o rdev %d, want an overlay whiteout", fileType(st), st.Rdev)
	}
	if st.Files != 2 || st.Whiteouts != 1 || st.Skipped != 0 {
		t.Errorf("stats %+v, want 2 files (fifo, hostname), 1 whiteout", st)
	}
	s.assertContained(t)
}
