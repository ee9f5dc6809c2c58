// Package layerfs reads the merged view of a chain of overlayfs layer
// directories without mounting them.
//
// An image is an ordered chain of immutable layer directories, top first. All
// but the bottom one are former overlayfs upper directories, so they hold
// whiteouts (character devices 0/0) and opaque directories (xattr
// trusted.overlay.opaque or user.overlay.opaque set to "y"). [FS] applies the
// same rules as the kernel: a name comes from the topmost layer that has it, a
// whiteout hides the name in all lower layers, an opaque directory hides the
// lower layers' contents of that directory, and a non-directory hides a
// directory below it.
//
// # Path resolution
//
// Every path a client passes is resolved inside the image as if the image were
// the root of a chroot: relative paths start at "/", ".." stops at the root, and
// symlinks are followed component by component with absolute targets taken
// relative to the image root. Host symlinks below a layer directory are never
// followed: each host path this package builds consists of components it has
// checked to be real directories, and files are opened with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) below their layer directory,
// so no client path can reach a host file outside the layer directories.
//
// # Limitations
//
// Layers must not change while they are read. Layers written by overlayfs
// mounts with redirect_dir, metacopy or xwhiteouts enabled (all off in arbor's
// kernel configuration) are not interpreted: their redirect and metacopy
// xattrs are ignored.
package layerfs
