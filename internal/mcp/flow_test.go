package mcp

import (
	"slices"
	"strings"
	"testing"
)

// testBranchCompareKeep is the workflow the tool descriptions teach, as an
// agent would drive it: prepare a project, checkpoint it, branch three
// candidate fixes, diff the winner against the checkpoint, keep the winner,
// and roll back.
func testBranchCompareKeep(t *testing.T, s *session) {
	// A project with a bug: add subtracts.
	var prep RunOut
	s.call(t, "run", map[string]any{
		"image": "busybox:latest",
		"command": `mkdir -p /root/app && cd /root/app &&
printf 'add() { echo $(($1 - $2)); }\n' > calc.sh &&
printf '. ./calc.sh\n[ "$(add 2 3)" = 5 ] && echo tests pass || { echo "add 2 3 = $(add 2 3), want 5" >&2; exit 1; }\n' > test.sh`,
	}, &prep)
	if prep.ExitCode == nil || *prep.ExitCode != 0 || prep.ResultImage == "" {
		t.Fatalf("prepare = %+v", prep)
	}
	env := prep.ResultImage

	var cp CheckpointOut
	s.call(t, "checkpoint", map[string]any{"name": "flow-env", "image": env}, &cp)
	if cp.Image != env || !strings.Contains(cp.Next, "rollback") {
		t.Errorf("checkpoint = %+v", cp)
	}
	s.callErr(t, "checkpoint", map[string]any{"name": "other-name", "image": "flow-env"}, "already checkpointed", "retag=true")
	s.callErr(t, "checkpoint", map[string]any{"name": "bad name!", "image": env, "retag": true}, "invalid tag")
	s.callErr(t, "checkpoint", map[string]any{"name": "x", "image": "no-such"}, "not found", "flow-env")
	s.call(t, "checkpoint", map[string]any{"name": "flow-env", "image": env}, &cp)
	if !strings.Contains(cp.Next, "already checkpointed") {
		t.Errorf("checkpoint again = %+v", cp)
	}

	fixes := []string{
		`cd /root/app && sed -i 's/- \$2/* $2/' calc.sh && sh test.sh`,
		`cd /root/app && sed -i 's/- \$2/+ $2/' calc.sh && sh test.sh`,
		`cd /root/app && echo 'nothing changed' && sh test.sh`,
	}
	var br BranchOut
	res := s.call(t, "branch", map[string]any{"image": "flow-env", "commands": fixes}, &br)
	t.Logf("branch:\n%s", text(res))
	if br.Passed != 1 || br.Failed != 2 || len(br.Results) != 3 || br.Image != env {
		t.Fatalf("branch = %+v", br)
	}
	for i, want := range []string{"FAIL", "PASS", "FAIL"} {
		r := br.Results[i]
		if r.Verdict != want || r.Index != i+1 || r.Command != fixes[i] || r.ResultImage == "" || r.OperationID == "" {
			t.Errorf("branch result %d = %+v, want %s", i, r, want)
		}
	}
	for _, col := range []string{"| # | command | exit | time | result image | verdict |", "| PASS |", "| FAIL |", br.Results[1].ResultImage} {
		if !strings.Contains(br.Table, col) || !strings.Contains(text(res), col) {
			t.Errorf("branch table lacks %q:\n%s", col, br.Table)
		}
	}
	if !strings.Contains(br.Results[0].Stderr, "add 2 3 = 6, want 5") {
		t.Errorf("failed branch stderr = %q", br.Results[0].Stderr)
	}
	winner := br.Results[1].ResultImage

	var d DiffOut
	res = s.call(t, "diff", map[string]any{"from": "flow-env", "to": winner}, &d)
	if d.From != env || d.To != winner || d.Stat.Modified != 1 || d.Stat.Added != 0 || d.Stat.Deleted != 0 {
		t.Fatalf("diff = %+v", d)
	}
	c := d.Changes[0]
	if c.Path != "/root/app/calc.sh" || c.Kind != "modified" || !strings.Contains(c.Patch, "+add() { echo $(($1 + $2)); }") {
		t.Errorf("diff change = %+v", c)
	}
	if !strings.Contains(text(res), "M /root/app/calc.sh") {
		t.Errorf("diff text = %q", text(res))
	}
	s.call(t, "diff", map[string]any{"to": winner, "patches": false}, &d) // against its parent
	if d.From != env || len(d.Changes) != 1 || d.Changes[0].Patch != "" {
		t.Errorf("diff against parent without patches = %+v", d)
	}
	s.callErr(t, "diff", map[string]any{"from": "nope", "to": winner}, "from", "not found")
	s.callErr(t, "diff", map[string]any{"to": "busybox:latest"}, "no parent", "from=")

	s.call(t, "checkpoint", map[string]any{"name": "flow-best", "image": winner}, &cp)
	var r RunOut
	s.call(t, "run", map[string]any{"image": "flow-best", "command": "cd /root/app && sh test.sh", "disposable": true}, &r)
	if r.ExitCode == nil || *r.ExitCode != 0 || r.Stdout != "tests pass\n" {
		t.Errorf("run from the kept winner = %+v", r)
	}
	// Moving a name says where it came from.
	s.call(t, "checkpoint", map[string]any{"name": "flow-best", "image": br.Results[0].ResultImage}, &cp)
	if cp.MovedFrom != winner {
		t.Errorf("moving flow-best: %+v, want moved_from %s", cp, winner)
	}
	s.call(t, "checkpoint", map[string]any{"name": "flow-best", "image": winner}, &cp)

	var rb RollbackOut
	s.call(t, "rollback", map[string]any{"name": "flow-env", "from": winner}, &rb)
	if rb.Image.UUID != env || rb.Discarded == nil || rb.Discarded.Modified != 1 || !strings.Contains(rb.Next, env) {
		t.Errorf("rollback = %+v", rb)
	}
	s.call(t, "run", map[string]any{"image": rb.Image.UUID, "command": "cd /root/app && sh test.sh", "disposable": true}, &r)
	if r.ExitCode == nil || *r.ExitCode != 1 {
		t.Errorf("run after rollback = %+v, want the bug back (exit 1)", r)
	}
	msg := s.callErr(t, "rollback", map[string]any{"name": "flow-nope"}, "not found", "flow-env", "flow-best")
	t.Logf("unknown checkpoint: %s", msg)

	var l LineageOut
	s.call(t, "lineage", map[string]any{"image": "flow-best"}, &l)
	if l.Image.UUID != winner || l.Image.Tag != "flow-best" || len(l.Ancestors) < 2 || l.Ancestors[0].UUID != env || l.Depth != len(l.Ancestors) {
		t.Fatalf("lineage = %+v", l)
	}
	if l.Image.Command != fixes[1] || l.Image.ExitCode == nil || *l.Image.ExitCode != 0 || !strings.Contains(l.Ancestors[0].Command, "mkdir -p /root/app") {
		t.Errorf("lineage commands: image %q, parent %q", l.Image.Command, l.Ancestors[0].Command)
	}
	if last := l.Ancestors[len(l.Ancestors)-1]; last.Tag != "busybox:latest" || last.Command != "(imported)" {
		t.Errorf("lineage base = %+v, want the imported busybox", last)
	}
	s.call(t, "lineage", map[string]any{"image": "flow-env"}, &l)
	var kids []string
	for _, k := range l.Children {
		kids = append(kids, k.UUID)
	}
	if br.Results[2].ResultImage != env {
		t.Errorf("branch 3 changed no file but has result image %s, want %s", br.Results[2].ResultImage, env)
	}
	for _, b := range br.Results[:2] {
		if !slices.Contains(kids, b.ResultImage) {
			t.Errorf("lineage children of flow-env = %v, want branch %s", kids, b.ResultImage)
		}
	}
	s.callErr(t, "lineage", map[string]any{"image": "nope"}, "not found")
	s.callErr(t, "lineage", map[string]any{"image": "flow-env", "max": 0}, "max")
}
