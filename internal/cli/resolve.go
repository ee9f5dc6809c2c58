package cli

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/spf13/cobra"
)

// imageRefHelp is the wording every command uses for an image reference.
const imageRefHelp = `IMAGE is a UUID, a unique UUID prefix (at least 4 characters), tag:NAME or a
bare tag.`

// resolveImage finds the image ref names: a UUID, a unique UUID prefix,
// tag:NAME or a bare tag (apitypes.ParseImageRef). An unknown tag is an
// error naming the closest existing tags.
func resolveImage(ctx context.Context, c *client.Client, ref string) (*apitypes.Image, error) {
	r, err := apitypes.ParseImageRef(ref)
	if err != nil {
		return nil, errors.New("empty image reference: pass a UUID, a UUID prefix, tag:NAME or a tag (list them with `arbor images`)")
	}
	if r.UUID != "" {
		im, err := c.Image(ctx, r.UUID)
		if client.IsNotFound(err) {
			return nil, &cliError{fmt.Sprintf("image %s not found (list images with `arbor images --all`)", r.UUID), err}
		}
		return im, err
	}
	id, err := c.FindImageByTag(ctx, r.Tag)
	if err == nil {
		return c.Image(ctx, id)
	}
	if !client.IsNotFound(err) && !client.IsBadRequest(err) {
		return nil, err
	}
	prefix := r.UUIDPrefix()
	if prefix != "" {
		im, perr := imageByPrefix(ctx, c, prefix)
		if perr != nil || im != nil {
			return im, perr
		}
	}
	return nil, unknownTag(ctx, c, r.Tag, prefix != "", err)
}

// allImages pages through the account's images (tagged only if tagged).
func allImages(ctx context.Context, c *client.Client, tagged bool) ([]apitypes.Image, error) {
	const page = 1000
	var out []apitypes.Image
	for off := 0; ; off += page {
		ims, err := c.ListImages(ctx, client.ImageListOptions{Page: client.Page{Limit: page, Offset: off}, Tagged: tagged})
		if err != nil {
			return nil, err
		}
		out = append(out, ims...)
		if len(ims) < page {
			return out, nil
		}
	}
}

// imageByPrefix returns the one image whose UUID starts with prefix, nil if
// none does, and an error listing candidates if several do. arbor's daemon
// filters (GET /v1/images?uuid_prefix=), so this costs one small request
// however many images there are. A server that ignores the filter
// (ConTree's) lists every image: then an image in that first page that does
// not match gives it away, and the rest of the list is searched page by
// page, until a second match or the end, for at most prefixScanPages pages.
func imageByPrefix(ctx context.Context, c *client.Client, prefix string) (*apitypes.Image, error) {
	const limit = 100
	ims, err := c.ListImages(ctx, client.ImageListOptions{UUIDPrefix: prefix, Page: client.Page{Limit: limit}})
	if err != nil {
		return nil, err
	}
	hits := withUUIDPrefix(ims, prefix)
	if len(hits) == len(ims) || len(ims) < limit {
		// Filtered (every image matches), or unfiltered but all there is.
		return onePrefixMatch(prefix, hits, len(ims) == limit)
	}
	off := len(ims)
	for page := 0; len(hits) < 2; page++ {
		if page == prefixScanPages {
			found := ""
			if len(hits) == 1 {
				found = fmt.Sprintf(" (%s matches, but an older image may too)", hits[0].UUID)
			}
			return nil, fmt.Errorf("image prefix %q: the server does not filter images by UUID prefix and has more images than the %d searched%s: pass the full UUID or a tag", prefix, off, found)
		}
		ims, err := c.ListImages(ctx, client.ImageListOptions{Page: client.Page{Limit: prefixScanPage, Offset: off}})
		if err != nil {
			return nil, err
		}
		hits = append(hits, withUUIDPrefix(ims, prefix)...)
		off += len(ims)
		if len(ims) < prefixScanPage {
			return onePrefixMatch(prefix, hits, false)
		}
	}
	return onePrefixMatch(prefix, hits, true)
}

// The pages imageByPrefix reads from a server that does not filter by
// UUID prefix: at most prefixScanPages more of prefixScanPage images (the
// API's largest page) after the first.
const prefixScanPage, prefixScanPages = 1000, 20

// withUUIDPrefix returns the images in ims whose UUID starts with prefix.
func withUUIDPrefix(ims []apitypes.Image, prefix string) []apitypes.Image {
	var out []apitypes.Image
	for _, im := range ims {
		if strings.HasPrefix(im.UUID, prefix) {
			out = append(out, im)
		}
	}
	return out
}

// onePrefixMatch returns the image in hits if there is one, nil if there
// is none, and the error naming candidates if there are several; more says
// that other images may match too.
func onePrefixMatch(prefix string, hits []apitypes.Image, more bool) (*apitypes.Image, error) {
	const show = 5
	switch len(hits) {
	case 0:
		return nil, nil
	case 1:
		return &hits[0], nil
	}
	n := strconv.Itoa(len(hits))
	if more {
		n = "at least " + n
	}
	ids := make([]string, 0, show+1)
	for i, im := range hits {
		if i == show {
			ids = append(ids, "...")
			break
		}
		ids = append(ids, im.UUID)
	}
	return nil, fmt.Errorf("image prefix %q is ambiguous: it matches %s images (%s): type more characters", prefix, n, strings.Join(ids, ", "))
}

// unknownTag explains that no image has tag, suggesting the closest tags.
func unknownTag(ctx context.Context, c *client.Client, tag string, prefix bool, cause error) error {
	ims, err := allImages(ctx, c, true)
	if err != nil {
		return cause
	}
	if prefix {
		return &cliError{fmt.Sprintf("no image has tag %q or a UUID starting with it (list them with `arbor images --all`)", tag), cause}
	}
	var tags []string
	for _, im := range ims {
		if im.Tag != nil {
			tags = append(tags, *im.Tag)
		}
	}
	if len(tags) == 0 {
		return &cliError{fmt.Sprintf("no image has tag %q, and no image is tagged yet: import one with `arbor import --busybox` or `arbor import docker.io/library/python:3.12-slim`", tag), cause}
	}
	if near := closest(tag, tags, 5); len(near) > 0 {
		return &cliError{fmt.Sprintf("no image has tag %q: did you mean %s? (list tags with `arbor images`)", tag, strings.Join(near, ", ")), cause}
	}
	return &cliError{fmt.Sprintf("no image has tag %q (list tags with `arbor images`)", tag), cause}
}

// closest returns up to n candidates near name: prefix or substring matches
// first, then those within a small edit distance, best first.
func closest(name string, cands []string, n int) []string {
	type scored struct {
		s     string
		score int
	}
	ln := strings.ToLower(name)
	limit := max(2, len(name)/3)
	var out []scored
	for _, c := range cands {
		lc := strings.ToLower(c)
		switch {
		case lc == ln:
			out = append(out, scored{c, -1})
		case strings.HasPrefix(lc, ln):
			out = append(out, scored{c, 0})
		case strings.Contains(lc, ln):
			out = append(out, scored{c, 1})
		case strings.HasPrefix(ln, lc):
			out = append(out, scored{c, 2})
		default:
			if d := levenshtein(ln, lc); d <= limit {
				out = append(out, scored{c, 2 + d})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].score != out[j].score {
			return out[i].score < out[j].score
		}
		return out[i].s < out[j].s
	})
	var names []string
	for i := 0; i < len(out) && i < n; i++ {
		names = append(names, out[i].s)
	}
	return names
}

// levenshtein is the edit distance between a and b.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// resolveOp returns the operation id ref names: a UUID or a unique prefix.
func resolveOp(ctx context.Context, c *client.Client, ref string) (string, error) {
	ref = strings.ToLower(strings.TrimSpace(ref))
	if apitypes.IsUUID(ref) {
		return ref, nil
	}
	if !apitypes.IsUUIDPrefix(ref) {
		return "", fmt.Errorf("%q is not an operation id: pass its UUID or a prefix of at least 4 characters (list them with `arbor ps --all`)", ref)
	}
	const page = 1000
	var hits []string
	for off := 0; ; off += page {
		ops, err := c.ListOperations(ctx, client.OperationListOptions{Page: client.Page{Limit: page, Offset: off}})
		if err != nil {
			return "", err
		}
		for _, o := range ops {
			if strings.HasPrefix(o.UUID, ref) {
				hits = append(hits, o.UUID)
			}
		}
		if len(ops) < page {
			break
		}
	}
	switch len(hits) {
	case 0:
		return "", fmt.Errorf("no operation starts with %q (list them with `arbor ps --all`)", ref)
	case 1:
		return hits[0], nil
	}
	return "", fmt.Errorf("operation prefix %q is ambiguous: it matches %d operations: type more characters", ref, len(hits))
}

// splitImagePath splits IMAGE:PATH at the first ":/" (tags may contain ':',
// paths are absolute). ok is false when arg has no path.
func splitImagePath(arg string) (ref, p string, ok bool) {
	if i := strings.Index(arg, ":/"); i > 0 {
		return arg[:i], arg[i+1:], true
	}
	return arg, "", false
}

// completeImages offers tags for shell completion of IMAGE arguments.
func (g *globals) completeImages(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	c, err := g.connect()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ims, err := c.ListImages(cmd.Context(), client.ImageListOptions{Tagged: true, TagPrefix: toComplete, Page: client.Page{Limit: 200}})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, im := range ims {
		if im.Tag != nil {
			out = append(out, *im.Tag)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
}
