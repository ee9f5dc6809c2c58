package cli

import (
	"strings"
	"testing"

	"github.com/arborsh/arbor/client/apitypes"
)

func TestBranchTableAndKeep(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	base := d.runImage(t, "busybox", "echo base > /base", "--tag", "branch-base")
	r := d.arbor(t, "branch", "branch-base", "--keep", "--", "echo a > /a", "exit 4", "cat /base > /c")
	if r.code != 1 {
		t.Fatalf("branch with a failing command: exit %d, want 1\n%v", r.code, r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 5 {
		t.Fatalf("branch table has %d lines, want header, 3 rows, summary:\n%s", len(lines), r.stdout)
	}
	wantContains(t, "header", lines[0], "COMMAND", "EXIT", "DURATION", "IMAGE", "RESULT", "TAG")
	wantContains(t, "row 1", lines[1], "echo a > /a", " 0 ", "PASS", "branch-base-branch-1")
	wantContains(t, "row 2", lines[2], "exit 4", " 4 ", "FAIL")
	wantContains(t, "row 3", lines[3], "PASS", "branch-base-branch-3")
	wantContains(t, "summary", lines[4], "2 of 3 passed")
	// Winners are tagged, the loser is not.
	if got := d.ok(t, "cat", "branch-base-branch-3:/c"); got != "base\n" {
		t.Errorf("cat branch-base-branch-3:/c = %q, want base", got)
	}
	if got := d.ok(t, "cat", "branch-base-branch-1:/a"); got != "a\n" {
		t.Errorf("cat branch-base-branch-1:/a = %q, want a", got)
	}
	if r := d.arbor(t, "ls", "branch-base-branch-2"); r.code == 0 {
		t.Errorf("the failing branch was tagged: %v", r)
	}

	// --json, a custom prefix, and every branch passing.
	rs := okJSON[[]branchResult](t, d, "branch", base[:8], "--keep", "--keep-prefix", "bj", "-e", "V=v", "--", "echo $V > /v", "true")
	if len(rs) != 2 {
		t.Fatalf("branch --json = %+v, want 2 results", rs)
	}
	for i, br := range rs {
		if br.Index != i+1 || !br.Pass || br.ExitCode != 0 || br.Status != apitypes.StatusSuccess || br.Image == nil ||
			br.Tag == nil || *br.Tag != "bj-"+string(rune('1'+i)) || !apitypes.IsUUID(br.Operation) {
			t.Errorf("branch %d = %+v, want pass, image, tag bj-%d", i+1, br, i+1)
		}
	}
	if rs[1].Image == nil || *rs[1].Image != base {
		t.Errorf("a branch that changed nothing has image %v, want its input %s", rs[1].Image, base)
	}
	if got := d.ok(t, "cat", "bj-1:/v"); got != "v\n" {
		t.Errorf("cat bj-1:/v = %q, want v (env reached every branch)", got)
	}
}

func TestBranchMistakes(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	if r := d.arbor(t, "branch", "busybox"); r.code != 1 || !strings.Contains(r.stderr, "requires at least 2 arg") {
		t.Errorf("branch without commands: %v", r)
	}
	if r := d.arbor(t, "branch", "busyboxx", "--", "true"); r.code != 1 || !strings.Contains(r.stderr, "did you mean busybox") {
		t.Errorf("branch on an unknown tag: %v", r)
	}
}
