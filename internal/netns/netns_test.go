package netns

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/arborsh/arbor/internal/testutil"
)

func netnsExists(name string) bool {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

// TestDaemonsShareHost: two daemons creating networks at once never get
// the same addresses, and one's Cleanup (its crash recovery) leaves the
// other's live networks alone.
func TestDaemonsShareHost(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	a, b := NewManager(Tag(t.TempDir())), NewManager(Tag(t.TempDir()))
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)
	var mu sync.Mutex
	var nets []*Net
	var wg sync.WaitGroup
	for i := range 6 {
		m := a
		if i%2 == 1 {
			m = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := m.Create(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			nets = append(nets, n)
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, n := range nets {
			a.remove(n)
		}
	})
	seen := map[string]bool{}
	for _, n := range nets {
		if seen[n.IP] || seen[n.HostIf] {
			t.Errorf("address or interface handed out twice: %s %s", n.IP, n.HostIf)
		}
		seen[n.IP], seen[n.HostIf] = true, true
		if out, err := exec.Command("ip", "-n", n.Name, "-4", "addr", "show", "eth0").CombinedOutput(); err != nil || !strings.Contains(string(out), n.IP+"/30") {
			t.Errorf("%s: eth0 lacks %s: %v %s", n.Name, n.IP, err, out)
		}
	}
	a.Cleanup(ctx)
	for _, n := range nets {
		mine := strings.HasPrefix(n.Name, "arbor-"+a.tag+"-")
		if exists := netnsExists(n.Name); exists == mine {
			t.Errorf("after a's cleanup, %s exists=%v (a's own: %v)", n.Name, exists, mine)
		}
	}
}
