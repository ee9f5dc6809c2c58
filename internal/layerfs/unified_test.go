package layerfs

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func numbered(n int, change map[int]string) string {
	var sb strings.Builder
	for i := 1; i <= n; i++ {
		if s, ok := change[i]; ok {
			sb.WriteString(s + "\n")
		} else {
			fmt.Fprintf(&sb, "%d\n", i)
		}
	}
	return sb.String()
}

func TestUnifiedDiff(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want string
	}{
		{name: "equal", a: "x\ny\n", b: "x\ny\n", want: ""},
		{name: "both empty", want: ""},
		{
			name: "one line changed",
			a:    "line1\nline2\nline3\n", b: "line1\nline2 changed\nline3\n",
			want: "--- a\n+++ b\n@@ -1,3 +1,3 @@\n line1\n-line2\n+line2 changed\n line3\n",
		},
		{
			name: "from empty",
			a:    "", b: "x\n",
			want: "--- a\n+++ b\n@@ -0,0 +1 @@\n+x\n",
		},
		{
			name: "to empty",
			a:    "x\ny\n", b: "",
			want: "--- a\n+++ b\n@@ -1,2 +0,0 @@\n-x\n-y\n",
		},
		{
			name: "no newline at end",
			a:    "a\nb", b: "a\nc",
			want: "--- a\n+++ b\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n",
		},
		{
			name: "newline added",
			a:    "a", b: "a\n",
			want: "--- a\n+++ b\n@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+a\n",
		},
		{
			name: "two hunks",
			a:    numbered(20, nil), b: numbered(20, map[int]string{2: "two", 18: "eighteen"}),
			want: "--- a\n+++ b\n@@ -1,5 +1,5 @@\n 1\n-2\n+two\n 3\n 4\n 5\n" +
				"@@ -15,6 +15,6 @@\n 15\n 16\n 17\n-18\n+eighteen\n 19\n 20\n",
		},
		{
			name: "hunks 6 lines apart merge",
			a:    numbered(20, nil), b: numbered(20, map[int]string{2: "two", 9: "nine"}),
			want: "--- a\n+++ b\n@@ -1,12 +1,12 @@\n 1\n-2\n+two\n 3\n 4\n 5\n 6\n 7\n 8\n-9\n+nine\n 10\n 11\n 12\n",
		},
		{
			name: "hunks 7 lines apart do not merge",
			a:    numbered(20, nil), b: numbered(20, map[int]string{2: "two", 10: "ten"}),
			want: "--- a\n+++ b\n@@ -1,5 +1,5 @@\n 1\n-2\n+two\n 3\n 4\n 5\n" +
				"@@ -7,7 +7,7 @@\n 7\n 8\n 9\n-10\n+ten\n 11\n 12\n 13\n",
		},
		{
			name: "insertion in the middle",
			a:    "a\nb\nc\nd\n", b: "a\nb\nnew\nc\nd\n",
			want: "--- a\n+++ b\n@@ -1,4 +1,5 @@\n a\n b\n+new\n c\n d\n",
		},
	}
	for _, tc := range tests {
		if got := unifiedDiff("a", "b", []byte(tc.a), []byte(tc.b)); got != tc.want {
			t.Errorf("%s: unifiedDiff(%q, %q) =\n%s\nwant\n%s", tc.name, tc.a, tc.b, got, tc.want)
		}
	}
}

// TestUnifiedDiffRandom checks on random inputs that the diff applies and,
// within the search limits, is minimal.
func TestUnifiedDiffRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	gen := func() string {
		var sb strings.Builder
		for range r.IntN(14) {
			sb.WriteString([]string{"x\n", "y\n", "z\n"}[r.IntN(3)])
		}
		if r.IntN(4) == 0 {
			sb.WriteString("tail")
		}
		return sb.String()
	}
	for range 2000 {
		a, b := gen(), gen()
		d := unifiedDiff("a", "b", []byte(a), []byte(b))
		if got := applyUnified(t, a, d); got != b {
			t.Fatalf("applying unifiedDiff(%q, %q) =\n%s\ngives %q", a, b, d, got)
		}
		al, bl := splitLines([]byte(a)), splitLines([]byte(b))
		edits := 0
		for _, e := range diffLines(al, bl) {
			if e.op != ' ' {
				edits++
			}
		}
		if want := len(al) + len(bl) - 2*lcs(al, bl); edits != want {
			t.Fatalf("diffLines(%q, %q) has %d edits, want %d", a, b, edits, want)
		}
	}
}

// TestUnifiedDiffLimits checks that inputs past the search limits still give
// a correct diff.
func TestUnifiedDiffLimits(t *testing.T) {
	lines := func(prefix string, n int) string {
		var sb strings.Builder
		for i := range n {
			sb.WriteString(prefix + strconv.Itoa(i) + "\n")
		}
		return sb.String()
	}
	tests := []struct{ name, a, b string }{
		{name: "too many lines", a: lines("a", 3000), b: lines("b", 3000)},
		{name: "too many edits", a: lines("a", 1000), b: lines("b", 1000)},
		{name: "within limits", a: lines("a", 900), b: lines("a", 900) + "x\n"},
	}
	for _, tc := range tests {
		d := unifiedDiff("a", "b", []byte(tc.a), []byte(tc.b))
		if got := applyUnified(t, tc.a, d); got != tc.b {
			t.Errorf("%s: diff does not apply", tc.name)
		}
	}
}

func lcs(a, b []string) int {
	dp := make([][]int, len(a)+1)
	for i := range dp {
		dp[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				dp[i][j] = dp[i+1][j+1] + 1
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	return dp[0][0]
}

// applyUnified applies a unified diff made by unifiedDiff to a, checking the
// hunk headers on the way.
func applyUnified(t *testing.T, a, d string) string {
	t.Helper()
	if d == "" {
		return a
	}
	lines := strings.SplitAfter(d, "\n")
	if !strings.HasPrefix(lines[0], "--- ") || !strings.HasPrefix(lines[1], "+++ ") {
		t.Fatalf("bad diff header in\n%s", d)
	}
	type bodyLine struct {
		op   byte
		text string
	}
	src := splitLines([]byte(a))
	var out []string
	pos := 0
	for i := 2; i < len(lines) && lines[i] != ""; {
		f := strings.Fields(lines[i])
		oldStart, oldCount := parseRange(f[1][1:])
		_, newCount := parseRange(f[2][1:])
		i++
		var body []bodyLine
		for ; i < len(lines) && lines[i] != "" && !strings.HasPrefix(lines[i], "@@"); i++ {
			if lines[i][0] == '\\' {
				body[len(body)-1].text = strings.TrimSuffix(body[len(body)-1].text, "\n")
				continue
			}
			body = append(body, bodyLine{lines[i][0], lines[i][1:]})
		}
		start := oldStart - 1
		if oldCount == 0 {
			start = oldStart
		}
		out = append(out, src[pos:start]...)
		pos = start
		olds, news := 0, 0
		for _, l := range body {
			if l.op != '+' {
				if pos >= len(src) || src[pos] != l.text {
					t.Fatalf("hunk does not match the old text at line %d in\n%s", pos+1, d)
				}
				pos++
				olds++
			}
			if l.op != '-' {
				out = append(out, l.text)
				news++
			}
		}
		if olds != oldCount || news != newCount {
			t.Fatalf("hunk header counts %d,%d but body has %d,%d in\n%s", oldCount, newCount, olds, news, d)
		}
	}
	return strings.Join(append(out, src[pos:]...), "")
}

// parseRange parses "start,count" or "start" (count 1) of a hunk header.
func parseRange(s string) (start, count int) {
	count = 1
	if i := strings.IndexByte(s, ','); i >= 0 {
		count, _ = strconv.Atoi(s[i+1:])
		s = s[:i]
	}
	start, _ = strconv.Atoi(s)
	return start, count
}
