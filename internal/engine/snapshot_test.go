package engine

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
)

// TestShellArgs: with shell=true the args are appended to the command line,
// each quoted, as ConTree's CLI expects when it runs a local script as
// "/bin/sh -s -- ARGS" with the script on stdin; the spawn event shows the
// line that ran.
func TestShellArgs(t *testing.T) {
	e, base := newEngine(t, "runc")
	args := []string{"-s", "--", "a1", "b 2", "it's", "$HOME", "", "*"}
	script := `printf '[%s]' "$#" "$1" "$2" "$3" "$4" "$5" "$6"`
	o, m := run(t, e, base, "/bin/sh", func(r *apitypes.InstanceSpawnRequest) {
		r.Args = args
		r.Stdin = &apitypes.ClosableStreamRepr{Value: script}
	})
	if got, want := stdout(t, m), "[6][a1][b 2][it's][$HOME][][*]"; got != want {
		t.Errorf("script saw %q, want %q", got, want)
	}
	evs, err := e.st.Events(context.Background(), o.UUID, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	var spawn apitypes.EventDataSpawn
	for _, ev := range evs {
		if ev.Type == apitypes.EventSpawn {
			if err := json.Unmarshal([]byte(ev.Data), &spawn); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := []string{"-c", `/bin/sh -s -- a1 'b 2' 'it'\''s' '$HOME' '' '*'`}
	if spawn.Command != "/bin/sh" || !reflect.DeepEqual(spawn.Args, want) || !spawn.Shell {
		t.Errorf("spawn event command %q args %q shell %v, want /bin/sh %q true", spawn.Command, spawn.Args, spawn.Shell, want)
	}
	if !reflect.DeepEqual(m.Args, args) {
		t.Errorf("metadata args %q, want the request's %q", m.Args, args)
	}
}

// TestPreserveEnvWithoutFileChanges: a preserve_env run that writes no file
// still saves its environment in a new image when that environment differs
// from the input's; one that changes nothing returns its input image.
func TestPreserveEnvWithoutFileChanges(t *testing.T) {
	e, base := newEngine(t, "runc")
	preserve := func(env map[string]string) runOpts {
		return func(r *apitypes.InstanceSpawnRequest) { r.PreserveEnv = ptr(true); r.Env = env }
	}
	o, _ := run(t, e, base, "true", preserve(map[string]string{"FOO": "bar"}))
	if o.ResultImageUUID == base || o.ResultImageUUID == "" {
		t.Fatalf("preserve_env run returned image %q, want a new image holding FOO", o.ResultImageUUID)
	}
	withFoo := o.ResultImageUUID
	if _, m := run(t, e, withFoo, "echo $FOO"); stdout(t, m) != "bar\n" {
		t.Fatalf("next run sees FOO=%q, want bar", stdout(t, m))
	}
	// Nothing new to save: same value again, or no variables at all.
	for _, env := range []map[string]string{{"FOO": "bar"}, nil} {
		if o, _ := run(t, e, withFoo, "true", preserve(env)); o.ResultImageUUID != withFoo {
			t.Errorf("preserve_env run with env %v made image %s, want its input %s", env, o.ResultImageUUID, withFoo)
		}
	}
	// A changed value is saved.
	o, _ = run(t, e, withFoo, "true", preserve(map[string]string{"FOO": "baz"}))
	if o.ResultImageUUID == withFoo {
		t.Fatal("changed variable not saved")
	}
	if _, m := run(t, e, o.ResultImageUUID, "echo $FOO"); stdout(t, m) != "baz\n" {
		t.Errorf("next run sees FOO=%q, want baz", stdout(t, m))
	}
	// Without preserve_env the variables are not saved.
	if o, _ := run(t, e, base, "true", func(r *apitypes.InstanceSpawnRequest) { r.Env = map[string]string{"FOO": "x"} }); o.ResultImageUUID != base {
		t.Errorf("run without preserve_env made image %s, want its input", o.ResultImageUUID)
	}
}
