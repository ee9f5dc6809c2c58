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

	// --json, a custom prefix, and every branch passing. The branch that
	// changed nothing results in the input image, which keeps its tag.
	r = d.arbor(t, "--json", "branch", base[:8], "--keep", "--keep-prefix", "bj", "-e", "V=v", "--", "echo $V > /v", "true")
	rs := decode[[]branchResult](t, r.stdout)
	if r.code != 0 || len(rs) != 2 {
		t.Fatalf("branch --json: exit %d, %+v, want 0 and 2 results", r.code, rs)
	}
	for i, br := range rs {
		if br.Index != i+1 || !br.Pass || br.ExitCode != 0 || br.Status != apitypes.StatusSuccess || br.Image == nil || !apitypes.IsUUID(br.Operation) {
			t.Errorf("branch %d = %+v, want pass, image", i+1, br)
		}
	}
	if rs[0].Tag == nil || *rs[0].Tag != "bj-1" || rs[0].TagNotSet != "" {
		t.Errorf("branch 1 = %+v, want tag bj-1", rs[0])
	}
	if rs[1].Image == nil || *rs[1].Image != base {
		t.Errorf("a branch that changed nothing has image %v, want its input %s", rs[1].Image, base)
	}
	if rs[1].Tag != nil || !strings.Contains(rs[1].TagNotSet, "made no new image") {
		t.Errorf("branch 2 (changed nothing) = %+v, want no tag and why", rs[1])
	}
	wantContains(t, "stderr", r.stderr, "branch 2 not tagged bj-2: the run changed nothing")
	if im, err := d.c.Image(t.Context(), base); err != nil || deref(im.Tag) != "branch-base" {
		t.Errorf("input image = %+v, %v; want it still tagged branch-base", im, err)
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

// TestBranchDisposable: --disposable branches save nothing, as arbor run's.
func TestBranchDisposable(t *testing.T) {
	t.Parallel()
	d := sharedDaemon(t)
	r := d.arbor(t, "--json", "branch", "--disposable", "busybox", "--", "echo a > /a", "exit 2")
	rs := decode[[]branchResult](t, r.stdout)
	if r.code != 1 || len(rs) != 2 {
		t.Fatalf("branch --disposable: exit %d, %+v; want 1 and 2 results", r.code, rs)
	}
	for i, br := range rs {
		if br.Image != nil || br.Status != apitypes.StatusSuccess || br.Pass != (i == 0) {
			t.Errorf("branch %d = %+v, want no image", i+1, br)
		}
	}
}
