package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// TestForkEndpoint: POST /v1/operations/{id}/fork forks a running runsc
// instance (no body: one copy), and answers 400 for a bad count and 409,
// naming runsc, for a runc instance.
func TestForkEndpoint(t *testing.T) {
	init, err := testdaemon.StaticInit()
	if err != nil {
		t.Fatal(err)
	}
	d := startRealDaemon(t, engine.Config{Runtime: "runsc", InitBinary: init, AllowedRuntimes: []string{"runc"}}, api.Options{})
	ctx := ctxT(t)
	spawn := func(rt string) string { return spawnHeld(t, d, rt) }
	op := spawn("runsc")
	r := d.send(t, http.MethodPost, "/v1/operations/"+op+"/fork", "")
	wantStatus(t, r, http.StatusCreated)
	var res apitypes.ForkResponse
	if err := json.Unmarshal(r.body, &res); err != nil || len(res.Operations) != 1 || res.Image == "" {
		t.Fatalf("fork answer %s (%v), want one operation and an image", r.body, err)
	}
	two, err := d.c.Fork(ctx, op, apitypes.ForkRequest{Count: 2})
	if err != nil || len(two.Operations) != 2 {
		t.Fatalf("client Fork = %+v, %v; want 2 operations", two, err)
	}
	for _, f := range append(res.Operations, two.Operations...) {
		if err := d.c.Cancel(ctx, f); err != nil {
			t.Errorf("cancel fork %s: %v", f, err)
		}
	}
	wantStatus(t, d.send(t, http.MethodPost, "/v1/operations/"+op+"/fork", `{"count":17}`), http.StatusBadRequest)
	r = d.send(t, http.MethodPost, "/v1/operations/"+spawn("runc")+"/fork", `{"count":1}`)
	wantStatus(t, r, http.StatusConflict)
	if !strings.Contains(string(r.body), "runsc") {
		t.Errorf("fork of a runc instance: %s, want the reason naming runsc", r.body)
	}
}
