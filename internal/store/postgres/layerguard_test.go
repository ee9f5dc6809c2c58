package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layers"
	"github.com/arborsh/arbor/internal/layers/s3store"
	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
	"github.com/arborsh/arbor/internal/testutil/s3server"
)

// gcNode is one node of a shared bucket and database: its own metadata
// connection, layer cache and snapshotter.
type gcNode struct {
	db      *Store
	st      *s3store.Store
	snap    *layers.Snapshotter
	staging string
	deletes *atomic.Int64 // DELETE requests it sent to S3
}

func newGCNode(t *testing.T, srv *s3server.Server, dsn, url string, ttl time.Duration, grace time.Duration) *gcNode {
	t.Helper()
	db := openDSN(t, dsn)
	home := t.TempDir()
	n := &gcNode{db: db, staging: filepath.Join(home, "tmp"), deletes: new(atomic.Int64)}
	count := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodDelete && !strings.Contains(r.URL.Path, "/.probe-") { // not New's probe
			n.deletes.Add(1)
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	st, err := s3store.New(context.Background(), s3store.Config{URL: url, Endpoint: srv.Endpoint,
		CacheDir: filepath.Join(home, "layer-cache"), Staging: n.staging, HTTPClient: count,
		Guard: db.LayerGuard("", ttl, nil), Grace: grace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n.st, n.snap = st, layers.New(st, n.staging, nil)
	return n
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// put stores a small layer id through n.
func (n *gcNode) put(t *testing.T, id string) {
	t.Helper()
	dir, err := os.MkdirTemp(n.staging, "layer-*")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte(id), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.snap.Put(context.Background(), id, dir); err != nil {
		t.Fatal(err)
	}
}

// collect runs n's collection with no local roots: every layer this node
// knows of no use for is a candidate, as on a node whose engine has not
// seen the other nodes' images.
func (n *gcNode) collect(t *testing.T) []string {
	t.Helper()
	ids, err := n.snap.CollectIDs(context.Background(), func() map[string]bool { return nil })
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

// objects lists the layer objects in the bucket.
func objects(t *testing.T, srv *s3server.Server, bucket string) []string {
	t.Helper()
	out, err := srv.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, o := range out.Contents {
		ids = append(ids, filepath.Base(aws.ToString(o.Key)))
	}
	slices.Sort(ids)
	return ids
}

func sharedSetup(t *testing.T) (*s3server.Server, string, string) {
	srv := s3server.Start(t)
	srv.SetEnv(t)
	bucket := srv.Bucket(t)
	return srv, pgtest.DSN(t), bucket
}

// TestSharedGCKeepsWhatOtherNodesNeed: a node's collection, blind to the
// other node's images and runs, deletes from the shared bucket only the
// layer nobody needs: not one another node's run holds, not one an image
// row names (as its layer or its squashed layer), and not one another
// node is committing (uploaded, its image row not yet written). Once the
// run ends, its layer goes.
func TestSharedGCKeepsWhatOtherNodesNeed(t *testing.T) {
	srv, dsn, bucket := sharedSetup(t)
	url := "s3://" + bucket + "/p"
	a := newGCNode(t, srv, dsn, url, 300*time.Millisecond, 0)
	b := newGCNode(t, srv, dsn, url, 300*time.Millisecond, 0)
	ctx := context.Background()
	for _, id := range []string{"held", "free", "ref", "flat"} {
		a.put(t, id)
	}
	now := time.Now()
	must(t, a.db.InsertImage(ctx, store.Image{UUID: "img-ref", Account: "acc", Layer: "ref", Depth: 1, CreatedAt: now}))
	must(t, a.db.InsertImage(ctx, store.Image{UUID: "img-flat", Account: "acc", Layer: "ref", Depth: 1, CreatedAt: now}))
	must(t, a.db.SetFlat(ctx, "img-flat", "flat", 1))

	// B's run reads "held" (fetching it holds it first).
	_, release, err := b.snap.View(ctx, []string{"held"})
	must(t, err)

	// B commits a layer; while its image row is not written yet, A collects.
	recording, recorded := make(chan struct{}), make(chan struct{})
	commitErr := make(chan error, 1)
	dir, err := os.MkdirTemp(b.staging, "upper-*")
	must(t, err)
	go func() {
		commitErr <- b.snap.Commit(ctx, dir, "new", func() error {
			close(recording)
			<-recorded
			return b.db.InsertImage(ctx, store.Image{UUID: "img-new", Account: "acc", Layer: "new", Depth: 1, CreatedAt: time.Now()})
		})
	}()
	<-recording
	if got := a.collect(t); !slices.Equal(got, []string{"free"}) {
		t.Errorf("collection removed %q, want only [free]", got)
	}
	close(recorded)
	must(t, <-commitErr)
	if got, want := objects(t, srv, bucket), []string{"flat", "held", "new", "ref"}; !slices.Equal(got, want) {
		t.Errorf("objects after the collection: %q, want %q", got, want)
	}

	// The run ends: once B has released its hold, "held" goes; the rest stay.
	release()
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Equal(objects(t, srv, bucket), []string{"flat", "new", "ref"}) {
		if time.Now().After(deadline) {
			t.Fatalf("held layer still stored after its run ended: %q", objects(t, srv, bucket))
		}
		a.collect(t)
		time.Sleep(50 * time.Millisecond) // B releases at its next renewal tick
	}
}

// TestSharedGCHoldOfDeadNodeExpires: a node that stops renewing (it died)
// holds nothing once its holds expire.
func TestSharedGCHoldOfDeadNodeExpires(t *testing.T) {
	srv, dsn, bucket := sharedSetup(t)
	url := "s3://" + bucket
	a := newGCNode(t, srv, dsn, url, time.Minute, 0)
	b := newGCNode(t, srv, dsn, url, 500*time.Millisecond, 0)
	ctx := context.Background()
	a.put(t, "l")
	if _, _, err := b.snap.View(ctx, []string{"l"}); err != nil { // never released
		t.Fatal(err)
	}
	if got := a.collect(t); len(got) != 0 {
		t.Fatalf("collection removed %q held by a live node", got)
	}
	b.st.Close() // B dies: no more renewals
	deadline := time.Now().Add(30 * time.Second)
	for len(objects(t, srv, bucket)) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the dead node's hold never expired")
		}
		a.collect(t)
		time.Sleep(100 * time.Millisecond) // its hold expires by the database's clock
	}
}

// TestSharedGCLostHoldsHeldAgain: holds commit asynchronously, so a crash
// of the database can lose them (deleted here, as the crash would): the
// node's next renewal finds fewer than it made and holds its pins again.
func TestSharedGCLostHoldsHeldAgain(t *testing.T) {
	srv, dsn, bucket := sharedSetup(t)
	url := "s3://" + bucket
	a := newGCNode(t, srv, dsn, url, time.Minute, 0)
	b := newGCNode(t, srv, dsn, url, 400*time.Millisecond, 0)
	ctx := context.Background()
	a.put(t, "l")
	if _, _, err := b.snap.View(ctx, []string{"l"}); err != nil { // never released
		t.Fatal(err)
	}
	holds := func() int {
		t.Helper()
		var n int
		if err := a.db.pool.QueryRow(ctx, `SELECT count(*) FROM layer_holds WHERE layer='l'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if holds() != 1 {
		t.Fatal("the view holds nothing")
	}
	if _, err := a.db.pool.Exec(ctx, `DELETE FROM layer_holds WHERE layer='l'`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for holds() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the node never held its pinned layer again")
		}
		time.Sleep(50 * time.Millisecond) // its renewals run every 100 ms
	}
	if got := a.collect(t); len(got) != 0 {
		t.Errorf("collection removed %q, held again by a live node", got)
	}
}

// TestSharedGCGrace: an object younger than the grace period stays even
// though nothing names or holds it.
func TestSharedGCGrace(t *testing.T) {
	srv, dsn, bucket := sharedSetup(t)
	a := newGCNode(t, srv, dsn, "s3://"+bucket, time.Minute, time.Hour)
	a.put(t, "young")
	if got := a.collect(t); len(got) != 0 {
		t.Fatalf("collection removed %q within the grace period", got)
	}
	if got := objects(t, srv, bucket); !slices.Equal(got, []string{"young"}) {
		t.Fatalf("objects: %q", got)
	}
}

// TestSharedGCConcurrentPasses: two nodes collecting the same bucket at
// once delete each unneeded object exactly once, and neither fails.
func TestSharedGCConcurrentPasses(t *testing.T) {
	srv, dsn, bucket := sharedSetup(t)
	url := "s3://" + bucket
	a := newGCNode(t, srv, dsn, url, time.Minute, 0)
	b := newGCNode(t, srv, dsn, url, time.Minute, 0)
	const n = 40
	for i := range n {
		a.put(t, fmt.Sprintf("l%02d", i))
	}
	var wg sync.WaitGroup
	removed := make([][]string, 2)
	for i, node := range []*gcNode{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids, err := node.snap.CollectIDs(context.Background(), func() map[string]bool { return nil })
			if err != nil {
				t.Error(err)
			}
			removed[i] = ids
		}()
	}
	wg.Wait()
	all := append(slices.Clone(removed[0]), removed[1]...)
	slices.Sort(all)
	if len(all) != n || len(slices.Compact(all)) != n {
		t.Errorf("the two passes removed %d and %d layers (%d distinct), want %d in all, each once", len(removed[0]), len(removed[1]), len(slices.Compact(all)), n)
	}
	if d := a.deletes.Load() + b.deletes.Load(); d != n {
		t.Errorf("%d DELETE requests for %d objects", d, n)
	}
	if got := objects(t, srv, bucket); len(got) != 0 {
		t.Errorf("left in the bucket: %q", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSharedGCStaleCache: a node that still has a layer cached after
// another node collected it (its images were deleted there) can neither
// run on it nor save an image on it: it says the layer was collected,
// instead of recording an image whose chain is gone from the bucket. A run
// that held its chain before the collection keeps it.
func TestSharedGCStaleCache(t *testing.T) {
	srv, dsn, bucket := sharedSetup(t)
	url := "s3://" + bucket
	a := newGCNode(t, srv, dsn, url, time.Minute, 0)
	b := newGCNode(t, srv, dsn, url, time.Minute, 0)
	ctx := context.Background()
	b.put(t, "p") // B made them and keeps them cached; no image row names them
	b.put(t, "q")
	running, err := b.snap.Prepare(ctx, filepath.Join(b.staging, "running"), []string{"q"}) // held from here on
	must(t, err)
	if got := a.collect(t); !slices.Equal(got, []string{"p"}) {
		t.Fatalf("collection removed %q, want [p]", got)
	}
	_, err = b.snap.Prepare(ctx, filepath.Join(b.staging, "run"), []string{"p"})
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "layer p was collected") {
		t.Fatalf("a run on the collected layer: %v, want it refused naming p", err)
	}
	// The run that held q before the collection saves its result.
	must(t, os.WriteFile(filepath.Join(running.Upper, "f"), []byte("x"), 0o644))
	must(t, b.snap.Commit(ctx, running.Upper, "c", func() error { return nil }))
	must(t, b.snap.Remove(running))
}

// TestPurgeKeepsRowsOthersLieOn: a node purging deleted rows it believes
// unneeded keeps those another row (made by another node) lies on, as its
// parent or its base, and still purges a whole unneeded chain at once.
func TestPurgeKeepsRowsOthersLieOn(t *testing.T) {
	s := openDSN(t, pgtest.DSN(t))
	ctx := context.Background()
	now := time.Now()
	im := func(uuid, parent, base string, hidden bool) store.Image {
		return store.Image{UUID: uuid, Account: "a", Parent: parent, Base: base, Hidden: hidden, Chain: map[bool]string{true: "c-" + uuid}[hidden],
			Layer: "l-" + uuid, Depth: 1, CreatedAt: now}
	}
	must(t, s.InsertImages(ctx, im("p", "", "", false), im("child", "p", "", false), // child made on p by another node
		im("q", "", "", false), im("r", "q", "", false), // a deleted chain nothing else needs
		im("h", "", "", true), im("top", "", "h", false))) // an import's hidden layer under a live image
	for _, u := range []string{"p", "q", "r"} {
		must(t, s.DeleteImage(ctx, "a", u))
	}
	must(t, s.PurgeImages(ctx, []string{"p", "q", "r", "h"}))
	for u, kept := range map[string]bool{"p": true, "h": true, "q": false, "r": false, "child": true, "top": true} {
		_, err := s.ImageAny(ctx, u)
		if kept && err != nil || !kept && !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("image %s after the purge: %v (want kept: %v)", u, err, kept)
		}
	}
}

// TestPassLock: one node at a time holds the engine's pass lock; it is
// free again once released.
func TestPassLock(t *testing.T) {
	dsn := pgtest.DSN(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	ctx := context.Background()
	release, ok, err := a.TryPassLock(ctx)
	if err != nil || !ok {
		t.Fatalf("first TryPassLock: %v %v", ok, err)
	}
	if _, ok, err := b.TryPassLock(ctx); err != nil || ok {
		t.Fatalf("TryPassLock while another node holds it: %v %v, want refused", ok, err)
	}
	release()
	release2, ok, err := b.TryPassLock(ctx)
	if err != nil || !ok {
		t.Fatalf("TryPassLock after the release: %v %v", ok, err)
	}
	release2()
}

// TestSharedGCFilesAndDryRun: uploaded contents in the shared bucket go
// under the layers' rules: one a file record names stays, one another node
// holds (an upload between its lookup and its record) stays until
// released, the rest goes; a dry run reports what the pass deletes (for
// layers too: not one an image row names), and counts contents whose
// records the pass deletes first as unnamed.
func TestSharedGCFilesAndDryRun(t *testing.T) {
	srv, dsn, bucket := sharedSetup(t)
	url := "s3://" + bucket + "/p"
	a := newGCNode(t, srv, dsn, url, time.Minute, 0)
	b := newGCNode(t, srv, dsn, url, time.Minute, 0)
	ctx := context.Background()
	shas := map[string]string{}
	for _, name := range []string{"named", "held", "free"} {
		p := filepath.Join(a.staging, name)
		must(t, os.WriteFile(p, []byte(name), 0o644))
		sum := sha256.Sum256([]byte(name))
		shas[name] = hex.EncodeToString(sum[:])
		must(t, a.st.PutFile(ctx, shas[name], p))
	}
	_, err := a.db.PutFile(ctx, store.File{UUID: "f1", Account: "acc", SHA256: shas["named"], Size: 5, UpdatedAt: time.Now()})
	must(t, err)
	release, err := b.st.HoldFile(ctx, shas["held"])
	must(t, err)
	if n, bytes, err := a.st.CollectFiles(ctx, true, nil, false); err != nil || n != 1 || bytes != int64(len("free")) {
		t.Errorf("dry run: %d contents, %d bytes, %v; want only the free one's 4", n, bytes, err)
	}
	if n, _, err := a.st.CollectFiles(ctx, true, []string{shas["named"]}, false); err != nil || n != 2 {
		t.Errorf("dry run with the named content's record going first: %d, %v; want 2", n, err)
	}
	if n, bytes, err := a.st.CollectFiles(ctx, false, nil, false); err != nil || n != 1 || bytes != int64(len("free")) {
		t.Errorf("collection: %d contents, %d bytes, %v; want only the free one's 4", n, bytes, err)
	}
	if got, want := objects(t, srv, bucket), []string{shas["held"], shas["named"]}; !slices.Equal(got, sorted(want)) {
		t.Errorf("objects after the collection: %q, want %q", got, want)
	}
	release()
	if n, _, err := a.st.CollectFiles(ctx, false, nil, false); err != nil || n != 1 {
		t.Errorf("collection after the hold's release: %d, %v; want the held content", n, err)
	}

	// Layers: the dry run leaves out what a row names, as the pass does.
	a.put(t, "l-free")
	a.put(t, "l-named")
	must(t, a.db.InsertImage(ctx, store.Image{UUID: "img", Account: "acc", Layer: "l-named", Depth: 1, CreatedAt: time.Now()}))
	dry, err := a.snap.Unneeded(ctx, func() map[string]bool { return nil })
	must(t, err)
	slices.Sort(dry)
	if got := a.collect(t); !slices.Equal(dry, []string{"l-free"}) || !slices.Equal(got, dry) {
		t.Errorf("dry run %q, collection %q; want both [l-free]", dry, got)
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }
