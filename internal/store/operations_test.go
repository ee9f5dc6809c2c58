package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
)

// TestInsertOperationLimitedIsAtomic starts 100 inserts at once against a
// limit of 64: exactly 64 get in, whatever the interleaving.
func TestInsertOperationLimitedIsAtomic(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "arbor.db"))
	ctx := context.Background()
	const limit, tries = 64, 100
	var wg sync.WaitGroup
	errs := make([]error, tries)
	start := make(chan struct{})
	for i := range tries {
		wg.Go(func() {
			<-start
			errs[i] = s.InsertOperationLimited(ctx, Operation{UUID: fmt.Sprint("op", i), Account: "a", Kind: "instance",
				Status: "PENDING", CreatedAt: time.Now(), Metadata: "{}"}, limit)
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, errdefs.ErrResourceExhausted):
			t.Fatalf("InsertOperationLimited = %v, want nil or resource exhausted", err)
		}
	}
	if ok != limit {
		t.Fatalf("%d of %d concurrent inserts passed a limit of %d", ok, tries, limit)
	}
	// Another account has its own budget; a finished operation frees a slot.
	if err := s.InsertOperationLimited(ctx, Operation{UUID: "b1", Account: "b", Kind: "instance", Status: "PENDING", CreatedAt: time.Now(), Metadata: "{}"}, limit); err != nil {
		t.Fatalf("other account: %v", err)
	}
	if _, err := s.w.ExecContext(ctx, `UPDATE operations SET status='SUCCESS' WHERE uuid=(SELECT uuid FROM operations WHERE account='a' AND status='PENDING' LIMIT 1)`); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertOperationLimited(ctx, Operation{UUID: "a-next", Account: "a", Kind: "instance", Status: "PENDING", CreatedAt: time.Now(), Metadata: "{}"}, limit); err != nil {
		t.Fatalf("after one finished: %v", err)
	}
}

// TestListOperationsReadsNoOutput checks that a list never touches the
// rows' metadata (a run's output, up to 64 MiB each): the query is answered
// from a covering index, and what it returns has no Metadata.
func TestListOperationsReadsNoOutput(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "arbor.db"))
	ctx := context.Background()
	big := `{"result":{"stdout":"` + strings.Repeat("x", 4<<20) + `"}}`
	for i := range 3 {
		o := Operation{UUID: fmt.Sprint("op", i), Account: "a", Kind: "instance", Status: "PENDING", CreatedAt: time.Now(), Metadata: big}
		if err := s.InsertOperationLimited(ctx, o, 100); err != nil {
			t.Fatal(err)
		}
	}
	since, until := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	for _, f := range []OperationFilter{
		{Account: "a"},
		{Account: "a", Statuses: []string{"PENDING", "SUCCESS"}, Kind: "instance", Since: since, Until: until, Limit: 2, Offset: 1},
	} {
		q, args := listQuery(f)
		rows, err := s.r.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if p := strings.Join(plan, "; "); !strings.Contains(p, "COVERING INDEX operations_list") {
			t.Errorf("plan of %+v = %q, want it answered from the covering index operations_list", f, p)
		}
		ops, err := s.ListOperations(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(ops) == 0 {
			t.Fatalf("ListOperations(%+v) returned nothing", f)
		}
		for _, o := range ops {
			if o.Metadata != "" || o.Status != "PENDING" || o.Account != "a" {
				t.Errorf("listed %s: status %q, %d bytes of metadata; want PENDING and none", o.UUID, o.Status, len(o.Metadata))
			}
		}
	}
	if o, err := s.Operation(ctx, "a", "op0"); err != nil || o.Metadata != big {
		t.Errorf("Operation(op0) = %d bytes of metadata, %v; want the whole output", len(o.Metadata), err)
	}
}
