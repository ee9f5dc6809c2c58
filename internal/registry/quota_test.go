package registry

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil"
)

// TestImportQuota: a registry image whose small layers expand past the
// account's storage quota is stopped while it is extracted, and nothing is
// saved; one that fits is imported.
func TestImportQuota(t *testing.T) {
	testutil.RequiresRoot(t)
	const quota = 16 << 20
	e, err := engine.New(context.Background(), engine.Config{Home: testutil.Home(t), Runtime: "runc", MaxStorageBytes: quota})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if _, err := Install(e, loopback(Options{})); err != nil {
		t.Fatal(err)
	}
	reg := newRegistry(t)
	// Not zeros: blocks of zeros are extracted as holes, which use no disk.
	fill := strings.Repeat("x", 1<<20)
	var big []ent
	for i := range 40 {
		big = append(big, file(fmt.Sprintf("f%02d", i), fill))
	}
	reg.push(t, "test/bomb:v1", image(t, "amd64", layerOf(t, file("small", "s")), layerOf(t, big...)))
	reg.push(t, "test/ok:v1", image(t, "amd64", layerOf(t, file("small", "s")), layerOf(t, file("f", fill))))

	o := importOp(t, e, "docker://"+reg.host+"/test/bomb:v1", nil, "")
	if o.Status != apitypes.StatusFailed || o.ResultImageUUID != "" || !strings.Contains(o.Error, "quota") {
		t.Fatalf("import of 40 MiB under a 16 MiB quota: status %s result %q error %q, want FAILED naming the quota", o.Status, o.ResultImageUUID, o.Error)
	}
	if used, _ := e.Store().AccountBytes(context.Background(), acct); used > quota {
		t.Errorf("account uses %d bytes after the failed import, over its %d-byte quota", used, quota)
	}
	ims, err := e.ListImages(context.Background(), engine.ImageFilter{Account: acct})
	if err != nil || len(ims) != 0 {
		t.Fatalf("images after the failed import: %d, %v; want none", len(ims), err)
	}
	if o := importOp(t, e, "docker://"+reg.host+"/test/ok:v1", nil, ""); o.Status != apitypes.StatusSuccess {
		t.Fatalf("import of 1 MiB under the quota: %s %s", o.Status, o.Error)
	}
}
