package netns

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/arborsh/arbor/internal/testutil"
	"golang.org/x/sys/unix"
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

// TestCreateOwned: a network made for a sandbox with a user namespace
// belongs to a user namespace with that mapping (kept at Net.UserNS), is
// configured like any other, and goes with Release, or with Cleanup after
// a crash.
func TestCreateOwned(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	m := NewManager(Tag(t.TempDir()))
	t.Cleanup(m.Close)
	t.Cleanup(func() { m.Cleanup(ctx) }) // this daemon's networks only, if the test stops early
	owner := &Owner{HostID: 1<<30 + 7<<16, Size: 1 << 16}
	nets := make([]*Net, 2)
	for i := range nets {
		n, err := m.CreateOwned(ctx, owner)
		if err != nil {
			t.Fatal(err)
		}
		nets[i] = n
	}
	n := nets[0]
	if n.UserNS == "" {
		t.Fatal("no user namespace path")
	}
	netFD, err := unix.Open(n.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(netFD)
	ownerFD, err := unix.IoctlRetInt(netFD, unix.NS_GET_USERNS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ownerFD)
	var got, want unix.Stat_t
	if err := unix.Fstat(ownerFD, &got); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(n.UserNS, &want); err != nil {
		t.Fatal(err)
	}
	if got.Ino != want.Ino || got.Dev != want.Dev {
		t.Errorf("network namespace %s is owned by user namespace %d, want %s's %d", n.Path, got.Ino, n.UserNS, want.Ino)
	}
	uidMap, err := exec.Command("nsenter", "--user="+n.UserNS, "cat", "/proc/self/uid_map").CombinedOutput()
	if f := strings.Fields(string(uidMap)); err != nil || len(f) != 3 || f[0] != "0" || f[1] != "1074200576" || f[2] != "65536" {
		t.Errorf("uid_map of %s: %q, %v; want 0 1074200576 65536", n.UserNS, uidMap, err)
	}
	if out, err := exec.Command("ip", "-n", n.Name, "-4", "addr", "show", "eth0").CombinedOutput(); err != nil || !strings.Contains(string(out), n.IP+"/30") {
		t.Errorf("%s: eth0 lacks %s: %v %s", n.Name, n.IP, err, out)
	}
	m.Release(n)
	if _, err := os.Stat(n.UserNS); !os.IsNotExist(err) || netnsExists(n.Name) {
		t.Errorf("after Release: %s: %v, network namespace listed: %v", n.UserNS, err, netnsExists(n.Name))
	}
	m.Cleanup(ctx) // as after kill -9: the second network is left over
	if _, err := os.Stat(nets[1].UserNS); !os.IsNotExist(err) || netnsExists(nets[1].Name) {
		t.Errorf("after Cleanup: %s: %v, network namespace listed: %v", nets[1].UserNS, err, netnsExists(nets[1].Name))
	}
}

// TestCreateUnderChurn: daemons that create and release networks at once
// (test packages run in parallel do) never fail a create because an index
// was taken, or freed between the claim's failure and the look at it.
func TestCreateUnderChurn(t *testing.T) {
	testutil.RequiresRoot(t)
	ctx := context.Background()
	ms := []*Manager{NewManager(Tag(t.TempDir())), NewManager(Tag(t.TempDir())), NewManager(Tag(t.TempDir()))}
	for _, m := range ms {
		t.Cleanup(func() { m.Cleanup(ctx); m.Close() })
	}
	var wg sync.WaitGroup
	for i := range 6 {
		m := ms[i%len(ms)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 12 {
				n, err := m.Create(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				m.Release(n)
			}
		}()
	}
	wg.Wait()
}
