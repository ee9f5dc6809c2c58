// Package storetest is the conformance suite of [store.Metadata]: every
// implementation (SQLite today, PostgreSQL next) runs it from its own
// tests and must pass all of it.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Metadata { return openFresh(t) })
//	}
//
// Each subtest opens its own empty store, so they may run in any order.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
)

// Run runs the suite. open returns a new, empty store and closes it when t
// ends (t.Cleanup).
func Run(t *testing.T, open func(t *testing.T) store.Metadata) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, m store.Metadata)
	}{
		{"ImageRoundTrip", testImageRoundTrip},
		{"TagUniquePerAccount", testTagUniquePerAccount},
		{"Retag", testRetag},
		{"Untag", testUntag},
		{"DeleteImage", testDeleteImage},
		{"HiddenRows", testHiddenRows},
		{"Lineage", testLineage},
		{"ListImages", testListImages},
		{"PurgeImages", testPurgeImages},
		{"PurgeKeepsInFlightChains", testPurgeKeepsInFlightChains},
		{"ExpireImages", testExpireImages},
		{"ExpireOperations", testExpireOperations},
		{"InsertOperationLimited", testInsertOperationLimited},
		{"OperationTransitions", testOperationTransitions},
		{"ListOperations", testListOperations},
		{"Events", testEvents},
		{"UpdateCommits", testUpdateCommits},
		{"UpdateRollsBack", testUpdateRollsBack},
		{"UpdateIsolated", testUpdateIsolated},
		{"UpdatesSerialize", testUpdatesSerialize},
		{"Accounts", testAccounts},
		{"Tokens", testTokens},
		{"TokenRevokeCascades", testTokenRevokeCascades},
		{"Files", testFiles},
		{"ExpireFiles", testExpireFiles},
		{"NamedContents", testNamedContents},
		{"AccountBytes", testAccountBytes},
		{"OperationStats", testOperationStats},
		{"Close", testClose},
		{"FinishOnceConcurrently", testFinishOnceConcurrently},
		{"FinishAllOrNothing", testFinishAllOrNothing},
		{"MoveOperationConcurrently", testMoveOperationConcurrently},
		{"RetagConcurrently", testRetagConcurrently},
		{"RevokeWhileCreating", testRevokeWhileCreating},
		{"UUIDPrefix", testUUIDPrefix},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

var ctx = context.Background()

// base is a time with microseconds only, which every implementation keeps.
var base = time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)

func at(i int) time.Time { return base.Add(time.Duration(i) * time.Second) }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantClass(t *testing.T, what string, err, class error) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Errorf("%s = %v, want an error of class %q", what, err, class)
	}
}

func img(uuid, account string, i int) store.Image {
	return store.Image{UUID: uuid, Account: account, Layer: "layer-" + uuid, Depth: 1, LayerBytes: 10, CreatedAt: at(i)}
}

func insert(t *testing.T, m store.Metadata, ims ...store.Image) {
	t.Helper()
	for _, im := range ims {
		if err := m.InsertImage(ctx, im); err != nil {
			t.Fatalf("InsertImage(%s): %v", im.UUID, err)
		}
	}
}

func uuids(ims []store.Image) []string {
	var out []string
	for _, im := range ims {
		out = append(out, im.UUID)
	}
	return out
}

func tagOf(t *testing.T, m store.Metadata, account, uuid string) string {
	t.Helper()
	im, err := m.Image(ctx, account, uuid)
	if err != nil {
		t.Fatalf("Image(%s, %s): %v", account, uuid, err)
	}
	return im.Tag
}

// sameImage compares rows field by field, times by instant (an
// implementation may return them in another location).
func sameImage(a, b store.Image) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return false
	}
	a.CreatedAt, b.CreatedAt = time.Time{}, time.Time{}
	return a == b
}

func testImageRoundTrip(t *testing.T, m store.Metadata) {
	want := store.Image{UUID: "i1", Account: "a", Parent: "p", Layer: "l1", Flat: "f1", Depth: 3, Tag: "t", Operation: "op",
		Env: `{"A":"1"}`, LayerBytes: 42, CreatedAt: at(0), Base: "b"}
	insert(t, m, want)
	got, err := m.Image(ctx, "a", "i1")
	if err != nil || !sameImage(got, want) {
		t.Errorf("Image = %+v, %v; want %+v", got, err, want)
	}
	if got.MountParent() != "p" {
		t.Errorf("MountParent = %q, want the parent p", got.MountParent())
	}
	_, err = m.Image(ctx, "b", "i1")
	wantClass(t, "Image(another account)", err, errdefs.ErrNotFound)
	_, err = m.Image(ctx, "a", "nope")
	wantClass(t, "Image(unknown)", err, errdefs.ErrNotFound)
	if got, err := m.ImageAny(ctx, "i1"); err != nil || !sameImage(got, want) {
		t.Errorf("ImageAny = %+v, %v; want %+v", got, err, want)
	}
	_, err = m.ImageAny(ctx, "nope")
	wantClass(t, "ImageAny(unknown)", err, errdefs.ErrNotFound)
	err = m.InsertImage(ctx, img("i1", "b", 1))
	wantClass(t, "InsertImage(duplicate uuid)", err, errdefs.ErrConflict)
}

func testTagUniquePerAccount(t *testing.T, m store.Metadata) {
	insert(t, m, img("x1", "x", 0), img("x2", "x", 1), img("y1", "y", 2))
	must(t, m.SetTag(ctx, "x", "x1", "base"))
	must(t, m.SetTag(ctx, "y", "y1", "base")) // another account: its own namespace
	for acct, want := range map[string]string{"x": "x1", "y": "y1"} {
		if im, err := m.ImageByTag(ctx, acct, "base"); err != nil || im.UUID != want {
			t.Errorf("ImageByTag(%s, base) = %s, %v; want %s", acct, im.UUID, err, want)
		}
	}
	_, err := m.ImageByTag(ctx, "x", "other")
	wantClass(t, "ImageByTag(unknown tag)", err, errdefs.ErrNotFound)
	tagged := img("x3", "x", 3)
	tagged.Tag = "base"
	err = m.InsertImage(ctx, tagged)
	wantClass(t, "InsertImage(tag of another image)", err, errdefs.ErrConflict)
	if _, err := m.Image(ctx, "x", "x3"); !errdefs.IsNotFound(err) {
		t.Errorf("the rejected insert left image x3 behind: %v", err)
	}
	tagged.Tag = "fresh"
	insert(t, m, tagged)
	if got := tagOf(t, m, "x", "x3"); got != "fresh" {
		t.Errorf("tag inserted with the image = %q, want fresh", got)
	}
}

func testRetag(t *testing.T, m store.Metadata) {
	insert(t, m, img("a", "x", 0), img("b", "x", 1))
	must(t, m.SetTag(ctx, "x", "a", "v"))
	must(t, m.SetTag(ctx, "x", "b", "v"))
	if im, err := m.ImageByTag(ctx, "x", "v"); err != nil || im.UUID != "b" {
		t.Errorf("after retag ImageByTag = %s, %v; want b", im.UUID, err)
	}
	if got := tagOf(t, m, "x", "a"); got != "" {
		t.Errorf("old image kept tag %q", got)
	}
	must(t, m.SetTag(ctx, "x", "b", "w")) // an image has one tag: the new one replaces it
	if got := tagOf(t, m, "x", "b"); got != "w" {
		t.Errorf("tag of b = %q, want w", got)
	}
	// A failed retag moves nothing: the tag stays where it was.
	err := m.SetTag(ctx, "x", "missing", "w")
	wantClass(t, "SetTag(unknown image)", err, errdefs.ErrNotFound)
	err = m.SetTag(ctx, "y", "b", "w")
	wantClass(t, "SetTag(another account's image)", err, errdefs.ErrNotFound)
	if got := tagOf(t, m, "x", "b"); got != "w" {
		t.Errorf("a failed SetTag took tag w off b (now %q)", got)
	}
}

func testUntag(t *testing.T, m store.Metadata) {
	insert(t, m, img("a", "x", 0))
	must(t, m.SetTag(ctx, "x", "a", "v"))
	err := m.RemoveTag(ctx, "x", "a", "other")
	wantClass(t, "RemoveTag(wrong tag)", err, errdefs.ErrConflict)
	if got := tagOf(t, m, "x", "a"); got != "v" {
		t.Errorf("a rejected RemoveTag changed the tag to %q", got)
	}
	must(t, m.RemoveTag(ctx, "x", "a", "v"))
	if got := tagOf(t, m, "x", "a"); got != "" {
		t.Errorf("tag after RemoveTag = %q", got)
	}
	_, err = m.ImageByTag(ctx, "x", "v")
	wantClass(t, "ImageByTag(removed tag)", err, errdefs.ErrNotFound)
	must(t, m.SetTag(ctx, "x", "a", "w"))
	must(t, m.RemoveTag(ctx, "x", "a", "")) // no tag given: whatever it is
	if got := tagOf(t, m, "x", "a"); got != "" {
		t.Errorf("tag after RemoveTag without a tag = %q", got)
	}
	err = m.RemoveTag(ctx, "x", "missing", "")
	wantClass(t, "RemoveTag(unknown image)", err, errdefs.ErrNotFound)
}

func testDeleteImage(t *testing.T, m store.Metadata) {
	insert(t, m, img("a", "x", 0), img("b", "x", 1))
	must(t, m.SetTag(ctx, "x", "a", "v"))
	err := m.DeleteImage(ctx, "y", "a")
	wantClass(t, "DeleteImage(another account's)", err, errdefs.ErrNotFound)
	must(t, m.DeleteImage(ctx, "x", "a"))
	_, err = m.Image(ctx, "x", "a")
	wantClass(t, "Image(deleted)", err, errdefs.ErrNotFound)
	_, err = m.ImageByTag(ctx, "x", "v")
	wantClass(t, "ImageByTag(tag of a deleted image)", err, errdefs.ErrNotFound)
	if im, err := m.ImageAny(ctx, "a"); err != nil || !im.Deleted || im.Tag != "" {
		t.Errorf("ImageAny(deleted) = %+v, %v; want the row, deleted, without its tag", im, err)
	}
	err = m.DeleteImage(ctx, "x", "a")
	wantClass(t, "DeleteImage twice", err, errdefs.ErrNotFound)
	err = m.SetTag(ctx, "x", "a", "w")
	wantClass(t, "SetTag(deleted image)", err, errdefs.ErrNotFound)
	must(t, m.SetTag(ctx, "x", "b", "v")) // the tag is free again
	ims, err := m.ListImages(ctx, store.ImageFilter{Account: "x"})
	if err != nil || !slices.Equal(uuids(ims), []string{"b"}) {
		t.Errorf("ListImages = %v, %v; want only b", uuids(ims), err)
	}
}

func testHiddenRows(t *testing.T, m store.Metadata) {
	h := store.Image{UUID: "h", Account: "x", Layer: "shared", Depth: 1, LayerBytes: 10, CreatedAt: at(0), Hidden: true, Chain: "sha256:c1"}
	top := store.Image{UUID: "top", Account: "x", Base: "h", Layer: "l2", Depth: 2, LayerBytes: 5, CreatedAt: at(1)}
	insert(t, m, h, top)
	if got, err := m.ImageAny(ctx, "h"); err != nil || !sameImage(got, h) {
		t.Errorf("ImageAny(hidden) = %+v, %v; want %+v", got, err, h)
	}
	_, err := m.Image(ctx, "x", "h")
	wantClass(t, "Image(hidden)", err, errdefs.ErrNotFound)
	err = m.SetTag(ctx, "x", "h", "t")
	wantClass(t, "SetTag(hidden)", err, errdefs.ErrNotFound)
	err = m.DeleteImage(ctx, "x", "h")
	wantClass(t, "DeleteImage(hidden)", err, errdefs.ErrNotFound)
	ims, err := m.ListImages(ctx, store.ImageFilter{Account: "x"})
	if err != nil || !slices.Equal(uuids(ims), []string{"top"}) {
		t.Errorf("ListImages = %v, %v; want only top", uuids(ims), err)
	}
	if got, _ := m.Image(ctx, "x", "top"); got.MountParent() != "h" {
		t.Errorf("MountParent of an image on a hidden base = %q, want h", got.MountParent())
	}
	dup := h
	dup.UUID = "h2"
	err = m.InsertImage(ctx, dup)
	wantClass(t, "InsertImage(a second hidden row of chain c1)", err, errdefs.ErrConflict)
	dup.Account = "y" // another account keeps its own rows of the same chain
	insert(t, m, dup)
}

func testLineage(t *testing.T, m store.Metadata) {
	root := img("root", "x", 0)
	c1 := img("c1", "x", 1)
	c1.Parent, c1.Depth = "root", 2
	c2 := img("c2", "x", 2)
	c2.Parent, c2.Depth = "root", 2
	g := img("g", "x", 3)
	g.Parent, g.Depth = "c1", 3
	insert(t, m, root, c1, c2, g)
	kids, err := m.ListImages(ctx, store.ImageFilter{Account: "x", Parent: "root"})
	if err != nil || !slices.Equal(uuids(kids), []string{"c2", "c1"}) {
		t.Errorf("children of root = %v, %v; want [c2 c1] (newest first)", uuids(kids), err)
	}
	// A deleted parent stays reachable for the chains of its children.
	must(t, m.DeleteImage(ctx, "x", "c1"))
	got, err := m.Image(ctx, "x", "g")
	if err != nil || got.Parent != "c1" {
		t.Fatalf("Image(g) = %+v, %v", got, err)
	}
	p, err := m.ImageAny(ctx, got.Parent)
	if err != nil || !p.Deleted || p.Parent != "root" {
		t.Errorf("ImageAny(deleted parent) = %+v, %v; want c1, deleted, on root", p, err)
	}
	all, err := m.AllImages(ctx)
	ids := uuids(all)
	slices.Sort(ids)
	if err != nil || !slices.Equal(ids, []string{"c1", "c2", "g", "root"}) {
		t.Errorf("AllImages = %v, %v; want every row, the deleted one included", ids, err)
	}
}

func testListImages(t *testing.T, m store.Metadata) {
	// 0..4 at distinct times; "t5a" and "t5b" at the same time (ties by UUID).
	var ims []store.Image
	for i, id := range []string{"aa00", "ab01", "ab02", "ac03", "ad04"} {
		ims = append(ims, img(id, "x", i))
	}
	ims = append(ims, img("ab5b", "x", 5), img("ab5a", "x", 5), img("zz", "y", 9))
	insert(t, m, ims...)
	must(t, m.SetTag(ctx, "x", "aa00", "app"))
	must(t, m.SetTag(ctx, "x", "ab02", "app-v2"))
	must(t, m.SetTag(ctx, "x", "ad04", "apple"))
	must(t, m.SetTag(ctx, "x", "ac03", "other"))
	for _, tc := range []struct {
		f    store.ImageFilter
		want []string
	}{
		{store.ImageFilter{}, []string{"ab5a", "ab5b", "ad04", "ac03", "ab02", "ab01", "aa00"}},
		{store.ImageFilter{Limit: 3}, []string{"ab5a", "ab5b", "ad04"}},
		{store.ImageFilter{Limit: 3, Offset: 3}, []string{"ac03", "ab02", "ab01"}},
		{store.ImageFilter{Limit: 3, Offset: 6}, []string{"aa00"}},
		{store.ImageFilter{Offset: 7}, nil},
		{store.ImageFilter{Tagged: true}, []string{"ad04", "ac03", "ab02", "aa00"}},
		{store.ImageFilter{TagPrefix: "app"}, []string{"aa00", "ad04", "ab02"}}, // the exact tag first
		{store.ImageFilter{TagPrefix: "app-"}, []string{"ab02"}},
		{store.ImageFilter{UUIDPrefix: "ab"}, []string{"ab5a", "ab5b", "ab02", "ab01"}},
		{store.ImageFilter{UUID: "ac03"}, []string{"ac03"}},
		{store.ImageFilter{UUID: "zz"}, nil},
		{store.ImageFilter{Since: at(1), Until: at(3)}, []string{"ac03", "ab02", "ab01"}},
	} {
		tc.f.Account = "x"
		got, err := m.ListImages(ctx, tc.f)
		if err != nil || !slices.Equal(uuids(got), tc.want) {
			t.Errorf("ListImages(%+v) = %v, %v; want %v", tc.f, uuids(got), err, tc.want)
		}
	}
	var many []store.Image
	for i := range 101 {
		many = append(many, img(fmt.Sprintf("m%03d", i), "z", i))
	}
	insert(t, m, many...)
	if got, err := m.ListImages(ctx, store.ImageFilter{Account: "z"}); err != nil || len(got) != 100 {
		t.Errorf("ListImages without a limit = %d images, %v; want the default limit 100", len(got), err)
	}
}

func testPurgeImages(t *testing.T, m store.Metadata) {
	h := store.Image{UUID: "h", Account: "x", Layer: "hl", Depth: 1, CreatedAt: at(0), Hidden: true, Chain: "sha256:c"}
	insert(t, m, img("live", "x", 1), img("gone", "x", 2), h)
	must(t, m.DeleteImage(ctx, "x", "gone"))
	must(t, m.PurgeImages(ctx, []string{"live", "gone", "h", "unknown"}))
	if _, err := m.Image(ctx, "x", "live"); err != nil {
		t.Errorf("PurgeImages removed a live image: %v", err)
	}
	for _, id := range []string{"gone", "h"} {
		_, err := m.ImageAny(ctx, id)
		wantClass(t, "ImageAny(purged "+id+")", err, errdefs.ErrNotFound)
	}
}

// testPurgeKeepsInFlightChains: a run in flight pins its image by UUID
// (a queued run was admitted on it): a purge keeps that row and the rows
// its chain lies on, deleted or not, until the run ends.
func testPurgeKeepsInFlightChains(t *testing.T, m store.Metadata) {
	base, mid, top, other := img("p-base", "x", 1), img("p-mid", "x", 2), img("p-top", "x", 3), img("p-other", "x", 4)
	mid.Parent, top.Parent = base.UUID, mid.UUID
	insert(t, m, base, mid, top, other)
	queued := op("p-run", "x", 5)
	queued.ImageUUID = mid.UUID
	must(t, m.InsertOperationLimited(ctx, queued, 10))
	for _, u := range []string{top.UUID, mid.UUID, base.UUID, other.UUID} {
		must(t, m.DeleteImage(ctx, "x", u))
	}
	all := []string{top.UUID, mid.UUID, base.UUID, other.UUID}
	must(t, m.PurgeImages(ctx, all))
	for u, kept := range map[string]bool{base.UUID: true, mid.UUID: true, top.UUID: false, other.UUID: false} {
		if _, err := m.ImageAny(ctx, u); kept && err != nil || !kept && !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("image %s after a purge with a run in flight on %s: %v (want kept: %v)", u, mid.UUID, err, kept)
		}
	}
	must(t, m.FinishOperation(ctx, store.Outcome{Operation: store.Operation{UUID: queued.UUID, Account: "x", Status: "SUCCESS", FinishedAt: at(6), Metadata: "{}"}}))
	must(t, m.PurgeImages(ctx, all))
	for _, u := range []string{base.UUID, mid.UUID} {
		_, err := m.ImageAny(ctx, u)
		wantClass(t, "ImageAny("+u+") purged after the run ended", err, errdefs.ErrNotFound)
	}
}

func op(uuid, account string, i int) store.Operation {
	return store.Operation{UUID: uuid, Account: account, Kind: "instance", Status: "PENDING", CreatedAt: at(i), ImageUUID: "img", Metadata: `{"echo":"` + uuid + `"}`}
}

func testInsertOperationLimited(t *testing.T, m store.Metadata) {
	const limit, tries = 16, 40
	var wg sync.WaitGroup
	errs := make([]error, tries)
	start := make(chan struct{})
	for i := range tries {
		wg.Go(func() {
			<-start
			errs[i] = m.InsertOperationLimited(ctx, op(fmt.Sprint("op", i), "a", i), limit)
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, errdefs.ErrResourceExhausted):
			t.Fatalf("InsertOperationLimited = %v, want nil or resource exhausted", err)
		}
	}
	if ok != limit {
		t.Fatalf("%d of %d concurrent inserts passed a limit of %d", ok, tries, limit)
	}
	un, err := m.UnfinishedOperations(ctx)
	if err != nil || len(un) != limit {
		t.Fatalf("UnfinishedOperations = %d, %v; want the %d inserted", len(un), err, limit)
	}
	// Every in-flight state counts; another account has its own budget.
	must(t, m.SetStatus(ctx, un[0].UUID, "ASSIGNED"))
	must(t, m.SetStatus(ctx, un[1].UUID, "EXECUTING"))
	err = m.InsertOperationLimited(ctx, op("a-more", "a", 50), limit)
	wantClass(t, "InsertOperationLimited(at the limit)", err, errdefs.ErrResourceExhausted)
	must(t, m.InsertOperationLimited(ctx, op("b1", "b", 50), limit))
	// A finished operation frees its slot.
	done := un[1]
	done.Status, done.FinishedAt = "SUCCESS", at(60)
	must(t, m.FinishOperation(ctx, store.Outcome{Operation: done}))
	must(t, m.InsertOperationLimited(ctx, op("a-next", "a", 61), limit))
	err = m.InsertOperationLimited(ctx, op("a-next", "c", 62), limit)
	wantClass(t, "InsertOperationLimited(duplicate uuid)", err, errdefs.ErrConflict)
	if _, err := m.Operation(ctx, "c", "a-next"); !errdefs.IsNotFound(err) {
		t.Errorf("a rejected insert left a row behind: %v", err)
	}
	if _, err := m.Operation(ctx, "a", "a-more"); !errdefs.IsNotFound(err) {
		t.Errorf("an insert over the limit left a row behind: %v", err)
	}
}

func testOperationTransitions(t *testing.T, m store.Metadata) {
	o := op("o1", "a", 0)
	must(t, m.InsertOperationLimited(ctx, o, 10))
	got, err := m.Operation(ctx, "a", "o1")
	if err != nil || got.Status != "PENDING" || !got.StartedAt.IsZero() || got.Metadata != o.Metadata || got.ImageUUID != "img" ||
		!got.CreatedAt.Equal(o.CreatedAt) || got.Kind != "instance" {
		t.Fatalf("Operation after insert = %+v, %v", got, err)
	}
	_, err = m.Operation(ctx, "b", "o1")
	wantClass(t, "Operation(another account's)", err, errdefs.ErrNotFound)
	before := time.Now().Add(-time.Second)
	must(t, m.SetStatus(ctx, "o1", "ASSIGNED"))
	assigned, _ := m.Operation(ctx, "a", "o1")
	if assigned.Status != "ASSIGNED" || assigned.StartedAt.Before(before) {
		t.Fatalf("after SetStatus(ASSIGNED): status %s, started %v; want ASSIGNED, started now", assigned.Status, assigned.StartedAt)
	}
	must(t, m.SetStatus(ctx, "o1", "EXECUTING"))
	if got, _ := m.Operation(ctx, "a", "o1"); got.Status != "EXECUTING" || !got.StartedAt.Equal(assigned.StartedAt) {
		t.Errorf("after SetStatus(EXECUTING): status %s, started %v; want EXECUTING, started unchanged at %v", got.Status, got.StartedAt, assigned.StartedAt)
	}
	must(t, m.InsertImage(ctx, img("res", "a", 1)))
	fin := store.Operation{UUID: "o1", Account: "a", Status: "SUCCESS", Error: "", FinishedAt: at(10), ResultImageUUID: "res", ResultTag: "t",
		Metadata: `{"result":1}`, CPUSeconds: 1.5, MaxRSSBytes: 1 << 20, ImageSize: 99}
	must(t, m.FinishOperation(ctx, store.Outcome{Operation: fin}))
	// A terminal operation stays terminal, and finishes once.
	again := fin
	again.Status, again.Error = "FAILED", "late"
	wantClass(t, "second FinishOperation", m.FinishOperation(ctx, store.Outcome{Operation: again}), errdefs.ErrFailedPrecondition)
	if im, err := m.Image(ctx, "a", "res"); err != nil || im.Tag != "t" {
		t.Errorf("result image after finish = %+v, %v; want it tagged t", im, err)
	}
	must(t, m.SetStatus(ctx, "o1", "EXECUTING"))
	must(t, m.SetStatus(ctx, "unknown", "EXECUTING"))
	got, err = m.Operation(ctx, "a", "o1")
	want := fin
	want.Account, want.Kind, want.CreatedAt, want.StartedAt, want.ImageUUID = "a", "instance", o.CreatedAt, assigned.StartedAt, "img"
	if err != nil || !sameOp(got, want) {
		t.Errorf("Operation after finish = %+v, %v;\nwant %+v", got, err, want)
	}
	failed := op("o2", "a", 1)
	must(t, m.InsertOperationLimited(ctx, failed, 10))
	must(t, m.FinishOperation(ctx, store.Outcome{Operation: store.Operation{UUID: "o2", Status: "FAILED", Error: "boom", FinishedAt: at(11), Metadata: failed.Metadata}}))
	if got, _ := m.Operation(ctx, "a", "o2"); got.Status != "FAILED" || got.Error != "boom" || got.ResultImageUUID != "" || got.Metadata != failed.Metadata {
		t.Errorf("failed operation = %+v", got)
	}
	// Recovery sees the in-flight ones only, oldest first, with metadata.
	for i, id := range []string{"r2", "r1", "r3"} {
		must(t, m.InsertOperationLimited(ctx, op(id, "b", 20-i), 10))
	}
	must(t, m.SetStatus(ctx, "r3", "EXECUTING"))
	un, err := m.UnfinishedOperations(ctx)
	var ids []string
	for _, o := range un {
		ids = append(ids, o.UUID)
		if o.Metadata == "" {
			t.Errorf("UnfinishedOperations: %s without metadata", o.UUID)
		}
	}
	if err != nil || !slices.Equal(ids, []string{"r3", "r1", "r2"}) {
		t.Errorf("UnfinishedOperations = %v, %v; want [r3 r1 r2]", ids, err)
	}
}

func sameOp(a, b store.Operation) bool {
	for _, p := range [][2]*time.Time{{&a.CreatedAt, &b.CreatedAt}, {&a.StartedAt, &b.StartedAt}, {&a.FinishedAt, &b.FinishedAt}} {
		if !p[0].Equal(*p[1]) {
			return false
		}
		*p[0], *p[1] = time.Time{}, time.Time{}
	}
	return a == b
}

func testListOperations(t *testing.T, m store.Metadata) {
	// o0..o5 at distinct times, "t6a" and "t6b" at the same one.
	for i := range 6 {
		o := op(fmt.Sprint("o", i), "a", i)
		if i%2 == 1 {
			o.Kind = "image_import"
		}
		must(t, m.InsertOperationLimited(ctx, o, 100))
	}
	must(t, m.InsertOperationLimited(ctx, op("t6b", "a", 6), 100))
	must(t, m.InsertOperationLimited(ctx, op("t6a", "a", 6), 100))
	must(t, m.InsertOperationLimited(ctx, op("other", "b", 7), 100))
	must(t, m.SetStatus(ctx, "o2", "EXECUTING"))
	must(t, m.FinishOperation(ctx, store.Outcome{Operation: store.Operation{UUID: "o3", Status: "SUCCESS", FinishedAt: at(20), Metadata: "{}"}}))
	must(t, m.FinishOperation(ctx, store.Outcome{Operation: store.Operation{UUID: "o4", Status: "FAILED", FinishedAt: at(20), Metadata: "{}"}}))
	for _, tc := range []struct {
		f    store.OperationFilter
		want []string
	}{
		{store.OperationFilter{}, []string{"t6a", "t6b", "o5", "o4", "o3", "o2", "o1", "o0"}},
		{store.OperationFilter{Limit: 3}, []string{"t6a", "t6b", "o5"}},
		{store.OperationFilter{Limit: 3, Offset: 3}, []string{"o4", "o3", "o2"}},
		{store.OperationFilter{Limit: 3, Offset: 6}, []string{"o1", "o0"}},
		{store.OperationFilter{Offset: 8}, nil},
		{store.OperationFilter{Statuses: []string{"SUCCESS", "FAILED"}}, []string{"o4", "o3"}},
		{store.OperationFilter{Statuses: []string{"EXECUTING"}}, []string{"o2"}},
		{store.OperationFilter{Kind: "image_import"}, []string{"o5", "o3", "o1"}},
		{store.OperationFilter{Since: at(2), Until: at(4)}, []string{"o4", "o3", "o2"}},
	} {
		tc.f.Account = "a"
		got, err := m.ListOperations(ctx, tc.f)
		var ids []string
		for _, o := range got {
			ids = append(ids, o.UUID)
			if o.Metadata != "" {
				t.Errorf("ListOperations(%+v) returned %s with metadata %q, want none", tc.f, o.UUID, o.Metadata)
			}
		}
		if err != nil || !slices.Equal(ids, tc.want) {
			t.Errorf("ListOperations(%+v) = %v, %v; want %v", tc.f, ids, err, tc.want)
		}
	}
	got, _ := m.ListOperations(ctx, store.OperationFilter{Account: "a", Statuses: []string{"SUCCESS"}})
	if len(got) != 1 || got[0].Status != "SUCCESS" || !got[0].FinishedAt.Equal(at(20)) || got[0].Kind != "image_import" || got[0].ImageUUID != "img" {
		t.Errorf("listed operation = %+v, want every column but metadata", got)
	}
	for i := range 101 {
		must(t, m.InsertOperationLimited(ctx, op(fmt.Sprint("m", i), "many", i), 1000))
	}
	if got, err := m.ListOperations(ctx, store.OperationFilter{Account: "many"}); err != nil || len(got) != 100 {
		t.Errorf("ListOperations without a limit = %d, %v; want the default limit 100", len(got), err)
	}
}

func ev(id int64, typ string) store.Event {
	return store.Event{ID: id, TS: at(int(id)), Spid: int(id % 3), Type: typ, Data: fmt.Sprintf(`{"n":%d}`, id)}
}

func eventIDs(evs []store.Event) []int64 {
	var out []int64
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

func testEvents(t *testing.T, m store.Metadata) {
	if id, err := m.LastEventID(ctx, "op"); err != nil || id != -1 {
		t.Errorf("LastEventID(no events) = %d, %v; want -1", id, err)
	}
	if evs, err := m.Events(ctx, "op", -1, 0); err != nil || len(evs) != 0 {
		t.Errorf("Events(no events) = %v, %v; want none", evs, err)
	}
	// Appended out of order, read back in ID order; another log apart.
	for _, id := range []int64{0, 1, 2, 5, 3, 4, 6, 7, 8, 9} {
		must(t, m.AppendEvent(ctx, "op", ev(id, "stdout")))
		must(t, m.AppendEvent(ctx, "other", ev(id+100, "stderr")))
	}
	all, err := m.Events(ctx, "op", -1, 0)
	if err != nil || !slices.Equal(eventIDs(all), []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Fatalf("Events(all) = %v, %v", eventIDs(all), err)
	}
	for i, e := range all {
		w := ev(int64(i), "stdout")
		if !e.TS.Equal(w.TS) || e.Spid != w.Spid || e.Type != w.Type || e.Data != w.Data {
			t.Errorf("event %d = %+v, want %+v", i, e, w)
		}
	}
	if got, err := m.Events(ctx, "op", 4, 3); err != nil || !slices.Equal(eventIDs(got), []int64{5, 6, 7}) {
		t.Errorf("Events(after 4, limit 3) = %v, %v; want [5 6 7]", eventIDs(got), err)
	}
	if got, err := m.Events(ctx, "op", 9, 0); err != nil || len(got) != 0 {
		t.Errorf("Events(after the last) = %v, %v; want none", eventIDs(got), err)
	}
	if id, err := m.LastEventID(ctx, "op"); err != nil || id != 9 {
		t.Errorf("LastEventID = %d, %v; want 9", id, err)
	}
	err = m.AppendEvent(ctx, "op", ev(3, "again"))
	wantClass(t, "AppendEvent(existing id)", err, errdefs.ErrConflict)
	if got, _ := m.Events(ctx, "op", 2, 1); len(got) != 1 || got[0].Type != "stdout" {
		t.Errorf("event 3 after a rejected duplicate = %+v, want the first one kept", got)
	}
}

func testUpdateCommits(t *testing.T, m store.Metadata) {
	must(t, m.InsertOperationLimited(ctx, op("o", "a", 0), 10))
	must(t, m.AppendEvent(ctx, "o", ev(0, "stdout")))
	im := img("new", "a", 1)
	err := m.Update(ctx, func(tx store.Tx) error {
		if err := tx.InsertImage(ctx, im); err != nil {
			return err
		}
		if err := tx.SetTag(ctx, "a", "new", "latest"); err != nil {
			return err
		}
		if err := tx.FinishOperation(ctx, store.Outcome{Operation: store.Operation{UUID: "o", Account: "a", Status: "SUCCESS", FinishedAt: at(2), ResultImageUUID: "new", ResultTag: "latest", Metadata: "{}"}}); err != nil {
			return err
		}
		id, err := tx.LastEventID(ctx, "o")
		if err != nil {
			return err
		}
		if err := tx.AppendEvent(ctx, "o", ev(id+1, "completion")); err != nil {
			return err
		}
		// The transaction reads its own append.
		if id2, err := tx.LastEventID(ctx, "o"); err != nil || id2 != id+1 {
			return fmt.Errorf("LastEventID inside the transaction after appending %d = %d, %v", id+1, id2, err)
		}
		return nil
	})
	must(t, err)
	if got, err := m.ImageByTag(ctx, "a", "latest"); err != nil || got.UUID != "new" {
		t.Errorf("ImageByTag after commit = %s, %v", got.UUID, err)
	}
	if o, err := m.Operation(ctx, "a", "o"); err != nil || o.Status != "SUCCESS" || o.ResultImageUUID != "new" {
		t.Errorf("Operation after commit = %+v, %v", o, err)
	}
	if evs, err := m.Events(ctx, "o", -1, 0); err != nil || !slices.Equal(eventIDs(evs), []int64{0, 1}) || evs[1].Type != "completion" {
		t.Errorf("Events after commit = %v, %v; want [0 1], 1 the completion", eventIDs(evs), err)
	}
}

func testUpdateRollsBack(t *testing.T, m store.Metadata) {
	must(t, m.InsertOperationLimited(ctx, op("o", "a", 0), 10))
	insert(t, m, img("old", "a", 0))
	must(t, m.SetTag(ctx, "a", "old", "latest"))
	check := func(what string) {
		t.Helper()
		if _, err := m.ImageAny(ctx, "new"); !errdefs.IsNotFound(err) {
			t.Errorf("%s: the image was committed (%v)", what, err)
		}
		if got := tagOf(t, m, "a", "old"); got != "latest" {
			t.Errorf("%s: the tag moved off old (now %q)", what, got)
		}
		if o, _ := m.Operation(ctx, "a", "o"); o.Status != "PENDING" {
			t.Errorf("%s: the operation was finished (%s)", what, o.Status)
		}
		if id, _ := m.LastEventID(ctx, "o"); id != -1 {
			t.Errorf("%s: an event was appended (last %d)", what, id)
		}
	}
	writes := func(tx store.Tx) error {
		return errors.Join(tx.InsertImage(ctx, img("new", "a", 1)), tx.SetTag(ctx, "a", "new", "latest"),
			tx.FinishOperation(ctx, store.Outcome{Operation: store.Operation{UUID: "o", Status: "SUCCESS", FinishedAt: at(2), Metadata: "{}"}}),
			tx.AppendEvent(ctx, "o", ev(0, "completion")))
	}
	errStop := errors.New("stop")
	err := m.Update(ctx, func(tx store.Tx) error {
		if err := writes(tx); err != nil {
			return err
		}
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Errorf("Update = %v, want fn's error", err)
	}
	check("fn failed")
	// A write that fails inside the transaction fails all of it.
	err = m.Update(ctx, func(tx store.Tx) error {
		if err := writes(tx); err != nil {
			return err
		}
		return tx.InsertImage(ctx, img("old", "a", 3))
	})
	wantClass(t, "Update with a duplicate insert", err, errdefs.ErrConflict)
	check("a write failed")
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Update swallowed fn's panic")
			}
		}()
		_ = m.Update(ctx, func(tx store.Tx) error {
			if err := writes(tx); err != nil {
				return err
			}
			panic("in fn")
		})
	}()
	check("fn panicked")
	// The store is still usable for writes.
	must(t, m.Update(ctx, writes))
	if got := tagOf(t, m, "a", "new"); got != "latest" {
		t.Errorf("after the rolled back attempts, a good Update did not commit (tag %q)", got)
	}
}

func testUpdateIsolated(t *testing.T, m store.Metadata) {
	err := m.Update(ctx, func(tx store.Tx) error {
		if err := tx.InsertImage(ctx, img("pending", "a", 0)); err != nil {
			return err
		}
		if err := tx.AppendEvent(ctx, "o", ev(0, "x")); err != nil {
			return err
		}
		// Reads outside the transaction do not see its writes yet.
		if _, err := m.Image(ctx, "a", "pending"); !errdefs.IsNotFound(err) {
			return fmt.Errorf("an uncommitted image is visible: Image = %v", err)
		}
		if evs, err := m.Events(ctx, "o", -1, 0); err != nil || len(evs) != 0 {
			return fmt.Errorf("an uncommitted event is visible: Events = %v, %v", evs, err)
		}
		return nil
	})
	must(t, err)
	if _, err := m.Image(ctx, "a", "pending"); err != nil {
		t.Errorf("after commit: %v", err)
	}
}

func testUpdatesSerialize(t *testing.T, m store.Metadata) {
	// Each Update reads the last event ID and appends the next: run
	// concurrently, they must neither collide nor leave gaps.
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = m.Update(ctx, func(tx store.Tx) error {
				id, err := tx.LastEventID(ctx, "o")
				if err != nil {
					return err
				}
				return tx.AppendEvent(ctx, "o", ev(id+1, "x"))
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Updates: %v", err)
	}
	evs, err := m.Events(ctx, "o", -1, 0)
	if err != nil || len(evs) != n || evs[n-1].ID != n-1 {
		t.Errorf("Events = %v, %v; want 0..%d", eventIDs(evs), err, n-1)
	}
}

func testAccounts(t *testing.T, m store.Metadata) {
	a, err := m.EnsureAccount(ctx, "id-a", "alice")
	if err != nil || a.ID != "id-a" || a.Name != "alice" || a.CreatedAt.IsZero() {
		t.Fatalf("EnsureAccount = %+v, %v", a, err)
	}
	again, err := m.EnsureAccount(ctx, "id-other", "alice")
	if err != nil || again.ID != "id-a" || !again.CreatedAt.Equal(a.CreatedAt) {
		t.Errorf("EnsureAccount(existing name) = %+v, %v; want the existing account %+v", again, err, a)
	}
	if got, err := m.AccountByName(ctx, "alice"); err != nil || got.ID != "id-a" {
		t.Errorf("AccountByName = %+v, %v", got, err)
	}
	_, err = m.AccountByName(ctx, "bob")
	wantClass(t, "AccountByName(unknown)", err, errdefs.ErrNotFound)
}

func testTokens(t *testing.T, m store.Metadata) {
	_, err := m.EnsureAccount(ctx, "a", "a")
	must(t, err)
	t1 := store.Token{UUID: "t1", Account: "a", Name: "first", CreatedAt: at(0)}
	must(t, m.CreateToken(ctx, t1, "s1"))
	must(t, m.CreateToken(ctx, store.Token{UUID: "t2", Account: "a", Name: "expiring", CreatedAt: at(1), ExpiresAt: time.Now().Add(time.Hour)}, "s2"))
	must(t, m.CreateToken(ctx, store.Token{UUID: "t3", Account: "a", CreatedAt: at(2), ExpiresAt: time.Now().Add(-time.Second)}, "s3"))
	before := time.Now().Add(-time.Second)
	must(t, m.CreateToken(ctx, store.Token{UUID: "t4", Account: "a"}, "s4")) // CreatedAt: now
	got, err := m.TokenBySecret(ctx, "s1")
	if err != nil || got.UUID != "t1" || got.Account != "a" || got.Name != "first" || !got.CreatedAt.Equal(t1.CreatedAt) ||
		!got.ExpiresAt.IsZero() || !got.RevokedAt.IsZero() || got.Parent != "" {
		t.Errorf("TokenBySecret(s1) = %+v, %v; want %+v", got, err, t1)
	}
	if got, err := m.TokenBySecret(ctx, "s2"); err != nil || got.UUID != "t2" {
		t.Errorf("TokenBySecret(not yet expired) = %+v, %v", got, err)
	}
	_, err = m.TokenBySecret(ctx, "s3")
	wantClass(t, "TokenBySecret(expired)", err, errdefs.ErrUnauthorized)
	_, err = m.TokenBySecret(ctx, "nope")
	wantClass(t, "TokenBySecret(unknown)", err, errdefs.ErrUnauthorized)
	if got, err := m.TokenBySecret(ctx, "s4"); err != nil || got.CreatedAt.Before(before) {
		t.Errorf("token created without CreatedAt: %+v, %v; want it created now", got, err)
	}
	err = m.CreateToken(ctx, store.Token{UUID: "t6", Account: "nobody", CreatedAt: at(3)}, "s6")
	wantClass(t, "CreateToken(unknown account)", err, errdefs.ErrNotFound)
	err = m.CreateToken(ctx, store.Token{UUID: "t5", Account: "a", CreatedAt: at(3)}, "s1")
	wantClass(t, "CreateToken(a secret in use)", err, errdefs.ErrConflict)
	err = m.CreateToken(ctx, store.Token{UUID: "t1", Account: "a", CreatedAt: at(3)}, "s5")
	wantClass(t, "CreateToken(a uuid in use)", err, errdefs.ErrConflict)
	list, err := m.ListTokens(ctx, "a")
	var ids []string
	for _, tk := range list {
		ids = append(ids, tk.UUID)
	}
	if err != nil || !slices.Equal(ids, []string{"t1", "t2", "t3", "t4"}) {
		t.Errorf("ListTokens = %v, %v; want [t1 t2 t3 t4], oldest first", ids, err)
	}
	if list, _ := m.ListTokens(ctx, "b"); len(list) != 0 {
		t.Errorf("ListTokens(another account) = %v", list)
	}
	must(t, m.RevokeToken(ctx, "a", "t2"))
	got, err = m.TokenBySecret(ctx, "s2")
	wantClass(t, "TokenBySecret(revoked)", err, errdefs.ErrUnauthorized)
	if got.UUID != "t2" || got.RevokedAt.IsZero() {
		t.Errorf("TokenBySecret(revoked) returned %+v, want the token with RevokedAt set", got)
	}
	err = m.RevokeToken(ctx, "a", "t2")
	wantClass(t, "RevokeToken twice", err, errdefs.ErrNotFound)
	err = m.RevokeToken(ctx, "b", "t1")
	wantClass(t, "RevokeToken(another account's)", err, errdefs.ErrNotFound)
	if _, err := m.TokenBySecret(ctx, "s1"); err != nil {
		t.Errorf("a rejected revocation revoked t1: %v", err)
	}
}

func testTokenRevokeCascades(t *testing.T, m store.Metadata) {
	mk := func(id, account, parent string, exp time.Time) error {
		return m.CreateToken(ctx, store.Token{UUID: id, Account: account, Parent: parent, ExpiresAt: exp, CreatedAt: at(0)}, "secret-of-"+id)
	}
	for _, acct := range []string{"default", "other"} {
		_, err := m.EnsureAccount(ctx, acct, acct)
		must(t, err)
	}
	// root ─┬─ a ── a1 ── a11 (account other)
	//       └─ b
	for _, tk := range []struct{ id, account, parent string }{
		{"root", "default", ""}, {"a", "default", "root"}, {"a1", "default", "a"}, {"a11", "other", "a1"}, {"b", "default", "root"},
	} {
		must(t, mk(tk.id, tk.account, tk.parent, time.Time{}))
	}
	if got, _ := m.TokenBySecret(ctx, "secret-of-a11"); got.Parent != "a1" {
		t.Errorf("Parent of a11 = %q, want a1", got.Parent)
	}
	must(t, mk("expired", "default", "", time.Now().Add(-time.Second)))
	for _, parent := range []string{"missing", "expired"} {
		err := mk("under-"+parent, "default", parent, time.Time{})
		wantClass(t, "CreateToken(under "+parent+")", err, errdefs.ErrUnauthorized)
	}
	must(t, m.RevokeToken(ctx, "default", "a"))
	err := mk("late", "default", "a1", time.Time{})
	wantClass(t, "CreateToken(under a revoked token's child)", err, errdefs.ErrUnauthorized)
	for _, tc := range []struct {
		id      string
		revoked bool
	}{{"root", false}, {"a", true}, {"a1", true}, {"a11", true}, {"b", false}} {
		_, err := m.TokenBySecret(ctx, "secret-of-"+tc.id)
		if got := errors.Is(err, errdefs.ErrUnauthorized); got != tc.revoked {
			t.Errorf("TokenBySecret(%s) = %v, want revoked=%v", tc.id, err, tc.revoked)
		}
	}
}

func testFiles(t *testing.T, m store.Metadata) {
	sha := strings.Repeat("ab", 32)
	f1, err := m.PutFile(ctx, store.File{UUID: "u1", Account: "x", SHA256: sha, Size: 3})
	if err != nil || f1.UUID != "u1" || f1.Size != 3 || f1.SHA256 != sha || f1.CreatedAt.IsZero() {
		t.Fatalf("PutFile = %+v, %v", f1, err)
	}
	f2, err := m.PutFile(ctx, store.File{UUID: "u2", Account: "x", SHA256: sha, Size: 3})
	if err != nil || f2.UUID != "u1" || !f2.CreatedAt.Equal(f1.CreatedAt) || f2.UpdatedAt.Before(f1.UpdatedAt) {
		t.Errorf("PutFile(same content) = %+v, %v; want the first record %+v, updated", f2, err, f1)
	}
	fy, err := m.PutFile(ctx, store.File{UUID: "u3", Account: "y", SHA256: sha, Size: 3})
	if err != nil || fy.UUID != "u3" {
		t.Errorf("PutFile(same content, another account) = %+v, %v; want its own record", fy, err)
	}
	if got, err := m.FileBySHA(ctx, "x", strings.ToUpper(sha)); err != nil || got.UUID != "u1" {
		t.Errorf("FileBySHA(upper case) = %+v, %v", got, err)
	}
	if got, err := m.FileByUUID(ctx, "x", "u1"); err != nil || got.SHA256 != sha {
		t.Errorf("FileByUUID = %+v, %v", got, err)
	}
	_, err = m.FileByUUID(ctx, "x", "u3")
	wantClass(t, "FileByUUID(another account's)", err, errdefs.ErrNotFound)
	_, err = m.FileBySHA(ctx, "x", strings.Repeat("cd", 32))
	wantClass(t, "FileBySHA(unknown)", err, errdefs.ErrNotFound)
	for i := range 3 {
		_, err := m.PutFile(ctx, store.File{UUID: fmt.Sprint("n", i), Account: "x", SHA256: fmt.Sprintf("%064d", i), Size: 1})
		must(t, err)
	}
	all, err := m.ListFiles(ctx, "x", time.Time{}, time.Time{}, 10, 0)
	if err != nil || len(all) != 4 {
		t.Fatalf("ListFiles = %d files, %v; want 4", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].CreatedAt.After(all[i-1].CreatedAt) {
			t.Errorf("ListFiles not newest first: %v then %v", all[i-1].CreatedAt, all[i].CreatedAt)
		}
	}
	if page, err := m.ListFiles(ctx, "x", time.Time{}, time.Time{}, 2, 1); err != nil || len(page) != 2 || page[0].UUID != all[1].UUID {
		t.Errorf("ListFiles(limit 2, offset 1) = %+v, %v; want files 1 and 2 of %+v", page, err, all)
	}
	if got, _ := m.ListFiles(ctx, "x", time.Now().Add(time.Hour), time.Time{}, 10, 0); len(got) != 0 {
		t.Errorf("ListFiles(since later) = %d files, want none", len(got))
	}
}

func testAccountBytes(t *testing.T, m store.Metadata) {
	if n, err := m.AccountBytes(ctx, "x"); err != nil || n != 0 {
		t.Errorf("AccountBytes(empty) = %d, %v", n, err)
	}
	h := store.Image{UUID: "h", Account: "x", Layer: "shared", Depth: 1, LayerBytes: 100, CreatedAt: at(0), Hidden: true, Chain: "sha256:c"}
	a := store.Image{UUID: "a", Account: "x", Base: "h", Layer: "la", Depth: 2, LayerBytes: 10, CreatedAt: at(1)}
	// b shares a's layer (an empty run's result, say): counted once, at its largest size.
	b := store.Image{UUID: "b", Account: "x", Base: "h", Layer: "la", Depth: 2, LayerBytes: 12, CreatedAt: at(2)}
	gone := store.Image{UUID: "gone", Account: "x", Layer: "lg", Depth: 1, LayerBytes: 1000, CreatedAt: at(3)}
	other := store.Image{UUID: "o", Account: "y", Layer: "lo", Depth: 1, LayerBytes: 7, CreatedAt: at(4)}
	insert(t, m, h, a, b, gone, other)
	must(t, m.DeleteImage(ctx, "x", "gone"))
	must(t, m.SetFlat(ctx, "a", "flat1", 30))
	must(t, m.SetFlat(ctx, "b", "flat1", 30)) // one flat layer shared: counted once
	_, err := m.PutFile(ctx, store.File{UUID: "f", Account: "x", SHA256: strings.Repeat("0", 64), Size: 5})
	must(t, err)
	if n, err := m.AccountBytes(ctx, "x"); err != nil || n != 100+12+30+5 {
		t.Errorf("AccountBytes = %d, %v; want %d (shared layer once at its largest, hidden included, deleted not, flat once, files)", n, err, 100+12+30+5)
	}
	if n, err := m.AccountBytes(ctx, "y"); err != nil || n != 7 {
		t.Errorf("AccountBytes(y) = %d, %v; want 7", n, err)
	}
	if got, _ := m.ImageAny(ctx, "a"); got.Flat != "flat1" {
		t.Errorf("Flat after SetFlat = %q", got.Flat)
	}
}

func testOperationStats(t *testing.T, m store.Metadata) {
	for i, st := range []string{"SUCCESS", "SUCCESS", "FAILED", ""} {
		id := fmt.Sprint("o", i)
		must(t, m.InsertOperationLimited(ctx, op(id, "a", i), 10))
		if st != "" {
			must(t, m.FinishOperation(ctx, store.Outcome{Operation: store.Operation{UUID: id, Status: st, FinishedAt: at(10), CPUSeconds: float64(i + 1), Metadata: "{}"}}))
		}
	}
	must(t, m.InsertOperationLimited(ctx, op("b", "b", 0), 10))
	by, cpu, err := m.OperationStats(ctx, "a")
	want := map[string]int64{"SUCCESS": 2, "FAILED": 1, "PENDING": 1}
	if err != nil || len(by) != len(want) || by["SUCCESS"] != 2 || by["FAILED"] != 1 || by["PENDING"] != 1 || cpu != 6 {
		t.Errorf("OperationStats = %v, %v, %v; want %v and 6 CPU seconds", by, cpu, err, want)
	}
	if by, cpu, err := m.OperationStats(ctx, "none"); err != nil || len(by) != 0 || cpu != 0 {
		t.Errorf("OperationStats(no operations) = %v, %v, %v", by, cpu, err)
	}
}

func testClose(t *testing.T, m store.Metadata) {
	_, err := m.EnsureAccount(ctx, "a", "a")
	must(t, err)
	must(t, m.Close())
	if _, err := m.AccountByName(ctx, "a"); err == nil {
		t.Error("AccountByName after Close succeeded")
	}
	if err := m.InsertImage(ctx, img("i", "a", 0)); err == nil {
		t.Error("InsertImage after Close succeeded")
	}
	must(t, m.Close())
}

// testExpireImages: retention's deletion is all or none and never takes a
// tagged image (a tag put on since the caller decided wins).
func testExpireImages(t *testing.T, m store.Metadata) {
	insert(t, m, img("a", "x", 0), img("b", "x", 1), img("c", "x", 2))
	must(t, m.SetTag(ctx, "x", "c", "keep"))
	wantClass(t, "ExpireImages(with a tagged image)", m.ExpireImages(ctx, []string{"a", "c"}), errdefs.ErrConflict)
	if _, err := m.Image(ctx, "x", "a"); err != nil {
		t.Errorf("a failed ExpireImages deleted a: %v", err)
	}
	must(t, m.ExpireImages(ctx, []string{"a", "b"}))
	for _, u := range []string{"a", "b"} {
		if im, err := m.ImageAny(ctx, u); err != nil || !im.Deleted {
			t.Errorf("ImageAny(%s) after ExpireImages = %+v, %v; want deleted", u, im, err)
		}
	}
	wantClass(t, "ExpireImages(deleted)", m.ExpireImages(ctx, []string{"a"}), errdefs.ErrConflict)
	if tagOf(t, m, "x", "c") != "keep" {
		t.Error("the tagged image lost its tag")
	}
}

// testExpireOperations: finished operations older than the bound go with
// their events, in batches; in-flight and recent ones, and excepted
// accounts', stay.
func testExpireOperations(t *testing.T, m store.Metadata) {
	finish := func(id, account string, created, finished int) {
		t.Helper()
		must(t, m.InsertOperationLimited(ctx, op(id, account, created), 100))
		must(t, m.AppendEvent(ctx, id, ev(0, "progress")))
		if finished >= 0 {
			must(t, m.FinishOperation(ctx, store.Outcome{Operation: store.Operation{UUID: id, Status: "SUCCESS", FinishedAt: at(finished), Metadata: "{}"},
				Completion: ev(-1, "completion")}))
		}
	}
	finish("old1", "a", 0, 10)
	finish("old2", "a", 1, 11)
	finish("old3", "b", 2, 12)
	finish("new", "a", 50, 60)
	finish("flying", "a", 3, -1) // in flight: never expired
	bound := store.OperationExpiry{FinishedBefore: at(30)}
	if ops, evs, err := m.ExpiredOperations(ctx, bound); err != nil || ops != 3 || evs != 6 {
		t.Errorf("ExpiredOperations = %d, %d, %v; want 3 operations, 6 events", ops, evs, err)
	}
	except := bound
	except.Except = []string{"b"}
	if ops, _, err := m.ExpiredOperations(ctx, except); err != nil || ops != 2 {
		t.Errorf("ExpiredOperations(except b) = %d, %v; want 2", ops, err)
	}
	one := bound
	one.Account, one.Limit = "a", 1
	var total int64
	for range 5 {
		ops, evs, err := m.DeleteExpiredOperations(ctx, one)
		must(t, err)
		if ops > 1 || evs != 2*ops {
			t.Fatalf("DeleteExpiredOperations(limit 1) = %d operations, %d events", ops, evs)
		}
		total += ops
	}
	if total != 2 {
		t.Errorf("deleted %d of account a's expired operations, want 2", total)
	}
	for _, id := range []string{"old1", "old2"} {
		_, err := m.Operation(ctx, "a", id)
		wantClass(t, "Operation(expired "+id+")", err, errdefs.ErrNotFound)
		if evs, _ := m.Events(ctx, id, -1, 0); len(evs) != 0 {
			t.Errorf("events of expired %s left: %d", id, len(evs))
		}
	}
	for _, id := range []string{"new", "flying"} {
		if _, err := m.Operation(ctx, "a", id); err != nil {
			t.Errorf("Operation(%s) after expiry: %v", id, err)
		}
	}
	if _, err := m.Operation(ctx, "b", "old3"); err != nil {
		t.Errorf("another account's operation expired with account a's: %v", err)
	}
}

// race runs fn(i) for i in [0, n) at once and returns their errors.
func race(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// testFinishOnceConcurrently: of concurrent finishers of one operation,
// each with its own result image, exactly one wins; the others fail with
// FailedPrecondition and leave nothing (no image, no event).
func testFinishOnceConcurrently(t *testing.T, m store.Metadata) {
	const n = 12
	must(t, m.InsertOperationLimited(ctx, op("o", "a", 0), 10))
	errs := race(n, func(i int) error {
		res := img(fmt.Sprint("res", i), "a", i)
		return m.FinishOperation(ctx, store.Outcome{
			Operation:  store.Operation{UUID: "o", Account: "a", Status: "SUCCESS", FinishedAt: at(i), ResultImageUUID: res.UUID, ResultTag: "out", Metadata: "{}"},
			Images:     []store.Image{res},
			Completion: ev(-1, "completion"),
		})
	})
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner < 0:
			winner = i
		case err == nil:
			t.Errorf("finishers %d and %d both succeeded", winner, i)
		default:
			wantClass(t, fmt.Sprintf("finisher %d", i), err, errdefs.ErrFailedPrecondition)
		}
	}
	if winner < 0 {
		t.Fatal("no finisher succeeded")
	}
	o, err := m.Operation(ctx, "a", "o")
	if err != nil || o.ResultImageUUID != fmt.Sprint("res", winner) {
		t.Errorf("Operation = %+v, %v; want the winner's result res%d", o, err, winner)
	}
	ims, _ := m.ListImages(ctx, store.ImageFilter{Account: "a"})
	if !slices.Equal(uuids(ims), []string{fmt.Sprint("res", winner)}) {
		t.Errorf("images after the race = %v, want only the winner's", uuids(ims))
	}
	if evs, _ := m.Events(ctx, "o", -1, 0); len(evs) != 1 {
		t.Errorf("%d completion events, want 1", len(evs))
	}
}

// testFinishAllOrNothing fails each write of a finish in turn (a
// constraint violation in the real database) and checks that nothing of
// the outcome stays; then the whole outcome commits, once.
func testFinishAllOrNothing(t *testing.T, m store.Metadata) {
	insert(t, m, img("existing", "a", 0))
	must(t, m.InsertOperationLimited(ctx, op("o", "a", 0), 10))
	must(t, m.MoveOperation(ctx, "o", "PENDING", "EXECUTING"))
	must(t, m.AppendEvent(ctx, "o", ev(0, "progress")))
	hidden := store.Image{UUID: "hidden", Account: "a", Layer: "l1", Depth: 1, Hidden: true, Chain: "sha256:c1", CreatedAt: at(1)}
	top := store.Image{UUID: "top", Account: "a", Layer: "l2", Base: "hidden", Depth: 2, CreatedAt: at(2)}
	outcome := func() store.Outcome {
		return store.Outcome{
			Operation:  store.Operation{UUID: "o", Account: "a", Status: "SUCCESS", FinishedAt: at(3), ResultImageUUID: "top", ResultTag: "v1", Metadata: "{}"},
			Images:     []store.Image{hidden, top},
			Completion: ev(-1, "completion"),
		}
	}
	for name, spoil := range map[string]func(*store.Outcome){
		"second image": func(o *store.Outcome) { o.Images[1].UUID = "existing" },
		"tag":          func(o *store.Outcome) { o.Operation.ResultImageUUID = "missing" },
		"completion":   func(o *store.Outcome) { o.Completion.ID = 0 },
	} {
		out := outcome()
		spoil(&out)
		if err := m.FinishOperation(ctx, out); err == nil {
			t.Fatalf("%s: FinishOperation succeeded, want the injected failure", name)
		}
		for _, u := range []string{"hidden", "top"} {
			if _, err := m.ImageAny(ctx, u); !errdefs.IsNotFound(err) {
				t.Errorf("%s failed: image %s was written (%v)", name, u, err)
			}
		}
		if o, _ := m.Operation(ctx, "a", "o"); o.Status != "EXECUTING" || o.ResultImageUUID != "" {
			t.Errorf("%s failed: operation %s with result %q, want EXECUTING and none", name, o.Status, o.ResultImageUUID)
		}
		if evs, _ := m.Events(ctx, "o", -1, 0); len(evs) != 1 {
			t.Errorf("%s failed: %d events, want the 1 before", name, len(evs))
		}
	}
	must(t, m.FinishOperation(ctx, outcome()))
	if im, err := m.ImageByTag(ctx, "a", "v1"); err != nil || im.UUID != "top" {
		t.Errorf("after finishing: tag v1 on %q, %v; want top", im.UUID, err)
	}
	if evs, _ := m.Events(ctx, "o", -1, 0); len(evs) != 2 || evs[1].ID != 1 || evs[1].Type != "completion" {
		t.Errorf("events %v, want the completion as id 1", eventIDs(evs))
	}
	// Finished is final: a second outcome writes nothing.
	again := outcome()
	again.Operation.Status, again.Operation.ResultImageUUID, again.Operation.ResultTag = "FAILED", "", ""
	again.Images = []store.Image{img("late", "a", 4)}
	wantClass(t, "second FinishOperation", m.FinishOperation(ctx, again), errdefs.ErrFailedPrecondition)
	if _, err := m.ImageAny(ctx, "late"); !errdefs.IsNotFound(err) {
		t.Errorf("the refused outcome's image was written: %v", err)
	}
	if o, _ := m.Operation(ctx, "a", "o"); o.Status != "SUCCESS" {
		t.Errorf("status %s after a refused second outcome, want SUCCESS", o.Status)
	}
	if evs, _ := m.Events(ctx, "o", -1, 0); len(evs) != 2 {
		t.Errorf("%d events after a refused second outcome, want 2", len(evs))
	}
}

// testMoveOperationConcurrently: a move is a compare-and-set, so of
// concurrent PENDING → ASSIGNED moves exactly one applies.
func testMoveOperationConcurrently(t *testing.T, m store.Metadata) {
	must(t, m.InsertOperationLimited(ctx, op("o", "a", 0), 10))
	ok := 0
	for _, err := range race(12, func(int) error { return m.MoveOperation(ctx, "o", "PENDING", "ASSIGNED") }) {
		if err == nil {
			ok++
		} else {
			wantClass(t, "a losing MoveOperation", err, errdefs.ErrFailedPrecondition)
		}
	}
	if ok != 1 {
		t.Errorf("%d concurrent moves from PENDING applied, want 1", ok)
	}
	if o, _ := m.Operation(ctx, "a", "o"); o.Status != "ASSIGNED" || o.StartedAt.IsZero() {
		t.Errorf("after the moves: %s, started %v", o.Status, o.StartedAt)
	}
}

// testRetagConcurrently: concurrent retags of one tag to different
// images all succeed (each takes the tag from whoever had it), and the tag
// ends on exactly one image.
func testRetagConcurrently(t *testing.T, m store.Metadata) {
	const n = 12
	for i := range n {
		insert(t, m, img(fmt.Sprint("i", i), "a", i))
	}
	for i, err := range race(n, func(i int) error { return m.SetTag(ctx, "a", fmt.Sprint("i", i), "latest") }) {
		if err != nil {
			t.Errorf("SetTag(i%d) = %v, want it to move the tag", i, err)
		}
	}
	ims, err := m.ListImages(ctx, store.ImageFilter{Account: "a", Tagged: true})
	if err != nil || len(ims) != 1 || ims[0].Tag != "latest" {
		t.Errorf("tagged images after the race = %v, %v; want exactly one", uuids(ims), err)
	}
}

// testRevokeWhileCreating: tokens created under a subtree while it is
// being revoked are either refused or revoked with it, never left active.
func testRevokeWhileCreating(t *testing.T, m store.Metadata) {
	_, err := m.EnsureAccount(ctx, "a", "a")
	must(t, err)
	for _, tk := range [][2]string{{"root", ""}, {"mid", "root"}, {"leaf", "mid"}} {
		must(t, m.CreateToken(ctx, store.Token{UUID: tk[0], Account: "a", Parent: tk[1], CreatedAt: at(0)}, "s-"+tk[0]))
	}
	const n = 16
	errs := race(n+1, func(i int) error {
		if i == n {
			return m.RevokeToken(ctx, "a", "mid")
		}
		return m.CreateToken(ctx, store.Token{UUID: fmt.Sprint("c", i), Account: "a", Parent: "leaf", CreatedAt: at(1)}, fmt.Sprint("s-c", i))
	})
	must(t, errs[n])
	for i := range n {
		if errs[i] != nil {
			wantClass(t, fmt.Sprintf("CreateToken(c%d) during the revocation", i), errs[i], errdefs.ErrUnauthorized)
			continue
		}
		_, err := m.TokenBySecret(ctx, fmt.Sprint("s-c", i))
		wantClass(t, fmt.Sprintf("token c%d, created under a revoked subtree", i), err, errdefs.ErrUnauthorized)
	}
}

// testUUIDPrefix: the uuid prefix filter keeps exactly the account's live
// images whose UUID starts with the prefix, on real UUIDs.
func testUUIDPrefix(t *testing.T, m store.Metadata) {
	ids := []string{
		"abcd0000-0000-4000-8000-000000000001", "abcd0000-0000-4000-8000-000000000002", "abce0000-0000-4000-8000-000000000003",
		"abcd0000-0000-4000-8000-000000000004", "abcd0000-0000-4000-8000-000000000005", "abcd0000-0000-4000-8000-000000000006",
	}
	for i, id := range ids {
		im := img(id, "x", i)
		switch i {
		case 3:
			im.Account = "y"
		case 4:
			im.Hidden, im.Chain = true, "sha256:c"
		}
		insert(t, m, im)
	}
	must(t, m.DeleteImage(ctx, "x", ids[5]))
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"abcd", []string{ids[1], ids[0]}},
		{"abc", []string{ids[2], ids[1], ids[0]}},
		{"abce", []string{ids[2]}},
		{ids[0], []string{ids[0]}},
		{"abcf", nil},
		{"abcd%", nil}, // a prefix is text, not a pattern
		{"abcd_", nil},
	} {
		got, err := m.ListImages(ctx, store.ImageFilter{Account: "x", UUIDPrefix: tc.prefix})
		if err != nil || !slices.Equal(uuids(got), tc.want) {
			t.Errorf("ListImages(uuid prefix %q) = %v, %v; want %v", tc.prefix, uuids(got), err, tc.want)
		}
	}
}
