package layerfs

import (
	"fmt"
	"slices"
	"strings"
)

// Unified diff limits. Past them the diff stays correct but is no longer
// minimal: the differing middle of the files is shown as replaced whole.
const (
	diffContext  = 3    // context lines around each change
	maxDiffLines = 5000 // lines of both files, after their common prefix and suffix
	maxDiffEdits = 1000 // inserted plus deleted lines Myers' algorithm searches for
)

// edit is one line of an edit script: ' ' kept, '-' deleted, '+' inserted.
type edit struct {
	op   byte
	line string // with its newline, if it has one
}

// unifiedDiff returns a unified diff (as diff -u prints it) from a to b, or ""
// if they are equal.
func unifiedDiff(oldName, newName string, a, b []byte) string {
	edits := diffLines(splitLines(a), splitLines(b))
	// oldPos[i] and newPos[i] count the lines of a and b before edits[i].
	oldPos := make([]int, len(edits)+1)
	newPos := make([]int, len(edits)+1)
	for i, e := range edits {
		oldPos[i+1], newPos[i+1] = oldPos[i], newPos[i]
		if e.op != '+' {
			oldPos[i+1]++
		}
		if e.op != '-' {
			newPos[i+1]++
		}
	}
	var sb strings.Builder
	for i := 0; ; {
		start := i
		for start < len(edits) && edits[start].op == ' ' {
			start++
		}
		if start == len(edits) {
			break
		}
		// A hunk takes in the next change while at most 2*diffContext
		// unchanged lines separate them, as in GNU diff.
		end := start + 1
		for j := end; j < len(edits) && j-end <= 2*diffContext; j++ {
			if edits[j].op != ' ' {
				end = j + 1
			}
		}
		lo, hi := max(start-diffContext, i), min(end+diffContext, len(edits))
		if sb.Len() == 0 {
			fmt.Fprintf(&sb, "--- %s\n+++ %s\n", oldName, newName)
		}
		fmt.Fprintf(&sb, "@@ -%s +%s @@\n", hunkRange(oldPos[lo], oldPos[hi]), hunkRange(newPos[lo], newPos[hi]))
		for _, e := range edits[lo:hi] {
			sb.WriteByte(e.op)
			sb.WriteString(e.line)
			if !strings.HasSuffix(e.line, "\n") {
				sb.WriteString("\n\\ No newline at end of file\n")
			}
		}
		i = hi
	}
	return sb.String()
}

// hunkRange formats the lines [from, to) (0-based) of a hunk header.
func hunkRange(from, to int) string {
	switch n := to - from; n {
	case 0:
		return fmt.Sprintf("%d,0", from)
	case 1:
		return fmt.Sprintf("%d", from+1)
	default:
		return fmt.Sprintf("%d,%d", from+1, n)
	}
}

func splitLines(b []byte) []string {
	lines := strings.SplitAfter(string(b), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// diffLines returns an edit script from a to b. Only the part between the
// common prefix and suffix goes through Myers' algorithm, which keeps typical
// small edits of large files cheap.
func diffLines(a, b []string) []edit {
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	edits := make([]edit, 0, len(a)+len(b))
	for _, l := range a[:pre] {
		edits = append(edits, edit{' ', l})
	}
	ma, mb := a[pre:len(a)-suf], b[pre:len(b)-suf]
	mid, ok := []edit(nil), false
	if len(ma)+len(mb) <= maxDiffLines {
		mid, ok = myers(ma, mb, maxDiffEdits)
	}
	if ok {
		edits = append(edits, mid...)
	} else {
		for _, l := range ma {
			edits = append(edits, edit{'-', l})
		}
		for _, l := range mb {
			edits = append(edits, edit{'+', l})
		}
	}
	for _, l := range a[len(a)-suf:] {
		edits = append(edits, edit{' ', l})
	}
	return edits
}

// myers returns a shortest edit script from a to b (E. Myers, "An O(ND)
// Difference Algorithm and Its Variations", 1986), or false if it needs more
// than maxEdits insertions and deletions. Moves that would leave the edit
// graph are never taken, so every point on a path is a valid index pair.
func myers(a, b []string, maxEdits int) ([]edit, bool) {
	n, m := len(a), len(b)
	// trace[d][k+d] is the furthest x reached on diagonal k (x-y = k) with d
	// edits, or -1 if the diagonal cannot be reached with d edits.
	var trace [][]int
	for d := 0; d <= maxEdits; d++ {
		v := make([]int, 2*d+1)
		done := false
		for k := -d; k <= d; k += 2 {
			x := 0
			if d > 0 {
				x, _ = myersStep(trace[d-1], d-1, k, n, m)
			}
			if x >= 0 {
				for x < n && x-k < m && a[x] == b[x-k] {
					x++
				}
				done = done || (x == n && x-k == m)
			}
			v[k+d] = x
		}
		trace = append(trace, v)
		if done {
			return myersPath(a, b, trace), true
		}
	}
	return nil, false
}

// myersStep returns the furthest x on diagonal k after one more edit from
// round prev (which ended with p) and whether that edit is an insertion
// (moving down from diagonal k+1) rather than a deletion (moving right from
// diagonal k-1); x is -1 if no move stays inside the n×m edit graph.
func myersStep(p []int, prev, k, n, m int) (x int, down bool) {
	x = -1
	if k+1 <= prev {
		if px := p[k+1+prev]; px >= 0 && px-k <= m {
			x, down = px, true
		}
	}
	if k-1 >= -prev {
		if px := p[k-1+prev]; px >= 0 && px+1 <= n && px+1 > x {
			x, down = px+1, false
		}
	}
	return x, down
}

// myersPath walks trace back from (len(a), len(b)) to (0, 0).
func myersPath(a, b []string, trace [][]int) []edit {
	x, y := len(a), len(b)
	var rev []edit
	for d := len(trace) - 1; d >= 0; d-- {
		k := x - y
		// (sx, sy) is where the d-th edit landed; a snake of equal lines
		// leads from there to (x, y).
		sx, down := 0, false
		if d > 0 {
			sx, down = myersStep(trace[d-1], d-1, k, len(a), len(b))
		}
		for ; x > sx; x, y = x-1, y-1 {
			rev = append(rev, edit{' ', a[x-1]})
		}
		switch {
		case d == 0:
		case down:
			y--
			rev = append(rev, edit{'+', b[y]})
		default:
			x--
			rev = append(rev, edit{'-', a[x]})
		}
	}
	slices.Reverse(rev)
	return rev
}
