// Package registry brings images from the outside world into arbor and
// lets them travel back out, with go-containerregistry.
//
// # Import
//
// An [Importer] pulls from OCI/Docker registries ([Importer.ImportRegistry],
// installed into the engine with [Install]) and reads archives
// ([Importer.ImportArchive]: docker save tarballs, OCI image layouts as
// tarballs or directories, plain root filesystem tarballs). Each OCI layer
// becomes a layer directory of its own (engine.NewLayeredImage), stored
// once under its diff ID and shared by every image, of any account, that
// has it: extraction into an empty directory depends on the layer's tar
// alone (OCI whiteouts and opaque directories become overlayfs ones, which
// act on whatever lies below at mount time, and no path resolves through a
// lower layer, as with docker's and containerd's overlay snapshotters). The
// layers below the top one are hidden per-account chain rows keyed by
// chain ID. A layer already stored is not extracted again: when the
// account already uses it nothing is read; otherwise its blob is read and
// hashed against the diff ID first, so no account reaches another's layer
// by naming its digest. The engine commits the layers durably before the
// image becomes visible, so a failed import leaves nothing behind.
// Plain root filesystem tarballs stay one unshared layer.
//
// Every byte is checked: blobs against their digests and sizes while they
// stream (a registry serving damaged data fails the import with the digest
// it got and the one it wanted), uncompressed layers against the config's
// diff_ids, the total uncompressed size against Options.MaxBytes
// (decompression bombs), and every tar header: ".." names are refused,
// device nodes (character and block, 0/0 included: only ".wh." names are
// whiteouts) are left out and counted in a "devices" progress event naming
// them, fifos are kept, and archive.ApplyTar resolves every path inside the image,
// so absolute names and symlinks followed by writes through them stay
// inside (or fail when their target is outside the image), and hard links
// must point to a file of the same layer.
//
// Imports reach registries on public addresses only, unless
// Options.AllowRegistries lists others (checked on the address dialled,
// after name resolution); failures to reach one, and answers that are not
// a registry's, all give one message, so imports cannot map what listens
// where. Registries on loopback addresses are reached over plain HTTP, all
// others over HTTPS only. Multi-platform indexes resolve to Options.Platform
// (linux/amd64 on amd64 hosts).
//
// Re-importing an unchanged image is a fast no-op that still returns an
// image: <home>/registry/index.json maps (account, manifest digest) — or
// the config digest of a docker save archive, or an upload's sha256 — to the
// image it became, which is returned while it exists.
//
// # Export
//
// [ExportHandler] serves the engine's images read-only as an OCI registry
// (GET /v2/...): arbor/<image> flattened into one layer, arbor-layers/<image>
// with one layer per layer of its chain; see [Exporter].
package registry
