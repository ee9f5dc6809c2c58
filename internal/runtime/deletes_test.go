package runtime

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
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
