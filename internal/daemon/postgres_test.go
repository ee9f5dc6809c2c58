package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/engine"
	"github.com/arborsh/arbor/internal/store"
	"github.com/arborsh/arbor/internal/store/postgres"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/arborsh/arbor/internal/testutil/pgtest"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// TestMain stops the PostgreSQL cluster of the --db tests (pgtest) after
// the daemons (testdaemon).
func TestMain(m *testing.M) {
	code := testdaemon.Main(m)
	pgtest.Stop()
	os.Exit(code)
}

// TestServeOnPostgres runs the product's daemon with --db on a fresh
// PostgreSQL database, the engine unchanged: an import through the API
// (hidden chain rows), a run that commits, a run on its result, the
// operations' list and event logs, a tag and the image list all work as
// on SQLite. A second node on the same database is refused.
func TestServeOnPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	d := testdaemon.New(t, testdaemon.Options{Busybox: "busybox",
		Serve: func(ctx context.Context, home string, cfg engine.Config, ready func(string)) error {
			return Run(ctx, Config{Home: home, Listen: "127.0.0.1:0", Engine: cfg, Logger: slog.New(slog.DiscardHandler), Ready: ready, DB: dsn})
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := d.Client
	sh := true
	first, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Image: d.Busybox, Command: "echo one > /f", Shell: &sh})
	if err != nil || first.Status != apitypes.StatusSuccess {
		t.Fatalf("first run: %+v, %v", first, err)
	}
	if first.ResultImageUUID == nil {
		t.Fatalf("first run saved no image: %+v", first.OperationSummary)
	}
	img := *first.ResultImageUUID
	if _, err := c.SetTag(ctx, img, "step1"); err != nil {
		t.Fatal(err)
	}
	second, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Image: "tag:step1", Command: "cat /f; echo two >> /f", Shell: &sh})
	if err != nil || second.Status != apitypes.StatusSuccess {
		t.Fatalf("run on the result: %+v, %v", second, err)
	}
	var out apitypes.InstanceMetadata
	if err := json.Unmarshal(second.Metadata, &out); err != nil || out.Result == nil {
		t.Fatalf("second run's result: %s (%v)", second.Metadata, err)
	}
	if b, _ := out.Result.Stdout.Bytes(); string(b) != "one\n" {
		t.Errorf("stdout of the run on the committed image = %q, want %q", b, "one\n")
	}
	if second.ResultImageUUID == nil {
		t.Fatalf("second run saved no image: %+v", second.OperationSummary)
	}
	if got, err := c.ReadFile(ctx, *second.ResultImageUUID, "/f"); err != nil || string(got) != "one\ntwo\n" {
		t.Errorf("/f of the second result = %q, %v", got, err)
	}
	ops, err := c.ListOperations(ctx, client.OperationListOptions{})
	if err != nil || len(ops) != 3 { // the busybox import and the two runs
		t.Errorf("ListOperations = %d, %v; want 3", len(ops), err)
	}
	var types []string
	err = c.FollowEvents(ctx, second.UUID, -1, func(ev apitypes.OperationEvent) error {
		types = append(types, string(ev.Type))
		return nil
	})
	if err != nil || len(types) == 0 || types[len(types)-1] != apitypes.EventCompletion {
		t.Errorf("events of the second run = %v, %v; want a log ending in its completion", types, err)
	}
	ims, err := c.ListImages(ctx, client.ImageListOptions{Tagged: true})
	if err != nil || len(ims) != 2 { // busybox and step1
		t.Errorf("tagged images = %d, %v; want 2", len(ims), err)
	}

	// The rows are PostgreSQL's, and the home has no SQLite database.
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	all, err := st.AllImages(ctx)
	if err != nil || !slices.ContainsFunc(all, func(im store.Image) bool { return im.Tag == "step1" && im.UUID == img }) {
		t.Errorf("PostgreSQL's images (%d, %v) lack the image tagged step1", len(all), err)
	}
	if _, err := os.Stat(filepath.Join(d.Home, "arbor.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the home has a SQLite database: %v", err)
	}

	// One node per database: a second one stops at once, saying why.
	testutil.RequiresRoot(t)
	err = Run(ctx, Config{Home: testutil.Home(t), Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), DB: dsn,
		Engine: engine.Config{Runtime: "runc"}})
	if err == nil || !strings.Contains(err.Error(), "another arbor node serves this database") {
		t.Errorf("a second node on the database: %v, want it refused", err)
	}
	err = Run(ctx, Config{Home: testutil.Home(t), Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), DB: "mysql://x"})
	if err == nil || !strings.Contains(err.Error(), "want a postgres://") {
		t.Errorf("--db mysql://x: %v, want a clear refusal", err)
	}
}
