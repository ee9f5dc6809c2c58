package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/api"
	"github.com/arborsh/arbor/internal/engine"
)

// TestAccountIsolation checks that one account's images, tags, files and
// operations are invisible (404) to another.
func TestAccountIsolation(t *testing.T) {
	d := sharedDaemon(t)
	ctx := ctxT(t)
	f, err := d.c.UploadFile(ctx, strings.NewReader("secret of the default account"))
	if err != nil {
		t.Fatal(err)
	}
	op := d.run(t, d.c, d.base, "echo mine > /root/mine")
	img := deref(op.ResultImageUUID)
	other, secret, _ := d.account(t, "intruder")

	notFound := map[string]error{}
	_, notFound["image"] = other.Image(ctx, img)
	_, notFound["base image"] = other.Image(ctx, d.base)
	_, notFound["tag"] = other.FindImageByTag(ctx, "busybox:latest")
	_, notFound["set tag"] = other.SetTag(ctx, img, "stolen")
	_, notFound["remove tag"] = other.RemoveTag(ctx, d.base, "")
	notFound["delete image"] = other.DeleteImage(ctx, img)
	_, notFound["lineage"] = other.Lineage(ctx, img)
	_, notFound["diff"] = other.Diff(ctx, img, client.DiffOptions{})
	_, notFound["list dir"] = other.ListDir(ctx, img, "/")
	_, notFound["download"] = other.ReadFile(ctx, img, "/root/mine")
	_, notFound["file by sha"] = other.File(ctx, f.SHA256)
	_, notFound["file by uuid"] = other.File(ctx, f.UUID)
	_, notFound["operation"] = other.Operation(ctx, op.UUID)
	notFound["cancel"] = other.Cancel(ctx, op.UUID)
	notFound["events"] = other.StreamEvents(ctx, op.UUID, client.EventsOptions{After: -1}, func(apitypes.OperationEvent) error { return nil })
	_, notFound["subprocess"] = other.Subprocess(ctx, op.UUID, 1)
	_, notFound["spawn on image"] = other.Spawn(ctx, apitypes.InstanceSpawnRequest{Command: "true", Image: img})
	_, notFound["spawn on tag"] = other.Spawn(ctx, apitypes.InstanceSpawnRequest{Command: "true", Image: "tag:busybox:latest"})
	_, notFound["spawn with file"] = other.Spawn(ctx, apitypes.InstanceSpawnRequest{Command: "true", Image: img,
		Files: map[string]apitypes.FileSpec{"/x": {UUID: f.UUID}}})
	_, notFound["import upload"] = other.ImportImage(ctx, apitypes.ImageImportRequest{Registry: apitypes.ImageImportRegistry{URL: "upload://" + f.UUID}})
	for what, err := range notFound {
		if !client.IsNotFound(err) {
			t.Errorf("%s of another account = %v, want 404", what, err)
		}
	}
	for _, p := range []string{"/v1/files?sha256=" + f.SHA256, "/v1/inspect/?tag=busybox:latest"} {
		wantStatus(t, do(t, http.MethodGet, d.srv.URL+p, secret, nil), http.StatusNotFound)
	}
	if ims, err := other.ListImages(ctx, client.ImageListOptions{}); err != nil || len(ims) != 0 {
		t.Errorf("another account lists %d images, %v", len(ims), err)
	}
	if ops, err := other.ListOperations(ctx, client.OperationListOptions{}); err != nil || len(ops) != 0 {
		t.Errorf("another account lists %d operations, %v", len(ops), err)
	}
	if fs, err := other.ListFiles(ctx, client.Page{}); err != nil || len(fs) != 0 {
		t.Errorf("another account lists %d files, %v", len(fs), err)
	}
	// The same content uploaded by the other account is its own record.
	mine, err := other.UploadFile(ctx, strings.NewReader("secret of the default account"))
	if err != nil || mine.UUID == f.UUID || mine.SHA256 != f.SHA256 {
		t.Errorf("other account's upload of the same content = %+v, %v", mine, err)
	}
	// The default account's image is untouched.
	if im, err := d.c.Image(ctx, img); err != nil || im.Tag != nil {
		t.Errorf("image after the other account's attempts = %+v, %v", im, err)
	}
}

// TestTokens covers whoami and the token extension.
func TestTokens(t *testing.T) {
	d := sharedDaemon(t)
	ctx := ctxT(t)
	w, err := d.c.WhoAmI(ctx)
	if err != nil || w.Account != engine.DefaultAccount || w.TokenExpiration != nil || !w.Permissions["list"] {
		t.Fatalf("WhoAmI = %+v, %v", w, err)
	}
	for k, v := range d.limits() {
		if w.Limits[k] != v {
			t.Errorf("whoami limits[%s] = %d, want %d", k, w.Limits[k], v)
		}
	}

	tok, err := d.c.CreateToken(ctx, apitypes.TokenCreateRequest{Name: ptr("ci"), TTLSeconds: ptr(int64(3600))})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Account != engine.DefaultAccount || tok.Name != "ci" || tok.ExpiresAt == nil || !isTimestamp(tok.CreatedAt) ||
		!strings.HasPrefix(tok.CreatedAt, time.Now().UTC().Format("2006-01-02")) || tok.Secret == "" {
		t.Errorf("CreateToken = %+v", tok)
	}
	c, err := client.New(d.srv.URL, tok.Secret)
	if err != nil {
		t.Fatal(err)
	}
	w, err = c.WhoAmI(ctx)
	if err != nil || w.TokenUUID != tok.UUID || w.TokenExpiration == nil {
		t.Fatalf("WhoAmI with the new token = %+v, %v", w, err)
	}
	if d := *w.TokenExpiration - time.Now().Add(time.Hour).Unix(); d < -5 || d > 5 {
		t.Errorf("token_expiration is %d s off now+1h", d)
	}
	list, err := d.c.ListTokens(ctx, "")
	if err != nil || !tokenListed(list, tok.UUID) {
		t.Errorf("ListTokens lacks the new token: %v", err)
	}
	for _, tk := range list {
		if tk.UUID == tok.UUID && tk.CreatedAt != tok.CreatedAt {
			t.Errorf("listed created_at %s differs from the creation answer %s", tk.CreatedAt, tok.CreatedAt)
		}
	}
	if err := d.c.RevokeToken(ctx, tok.UUID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WhoAmI(ctx); !client.IsUnauthorized(err) {
		t.Errorf("revoked token = %v, want 401", err)
	}
	if err := d.c.RevokeToken(ctx, tok.UUID, ""); !client.IsNotFound(err) {
		t.Errorf("second revoke = %v, want 404", err)
	}

	// Only the default account manages other accounts' tokens.
	team, _, teamName := d.account(t, "team")
	if _, err := team.CreateToken(ctx, apitypes.TokenCreateRequest{Account: ptr(engine.DefaultAccount)}); !client.IsForbidden(err) {
		t.Errorf("team creating a default-account token = %v, want 403", err)
	}
	if _, err := team.ListTokens(ctx, engine.DefaultAccount); !client.IsForbidden(err) {
		t.Errorf("team listing default-account tokens = %v, want 403", err)
	}
	own, err := team.CreateToken(ctx, apitypes.TokenCreateRequest{})
	if err != nil || own.Account != teamName {
		t.Errorf("team creating its own token = %+v, %v", own, err)
	}
	if r := do(t, http.MethodPost, d.srv.URL+"/v1/tokens", own.Secret, nil); r.StatusCode != http.StatusCreated {
		t.Errorf("POST /v1/tokens without a body = %d %s, want 201", r.StatusCode, r.body)
	}
	if l, err := d.c.ListTokens(ctx, teamName); err != nil || !tokenListed(l, own.UUID) {
		t.Errorf("default listing team's tokens: %v", err)
	}
	if err := d.c.RevokeToken(ctx, own.UUID, teamName); err != nil {
		t.Errorf("default revoking team's token: %v", err)
	}
	if _, err := d.c.CreateToken(ctx, apitypes.TokenCreateRequest{Account: ptr("bad account/name")}); !client.IsBadRequest(err) {
		t.Errorf("token for an invalid account name = %v, want 400", err)
	}
}

func tokenListed(list []apitypes.Token, id string) bool {
	for _, t := range list {
		if t.UUID == id {
			return true
		}
	}
	return false
}

// TestUsageAndLimits checks whoami's usage figures and the per-account
// concurrency limit (429 with Retry-After).
func TestUsageAndLimits(t *testing.T) {
	d := startDaemon(t, engine.Config{MaxConcurrentOps: 1}, api.Options{})
	ctx := ctxT(t)
	d.run(t, d.c, d.base, "echo x > /root/x")
	w, err := d.c.WhoAmI(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w.OperationsStat["SUCCESS"] != 2 || w.OperationsStat["FAILED"] != 0 || w.OperationsStat["stored_bytes"] <= 0 {
		t.Errorf("operations_stat = %v, want 2 SUCCESS (import and run) and stored bytes", w.OperationsStat)
	}
	if _, ok := w.OperationsStat["cpu_seconds"]; !ok {
		t.Errorf("operations_stat lacks cpu_seconds: %v", w.OperationsStat)
	}
	if w.Limits["max_concurrent_operations"] != 1 {
		t.Errorf("limits = %v", w.Limits)
	}

	sp, err := d.c.Spawn(ctx, apitypes.InstanceSpawnRequest{Command: "sleep 30", Image: d.base, Shell: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	r := d.send(t, http.MethodPost, "/v1/instances", `{"command":"true","image":"busybox:latest"}`)
	wantError(t, r, http.StatusTooManyRequests, "limit")
	if r.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// The Go client retries a 429 and succeeds once the slot frees up.
	go func() {
		time.Sleep(300 * time.Millisecond) // deliberate: the client must meet the 429 first
		_ = d.c.Cancel(context.Background(), sp.UUID)
	}()
	op, err := d.c.Run(ctx, apitypes.InstanceSpawnRequest{Command: "true", Image: d.base, Disposable: ptr(true)})
	if err != nil || op.Status != apitypes.StatusSuccess {
		t.Errorf("Run after a 429 = %v, %v", op, err)
	}
}
