package layers

import (
	"context"
	"slices"
	"testing"
)

// pinRecorder is a Dir that records the Pinner calls it gets.
type pinRecorder struct {
	*Dir
	calls []string
}

func (p *pinRecorder) Pin(id string)   { p.calls = append(p.calls, "pin "+id) }
func (p *pinRecorder) Unpin(id string) { p.calls = append(p.calls, "unpin "+id) }

// TestLeasesPinStorage: a Pinner storage hears of an id when the first
// lease takes it and when the last one lets it go, and not in between, so
// a cache never drops a layer a view is reading.
func TestLeasesPinStorage(t *testing.T) {
	s0, d := newTestSnapshotter(t)
	rec := &pinRecorder{Dir: d}
	s := New(rec, s0.staging, nil)
	put(t, s, "a")
	l1 := s.Lease("a", "b")
	l2 := s.Lease("a")
	_, release, err := s.View(context.Background(), []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	l1.Release()
	release()
	if want := []string{"pin a", "pin b", "unpin b"}; !slices.Equal(rec.calls, want) {
		t.Fatalf("calls while a is still leased = %q, want %q", rec.calls, want)
	}
	l2.Release()
	l2.Release()
	if want := []string{"pin a", "pin b", "unpin b", "unpin a"}; !slices.Equal(rec.calls, want) {
		t.Errorf("calls = %q, want %q", rec.calls, want)
	}
}
