// Package layers stores the immutable layers images are made of and hands
// out views of chains of them, in the spirit of containerd's snapshotter
// (core/snapshots/snapshotter.go).
//
// # Vocabulary
//
// A layer is an immutable directory tree, identified by an id (a random hex
// string for a committed run, "sha256-<hex>" for a content-addressed
// imported layer). A chain is a list of layer ids, top first, as overlayfs
// stacks them: a former upper directory may hold whiteouts and opaque
// directories that hide what lies below. Which chain an image mounts is the
// caller's business (the engine's image rows); this package only knows ids.
//
// # Lifecycle
//
// A writable view is prepared on a chain, mounted by the caller, and then
// either committed into a new layer or removed:
//
//	a, err := s.Prepare(ctx, dir, chain)   // dir/{upper,work,merged}; chain pinned
//	overlay.Mount(a.Lowers, a.Upper, a.Work, a.Merged)
//	... the sandbox writes into a.Merged ...
//	overlay.Unmount(a.Merged)
//	err = s.Commit(ctx, a.Upper, newID, record) // a.Upper becomes layer newID
//	s.Remove(a)                                 // dir gone, chain unpinned
//
// Commit makes the upper directory durable, moves it into [Storage] and runs
// record (the caller's metadata transaction) while the new layer is pinned,
// so a collection cannot take it before anything references it; when
// record fails the layer is removed again. A read-only view ([Snapshotter.View])
// pins a chain and returns its directories for reading (layerfs, exports).
// [Snapshotter.Squash] flattens a chain into one new layer the same way.
//
// # Leases and garbage collection
//
// A [Lease] pins layer ids: while any lease holds an id, no collection
// removes it. Views hold one on their chain. [Snapshotter.Collect] removes
// every stored layer that neither a lease nor the caller's roots (the layers
// its live metadata references, reported under the collection's lock)
// need. Deciding and unlinking happen under the lock that commits take; the
// deletion of the contents, which can take long for a large layer, happens
// after it is released (see [Cleaner]), so deleting an image never stalls
// commits.
//
// # Storage
//
// [Storage] is the small contract for layer contents (put, get, remove and
// list a layer's directory by id). [Dir] keeps them as plain directories
// under the home, today's layout; an object store can be a second
// implementation that caches what Get returns.
package layers
