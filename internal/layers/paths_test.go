package layers

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// slowStorage is a Dir whose Gets announce themselves and wait for release:
// a remote store fetching.
type slowStorage struct {
	*Dir
	started chan string
	release chan struct{}
}

func (s *slowStorage) Get(ctx context.Context, id string) (string, error) {
	s.started <- id
	<-s.release
	return s.Dir.Get(ctx, id)
}

// TestViewFetchesSideBySide: a view of a chain asks the storage for its
// layers concurrently (up to getParallel), so a cold chain's downloads
// overlap instead of adding up, and still returns them in chain order.
func TestViewFetchesSideBySide(t *testing.T) {
	s0, d := newTestSnapshotter(t)
	var chain []string
	for i := range 20 {
		id := fmt.Sprintf("l%02d", i)
		put(t, s0, id)
		chain = append(chain, id)
	}
	st := &slowStorage{Dir: d, started: make(chan string, len(chain)), release: make(chan struct{})}
	s := New(st, s0.staging, nil)
	type result struct {
		paths []string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		paths, release, err := s.View(context.Background(), chain)
		if err == nil {
			release()
		}
		done <- result{paths, err}
	}()
	for n := range getParallel {
		select {
		case <-st.started:
		case <-time.After(30 * time.Second):
			close(st.release)
			t.Fatalf("only %d Gets in flight at once, want %d", n, getParallel)
		}
	}
	close(st.release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	for i, id := range chain {
		if r.paths[i] != d.Path(id) {
			t.Errorf("paths[%d] = %s, want %s", i, r.paths[i], d.Path(id))
		}
	}
}

// blockedPut is a Dir whose Put waits for release: an upload in progress.
type blockedPut struct {
	*Dir
	putting chan string
	release chan struct{}
}

func (b *blockedPut) Put(ctx context.Context, id, dir string) error {
	b.putting <- id
	<-b.release
	return b.Dir.Put(ctx, id, dir)
}

// TestSlowPutHoldsNothingUp: while a commit's layer is being stored (an
// upload to an object store), leases, views, collections and other
// commits go on.
func TestSlowPutHoldsNothingUp(t *testing.T) {
	s0, d := newTestSnapshotter(t)
	put(t, s0, "base")
	put(t, s0, "old")
	st := &blockedPut{Dir: d, putting: make(chan string, 2), release: make(chan struct{})}
	s := New(st, s0.staging, nil)
	ctx := context.Background()
	committed := make(chan error, 1)
	go func() { committed <- s.Commit(ctx, layerDir(t, s, "slow"), "slow", func() error { return nil }) }()
	<-st.putting
	others := make(chan error, 1)
	go func() {
		l := s.Lease("x")
		defer l.Release()
		_, release, err := s.View(ctx, []string{"base"})
		if err != nil {
			others <- err
			return
		}
		release()
		_, err = s.Collect(ctx, func() map[string]bool { return map[string]bool{"base": true} })
		others <- err
	}()
	select {
	case err := <-others:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(st.release)
		t.Fatal("a lease, a view or a collection waited for a Put")
	}
	close(st.release)
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	if got := stored(t, s); !slices.Equal(got, []string{"base", "slow"}) {
		t.Errorf("stored = %q, want base and the committed slow (old collected)", got)
	}
}
