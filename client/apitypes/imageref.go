package apitypes

import "github.com/arborsh/arbor/imageref"

// The grammar of image references and tags lives in package imageref,
// which the server uses too; these names keep it where clients of
// apitypes have found it.

// MinUUIDPrefix is the shortest UUID prefix a reference may use.
const MinUUIDPrefix = imageref.MinUUIDPrefix

// MaxTagLen is the longest tag.
const MaxTagLen = imageref.MaxTagLen

// ImageRef is a parsed image reference (see imageref.ImageRef).
type ImageRef = imageref.ImageRef

// ErrEmptyImageRef is returned by ParseImageRef for an empty reference.
var ErrEmptyImageRef = imageref.ErrEmptyImageRef

// IsUUID reports whether s is a UUID in the canonical 8-4-4-4-12 hex form.
func IsUUID(s string) bool { return imageref.IsUUID(s) }

// IsUUIDPrefix reports whether s could be the start of a UUID and is at
// least MinUUIDPrefix characters long.
func IsUUIDPrefix(s string) bool { return imageref.IsUUIDPrefix(s) }

// ValidTag checks a tag name (see imageref.ValidTag).
func ValidTag(tag string) error { return imageref.ValidTag(tag) }

// ParseImageRef parses an image reference (see imageref.ParseImageRef).
func ParseImageRef(s string) (ImageRef, error) { return imageref.ParseImageRef(s) }
