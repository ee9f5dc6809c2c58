// Package archive fills overlayfs layer directories from tar streams and host
// directories, and publishes them crash-safely.
//
// A layer directory follows overlayfs conventions: a deleted entry is a
// whiteout (a character device 0/0 with the deleted name) and a directory
// that hides the contents of lower layers carries the xattr
// trusted.overlay.opaque="y". [ApplyTar] converts OCI/AUFS whiteouts
// (".wh.NAME", ".wh..wh..opq") to that form when asked to.
//
// # Security
//
// Tar streams are hostile input. [ApplyTar] never resolves a path through the
// host's view of the filesystem: every parent directory is opened with
// openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS|RESOLVE_NO_XDEV) relative to
// the layer directory, so a symlink in the archive that points to "/etc" or
// "../../.." resolves inside the layer, exactly as it will once the layer is
// the root of a sandbox. The final component is always created with
// O_EXCL/O_NOFOLLOW (or mknodat, symlinkat, linkat without following) after
// removing whatever was there, and metadata is applied with *at calls that
// do not follow symlinks. Names that escape with "..", hard links to anything
// but a regular file extracted earlier from the same stream, and overlay
// xattrs smuggled in PAX records are rejected or dropped.
//
// The package is Linux-only and its callers run as root: it chowns, mknods
// and sets trusted.* xattrs.
package archive
