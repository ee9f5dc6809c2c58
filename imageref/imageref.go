// Package imageref is the one grammar of image references, tags and UUIDs:
// the engine, the API, the client, the CLI and the MCP tools all use it,
// so they accept and reject the same strings. It depends on nothing of
// arbor's, so the public client can use it.
package imageref

import (
	"errors"
	"fmt"
	"strings"
)

// MinUUIDPrefix is the shortest UUID prefix a reference may use.
const MinUUIDPrefix = 4

const uuidShape = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"

// IsUUID reports whether s is a UUID in the canonical 8-4-4-4-12 hex form
// (either case).
func IsUUID(s string) bool { return len(s) == len(uuidShape) && fitsUUIDShape(s) }

// IsUUIDPrefix reports whether s could be the start of a UUID and is at
// least MinUUIDPrefix characters long. A full UUID is also a prefix.
func IsUUIDPrefix(s string) bool {
	return len(s) >= MinUUIDPrefix && len(s) <= len(uuidShape) && fitsUUIDShape(s)
}

func fitsUUIDShape(s string) bool {
	if len(s) > len(uuidShape) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if uuidShape[i] == '-' {
			if c != '-' {
				return false
			}
			continue
		}
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// MaxTagLen is the longest tag.
const MaxTagLen = 255

// ValidTag checks a tag name: 1-255 characters from letters, digits and
// . _ : / @ + -, starting with a letter or digit, and not starting with
// "tag:" (which references use to mark a tag).
func ValidTag(tag string) error {
	ok := tag != "" && len(tag) <= MaxTagLen && isAlnum(tag[0]) && !strings.HasPrefix(tag, "tag:")
	for i := 1; ok && i < len(tag); i++ {
		ok = isAlnum(tag[i]) || strings.IndexByte("._:/@+-", tag[i]) >= 0
	}
	if !ok {
		return fmt.Errorf("invalid tag %q: use 1-255 characters from letters, digits and . _ : / @ + -, starting with a letter or digit", tag)
	}
	return nil
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// ImageRef is a parsed image reference: a UUID, "tag:NAME" or a bare tag.
// Exactly one of UUID and Tag is set.
type ImageRef struct {
	UUID string // a full UUID, lower-cased
	Tag  string // a tag, without the "tag:" marker
	// Explicit is true when the tag was written "tag:NAME", which rules out
	// reading it as a UUID prefix.
	Explicit bool
}

// ErrEmptyImageRef is returned by ParseImageRef for an empty reference.
var ErrEmptyImageRef = errors.New("empty image reference: pass an image UUID, tag:NAME or a tag")

// ParseImageRef parses an image reference. Surrounding space is ignored. A
// full UUID names an image; anything else names a tag ("tag:" marks one
// explicitly, so that a tag that looks like a UUID can still be named).
// The tag is not checked against ValidTag: looking up a tag that cannot
// exist simply finds nothing.
func ParseImageRef(s string) (ImageRef, error) {
	s = strings.TrimSpace(s)
	if IsUUID(s) {
		return ImageRef{UUID: strings.ToLower(s)}, nil
	}
	tag, explicit := strings.CutPrefix(s, "tag:")
	if tag == "" {
		return ImageRef{}, ErrEmptyImageRef
	}
	return ImageRef{Tag: tag, Explicit: explicit}, nil
}

// UUIDPrefix returns the lower-cased UUID prefix a bare tag reference may
// also mean (as the CLI accepts "arbor run --image 3f2a"), or "" if it
// cannot be one.
func (r ImageRef) UUIDPrefix() string {
	if r.UUID != "" || r.Explicit || !IsUUIDPrefix(r.Tag) {
		return ""
	}
	return strings.ToLower(r.Tag)
}

// String returns the reference in its canonical form.
func (r ImageRef) String() string {
	if r.UUID != "" {
		return r.UUID
	}
	if r.Explicit {
		return "tag:" + r.Tag
	}
	return r.Tag
}
