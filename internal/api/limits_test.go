package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/engine"
)

// TestConcurrentSpawnsRespectTheLimit sends 100 spawns at once against a
// per-account limit of 64 (the default): exactly 64 are admitted, the rest
// get 429. (One slot, so the admitted runs wait in PENDING and the test
// stays cheap.)
func TestConcurrentSpawnsRespectTheLimit(t *testing.T) {
	const limit, tries = 64, 100
	d := startDaemon(t, engine.Config{MaxConcurrentOps: limit, Slots: 1}, api.Options{})
	body := fmt.Sprintf(`{"command":"sleep 30","image":%q,"shell":true,"disposable":true}`, d.base)
	codes := make([]int, tries)
	ops := make([]string, tries)
	errs := make([]error, tries)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range tries {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(http.MethodPost, d.srv.URL+"/v1/instances", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+d.token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := raw.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			codes[i] = resp.StatusCode
			if resp.StatusCode == http.StatusCreated {
				ops[i] = resp.Header.Get("Location")
			} else if resp.StatusCode != http.StatusTooManyRequests {
				errs[i] = fmt.Errorf("status %d: %s", resp.StatusCode, b)
			}
		})
	}
	close(start)
	wg.Wait()
	admitted := 0
	for i := range tries {
		if errs[i] != nil {
			t.Errorf("spawn %d: %v", i, errs[i])
		}
		if codes[i] == http.StatusCreated {
			admitted++
			id := ops[i][strings.LastIndex(ops[i], "/")+1:]
			t.Cleanup(func() { _ = d.c.Cancel(context.Background(), id) })
		}
	}
	if admitted != limit {
		t.Fatalf("%d of %d concurrent spawns admitted, limit %d", admitted, tries, limit)
	}
	inFlight, err := d.c.ListOperations(ctxT(t), client.OperationListOptions{Status: []string{apitypes.StatusPending, apitypes.StatusAssigned, apitypes.StatusExecuting}})
	if err != nil || len(inFlight) != limit {
		t.Errorf("operations in flight = %d, %v; want %d", len(inFlight), err, limit)
	}
}
