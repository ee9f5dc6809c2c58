package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/engine"
)

// TestQueuePositionOnTheWire: GET /v1/operations/{id} of a run waiting
// for the only slot carries queue_position (1, 2 in arrival order); the
// running one has none.
func TestQueuePositionOnTheWire(t *testing.T) {
	singleNode(t, "queue_position is a node's place for its only slot; a cluster's queued runs wait in PostgreSQL for any worker")
	d := startDaemon(t, engine.Config{Slots: 1}, api.Options{})
	ctx := ctxT(t)
	spawn := func() string {
		r, err := d.c.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: d.base, Command: "sleep 30", Shell: ptr(true), Disposable: ptr(true)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.c.Cancel(context.Background(), r.UUID) })
		return r.UUID
	}
	get := func(op string) map[string]any {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.srv.URL+"/v1/operations/"+op, nil)
		req.Header.Set("Authorization", "Bearer "+d.token)
		resp, err := raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET operation %s: %d %v", op, resp.StatusCode, err)
		}
		return m
	}
	position := func(op string) any { return get(op)["queue_position"] }
	first, second, third := spawn(), spawn(), spawn()
	// Runs are queued when they are spawned: the positions are there as
	// soon as the spawns have answered.
	if p1, p2 := position(second), position(third); p1 != 1.0 || p2 != 2.0 {
		t.Fatalf("queue positions %v %v, want 1 2", p1, p2)
	}
	if m := get(third); m["status"] != apitypes.StatusPending {
		t.Fatalf("queued run's status %v, want PENDING", m["status"])
	}
	if p := position(first); p != nil {
		t.Fatalf("first run (holding the slot): queue_position %v, want none", p)
	}
	// A cancelled run leaves the queue, and the next moves up.
	if err := d.c.Cancel(ctx, second); err != nil {
		t.Fatal(err)
	}
	if _, err := d.c.Wait(ctx, second); err != nil {
		t.Fatal(err)
	}
	if p := position(third); p != 1.0 {
		t.Fatalf("after the run ahead was cancelled: queue_position %v, want 1", p)
	}
}
