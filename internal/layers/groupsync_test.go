package layers

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSyncShared: callers that arrive while a syncfs runs share the next
// one (eight commits at once: two syncfs, not eight), and no caller returns
// before a syncfs that started after it arrived.
func TestSyncShared(t *testing.T) {
	var calls atomic.Int32
	var mu sync.Mutex
	var starts []time.Time
	release := make(chan struct{})
	entered := make(chan struct{}, 16)
	joins := make(chan struct{}, 16)
	old, oldJoined := syncfs, joined
	joined = func() { joins <- struct{}{} }
	syncfs = func(int) error {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		calls.Add(1)
		entered <- struct{}{}
		<-release
		return nil
	}
	t.Cleanup(func() { syncfs, joined = old, oldJoined })
	fd, err := unix.Open(t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	var wg sync.WaitGroup
	arrived := make([]time.Time, 8)
	returned := make([]time.Time, 8)
	call := func(i int) {
		defer wg.Done()
		arrived[i] = time.Now()
		if err := syncShared(fd); err != nil {
			t.Error(err)
		}
		returned[i] = time.Now()
	}
	wg.Add(1)
	go call(0)
	<-entered // the first round runs
	for i := 1; i < 8; i++ {
		wg.Add(1)
		go call(i)
	}
	for i := range 7 {
		select {
		case <-joins:
		case <-time.After(10 * time.Second):
			close(release)
			t.Fatalf("%d of 7 callers joined the next round while a syncfs ran", i)
		}
	}
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d syncfs for 8 callers, want 2", n)
	}
	for i := 1; i < 8; i++ {
		if !starts[1].After(arrived[i]) {
			t.Errorf("caller %d arrived at %v, after its syncfs started (%v)", i, arrived[i], starts[1])
		}
	}
}
