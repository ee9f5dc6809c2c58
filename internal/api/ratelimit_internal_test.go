package api

import (
	"testing"
	"time"
)

// The bucket refills at the rate: a refused request is not counted, and
// the wait it is told is exact.
func TestRateLimitsRefill(t *testing.T) {
	l := newRateLimits(2, 2)
	now := time.Unix(1000, 0)
	for i := range 2 {
		if d := l.reserve("a", now); d != 0 {
			t.Fatalf("request %d within the burst waited %v", i, d)
		}
	}
	if d := l.reserve("a", now); d != 500*time.Millisecond {
		t.Fatalf("over the burst: wait %v, want 500ms", d)
	}
	if d := l.reserve("a", now); d != 500*time.Millisecond {
		t.Fatalf("a refused request was counted: wait %v, want 500ms", d)
	}
	if d := l.reserve("a", now.Add(500*time.Millisecond)); d != 0 {
		t.Fatalf("after the wait: still refused for %v", d)
	}
	if d := l.reserve("b", now); d != 0 {
		t.Fatalf("another token waited %v", d)
	}
	if newRateLimits(0, 5) != nil {
		t.Fatal("rate 0 should be unlimited")
	}
	if got := newRateLimits(10, 0).burst; got != 20 {
		t.Fatalf("default burst %d, want 20", got)
	}
}
