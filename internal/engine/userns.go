package engine

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/overlay"
	"github.com/arborsh/arbor/internal/runtime"
)

// Runtime security. gVisor (runsc) is the default and the only runtime
// every account may use: sandboxed code never reaches the host kernel.
// runc and crun share the host kernel; the operator allows them
// (Config.AllowedRuntimes, `arbor serve --allow-runtime`), and then each
// of their sandboxes runs hardened (see internal/runtime/harden.go) in its
// own user namespace whose ids 0..65535 are a host range of its own:
// root in one sandbox is an unprivileged host uid that no other sandbox,
// and no host process, shares. The sandbox's root filesystem is stacked
// on idmapped mounts of the layers, so layers keep uid 0 for root's files,
// exactly as under runsc, and the same command gives the same image.

const (
	idRangeSize = 1 << 16
	// idRangeBase is the first host id handed to sandboxes: far above the
	// ranges /etc/subuid usually hands out (100000 + 65536·n).
	idRangeBase = 1 << 30
	idRanges    = 4096 // up to 1<<30 + 1<<28
)

// idAlloc hands out one host id range per live runc or crun sandbox,
// with the user namespace that maps it (for the idmapped mounts).
//
// Making a namespace forks the daemon (no vfork with a user namespace, so
// the kernel copies the page tables of the whole heap): 1-4 ms for a small
// process, 12-20 ms with a few hundred MB of heap, on every runc start. So
// a freed range keeps its namespace as a spare for the next sandbox. A
// spare range stays marked used, so no live sandbox ever shares a range:
// a range is handed out again only once every process of the sandbox that
// had it is dead (it is freed after the unmount, which follows Destroy),
// which is all isolation between host ids needs.
type idAlloc struct {
	mu    sync.Mutex
	used  map[uint32]bool
	next  uint32
	spare []*overlay.Userns // newest last; their ranges are in used
	// newNS makes a namespace (overlay.NewUserns; a counter in tests).
	newNS func(hostID, size uint32) (*overlay.Userns, error)
}

// maxSpareNS bounds the namespaces kept for reuse: more than a burst of
// sandboxes on a small machine, each one open descriptor.
const maxSpareNS = 32

func newIDAlloc() *idAlloc {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails (Go 1.24+)
	// A random start: two daemons on one host rarely pick the same ranges.
	return &idAlloc{used: map[uint32]bool{}, next: binary.LittleEndian.Uint32(b[:]) % idRanges, newNS: overlay.NewUserns}
}

// get returns a range for a new sandbox, with its namespace: the range
// freed last, or a fresh one.
func (a *idAlloc) get() (*overlay.Userns, error) {
	a.mu.Lock()
	if n := len(a.spare); n > 0 {
		ns := a.spare[n-1]
		a.spare = a.spare[:n-1]
		a.mu.Unlock()
		return ns, nil
	}
	base, err := a.alloc()
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	ns, err := a.newNS(base, idRangeSize)
	if err != nil {
		a.mu.Lock()
		delete(a.used, (base-idRangeBase)/idRangeSize)
		a.mu.Unlock()
		return nil, err
	}
	return ns, nil
}

// alloc reserves a fresh range; a.mu is held.
func (a *idAlloc) alloc() (uint32, error) {
	for i := 0; i < idRanges; i++ {
		n := (a.next + uint32(i)) % idRanges
		if !a.used[n] {
			a.used[n] = true
			a.next = n + 1
			return idRangeBase + n*idRangeSize, nil
		}
	}
	return 0, errdefs.ResourceExhausted("all %d sandbox id ranges are in use", idRanges)
}

// put frees ns's range once its sandbox is gone, keeping ns as a spare.
func (a *idAlloc) put(ns *overlay.Userns) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.spare) < maxSpareNS {
		a.spare = append(a.spare, ns)
		return
	}
	delete(a.used, (ns.HostID-idRangeBase)/idRangeSize)
	ns.Close()
}

// prefill makes spare namespaces until there are n (at most
// maxSpareNS), or ctx ends: then the first runc or crun sandboxes after a
// start take spares instead of each forking the daemon while their
// runtimes fork too (a fresh daemon's first eight runc runs at once
// waited up to 0.4 s longer to start than later ones: BENCHMARKS,
// branch runcfan).
func (a *idAlloc) prefill(ctx context.Context, n int) {
	for made := 0; made < min(n, maxSpareNS) && ctx.Err() == nil; made++ {
		a.mu.Lock()
		if len(a.spare) >= min(n, maxSpareNS) {
			a.mu.Unlock()
			return
		}
		base, err := a.alloc()
		a.mu.Unlock()
		if err != nil {
			return
		}
		ns, err := a.newNS(base, idRangeSize)
		if err != nil {
			a.mu.Lock()
			delete(a.used, (base-idRangeBase)/idRangeSize)
			a.mu.Unlock()
			return
		}
		a.put(ns)
	}
}

// close releases the spare namespaces.
func (a *idAlloc) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ns := range a.spare {
		delete(a.used, (ns.HostID-idRangeBase)/idRangeSize)
		ns.Close()
	}
	a.spare = nil
}

// mountRoot mounts a sandbox's root filesystem for rt: plainly for runsc;
// for runc and crun through an id range of its own, returned with the
// function that frees it (call it after unmounting).
func (e *Engine) mountRoot(rt runtime.Runtime, lowers []string, upper, work, merged string) (*runtime.IDMap, func(), error) {
	if _, kernel := e.rootfs.(overlayRoot); rt.Name() == "runsc" || !kernel {
		return nil, func() {}, e.rootfs.Mount(lowers, upper, work, merged)
	}
	ns, err := e.ids.get()
	if err != nil {
		return nil, nil, err
	}
	if err := overlay.MountAs(lowers, upper, work, merged, ns); err != nil {
		e.ids.put(ns)
		return nil, nil, err
	}
	return &runtime.IDMap{HostID: ns.HostID, Size: idRangeSize}, func() { e.ids.put(ns) }, nil
}

// asSandboxRoot runs fn, which writes into a sandbox's root from the host,
// as the sandbox's root (see overlay.AsHostID) when it has an id map.
func asSandboxRoot(ids *runtime.IDMap, fn func() error) error {
	if ids == nil {
		return fn()
	}
	return overlay.AsHostID(ids.HostID, fn)
}

// checkIDRange refuses ids a runc or crun sandbox's user namespace cannot
// hold (runsc has no such limit).
func checkIDRange(rt string, uid, gid int, files []placedFile) error {
	if rt == "runsc" {
		return nil
	}
	if uid >= idRangeSize || gid >= idRangeSize {
		return errdefs.InvalidArgument("uid and gid must be below %d under %s (its sandboxes map ids 0-%d to a host range): use a smaller id or runtime runsc", idRangeSize, rt, idRangeSize-1)
	}
	for _, f := range files {
		if f.uid < 0 || f.gid < 0 || f.uid >= idRangeSize || f.gid >= idRangeSize {
			return errdefs.InvalidArgument("file %s: uid and gid must be between 0 and %d under %s: use a smaller id or runtime runsc", f.path, idRangeSize-1, rt)
		}
	}
	return nil
}

// placeFilesAs places files from the host into a sandbox's root with ids.
func (e *Engine) placeFilesAs(ids *runtime.IDMap, root string, files []placedFile) error {
	if ids == nil {
		return e.placeFiles(root, files)
	}
	shifted := make([]placedFile, len(files))
	for i, f := range files {
		if f.uid < 0 || f.gid < 0 || f.uid >= int(ids.Size) || f.gid >= int(ids.Size) {
			return errdefs.InvalidArgument("file %s: uid and gid must be below %d under a runc or crun sandbox's user namespace", f.path, ids.Size)
		}
		f.uid += int(ids.HostID)
		f.gid += int(ids.HostID)
		shifted[i] = f
	}
	return asSandboxRoot(ids, func() error { return e.placeFiles(root, shifted) })
}

// runtimeGate is who may use which runtime: runsc and the default
// runtime everyone (the operator chose the default), the rest as
// Config.AllowedRuntimes says: "runc" for every account, "ACCOUNT:runc"
// for one.
type runtimeGate struct {
	all      map[string]bool
	accounts map[string]map[string]bool
}

func newRuntimeGate(cfg Config) (runtimeGate, error) {
	g := runtimeGate{all: map[string]bool{"runsc": true, cfg.Runtime: true}, accounts: map[string]map[string]bool{}}
	for _, entry := range cfg.AllowedRuntimes {
		account, rt := "", entry
		if i := strings.LastIndexByte(entry, ':'); i >= 0 {
			account, rt = entry[:i], entry[i+1:]
		}
		switch rt {
		case "runsc", "runc", "crun":
		default:
			return g, fmt.Errorf("allowed runtime %q: want runsc, runc or crun, optionally after ACCOUNT: (as in alice:runc)", entry)
		}
		if account == "" {
			g.all[rt] = true
			continue
		}
		if g.accounts[account] == nil {
			g.accounts[account] = map[string]bool{}
		}
		g.accounts[account][rt] = true
	}
	return g, nil
}

// any reports whether anyone may use rt.
func (g runtimeGate) any(rt string) bool {
	if g.all[rt] {
		return true
	}
	for _, a := range g.accounts {
		if a[rt] {
			return true
		}
	}
	return false
}

// checkRuntime refuses a runtime the operator has not allowed to account
// (unknown names are left to the availability check).
func (e *Engine) checkRuntime(account, name string) error {
	if e.gate.all[name] || e.gate.accounts[account][name] || (name != "runc" && name != "crun") {
		return nil
	}
	return errdefs.Forbidden("runtime %q is not allowed for this account: it shares the host kernel, so the operator must enable it with `arbor serve --allow-runtime %s` (every account) or `--allow-runtime %s:%s` (this account only; engine.Config.AllowedRuntimes); runsc (gVisor) is always allowed", name, name, account, name)
}

// prepareSharedKernel readies the home for runc and crun sandboxes, whose
// root is an unprivileged host uid: it must traverse the home to reach
// its root filesystem and the init binary.
func (e *Engine) prepareSharedKernel() error {
	home := e.cfg.Home
	for _, d := range []string{home, filepath.Join(home, "run")} {
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	for d := filepath.Dir(home); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("runc and crun sandboxes run as unprivileged host users and must traverse %s (mode %o) to reach their root filesystems under %s: chmod o+x %s, choose another --home, or allow only runsc", d, fi.Mode().Perm(), home, d)
		}
		if d == "/" {
			break
		}
	}
	if e.initBin == "" {
		return nil
	}
	// A private copy: the configured binary may live where sandboxes
	// cannot reach it, or be replaced while the daemon runs.
	dst := filepath.Join(home, "init", "arbor-init")
	if err := os.MkdirAll(filepath.Dir(dst), 0o711); err != nil {
		return err
	}
	if err := copyExecutable(e.initBin, dst); err != nil {
		return fmt.Errorf("copy init binary: %w", err)
	}
	e.initBin = dst
	return nil
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
