package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/arborsh/arbor/internal/testutil/s3server"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// s3Bucket starts versitygw with a fresh bucket, points the AWS
// environment at it, and returns a Config change that keeps layers there
// under prefix.
func s3Bucket(t *testing.T, prefix string) (srv *s3server.Server, bucket string, blobs func(*Config)) {
	t.Helper()
	testutil.RequiresRoot(t)
	srv = s3server.Start(t)
	srv.SetEnv(t)
	bucket = srv.Bucket(t)
	return srv, bucket, func(c *Config) { c.Blobs, c.BlobsEndpoint = "s3://"+bucket+"/"+prefix, srv.Endpoint }
}

// TestBlobsSharedBetweenDaemons: a daemon with --blobs keeps its layers in
// the bucket (none under its home's layers/), and a second daemon with the
// first one's metadata but an empty layer cache reads the images' files
// and runs on them, fetching their layers from the bucket.
func TestBlobsSharedBetweenDaemons(t *testing.T) {
	srv, bucket, blobs := s3Bucket(t, "arbor")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	home1 := testutil.Home(t)
	c, stop := runDaemonWith(t, home1, blobs)
	img, err := testdaemon.ImportBusybox(ctx, c, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	// A chain of saved runs; the third deletes what the first wrote (a
	// whiteout in its layer).
	for i, cmd := range []string{"echo 1 > /n1; echo 1 > /log", "echo 2 > /n2; echo 2 >> /log", "rm /n1; echo 3 >> /log",
		"mkdir -p /d/e; echo 4 > /d/e/f; echo 4 >> /log", "echo 5 >> /log"} {
		op, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Command: cmd, Image: img, Shell: ptr(true)})
		if err != nil || op.Status != apitypes.StatusSuccess || op.Result.Image == nil {
			t.Fatalf("run %d (%s): %v %+v", i, cmd, err, op)
		}
		img = *op.Result.Image
	}
	if ents, _ := os.ReadDir(filepath.Join(home1, "layers")); len(ents) != 0 {
		t.Errorf("home/layers holds %d entries with --blobs; layers belong in the bucket", len(ents))
	}
	objs, err := srv.Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("arbor/layers/")})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(objs.Contents); n < 6 {
		t.Errorf("the bucket holds %d layers, want busybox's and one per run (6)", n)
	}
	slices.SortFunc(objs.Contents, func(a, b types.Object) int { return a.LastModified.Compare(*b.LastModified) })
	for _, o := range objs.Contents {
		t.Logf("layer object %s: %d bytes", strings.TrimPrefix(*o.Key, "arbor/layers/"), *o.Size) // BENCHMARKS.md: bytes per step
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// The second daemon: the same metadata, nothing of the layers.
	home2 := testutil.Home(t)
	for _, f := range []string{"arbor.db", "arbor.db-wal", "arbor.db-shm", "token"} {
		if err := copyFile(filepath.Join(home1, f), filepath.Join(home2, f)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	c, _ = runDaemonWith(t, home2, blobs)
	for path, want := range map[string]string{"/n2": "2\n", "/d/e/f": "4\n", "/log": "1\n2\n3\n4\n5\n"} {
		if got, err := c.ReadFile(ctx, img, path); err != nil || string(got) != want {
			t.Errorf("second daemon reads %s = %q, %v; want %q", path, got, err, want)
		}
	}
	if ok, err := c.FileExistsIn(ctx, img, "/n1"); err != nil || ok {
		t.Errorf("/n1, deleted by the third run, exists = %v, %v", ok, err)
	}
	op, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Command: `test "$(cat /log /n2 /d/e/f)" = "$(printf '1\n2\n3\n4\n5\n2\n4')" && ! test -e /n1 && echo 6 >> /log`,
		Image: img, Shell: ptr(true)})
	if err != nil || op.Status != apitypes.StatusSuccess {
		t.Fatalf("run on the second daemon: %v %+v", err, op)
	}
	if got, err := c.ReadFile(ctx, *op.Result.Image, "/log"); err != nil || !strings.HasSuffix(string(got), "5\n6\n") {
		t.Errorf("the second daemon's run saved /log = %q, %v", got, err)
	}
	cached, _ := os.ReadDir(filepath.Join(home2, "layer-cache"))
	if len(cached) < 6 { // the chain's 6 layers (fetched) and the new run's (.trash aside)
		t.Errorf("the second daemon's layer cache holds %d entries, want the fetched chain and the new layer", len(cached))
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// TestMeasureStepLatency compares a saved step's latency (spawn to result
// image, runc) with layers in local directories and in S3 (versitygw on
// loopback), alternating so that both see the same machine load.
//
//	ARBOR_MEASURE=1 go test -count=1 -v -run TestMeasureStepLatency ./internal/daemon/
func TestMeasureStepLatency(t *testing.T) {
	if os.Getenv("ARBOR_MEASURE") == "" {
		t.Skip("a measurement: set ARBOR_MEASURE=1")
	}
	_, _, blobs := s3Bucket(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	local, _ := runDaemonWith(t, testutil.Home(t), nil)
	remote, _ := runDaemonWith(t, testutil.Home(t), blobs)
	imgs := make([]string, 2)
	var err error
	for i, c := range []*client.Client{local, remote} {
		if imgs[i], err = testdaemon.ImportBusybox(ctx, c, "busybox"); err != nil {
			t.Fatal(err)
		}
	}
	const steps = 30
	times := [2][]time.Duration{}
	for i := range steps {
		for j, c := range []*client.Client{local, remote} {
			start := time.Now()
			op, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Command: fmt.Sprintf("echo %d >> /log", i), Image: imgs[j], Shell: ptr(true)})
			if err != nil || op.Status != apitypes.StatusSuccess || op.Result.Image == nil {
				t.Fatalf("step %d: %v %+v", i, err, op)
			}
			times[j] = append(times[j], time.Since(start))
			imgs[j] = *op.Result.Image
		}
	}
	for j, name := range []string{"local directories", "S3 (versitygw, loopback)"} {
		slices.Sort(times[j])
		t.Logf("%s: %d saved steps, median %v, p90 %v", name, steps, times[j][steps/2].Round(100*time.Microsecond), times[j][steps*9/10].Round(100*time.Microsecond))
	}
}

// TestBlobsUnavailable: with S3 down, a saved run fails clearly and makes
// no image; once S3 is back, runs save again.
func TestBlobsUnavailable(t *testing.T) {
	srv, _, blobs := s3Bucket(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Past its retries (a second here; see TestBlobsBriefOutage).
	c, _ := runDaemonWith(t, testutil.Home(t), func(cfg *Config) { blobs(cfg); cfg.BlobsRetryFor = time.Second })
	base, err := testdaemon.ImportBusybox(ctx, c, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	op, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Command: "echo x > /x", Image: base, Shell: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != apitypes.StatusFailed || op.Error == nil || !strings.Contains(*op.Error, "S3 is unavailable") || op.Result.Image != nil {
		t.Fatalf("run with S3 down: %s, error %v, image %v; want FAILED naming S3 and no image", op.Status, derefOr(op.Error), op.Result.Image)
	}
	t.Logf("the failed run says: %s", *op.Error)
	srv.Restart(t)
	op, err = c.Run(ctx, apitypes.InstanceSpawnRequest{Command: "echo y > /y", Image: base, Shell: ptr(true)})
	if err != nil || op.Status != apitypes.StatusSuccess || op.Result.Image == nil {
		t.Fatalf("run after S3 is back: %v %+v", err, op)
	}
	if got, err := c.ReadFile(ctx, *op.Result.Image, "/y"); err != nil || string(got) != "y\n" {
		t.Errorf("/y = %q, %v", got, err)
	}
}

func derefOr(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}
