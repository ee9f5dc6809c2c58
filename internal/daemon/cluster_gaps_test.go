package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/testutil"
	"github.com/arborsh/arbor/internal/testutil/testdaemon"
)

// TestClusterQueuedImagePurged: a run queued on an image keeps it by
// UUID until a worker claims and ends it, even when the image is deleted
// and a collection purges what it can meanwhile (the run's image row and
// its chain stay, so the worker finds them); the other order, a run
// spawned on an image already deleted and purged, fails at admission.
func TestClusterQueuedImagePurged(t *testing.T) {
	cn := newClusterNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	w := cn.start("w1", RoleWorker, "")
	a := cn.start("a1", RoleAPI, "")
	c := a.client(t, a.token)
	sh := true
	img, err := testdaemon.ImportBusybox(ctx, c, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for i := range 2 {
		op, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Command: "echo kept" + string(rune('0'+i)) + " > /f"})
		if err != nil || op.Status != apitypes.StatusSuccess || op.ResultImageUUID == nil {
			t.Fatalf("step %d: %v %+v", i, err, op)
		}
		steps = append(steps, *op.ResultImageUUID)
	}
	// No worker: the run stays queued while its image goes.
	w.stop()
	sp, err := c.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: steps[0], Shell: &sh, Command: "cat /f"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteImage(ctx, steps[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GC(ctx, false, ""); err != nil {
		t.Fatal(err)
	}
	cn.start("w1", RoleWorker, w.home)
	op, err := c.Wait(ctx, sp.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if op.Status != apitypes.StatusSuccess {
		t.Fatalf("a run queued on an image deleted and collected before a worker claimed it: %s %s", op.Status, derefOr(op.Error))
	}
	if out, err := stdout(ctx, c, sp.UUID); err != nil || out != "kept0\n" {
		t.Errorf("its output %q (%v), want kept0", out, err)
	}
	// Once it ended, the image goes at the next collection.
	if _, err := c.GC(ctx, false, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: steps[0], Shell: &sh, Command: "true"}); !client.IsNotFound(err) {
		t.Errorf("a run on the deleted image after its run ended: %v, want 404", err)
	}

	// Deleted and purged first: the spawn fails at admission, saying so.
	if err := c.DeleteImage(ctx, steps[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GC(ctx, false, ""); err != nil {
		t.Fatal(err)
	}
	_, err = c.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: steps[1], Shell: &sh, Command: "true"})
	if !client.IsNotFound(err) || !strings.Contains(err.Error(), steps[1]) {
		t.Errorf("a run on an image deleted and purged: %v, want 404 naming it", err)
	}
}

// TestClusterGCDryRunMatches: on a shared bucket a dry run reports what a
// real pass then deletes, by the same rules (an image row still names a
// deleted image's layer until the row is purged; the grace period spares
// young objects; the database's holds), not this node's view alone.
func TestClusterGCDryRunMatches(t *testing.T) {
	cn := newClusterNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cn.start("w1", RoleWorker, "")
	a := cn.start("a1", RoleAPI, "")
	c := a.client(t, a.token)
	sh := true
	img, err := testdaemon.ImportBusybox(ctx, c, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	op, err := c.Run(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Command: "head -c 100000 /dev/urandom > /f"})
	if err != nil || op.Status != apitypes.StatusSuccess || op.ResultImageUUID == nil {
		t.Fatalf("run: %v %+v", err, op)
	}
	if err := c.DeleteImage(ctx, *op.ResultImageUUID); err != nil {
		t.Fatal(err)
	}
	for pass := 1; pass <= 2; pass++ {
		dry, did := dryThenPass(ctx, t, c)
		t.Logf("pass %d: dry run %d layers %d bytes %d rows; real %d layers %d bytes %d rows", pass,
			dry.Layers, dry.LayerBytes, dry.ImageRows, did.Layers, did.LayerBytes, did.ImageRows)
		if dry.Layers != did.Layers || dry.LayerBytes != did.LayerBytes || dry.ImageRows != did.ImageRows || dry.Bytes != did.Bytes {
			t.Errorf("pass %d: the dry run reported %d layers (%d bytes, %d rows), the real pass removed %d (%d bytes, %d rows)", pass,
				dry.Layers, dry.LayerBytes, dry.ImageRows, did.Layers, did.LayerBytes, did.ImageRows)
		}
	}
}

// dryThenPass runs a dry retention pass through c, then a real one.
func dryThenPass(ctx context.Context, t *testing.T, c *client.Client) (dry, did *apitypes.GCResponse) {
	t.Helper()
	dry, err := c.GC(ctx, true, "")
	if err != nil {
		t.Fatal(err)
	}
	if did, err = c.GC(ctx, false, ""); err != nil {
		t.Fatal(err)
	}
	return dry, did
}

// objectExists reports whether key is in the cluster's bucket.
func (cn *clusterNet) objectExists(ctx context.Context, t *testing.T, key string) bool {
	t.Helper()
	bucket, prefix, _ := strings.Cut(strings.TrimPrefix(cn.blobs, "s3://"), "/")
	_, err := cn.s3.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + "/" + key)})
	if err != nil && !strings.Contains(err.Error(), "NotFound") && !strings.Contains(err.Error(), "404") {
		t.Fatalf("head %s: %v", key, err)
	}
	return err == nil
}

// TestClusterUploadsCollected: an upload expired on a cluster goes from
// the shared bucket too (files/<sha256>), under the rules of its layers,
// and the pass counts its bytes (the dry run before it the same), whichever
// node stored it; the same content uploaded again afterwards is stored
// again and placed by a run.
func TestClusterUploadsCollected(t *testing.T) {
	cn := newClusterNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const ttl = 2 * time.Second
	flags := []string{"--upload-ttl", ttl.String(), "--blobs-grace", "1s"}
	w := cn.start("w1", RoleWorker, "", flags...)
	a1 := cn.start("a1", RoleAPI, "", flags...)
	a2 := cn.start("a2", RoleAPI, "", flags...)
	c1, c2 := a1.client(t, a1.token), a2.client(t, a1.token)
	sh := true
	img, err := testdaemon.ImportBusybox(ctx, c1, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	content := []byte(fmt.Sprintf("uploaded at %s\n%s", time.Now().Format(time.RFC3339Nano), strings.Repeat("z", 5000)))
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	f, err := c2.UploadFile(ctx, strings.NewReader(string(content)))
	if err != nil {
		t.Fatal(err)
	}
	place := func(uuid string) {
		t.Helper()
		op, err := c1.Run(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Disposable: &sh, Command: "wc -c < /in",
			Files: map[string]apitypes.FileSpec{"/in": {UUID: uuid, Mode: 0o644}}})
		if err != nil || op.Status != apitypes.StatusSuccess {
			t.Fatalf("a run placing the upload: %v %+v", err, op)
		}
		if out, err := stdout(ctx, c1, op.UUID); err != nil || strings.TrimSpace(out) != fmt.Sprint(len(content)) {
			t.Fatalf("the run saw %q (%v), want %d bytes", out, err, len(content))
		}
	}
	place(f.UUID)
	if !cn.objectExists(ctx, t, "files/"+sha) {
		t.Fatal("the upload is not in the bucket")
	}
	// Every upload expires, the busybox import's too.
	files, err := c1.ListFiles(ctx, client.Page{})
	if err != nil {
		t.Fatal(err)
	}
	var uploaded int64
	for _, f := range files {
		uploaded += f.Size
	}
	before, err := c1.DiskUsage(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl + time.Second) // the upload's TTL and the bucket's grace: the span is the point
	dry, did := dryThenPass(ctx, t, c1)
	if did.Uploads != len(files) || did.UploadBytes != uploaded {
		t.Errorf("the pass removed %d uploads, %d bytes; want %d and their %d bytes", did.Uploads, did.UploadBytes, len(files), uploaded)
	}
	if dry.Uploads != did.Uploads || dry.UploadBytes != did.UploadBytes {
		t.Errorf("the dry run reported %d uploads, %d bytes; the pass removed %d, %d", dry.Uploads, dry.UploadBytes, did.Uploads, did.UploadBytes)
	}
	if cn.objectExists(ctx, t, "files/"+sha) {
		t.Error("the expired upload's content is still in the bucket")
	}
	after, err := c2.DiskUsage(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := before.Accounts[0].QuotaBytes - after.Accounts[0].QuotaBytes; got != uploaded {
		t.Errorf("the account's storage went from %d to %d bytes, want %d less", before.Accounts[0].QuotaBytes, after.Accounts[0].QuotaBytes, uploaded)
	}
	// The worker's copy of the content (its run fetched it) goes at its
	// own next retention tick, though the pass was another node's.
	copyOnWorker := filepath.Join(w.home, "blobs", "sha256", sha)
	if !exists(copyOnWorker) {
		t.Fatalf("the worker has no copy of the upload at %s", copyOnWorker)
	}
	w.stop()
	w = cn.start("w1", RoleWorker, w.home, append(flags, "--gc-interval", "300ms")...)
	for deadline := time.Now().Add(60 * time.Second); exists(copyOnWorker); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the worker kept its copy of the expired upload")
		}
	}
	w.stop()
	cn.start("w1", RoleWorker, w.home, flags...) // no background passes: the uploads below stay

	// Uploaded again (through the other API node): stored again, placed.
	again, err := c1.UploadFile(ctx, strings.NewReader(string(content)))
	if err != nil {
		t.Fatal(err)
	}
	if !cn.objectExists(ctx, t, "files/"+sha) {
		t.Fatal("the upload made again is not in the bucket")
	}
	place(again.UUID)
}

var wsechoBin = sync.OnceValues(func() (string, error) {
	dir, err := testutil.BuildDir("wsecho")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "wsecho")
	cmd := exec.Command("go", "build", "-o", p, "./testdata/wsecho")
	cmd.Dir = "../api"
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build wsecho: %v: %s", err, out)
	}
	return p, nil
})

// TestClusterPreviews: port previews of an instance a worker runs work
// through any API node: the expose, list and unexpose are forwarded to the
// worker, whose signed links (and the account's bearer token) open the
// port through either API node, plain requests and a WebSocket; an API
// node with a preview listener of its own gets links there.
func TestClusterPreviews(t *testing.T) {
	cn := newClusterNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	echo, err := wsechoBin()
	if err != nil {
		t.Fatal(err)
	}
	cn.start("w1", RoleWorker, "")
	cn.start("w2", RoleWorker, "")
	a1 := cn.start("a1", RoleAPI, "")
	a2 := cn.start("a2", RoleAPI, "", "--preview-listen", "127.0.0.1:0")
	c1, c2 := a1.client(t, a1.token), a2.client(t, a1.token)
	sh := true
	img, err := testdaemon.ImportBusybox(ctx, c1, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	ef, err := os.Open(echo)
	if err != nil {
		t.Fatal(err)
	}
	up, err := c2.UploadFile(ctx, ef)
	ef.Close()
	if err != nil {
		t.Fatal(err)
	}
	sp, err := c1.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh,
		Command: "mkdir -p /www/cgi-bin && echo hello-preview > /www/index.html && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nenv\\n' > /www/cgi-bin/env && chmod +x /www/cgi-bin/env && " +
			"httpd -p 127.0.0.1:8080 -h /www && exec /wsecho 127.0.0.1:8081",
		Files: map[string]apitypes.FileSpec{"/wsecho": {UUID: up.UUID, Mode: 0o755}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c1.Cancel(context.Background(), sp.UUID) })
	waitStatus(ctx, t, c2, sp.UUID, apitypes.StatusExecuting)
	get := func(url string, hdr ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	web, err := c1.Expose(ctx, sp.UUID, 8080, 0)
	if err != nil {
		t.Fatalf("expose through an API node: %v", err)
	}
	if !strings.HasPrefix(web.URL, a1.url+"/preview/") {
		t.Errorf("link %s, want one on %s", web.URL, a1.url)
	}
	code, body := get(web.URL + "index.html")
	for deadline := time.Now().Add(60 * time.Second); code == http.StatusBadGateway && time.Now().Before(deadline); code, body = get(web.URL + "index.html") {
		time.Sleep(100 * time.Millisecond) // httpd starts after the spawn
	}
	if code != http.StatusOK || body != "hello-preview\n" {
		t.Fatalf("GET the link through a1 = %d %q", code, body)
	}
	// What the server sees: the client (here from 127.0.0.2), never the
	// cluster's secret.
	from2 := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	resp, err := from2.Get(web.URL + "cgi-bin/env")
	if err != nil {
		t.Fatal(err)
	}
	env, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(env), "HTTP_X_FORWARDED_FOR=127.0.0.2\n") || strings.Contains(string(env), "ARBOR") {
		t.Errorf("the server's environment (a CGI script) = %d:\n%s\nwant X-Forwarded-For 127.0.0.2 and no X-Arbor header", resp.StatusCode, env)
	}
	byBearer := fmt.Sprintf("%s/preview/%s/8080/_/index.html", a1.url, sp.UUID)
	if code, body = get(byBearer, "Authorization", "Bearer "+a1.token); code != http.StatusOK || body != "hello-preview\n" {
		t.Errorf("GET with the bearer token through a1 = %d %q", code, body)
	}
	if code, _ = get(byBearer); code != http.StatusUnauthorized {
		t.Errorf("GET without credentials = %d, want 401", code)
	}
	if code, _ = get(strings.Replace(web.URL, "/8080/", "/8081/", 1)); code != http.StatusForbidden {
		t.Errorf("GET a forged link = %d, want 403", code)
	}
	// a2 serves previews on a listener of its own: its expose links there,
	// and its main listener serves none.
	ws, err := c2.Expose(ctx, sp.UUID, 8081, 0)
	if err != nil {
		t.Fatalf("expose through a2: %v", err)
	}
	if strings.HasPrefix(ws.URL, a2.url) || !strings.HasPrefix(ws.URL, "http://127.0.0.1:") {
		t.Errorf("a2's link %s, want one on its preview listener, not %s", ws.URL, a2.url)
	}
	if code, _ = get(a2.url + ws.Path); code == http.StatusOK {
		t.Errorf("a2's main listener served a preview")
	}
	base := strings.TrimSuffix(ws.URL, ws.Path)
	if code, body = get(base + web.Path + "index.html"); code != http.StatusOK || body != "hello-preview\n" {
		t.Errorf("GET a1's link on a2's preview listener = %d %q", code, body)
	}
	var wc *websocket.Conn
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var resp *http.Response
		wc, resp, err = websocket.Dial(ctx, "ws"+strings.TrimPrefix(ws.URL, "http"), nil)
		if err == nil || time.Now().After(deadline) || resp == nil || resp.StatusCode != http.StatusBadGateway {
			break // 502 while the echo server starts
		}
	}
	if err != nil {
		t.Fatalf("websocket through a2: %v", err)
	}
	for _, msg := range []string{"one", strings.Repeat("x", 50<<10)} {
		if err := wc.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		wc.SetReadLimit(1 << 20)
		if _, b, err := wc.Read(ctx); err != nil || string(b) != "echo:"+msg {
			t.Fatalf("websocket echo = %.40q, %v", b, err)
		}
	}
	wc.Close(websocket.StatusNormalClosure, "")
	ps, err := c2.Previews(ctx, sp.UUID)
	if err != nil || len(ps) != 2 {
		t.Errorf("previews listed through a2: %+v %v, want 8080 and 8081", ps, err)
	}
	if err := c2.Unexpose(ctx, sp.UUID, 8080); err != nil {
		t.Fatal(err)
	}
	if code, _ = get(web.URL + "index.html"); code != http.StatusForbidden {
		t.Errorf("GET a removed preview through a1 = %d, want 403", code)
	}
}

// TestClusterCheckpointRestore: a memory checkpoint kept with an image on
// a cluster is stored in the bucket before the image is visible, so any
// API node restores it on any worker: with the worker that made it
// stopped, the other one fetches it and the restored instance runs its
// process (answering a subprocess); its size counts on the API nodes,
// which hold no copy (the database records it); deleting the image through
// the other API node deletes the bucket's copy too, and the worker's copy
// goes at that worker's next retention tick.
func TestClusterCheckpointRestore(t *testing.T) {
	cn := newClusterNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	tick := []string{"--gc-interval", "300ms"}
	workers := map[string]*node{"w1": cn.start("w1", RoleWorker, "", tick...), "w2": cn.start("w2", RoleWorker, "", tick...)}
	a1 := cn.start("a1", RoleAPI, "", "--blobs-grace", "1s")
	a2 := cn.start("a2", RoleAPI, "")
	c1, c2 := a1.client(t, a1.token), a2.client(t, a1.token)
	img, err := testdaemon.ImportBusybox(ctx, c1, "busybox")
	if err != nil {
		t.Fatal(err)
	}
	keep := false
	sh := true
	sp, err := c1.Spawn(ctx, apitypes.InstanceSpawnRequest{Image: img, Shell: &sh, Command: "read x; echo first:$x; read y; echo $x-$y",
		Stdin: &apitypes.ClosableStreamRepr{Value: "A\n", Close: &keep}})
	if err != nil {
		t.Fatal(err)
	}
	for out := ""; out != "first:A\n"; {
		if out, err = stdout(ctx, c2, sp.UUID); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, owner, err := placement(ctx, cn.dsn, sp.UUID)
	if err != nil || workers[owner] == nil {
		t.Fatalf("owner of the instance: %q %v", owner, err)
	}
	begin := time.Now()
	ck, err := c2.Checkpoint(ctx, sp.UUID)
	if err != nil || ck.Image == "" || ck.CheckpointBytes <= 0 {
		t.Fatalf("checkpoint through a2: %+v %v", ck, err)
	}
	t.Logf("checkpoint of %d bytes, uploaded: %v", ck.CheckpointBytes, time.Since(begin).Round(time.Millisecond))
	if !cn.objectExists(ctx, t, "checkpoints/"+ck.Image) {
		t.Fatal("the checkpoint is not in the bucket")
	}
	if im, err := c1.Image(ctx, ck.Image); err != nil || im.CheckpointBytes != ck.CheckpointBytes {
		t.Errorf("the image through a1: %+v %v; want checkpoint_bytes %d", im, err, ck.CheckpointBytes)
	}
	if df, err := c1.DiskUsage(ctx, false); err != nil || len(df.Accounts) == 0 || df.Accounts[0].CheckpointBytes != ck.CheckpointBytes {
		t.Errorf("df through a1: %+v %v; want checkpoint_bytes %d", df, err, ck.CheckpointBytes)
	}
	if err := c1.Cancel(ctx, sp.UUID); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Wait(ctx, sp.UUID); err != nil {
		t.Fatal(err)
	}
	workers[owner].stop() // the restore must go to the other worker
	begin = time.Now()
	res, err := c1.Restore(ctx, ck.Image, apitypes.RestoreRequest{})
	if err != nil || len(res.Operations) != 1 {
		t.Fatalf("restore through a1 with the checkpoint's worker stopped: %+v %v", res, err)
	}
	t.Logf("restore on the other worker, checkpoint fetched: %v", time.Since(begin).Round(time.Millisecond))
	op := res.Operations[0]
	waitStatus(ctx, t, c2, op, apitypes.StatusExecuting)
	ran := runsOn(ctx, t, cn.dsn, op)
	if ran == owner || workers[ran] == nil {
		t.Fatalf("the restore runs on %q, want the worker that is not %s", ran, owner)
	}
	// It goes on from the checkpoint's memory: $x is still A.
	closed := true
	if err := c2.WriteStdin(ctx, op, 1, apitypes.ClosableStreamRepr{Value: "B\n", Close: &closed}); err != nil {
		t.Fatalf("stdin of the restored instance: %v", err)
	}
	if o, err := c1.Wait(ctx, op); err != nil || o.Status != apitypes.StatusSuccess {
		t.Fatalf("the restored instance: %v %+v", err, o)
	}
	if out, err := stdout(ctx, c1, op); err != nil || out != "A-B\n" {
		t.Errorf("the restored instance printed %q (%v), want A-B", out, err)
	}
	// A checkpoint whose image was never committed (a crash between its
	// upload and the commit) goes at the next pass, past the grace; the
	// image's stays.
	orphan := "0e6f4a8e-1b2c-4d5e-8f90-123456789abc"
	bucket, prefix, _ := strings.Cut(strings.TrimPrefix(cn.blobs, "s3://"), "/")
	if _, err := cn.s3.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(prefix + "/checkpoints/" + orphan),
		Body: strings.NewReader("not a checkpoint")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // a1's grace: the span is the point
	// The workers' ticks take turns with a1's pass.
	for {
		_, err := c1.GC(ctx, false, "")
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "running on another node") {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cn.objectExists(ctx, t, "checkpoints/"+orphan) || !cn.objectExists(ctx, t, "checkpoints/"+ck.Image) {
		t.Errorf("after a pass: the orphan checkpoint is stored: %v, the image's: %v; want only the image's",
			cn.objectExists(ctx, t, "checkpoints/"+orphan), cn.objectExists(ctx, t, "checkpoints/"+ck.Image))
	}
	for _, n := range workers {
		for _, l := range strings.Split(n.log.String(), "\n") {
			if strings.Contains(l, "checkpoint kept") || strings.Contains(l, "shared storage") {
				t.Logf("%s: %s", n.name, l)
			}
		}
	}
	copyOnWorker := filepath.Join(workers[ran].home, "checkpoints", ck.Image)
	if !exists(copyOnWorker) {
		t.Fatalf("the worker that restored the checkpoint has no copy at %s", copyOnWorker)
	}
	if err := c2.DeleteImage(ctx, ck.Image); err != nil {
		t.Fatal(err)
	}
	if cn.objectExists(ctx, t, "checkpoints/"+ck.Image) {
		t.Error("the deleted image's checkpoint is still in the bucket")
	}
	if df, err := c1.DiskUsage(ctx, false); err != nil || len(df.Accounts) == 0 || df.Accounts[0].CheckpointBytes != 0 {
		t.Errorf("df through a1 after the deletion: %+v %v; want checkpoint_bytes 0", df, err)
	}
	for deadline := time.Now().Add(60 * time.Second); exists(copyOnWorker); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s kept its copy of the deleted image's checkpoint", ran)
		}
	}
}

// runsOn is the node running op: the worker holding it, or the node that
// runs it itself (a fork's, a restore's).
func runsOn(ctx context.Context, t *testing.T, dsn, op string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n string
	if err := conn.QueryRow(ctx, `SELECT COALESCE(node, lease_owner, '') FROM operations WHERE uuid=$1`, op).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
