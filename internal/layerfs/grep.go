package layerfs

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"path"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"unicode"

	"github.com/arborsh/arbor/internal/errdefs"
)

// Grep limits. They bound the memory and time one request can take: with
// them a search holds at most one line's submatches and MaxContext lines of
// leading context at a time.
const (
	defaultMaxTotal = 1000
	maxGrepFileSize = 64 << 20 // larger files are skipped
	maxLineLen      = 64 << 10 // longer lines are cut
	binaryProbeLen  = 8 << 10  // a NUL byte in this prefix marks a binary file
	// MaxSubmatches is how many submatches of one line are reported; the
	// line still counts as one match.
	MaxSubmatches = 256
	// MaxContext is the most context lines asked for before or after a match.
	MaxContext = 100
)

// GrepQuery is a search over the files of an image. It mirrors the options of
// ripgrep, which the API's clients know.
type GrepQuery struct {
	Patterns []string // regular expressions (Go RE2 syntax); a line matches if any does
	Paths    []string // files or directories to search; default ["/"]
	Globs    []string // filepath.Match patterns on the base name; empty matches all files
	MaxCount int      // maximum matches per file; 0 means unlimited
	MaxTotal int      // maximum matches overall; 0 means 1000
	Case     string   // "sensitive" (default), "insensitive" or "smart"
	Before   int      // context lines before each match
	After    int      // context lines after each match
}

// GrepResult is the outcome of [FS.Grep].
type GrepResult struct {
	Path     string // the first requested path
	Patterns []string
	Matches  []GrepMatch // in walk order: by path, component by component, then by line
	// Truncated reports that the search stopped after MaxTotal matches, so
	// more may exist.
	Truncated bool
}

// GrepMatch is a matching line or a context line around one.
type GrepMatch struct {
	Path           string // canonical path of the file
	LineNumber     int    // 1-based
	AbsoluteOffset int64  // byte offset of the line's start in the file
	LineText       string // the line without its newline, cut to 64 KiB
	LineBytes      int    // length of the whole line without its newline
	Submatches     []Submatch
	Type           string // "match" or "context"
}

// Submatch is one match of a pattern within LineText.
type Submatch struct {
	Text       string
	Start, End int // byte offsets into LineText
}

// errGrepLimit stops the walk once MaxTotal matches were found.
var errGrepLimit = errors.New("grep: match limit reached")

// ErrStopGrep, returned by the function given to [FS.GrepFunc], ends the
// search early; GrepFunc then reports it as truncated.
var ErrStopGrep = errors.New("grep: stopped")

// Grep searches the regular files below q.Paths for lines matching any of
// q.Patterns and collects the matches. See [FS.GrepFunc].
func (f *FS) Grep(ctx context.Context, q GrepQuery) (GrepResult, error) {
	res := GrepResult{Path: "/", Patterns: q.Patterns, Matches: []GrepMatch{}}
	if len(q.Paths) > 0 {
		res.Path = q.Paths[0]
	}
	truncated, err := f.GrepFunc(ctx, q, func(m GrepMatch) error {
		res.Matches = append(res.Matches, m)
		return nil
	})
	if err != nil {
		return GrepResult{}, err
	}
	res.Truncated = truncated
	return res, nil
}

// GrepFunc searches the regular files below q.Paths for lines matching any
// of q.Patterns and calls fn with each matching or context line, in walk
// order, as it is found: nothing is held beyond the line at hand (and up
// to q.Before lines of leading context). Directories are walked without
// following symlinks; a path given in q.Paths is followed. Binary files (a
// NUL byte in the first 8 KiB), files over 64 MiB and special files are
// skipped; globs apply to every file, including ones named in q.Paths.
//
// truncated reports that the search stopped early, after MaxTotal matches
// or because fn returned [ErrStopGrep], so more matches may exist. Invalid
// queries and missing paths are reported before fn is first called.
func (f *FS) GrepFunc(ctx context.Context, q GrepQuery, fn func(GrepMatch) error) (truncated bool, err error) {
	re, err := compileGrep(q.Patterns, q.Case)
	if err != nil {
		return false, err
	}
	if q.MaxCount < 0 || q.MaxTotal < 0 || q.Before < 0 || q.After < 0 {
		return false, errdefs.InvalidArgument("grep limits and context must not be negative")
	}
	if q.Before > MaxContext || q.After > MaxContext {
		return false, errdefs.InvalidArgument("before and after are limited to %d context lines", MaxContext)
	}
	for _, g := range q.Globs {
		if _, err := filepath.Match(g, ""); err != nil {
			return false, errdefs.InvalidArgument("invalid glob %q", g)
		}
	}
	paths := q.Paths
	if len(paths) == 0 {
		paths = []string{"/"}
	}
	roots := make([]*node, 0, len(paths))
	for _, p := range paths {
		n, err := f.resolve(p, true)
		if err != nil {
			return false, err
		}
		roots = append(roots, n)
	}
	g := &grepper{
		f:        f,
		re:       re,
		q:        q,
		maxTotal: cmp.Or(q.MaxTotal, defaultMaxTotal),
		emit:     fn,
	}
	for _, r := range outermost(roots) {
		err := f.walk(ctx, r, func(n *node) error { return g.visit(ctx, n) })
		if errors.Is(err, errGrepLimit) || errors.Is(err, ErrStopGrep) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
	return false, nil
}

// compileGrep combines patterns into one regexp, so a line is scanned once.
func compileGrep(patterns []string, mode string) (*regexp.Regexp, error) {
	if len(patterns) == 0 {
		return nil, errdefs.InvalidArgument("grep needs at least one pattern")
	}
	var insensitive bool
	switch mode {
	case "", "sensitive":
	case "insensitive", "smart":
		insensitive = true
	default:
		return nil, errdefs.InvalidArgument("invalid case mode %q: want sensitive, insensitive or smart", mode)
	}
	alts := make([]string, len(patterns))
	for i, p := range patterns {
		re, err := syntax.Parse(p, syntax.Perl)
		if err != nil {
			return nil, errdefs.InvalidArgument("invalid pattern %q: %v", p, err)
		}
		if mode == "smart" && hasUpperLiteral(re) {
			insensitive = false
		}
		alts[i] = "(?:" + p + ")"
	}
	expr := strings.Join(alts, "|")
	if insensitive {
		expr = "(?i)" + expr
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, errdefs.InvalidArgument("invalid patterns: %v", err)
	}
	return re, nil
}

// hasUpperLiteral reports whether re matches an upper-case letter literally,
// which is what makes smart case sensitive (as in ripgrep): "\W" or "[A-Z]"
// do not count.
func hasUpperLiteral(re *syntax.Regexp) bool {
	if re.Op == syntax.OpLiteral && slices.ContainsFunc(re.Rune, unicode.IsUpper) {
		return true
	}
	return slices.ContainsFunc(re.Sub, hasUpperLiteral)
}

// outermost sorts nodes in walk order and drops duplicates and nodes inside
// another one, so each file is searched once and in order.
func outermost(nodes []*node) []*node {
	slices.SortFunc(nodes, func(a, b *node) int { return comparePaths(a.path, b.path) })
	var out []*node
	for _, n := range nodes {
		if len(out) > 0 && isWithin(n.path, out[len(out)-1].path) {
			continue
		}
		out = append(out, n)
	}
	return out
}

// comparePaths orders canonical paths as a depth-first walk visits them:
// component by component, so "/a/b" sorts before "/a-b".
func comparePaths(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		switch ca, cb := a[i], b[i]; {
		case ca == cb:
		case ca == '/':
			return -1
		case cb == '/':
			return 1
		default:
			return cmp.Compare(ca, cb)
		}
	}
	return cmp.Compare(len(a), len(b))
}

// isWithin reports whether canonical path p is dir or below it.
func isWithin(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

type grepper struct {
	f        *FS
	re       *regexp.Regexp
	q        GrepQuery
	maxTotal int
	total    int
	emit     func(GrepMatch) error
}

func (g *grepper) visit(ctx context.Context, n *node) error {
	if !g.wants(n) {
		return nil
	}
	file, err := g.f.open(n)
	if err != nil {
		return err
	}
	defer file.Close()
	return g.search(ctx, file, n.path)
}

// wants reports whether n is a file to search.
func (g *grepper) wants(n *node) bool {
	if !n.isRegular() || n.st.Size > maxGrepFileSize {
		return false
	}
	if len(g.q.Globs) == 0 {
		return true
	}
	base := path.Base(n.path)
	for _, glob := range g.q.Globs {
		if ok, _ := filepath.Match(glob, base); ok {
			return true
		}
	}
	return false
}

// search greps one file. Like grep -m, it still prints the trailing context
// of the last match once a limit is reached.
func (g *grepper) search(ctx context.Context, r io.Reader, name string) error {
	br := bufio.NewReaderSize(r, maxLineLen)
	if head, _ := br.Peek(binaryProbeLen); bytes.IndexByte(head, 0) >= 0 {
		return nil
	}
	var (
		buf    []byte
		off    int64
		lineNo int
		count  int         // matches in this file
		after  int         // trailing context lines still to emit
		before []GrepMatch // context lines seen since the last emitted line
		done   bool        // a limit was reached
	)
	for !done || after > 0 {
		line, n, err := readLine(br, buf)
		if err != nil && err != io.EOF {
			return err
		}
		if n == 0 {
			break
		}
		buf = line[:0]
		lineNo++
		if lineNo%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		lineBytes := n
		if err == nil {
			lineBytes-- // the newline
		}
		start := off
		off += int64(n)
		var locs [][]int
		if !done {
			locs = g.re.FindAllIndex(line, MaxSubmatches)
		}
		if locs == nil && after == 0 && g.q.Before == 0 {
			continue
		}
		m := GrepMatch{Path: name, LineNumber: lineNo, AbsoluteOffset: start, LineText: string(line), LineBytes: lineBytes, Type: "context"}
		switch {
		case locs != nil:
			m.Type = "match"
			m.Submatches = make([]Submatch, 0, len(locs))
			for _, loc := range locs {
				m.Submatches = append(m.Submatches, Submatch{Text: string(line[loc[0]:loc[1]]), Start: loc[0], End: loc[1]})
			}
			for _, c := range before {
				if err := g.emit(c); err != nil {
					return err
				}
			}
			clear(before) // drop the lines' text
			before = before[:0]
			if err := g.emit(m); err != nil {
				return err
			}
			after = g.q.After
			count++
			g.total++
			done = count == g.q.MaxCount || g.total == g.maxTotal
		case after > 0:
			if err := g.emit(m); err != nil {
				return err
			}
			after--
		case g.q.Before > 0:
			if len(before) == g.q.Before {
				before = append(before[:0], before[1:]...)
			}
			before = append(before, m)
		}
	}
	if g.total == g.maxTotal {
		return errGrepLimit
	}
	return nil
}

// readLine reads one line into buf, keeping at most maxLineLen bytes of it
// without the newline; n is the number of bytes consumed, newline included.
func readLine(br *bufio.Reader, buf []byte) (line []byte, n int, err error) {
	line = buf[:0]
	for {
		chunk, err := br.ReadSlice('\n')
		n += len(chunk)
		line = append(line, chunk[:min(len(chunk), maxLineLen-len(line))]...)
		if err != bufio.ErrBufferFull {
			return bytes.TrimSuffix(line, []byte{'\n'}), n, err
		}
	}
}
