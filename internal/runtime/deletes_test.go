package runtime

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arborsh/arbor/internal/testutil"
)

// TestDeletesShareARunscProcess: the state of sandboxes that die while a
// background delete runs is deleted by one runsc process, and what runsc
// leaves (it stops quietly at the first id it does not find) one by one.
// runsc here is a script that logs its calls, holds the first until
// released, and deletes the state files of its ids as runsc does.
func TestDeletesShareARunscProcess(t *testing.T) {
	dir := t.TempDir()
	calls, entered, release := filepath.Join(dir, "calls"), filepath.Join(dir, "entered"), filepath.Join(dir, "release")
	for _, f := range []string{entered, release} {
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "state")
	script := filepath.Join(dir, "runsc")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
echo "$*" | sed 's/.* delete/delete/' >> `+calls+`
if [ ! -e `+dir+`/first ]; then : > `+dir+`/first; echo > `+entered+`; read x < `+release+`; fi
shift 5 # --root --platform --overlay2 delete --force
for id; do
	f="`+state+`/${id}_sandbox:${id}.state"
	[ -e "$f" ] || exit 0
	rm "$f"
done
`), 0o755); err != nil {
		t.Fatal(err)
	}
	o, err := NewOCI("runsc", script, state)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if err := os.WriteFile(filepath.Join(o.root, id+"_sandbox:"+id+".state"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	o.deleteLater("a")
	ready, err := os.ReadFile(entered) // the first delete runs, held
	if err != nil || len(ready) == 0 {
		t.Fatalf("the first delete did not start: %v", err)
	}
	for _, id := range []string{"gone", "b", "c"} {
		o.deleteLater(id)
	}
	if err := os.WriteFile(release, []byte("go\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(context.Background()); err != nil { // waits for the background deletes
		t.Fatal(err)
	}
	b, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{"delete --force a", "delete --force gone b c", "delete --force b", "delete --force c"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("runsc calls %q, want %q", got, want)
	}
	for _, id := range []string{"a", "b", "c"} {
		if o.hasState(id) {
			t.Errorf("state of %s left", id)
		}
	}
}

// TestDeletesGather: dead runsc sandboxes queued within the gathering
// window share one runsc process, and Close deletes what is queued at once
// rather than waiting out the window.
func TestDeletesGather(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	script := filepath.Join(dir, "runsc")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$*\" | sed 's/.* delete/delete/' >> "+calls+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	o, err := NewOCI("runsc", script, filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	window := make(chan time.Time)
	never := make(chan time.Time)
	gathers := make(chan struct{}, 8)
	o.dead.gather = func() <-chan time.Time {
		gathers <- struct{}{}
		if len(gathers) > 1 {
			return never // later rounds: only Close ends them
		}
		return window
	}
	o.deleteLater("a")
	<-gathers // the deleter waits in its window
	o.deleteLater("b")
	o.deleteLater("c")
	window <- time.Now()
	<-gathers // the first batch is done: the deleter waits again
	o.deleteLater("d")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := o.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{"delete --force a b c", "delete --force d"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("runsc calls %q, want %q", got, want)
	}
}

// TestRuncStateRemovedInProcess: a destroyed runc sandbox's state
// directory and cgroups are removed without a `runc delete` process.
func TestRuncStateRemovedInProcess(t *testing.T) {
	testutil.RequiresRoot(t)
	real, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal(err)
	}
	_, rootfs, bundle := busyboxOCI(t, "runc")
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	script := filepath.Join(dir, "runc")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$*\" >> "+calls+"\nexec "+real+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	o, err := NewOCI("runc", script, filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	id := "inprocess-delete"
	if err := o.Boot(context.Background(), Spec{ID: id, Bundle: bundle, Rootfs: rootfs, Args: []string{"/bin/sleep", "1000"},
		Env: []string{"PATH=/bin"}, Cwd: "/", Hostname: "t"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(o.root, id, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		CgroupPaths map[string]string `json:"cgroup_paths"`
	}
	if err := json.Unmarshal(b, &st); err != nil || len(st.CgroupPaths) == 0 {
		t.Fatalf("runc's state has no cgroup paths (%v): %s", err, b)
	}
	for _, p := range st.CgroupPaths {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("cgroup of the running sandbox: %v", err)
		}
	}
	if err := o.Destroy(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(context.Background()); err != nil { // waits for the background delete
		t.Fatal(err)
	}
	log, _ := os.ReadFile(calls)
	if strings.Contains(string(log), " delete ") {
		t.Errorf("a runc process deleted the sandbox:\n%s", log)
	}
	if o.hasState(id) {
		t.Errorf("state of %s left", id)
	}
	for _, p := range st.CgroupPaths {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left (%v)", p, err)
		}
	}
	if out, err := exec.Command(real, "--root="+o.root, "list", "--quiet").Output(); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("runc list: %q, %v", out, err)
	}
}
