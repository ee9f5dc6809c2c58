package runtime

import (
	"os"
	"path/filepath"
	"testing"
)

// TestTmpMount: under runsc the root's own /tmp directory (or the directory
// a /tmp symlink names, resolved inside the root) is bind-mounted over /tmp
// so runsc mounts no tmpfs there; runc and crun need nothing.
func TestTmpMount(t *testing.T) {
	root := t.TempDir()
	runsc, runc := &OCI{name: "runsc"}, &OCI{name: "runc"}
	if _, ok := runsc.tmpMount(root); ok {
		t.Error("a mount for a root without /tmp")
	}
	os.Mkdir(filepath.Join(root, "tmp"), 0o1777)
	m, ok := runsc.tmpMount(root)
	if !ok || m.Destination != "/tmp" || m.Source != filepath.Join(root, "tmp") || m.Type != "bind" {
		t.Errorf("runsc /tmp mount = %+v %v", m, ok)
	}
	if _, ok := runc.tmpMount(root); ok {
		t.Error("runc got a /tmp mount")
	}
	os.Remove(filepath.Join(root, "tmp"))
	os.MkdirAll(filepath.Join(root, "var/tmp"), 0o1777)
	os.Symlink("/../../var/tmp", filepath.Join(root, "tmp"))
	if m, ok := runsc.tmpMount(root); !ok || m.Source != filepath.Join(root, "var/tmp") {
		t.Errorf("runsc mount for a /tmp symlink = %+v %v, want its target inside the root", m, ok)
	}
}

// TestEnsureTmp: a missing /tmp is created with mode 1777; an existing one,
// a file or a symlink is left as it is.
func TestEnsureTmp(t *testing.T) {
	root := t.TempDir()
	if err := EnsureTmp(root); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(root, "tmp"))
	if err != nil || !fi.IsDir() || fi.Mode()&os.ModePerm != 0o777 || fi.Mode()&os.ModeSticky == 0 {
		t.Fatalf("created /tmp: %v %v, want a directory with mode 1777", fi.Mode(), err)
	}
	os.Remove(filepath.Join(root, "tmp"))
	os.WriteFile(filepath.Join(root, "tmp"), nil, 0o644)
	if err := EnsureTmp(root); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(filepath.Join(root, "tmp")); !fi.Mode().IsRegular() {
		t.Error("a /tmp file was replaced")
	}
}
