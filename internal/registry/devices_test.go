package registry

import (
	"archive/tar"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
)

// TestImportDropsDeviceNodes: an image whose layers carry device nodes (as
// `docker import` of a debootstrap rootfs makes) imports; the nodes are
// not created, the import's events say how many were dropped and where,
// and OCI whiteouts still delete what they name. A plain rootfs tarball
// with /dev/null imports the same way, and a run in the image has the
// sandbox's /dev.
func TestImportDropsDeviceNodes(t *testing.T) {
	e, im := newEngine(t, Options{})
	reg := newRegistry(t)
	base := layer(t, busyboxTar(t))
	devs := layerOf(t, dir("dev"),
		device("dev/null", tar.TypeChar, 1, 3), device("dev/full", tar.TypeChar, 1, 7),
		device("dev/zero", tar.TypeChar, 1, 5), device("dev/wh", tar.TypeChar, 0, 0),
		device("dev/sda", tar.TypeBlock, 8, 0),
		ent{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "run/initctl", Mode: 0o600, ModTime: fixedTime}},
		file("etc/victim", "v"), file("etc/kept", "k"))
	wh := layerOf(t, file("etc/.wh.victim", ""))
	reg.push(t, "test/devs:v1", image(t, "amd64", base, devs, wh))

	o := importOp(t, e, "docker://"+reg.host+"/test/devs:v1", nil, "devs")
	if o.Status != apitypes.StatusSuccess {
		t.Fatalf("import: %s: %s", o.Status, o.Error)
	}
	var msgs []string
	for _, p := range progressEvents(t, e, o.UUID) {
		if p.Phase == "devices" {
			msgs = append(msgs, p.Message)
		}
	}
	if len(msgs) != 1 || !strings.Contains(msgs[0], "dropped 5 device node(s) from layer 2 of 3") ||
		!strings.Contains(msgs[0], "/dev/null, /dev/full, /dev/zero, /dev/wh, /dev/sda") {
		t.Errorf("device events = %q, want one naming 5 nodes of layer 2 of 3", msgs)
	}
	tr := tree(t, e, o.ResultImageUUID)
	for _, p := range []string{"/dev/null", "/dev/full", "/dev/zero", "/dev/wh", "/dev/sda", "/etc/victim"} {
		if d, ok := tr[p]; ok {
			t.Errorf("%s exists in the image: %s", p, d)
		}
	}
	if d := tr["/run/initctl"]; !strings.HasPrefix(d, "p") {
		t.Errorf("/run/initctl = %q, want the fifo kept", d)
	}
	if d := tr["/etc/kept"]; d == "" {
		t.Error("/etc/kept is missing")
	}
	// The sandbox's /dev is there for a run.
	if out := runShell(t, e, o.ResultImageUUID, "echo x > /dev/null && head -c 3 /dev/zero | wc -c"); strings.TrimSpace(out) != "3" {
		t.Errorf("run in the image: %q", out)
	}

	// A plain rootfs tarball (what `docker import` reads), uploaded.
	rootfs := tarBytes(t, dir("dev"), device("dev/null", tar.TypeChar, 1, 3), device("dev/console", tar.TypeChar, 5, 1), file("etc/os-release", "ID=x\n"))
	id, err := importBytes(t, e, im, rootfs)
	if err != nil {
		t.Fatalf("rootfs import: %v", err)
	}
	tr = tree(t, e, id)
	if _, ok := tr["/dev/null"]; ok || tr["/etc/os-release"] == "" {
		t.Errorf("rootfs image: /dev/null %q, /etc/os-release %q; want none and the file", tr["/dev/null"], tr["/etc/os-release"])
	}
}
