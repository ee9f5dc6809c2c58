package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/jonboulle/clockwork"
)

// retentionEngine is a runc engine with one slot on a fake clock.
func retentionEngine(t *testing.T, fc *clockwork.FakeClock, r Retention, interval time.Duration) *Engine {
	t.Helper()
	testutil.RequiresRoot(t)
	e, err := New(context.Background(), Config{Home: testutil.Home(t), Runtime: "runc", InitBinary: staticInit(t), WarmPerImage: -1, Slots: 1,
		Clock: fc, Retention: r, GCInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// step makes a child of parent holding /name with a few KiB.
func step(t *testing.T, e *Engine, parent, name string) string {
	t.Helper()
	id, err := e.NewImage(context.Background(), acct, parent, func(dir string) error {
		return os.WriteFile(filepath.Join(dir, name), []byte(fmt.Sprintf("%s %0*d\n", name, 4096, 0)), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// gcBoth runs a dry GC and then a real one and checks that the dry run
// reported exactly what the real one removed, on disk too.
func gcBoth(t *testing.T, e *Engine) GCReport {
	t.Helper()
	ctx := context.Background()
	layersDir := filepath.Join(e.Home(), "layers")
	dry, err := e.GC(ctx, GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	before := listDir(t, layersDir)
	real, err := e.GC(ctx, GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := listDir(t, layersDir)
	if !dry.DryRun || real.DryRun {
		t.Fatalf("DryRun flags: dry %v, real %v", dry.DryRun, real.DryRun)
	}
	dry.DryRun = true
	real.DryRun = true
	if !slices.Equal(dry.Images, real.Images) || dry.Layers != real.Layers || dry.Bytes != real.Bytes || dry.ImageRows != real.ImageRows ||
		dry.Operations != real.Operations || dry.Events != real.Events {
		t.Fatalf("dry run reported %d images, %d layers, %d bytes, %d rows, %d operations, %d events;\nthe real pass removed %d, %d, %d, %d, %d, %d",
			len(dry.Images), dry.Layers, dry.Bytes, dry.ImageRows, dry.Operations, dry.Events,
			len(real.Images), real.Layers, real.Bytes, real.ImageRows, real.Operations, real.Events)
	}
	if gone := len(before) - len(after); gone != real.Layers {
		t.Fatalf("GC reported %d layers removed, %d left the disk", real.Layers, gone)
	}
	return real
}

// TestRetentionWeek: a week of agent work on a fake clock (tasks of
// chained and branched steps from tagged bases, one in three tagging its
// winner) under a 1-day image TTL, collected every 6 hours. The layers on
// disk stay exactly those of tagged images, their ancestors and the last
// day's work, so disk stays bounded; no tagged image or ancestor ever
// loses a file; an old untagged image that a run queued behind a full slot
// needs survives collections until the run has used it. Every dry run
// reports exactly what the real pass then removes.
func TestRetentionWeek(t *testing.T) {
	ctx := context.Background()
	fc := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC))
	const ttl = 24 * time.Hour
	e := retentionEngine(t, fc, Retention{ImageTTL: ttl, OperationTTL: 2 * ttl}, -1)
	base := busybox(t, e)
	if _, err := e.SetTag(ctx, acct, base, "base"); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	files := map[string]string{} // image → the file its step wrote
	tagged := []string{base}
	type task struct{ steps []string }
	const nTasks = 10
	tasks := make([]*task, nTasks)
	newTask := func() *task { return &task{steps: []string{tagged[rng.IntN(len(tagged))]}} }
	for i := range tasks {
		tasks[i] = newTask()
	}
	var made, maxLayers int
	var pending struct {
		image, blocker, run string
	}
	for hour := 1; hour <= 7*24; hour++ {
		fc.Advance(time.Hour)
		for i, tk := range tasks {
			parent := tk.steps[len(tk.steps)-1]
			if len(tk.steps) > 2 && rng.IntN(4) == 0 {
				parent = tk.steps[1+rng.IntN(len(tk.steps)-1)] // branch from an earlier step
			}
			name := fmt.Sprintf("h%d-t%d", hour, i)
			id := step(t, e, parent, name)
			files[id] = name
			tk.steps = append(tk.steps, id)
			made++
			if len(tk.steps) > 8 { // the task ends; one in three keeps its winner
				if rng.IntN(3) == 0 {
					if _, err := e.SetTag(ctx, acct, id, "win-"+name); err != nil {
						t.Fatal(err)
					}
					tagged = append(tagged, id)
				}
				tasks[i] = newTask()
			}
		}
		if hour == 30 {
			// An image from the first hours (past the TTL soon) gets a run
			// queued behind the only slot, which a blocker holds.
			for im := range files {
				if mustImage(t, e, im).CreatedAt.Before(fc.Now().Add(-20*time.Hour)) && !isAncestorOfAny(t, e, im, tagged) {
					pending.image = im
					break
				}
			}
			if pending.image == "" {
				t.Fatal("no old untagged image to queue a run on")
			}
			var err error
			if pending.blocker, _, err = e.Spawn(ctx, acct, SpawnRequest{Image: base, Command: "cat", Disposable: ptr(true),
				Stdin: &Stdin{Close: ptr(false)}}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.runningOp(ctx, acct, pending.blocker); err != nil {
				t.Fatal(err)
			}
			if pending.run, _, err = e.Spawn(ctx, acct, SpawnRequest{Image: pending.image, Command: "cat /" + files[pending.image] + " > /seen",
				Shell: ptr(true)}); err != nil {
				t.Fatal(err)
			}
		}
		if hour%6 != 0 {
			continue
		}
		gcBoth(t, e)
		if pending.run != "" {
			if o, _ := e.Operation(ctx, acct, pending.run); o.Status != apitypes.StatusPending {
				t.Fatalf("the queued run is %s, want PENDING behind the blocker", o.Status)
			}
			if s, err := readFile(t, e, pending.image, "/"+files[pending.image]); err != nil || s == "" {
				t.Fatalf("hour %d: the image a queued run needs lost its file: %q, %v", hour, s, err)
			}
			if hour == 60 { // long past the TTL: the run gets its slot
				if err := e.WriteStdin(ctx, acct, pending.blocker, 1, Stdin{Close: ptr(true)}); err != nil {
					t.Fatal(err)
				}
				o := waitOp(t, e, pending.run)
				if o.Status != apitypes.StatusSuccess {
					t.Fatalf("queued run on an image past its TTL: %s (%s)", o.Status, o.Error)
				}
				if l := e.leaseOf(pending.run); l != nil {
					<-l.done
				}
				pending.run = ""
			}
		}
		checkRetained(t, e, fc.Now(), ttl, ttl+6*time.Hour, tagged, files)
		n := len(listDir(t, filepath.Join(e.Home(), "layers")))
		if hour > 48 {
			maxLayers = max(maxLayers, n)
		}
	}
	// Bounded: a day and a GC interval of work (each task's step of the
	// last 30 hours) plus the tagged winners' chains, not a week's.
	bound := nTasks*30 + 9*len(tagged) + 1
	t.Logf("made %d images in a week; at most %d layers on disk after day 2 (bound %d, %d tagged)", made, maxLayers, bound, len(tagged))
	if maxLayers > bound || maxLayers >= made/2 {
		t.Errorf("%d layers on disk after day 2, want at most %d (of %d images made)", maxLayers, bound, made)
	}
}

func isAncestorOfAny(t *testing.T, e *Engine, im string, of []string) bool {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, u := range of {
		for cur := u; cur != ""; cur = e.images[cur].parent {
			if cur == im {
				return true
			}
		}
	}
	return false
}

// checkRetained checks that every tagged image and its ancestors still
// read their files; that every image tagged, younger than ttl or leased,
// and every ancestor of one, is still live; and that every image kept is
// one a kept image needs: tagged, younger than maxAge, or an ancestor of
// one.
func checkRetained(t *testing.T, e *Engine, now time.Time, ttl, maxAge time.Duration, tagged []string, files map[string]string) {
	t.Helper()
	ctx := context.Background()
	for _, u := range tagged {
		e.mu.Lock()
		var chain []string
		for cur := u; cur != ""; cur = e.images[cur].parent {
			chain = append(chain, cur)
		}
		e.mu.Unlock()
		for _, c := range chain {
			if name, ok := files[c]; ok {
				if s, err := readFile(t, e, u, "/"+name); err != nil || s == "" {
					t.Fatalf("tagged image %s lost /%s of its ancestor %s: %q, %v", u, name, c, s, err)
				}
			}
		}
		if _, err := e.Image(ctx, acct, u); err != nil {
			t.Fatalf("tagged image %s: %v", u, err)
		}
	}
	// Every live image is tagged, young, or an ancestor of one of those.
	e.mu.Lock()
	defer e.mu.Unlock()
	keep := map[string]bool{}
	for u, n := range e.images {
		if n.deleted || n.hidden {
			continue
		}
		im, err := e.st.Image(ctx, acct, u)
		if err != nil {
			t.Fatal(err)
		}
		if im.Tag != "" || now.Sub(im.CreatedAt) < ttl || e.leased[u] > 0 {
			for cur := n.parent; cur != ""; cur = e.images[cur].parent {
				if m := e.images[cur]; m.deleted && !m.hidden {
					t.Fatalf("image %s was deleted although %s (tagged %q, %v old) descends from it", cur, u, im.Tag, now.Sub(im.CreatedAt))
				}
			}
		}
		if im.Tag != "" || now.Sub(im.CreatedAt) < maxAge || e.leased[u] > 0 {
			for cur := u; cur != ""; cur = e.images[cur].parent {
				keep[cur] = true
			}
		}
	}
	for u, n := range e.images {
		if !keep[u] {
			im, _ := e.st.ImageAny(ctx, u)
			t.Fatalf("image %s (deleted %v, created %v ago, tag %q, leased %d) is kept although nothing kept needs it", u, n.deleted, now.Sub(im.CreatedAt), im.Tag, e.leased[u])
		}
	}
}

// TestRetentionKeepsTaggedAndRacingTags: an image tagged after a pass
// decided, while its batch is being written, is not deleted (the batch is
// all or none), and a tagged image's untagged ancestors stay.
func TestRetentionKeepsTaggedAndRacingTags(t *testing.T) {
	ctx := context.Background()
	fc := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC))
	e := retentionEngine(t, fc, Retention{ImageTTL: time.Hour}, -1)
	base := busybox(t, e)
	a := step(t, e, base, "a")
	b := step(t, e, a, "b")
	c := step(t, e, b, "c")
	if _, err := e.SetTag(ctx, acct, b, "keep"); err != nil {
		t.Fatal(err)
	}
	fc.Advance(2 * time.Hour)
	rep, err := e.GC(ctx, GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Images) != 1 || rep.Images[0].UUID != c {
		t.Fatalf("dry run would expire %v, want only c (%s): base and a are b's ancestors, b is tagged", rep.Images, c)
	}
	// c gets a tag between the decision and the write: the store refuses.
	decided := false
	testHookExpireDecided = func() {
		decided = true
		if _, err := e.SetTag(ctx, acct, c, "late"); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { testHookExpireDecided = nil })
	rep, err = e.GC(ctx, GCOptions{})
	if err != nil || !decided {
		t.Fatalf("GC: %v (hook ran: %v)", err, decided)
	}
	for _, u := range []string{base, a, b, c} {
		if _, err := e.Image(ctx, acct, u); err != nil {
			t.Errorf("image %s after GC: %v", u, err)
		}
	}
	if len(rep.Images) != 0 {
		t.Errorf("GC expired %v, want nothing (all tagged or ancestors of a tagged image)", rep.Images)
	}
	// The store itself never expires a tagged image, whatever the caller decided.
	if err := e.st.ExpireImages(ctx, []string{c}); !errdefs.IsConflict(err) {
		t.Errorf("ExpireImages(tagged) = %v, want a conflict", err)
	}
}

// TestRetentionOperationLogs: finished operations older than the
// operation TTL go with their event logs; recent ones stay.
func TestRetentionOperationLogs(t *testing.T) {
	ctx := context.Background()
	fc := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC))
	e := retentionEngine(t, fc, Retention{OperationTTL: 48 * time.Hour}, -1)
	base := busybox(t, e)
	old, _ := run(t, e, base, "echo old", disposable)
	fc.Advance(72 * time.Hour)
	recent, _ := run(t, e, base, "echo recent", disposable)
	fc.Advance(time.Hour)
	rep := gcBoth(t, e)
	if rep.Operations != 1 || rep.Events == 0 {
		t.Fatalf("GC deleted %d operations, %d events; want the old one with its log", rep.Operations, rep.Events)
	}
	if _, err := e.Operation(ctx, acct, old.UUID); !errdefs.IsNotFound(err) {
		t.Errorf("old operation after GC: %v, want not found", err)
	}
	if evs, err := e.st.Events(ctx, old.UUID, -1, 0); err != nil || len(evs) != 0 {
		t.Errorf("old operation's events after GC: %d, %v; want none", len(evs), err)
	}
	if o, err := e.Operation(ctx, acct, recent.UUID); err != nil || o.Status != apitypes.StatusSuccess {
		t.Errorf("recent operation after GC: %+v, %v", o, err)
	}
	if evs, _ := e.st.Events(ctx, recent.UUID, -1, 0); len(evs) == 0 {
		t.Error("recent operation lost its events")
	}
}

// TestRetentionRunsInBackground: the engine applies retention every
// GCInterval of its clock, on its own.
func TestRetentionRunsInBackground(t *testing.T) {
	ctx := context.Background()
	fc := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC))
	passes := make(chan GCReport, 4)
	testHookRetentionPass = func(r GCReport, err error) {
		if err != nil {
			t.Error(err)
		}
		passes <- r
	}
	t.Cleanup(func() { testHookRetentionPass = nil })
	e := retentionEngine(t, fc, Retention{ImageTTL: time.Hour}, time.Hour)
	base := busybox(t, e)
	if _, err := e.SetTag(ctx, acct, base, "base"); err != nil {
		t.Fatal(err)
	}
	old := step(t, e, base, "old")
	if err := fc.BlockUntilContext(ctx, 1); err != nil { // the retention ticker
		t.Fatal(err)
	}
	fc.Advance(90 * time.Minute)
	r := <-passes
	if len(r.Images) != 1 || r.Images[0].UUID != old || r.Layers != 1 {
		t.Fatalf("background pass: %+v, want the old image %s and its layer", r, old)
	}
	if _, err := e.Image(ctx, acct, old); !errdefs.IsNotFound(err) {
		t.Errorf("expired image still visible: %v", err)
	}
	if _, err := os.Stat(e.layerPath(mustImage(t, e, base).Layer)); err != nil {
		t.Errorf("base layer: %v", err)
	}
}

// TestDiskUsage: an account's disk is its images' layers, each once; a
// layer two accounts import is shared and split between them, so the
// accounts' attributed bytes add up to the store's.
func TestDiskUsage(t *testing.T) {
	ctx := context.Background()
	fc := clockwork.NewFakeClockAt(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC))
	e := retentionEngine(t, fc, Retention{}, -1)
	d := "sha256:" + fmt.Sprintf("%064x", 7)
	layer := ImportLayer{DiffID: d, ChainID: d, Fill: func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "shared"), make([]byte, 64<<10), 0o644)
	}}
	var imported []string
	for _, a := range []string{"alice", "bob"} {
		id, _, err := e.NewLayeredImage(ctx, a, []ImportLayer{layer})
		if err != nil {
			t.Fatal(err)
		}
		imported = append(imported, id)
	}
	own, err := e.NewImage(ctx, "alice", imported[0], func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "own"), make([]byte, 16<<10), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.SetTag(ctx, "alice", own, "mine"); err != nil {
		t.Fatal(err)
	}
	rep, err := e.DiskUsage(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	sharedB := mustRow(t, e, imported[0]).LayerBytes
	ownB := mustRow(t, e, own).LayerBytes
	if rep.Layers != 2 || rep.Bytes != sharedB+ownB {
		t.Errorf("store: %d layers, %d bytes; want 2 layers, %d bytes", rep.Layers, rep.Bytes, sharedB+ownB)
	}
	if len(rep.Accounts) != 2 {
		t.Fatalf("accounts: %+v", rep.Accounts)
	}
	alice, bob := rep.Accounts[0], rep.Accounts[1]
	if alice.Images != 2 || alice.TaggedImages != 1 || alice.Layers != 2 || alice.DiskBytes != sharedB+ownB || alice.SharedBytes != sharedB ||
		alice.AttributedBytes != sharedB/2+ownB || alice.QuotaBytes != sharedB+ownB {
		t.Errorf("alice: %+v (shared layer %d, own %d)", alice, sharedB, ownB)
	}
	if bob.Images != 1 || bob.DiskBytes != sharedB || bob.AttributedBytes != sharedB/2 {
		t.Errorf("bob: %+v", bob)
	}
	if got := alice.AttributedBytes + bob.AttributedBytes; got != rep.Bytes {
		t.Errorf("attributed bytes add up to %d, the store holds %d", got, rep.Bytes)
	}
	one, err := e.DiskUsage(ctx, "bob")
	if err != nil || len(one.Accounts) != 1 || one.Accounts[0] != bob {
		t.Errorf("DiskUsage(bob) = %+v, %v", one.Accounts, err)
	}
}

func mustRow(t *testing.T, e *Engine, u string) store.Image {
	t.Helper()
	im, err := e.st.ImageAny(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// TestParseRetentionForms: a retention TTL takes every form the CLI's
// other duration flags take (plain seconds too, alone or after ACCOUNT:),
// and bad input is an invalid argument naming the flag, the value and the
// forms to use.
func TestParseRetentionForms(t *testing.T) {
	const day = 24 * time.Hour
	for _, tc := range []struct {
		in      string
		def     time.Duration // the default's ImageTTL
		account string        // when set, the account's ImageTTL is want
		want    time.Duration
		err     string // part of the error, "" for none
	}{
		{in: "3600", def: time.Hour},
		{in: " 86400 ", def: day},
		{in: "1.5", def: 1500 * time.Millisecond},
		{in: "acct:86400", account: "acct", want: day},
		{in: "team:a:3600", account: "team:a", want: time.Hour},
		{in: "72h", def: 72 * time.Hour},
		{in: "30d", def: 30 * day},
		{in: "1.5d", def: 36 * time.Hour},
		{in: "2w", def: 14 * day},
		{in: "acct:2w", account: "acct", want: 14 * day},
		{in: "0", def: -1},
		{in: "0s", def: -1},
		{in: "off", def: -1},
		{in: "NEVER", def: -1},
		{in: "acct:0", account: "acct", want: -1},
		{in: "soon", err: `--image-ttl "soon": not a duration: use seconds (86400), a duration such as 72h, 30d or 2w, or off`},
		{in: "", err: "not a duration"},
		{in: "3600x", err: "not a duration"},
		{in: "xd", err: "not a duration"},
		{in: "acct:", err: `--image-ttl "acct:": not a duration`},
		{in: ":3600", err: "the account before ':' is empty"},
		{in: "-3600", err: `--image-ttl "-3600": negative TTL: use seconds`},
		{in: "acct:-2d", err: "negative TTL"},
		{in: "-1h", err: "negative TTL"},
		{in: "1e300", err: "out of range"},
	} {
		def, per, err := ParseRetention([]string{tc.in}, nil, nil)
		if tc.err != "" {
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseRetention(%q) = %v, want an invalid argument containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRetention(%q) = %v", tc.in, err)
			continue
		}
		if def.ImageTTL != tc.def {
			t.Errorf("ParseRetention(%q): default ImageTTL = %v, want %v", tc.in, def.ImageTTL, tc.def)
		}
		if tc.account != "" && per[tc.account].ImageTTL != tc.want {
			t.Errorf("ParseRetention(%q): %s's ImageTTL = %v, want %v", tc.in, tc.account, per[tc.account].ImageTTL, tc.want)
		}
	}
	// The siblings share the parser.
	def, _, err := ParseRetention(nil, []string{"7200"}, []string{"604800"})
	if err != nil || def.OperationTTL != 2*time.Hour || def.UploadTTL != 7*day {
		t.Errorf("ParseRetention(operation 7200, upload 604800) = %+v, %v; want 2h and 168h", def, err)
	}
	if d, err := ParseCheckpointTTL("3600"); err != nil || d != time.Hour {
		t.Errorf("ParseCheckpointTTL(3600) = %v, %v; want 1h", d, err)
	}
}

func TestParseRetention(t *testing.T) {
	def, per, err := ParseRetention([]string{"7d", "alice:12h", "bob:off"}, []string{"2w", "alice:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if def != (Retention{ImageTTL: 7 * 24 * time.Hour, OperationTTL: 14 * 24 * time.Hour}) {
		t.Errorf("default = %+v", def)
	}
	if per["alice"] != (Retention{ImageTTL: 12 * time.Hour, OperationTTL: -1}) || per["bob"] != (Retention{ImageTTL: -1}) {
		t.Errorf("per account = %+v", per)
	}
	for _, bad := range [][]string{{"soon"}, {":3h"}, {"alice:-2d"}} {
		if _, _, err := ParseRetention(bad, nil, nil); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseRetention(%q) = %v, want invalid argument", bad, err)
		}
	}
	// An account's off beats the default; a zero field takes it.
	e := &Engine{cfg: Config{Retention: def, AccountRetention: per}}
	if r := e.RetentionOf("alice"); r.ImageTTL != 12*time.Hour || r.OperationTTL != -1 {
		t.Errorf("RetentionOf(alice) = %+v", r)
	}
	if r := e.RetentionOf("bob"); r.ImageTTL != -1 || r.OperationTTL != 14*24*time.Hour {
		t.Errorf("RetentionOf(bob) = %+v", r)
	}
}
