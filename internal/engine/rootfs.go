package engine

import (
	"github.com/arborsh/arbor/internal/overlay"
)

// RootFS assembles a sandbox's root filesystem from a prepared view of a
// chain (see layers.Active) and takes it apart again. It is the seam
// between the engine and how a view becomes a directory a sandbox can
// use: overlayfs mounts (the default, which needs root), or copies
// (internal/copyroot, for tests without root over a fake runtime).
//
// Mount makes merged show lowers (layer directories, top first) and
// sends every write under merged to upper; work is scratch space on
// upper's filesystem. Unmount ends that for merged; once it returns, upper
// holds exactly the changes made under merged since Mount, in overlayfs'
// form (whiteouts are character devices 0/0; a directory that replaces one
// below is opaque or lists whiteouts for what it lost), which is what a
// commit stores as a layer. Unmount of a merged that is not mounted
// returns nil. Calls for different views may run concurrently.
type RootFS interface {
	Mount(lowers []string, upper, work, merged string) error
	Unmount(merged string) error
}

// overlayRoot is the default RootFS: a kernel overlayfs mount.
type overlayRoot struct{}

func (overlayRoot) Mount(lowers []string, upper, work, merged string) error {
	return overlay.Mount(lowers, upper, work, merged)
}

func (overlayRoot) Unmount(merged string) error { return overlay.Unmount(merged) }
