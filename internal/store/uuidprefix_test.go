package store

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestListImagesByUUIDPrefix: the uuid_prefix filter keeps exactly the
// account's live images whose UUID starts with the prefix.
func TestListImagesByUUIDPrefix(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "arbor.db"))
	ctx := context.Background()
	ims := []Image{
		{UUID: "abcd0000-0000-4000-8000-000000000001", Account: "x"},
		{UUID: "abcd0000-0000-4000-8000-000000000002", Account: "x"},
		{UUID: "abce0000-0000-4000-8000-000000000003", Account: "x"},
		{UUID: "abcd0000-0000-4000-8000-000000000004", Account: "y"},
		{UUID: "abcd0000-0000-4000-8000-000000000005", Account: "x", Hidden: true},
	}
	for i, im := range ims {
		im.Layer, im.Depth, im.CreatedAt = "l"+im.UUID, 1, time.Unix(int64(i), 0)
		if err := s.InsertImage(ctx, im); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		prefix string
		want   []string // newest first
	}{
		{"abcd", []string{ims[1].UUID, ims[0].UUID}},
		{"abc", []string{ims[2].UUID, ims[1].UUID, ims[0].UUID}},
		{"abce", []string{ims[2].UUID}},
		{ims[0].UUID, []string{ims[0].UUID}},
		{"abcf", nil},
	} {
		got, err := s.ListImages(ctx, ImageFilter{Account: "x", UUIDPrefix: tc.prefix})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, im := range got {
			ids = append(ids, im.UUID)
		}
		if !slices.Equal(ids, tc.want) {
			t.Errorf("ListImages(uuid prefix %q) = %v, want %v", tc.prefix, ids, tc.want)
		}
	}
}
