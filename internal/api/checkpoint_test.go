package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// spawnHeld starts cat under runtime rt with its stdin held open (a
// long-running instance), cancelled when the test ends.
func spawnHeld(t *testing.T, d *daemon, rt string) string {
	t.Helper()
	ctx := ctxT(t)
	keep := false
	sp, err := d.c.Spawn(ctx, apitypes.InstanceSpawnRequest{Command: "cat", Image: d.base, Runtime: &rt,
		Stdin: &apitypes.ClosableStreamRepr{Value: "", Close: &keep}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.c.Cancel(context.Background(), sp.UUID) })
	return sp.UUID
}

// TestCheckpointEndpoints: POST /v1/operations/{id}/checkpoint keeps a
// running runsc instance's checkpoint with a new image (its size on the
// image, in df), POST /v1/images/{uuid}/restore starts instances from it
// (after the instance is gone), and the errors are clear 4xx: a plain
// image, a bad count, a runc instance.
func TestCheckpointEndpoints(t *testing.T) {
	init, err := testdaemon.StaticInit()
	if err != nil {
		t.Fatal(err)
	}
	d := startRealDaemon(t, engine.Config{Runtime: "runsc", InitBinary: init, AllowedRuntimes: []string{"runc"}}, api.Options{})
	ctx := ctxT(t)
	spawn := func(rt string) string { return spawnHeld(t, d, rt) }
	op := spawn("runsc")
	r := d.send(t, http.MethodPost, "/v1/operations/"+op+"/checkpoint", "")
	wantStatus(t, r, http.StatusCreated)
	var res apitypes.CheckpointResponse
	if err := json.Unmarshal(r.body, &res); err != nil || res.Image == "" || res.CheckpointBytes <= 0 {
		t.Fatalf("checkpoint answer %s (%v), want an image and its size", r.body, err)
	}
	if err := d.c.Cancel(ctx, op); err != nil {
		t.Fatal(err)
	}
	im, err := d.c.Image(ctx, res.Image)
	if err != nil || im.CheckpointBytes != res.CheckpointBytes {
		t.Fatalf("image %+v (%v), want checkpoint_bytes %d", im, err, res.CheckpointBytes)
	}
	df, err := d.c.DiskUsage(ctx, false)
	if err != nil || len(df.Accounts) == 0 || df.Accounts[0].CheckpointBytes != res.CheckpointBytes {
		t.Fatalf("df %+v (%v), want checkpoint_bytes %d", df, err, res.CheckpointBytes)
	}
	r = d.send(t, http.MethodPost, "/v1/images/"+res.Image+"/restore", "")
	wantStatus(t, r, http.StatusCreated)
	var rr apitypes.RestoreResponse
	if err := json.Unmarshal(r.body, &rr); err != nil || len(rr.Operations) != 1 {
		t.Fatalf("restore answer %s (%v), want one operation", r.body, err)
	}
	two, err := d.c.Restore(ctx, res.Image, apitypes.RestoreRequest{Count: 2})
	if err != nil || len(two.Operations) != 2 {
		t.Fatalf("client Restore = %+v, %v; want 2 operations", two, err)
	}
	for _, o := range append(rr.Operations, two.Operations...) {
		if err := d.c.Cancel(ctx, o); err != nil {
			t.Errorf("cancel restored %s: %v", o, err)
		}
	}
	wantStatus(t, d.send(t, http.MethodPost, "/v1/images/"+res.Image+"/restore", `{"count":17}`), http.StatusBadRequest)
	r = d.send(t, http.MethodPost, "/v1/images/"+d.base+"/restore", "")
	wantStatus(t, r, http.StatusConflict)
	if !strings.Contains(string(r.body), "no memory checkpoint") {
		t.Errorf("restore of a plain image: %s, want the reason", r.body)
	}
	r = d.send(t, http.MethodPost, "/v1/operations/"+spawn("runc")+"/checkpoint", "")
	wantStatus(t, r, http.StatusConflict)
	if !strings.Contains(string(r.body), "runsc") {
		t.Errorf("checkpoint of a runc instance: %s, want the reason naming runsc", r.body)
	}
}
