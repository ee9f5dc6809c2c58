package layerfs

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

// match builds an expected GrepMatch; subs are text, start, end triples.
func match(p string, line int, off int64, text string, subs ...any) GrepMatch {
	m := GrepMatch{Path: p, LineNumber: line, AbsoluteOffset: off, LineText: text, LineBytes: len(text), Type: "match"}
	for i := 0; i < len(subs); i += 3 {
		m.Submatches = append(m.Submatches, Submatch{Text: subs[i].(string), Start: subs[i+1].(int), End: subs[i+2].(int)})
	}
	return m
}

func ctxLine(p string, line int, off int64, text string) GrepMatch {
	return GrepMatch{Path: p, LineNumber: line, AbsoluteOffset: off, LineText: text, LineBytes: len(text), Type: "context"}
}

func TestGrep(t *testing.T) {
	f := New(newImage(t).layers)
	const a, b = "/data/a.txt", "/data/b.log"
	tests := []struct {
		name      string
		q         GrepQuery
		want      []GrepMatch
		truncated bool
	}{
		{
			name: "one pattern",
			q:    GrepQuery{Patterns: []string{"beta"}, Paths: []string{"/data"}},
			want: []GrepMatch{
				match(a, 2, 6, "beta", "beta", 0, 4),
				match("/data/sub/c.txt", 1, 0, "beta in sub", "beta", 0, 4),
			},
		},
		{
			name: "context lines are not repeated",
			q:    GrepQuery{Patterns: []string{"gamma|epsilon"}, Paths: []string{a}, Before: 1, After: 1},
			want: []GrepMatch{
				ctxLine(a, 2, 6, "beta"),
				match(a, 3, 11, "gamma", "gamma", 0, 5),
				ctxLine(a, 4, 17, "delta"),
				match(a, 5, 23, "epsilon", "epsilon", 0, 7),
				ctxLine(a, 6, 31, "zeta"),
			},
		},
		{
			name: "before context",
			q:    GrepQuery{Patterns: []string{"delta"}, Paths: []string{a}, Before: 2},
			want: []GrepMatch{
				ctxLine(a, 2, 6, "beta"),
				ctxLine(a, 3, 11, "gamma"),
				match(a, 4, 17, "delta", "delta", 0, 5),
			},
		},
		{
			name: "max count keeps trailing context",
			q:    GrepQuery{Patterns: []string{"a"}, Paths: []string{a}, MaxCount: 1, After: 1},
			want: []GrepMatch{
				match(a, 1, 0, "alpha", "a", 0, 1, "a", 4, 5),
				ctxLine(a, 2, 6, "beta"),
			},
		},
		{
			name: "max count per file",
			q:    GrepQuery{Patterns: []string{"beta"}, Paths: []string{"/data"}, MaxCount: 1},
			want: []GrepMatch{
				match(a, 2, 6, "beta", "beta", 0, 4),
				match("/data/sub/c.txt", 1, 0, "beta in sub", "beta", 0, 4),
			},
		},
		{
			name: "max total",
			q:    GrepQuery{Patterns: []string{"e"}, Paths: []string{"/data"}, MaxTotal: 2},
			want: []GrepMatch{
				match(a, 2, 6, "beta", "e", 1, 2),
				match(a, 4, 17, "delta", "e", 1, 2),
			},
			truncated: true,
		},
		{
			name: "case sensitive by default",
			q:    GrepQuery{Patterns: []string{"error"}, Paths: []string{b}},
			want: []GrepMatch{match(b, 2, 12, "error: net", "error", 0, 5)},
		},
		{
			name: "case insensitive",
			q:    GrepQuery{Patterns: []string{"error"}, Paths: []string{b}, Case: "insensitive"},
			want: []GrepMatch{
				match(b, 1, 0, "Error: disk", "Error", 0, 5),
				match(b, 2, 12, "error: net", "error", 0, 5),
				match(b, 4, 26, "ERROR: cpu", "ERROR", 0, 5),
			},
		},
		{
			name: "smart case, lower-case pattern",
			q:    GrepQuery{Patterns: []string{"error"}, Paths: []string{b}, Case: "smart"},
			want: []GrepMatch{
				match(b, 1, 0, "Error: disk", "Error", 0, 5),
				match(b, 2, 12, "error: net", "error", 0, 5),
				match(b, 4, 26, "ERROR: cpu", "ERROR", 0, 5),
			},
		},
		{
			name: "smart case, upper-case pattern",
			q:    GrepQuery{Patterns: []string{"Error"}, Paths: []string{b}, Case: "smart"},
			want: []GrepMatch{match(b, 1, 0, "Error: disk", "Error", 0, 5)},
		},
		{
			name: "smart case, upper-case class is not a literal",
			q:    GrepQuery{Patterns: []string{"[A-Z]rror"}, Paths: []string{b}, Case: "smart"},
			want: []GrepMatch{
				match(b, 1, 0, "Error: disk", "Error", 0, 5),
				match(b, 2, 12, "error: net", "error", 0, 5),
				match(b, 4, 26, "ERROR: cpu", "ERROR", 0, 5),
			},
		},
		{
			name: "several patterns",
			q:    GrepQuery{Patterns: []string{"alp", "ha"}, Paths: []string{a}},
			want: []GrepMatch{match(a, 1, 0, "alpha", "alp", 0, 3, "ha", 3, 5)},
		},
		{
			name: "globs",
			q:    GrepQuery{Patterns: []string{"net|disk"}, Globs: []string{"*.md", "*.log"}},
			want: []GrepMatch{
				match(b, 1, 0, "Error: disk", "disk", 7, 11),
				match(b, 2, 12, "error: net", "net", 7, 10),
			},
		},
		{
			name: "globs apply to named files",
			q:    GrepQuery{Patterns: []string{"error"}, Paths: []string{b}, Globs: []string{"*.txt"}},
		},
		{
			name: "binary files are skipped",
			q:    GrepQuery{Patterns: []string{"binary|error"}, Paths: []string{"/data/bin.dat", "/usr/lib"}},
		},
		{
			name: "long lines are cut",
			q:    GrepQuery{Patterns: []string{"needle"}, Paths: []string{"/data/long.txt"}},
			want: []GrepMatch{match("/data/long.txt", 2, 70007, "short needle", "needle", 6, 12)},
		},
		{
			name: "nested paths are searched once, in order",
			q:    GrepQuery{Patterns: []string{"beta"}, Paths: []string{"/data/sub", "/data/a.txt", "/rootlink/data"}},
			want: []GrepMatch{
				match(a, 2, 6, "beta", "beta", 0, 4),
				match("/data/sub/c.txt", 1, 0, "beta in sub", "beta", 0, 4),
			},
		},
		{
			name: "named symlink is followed",
			q:    GrepQuery{Patterns: []string{"^root"}, Paths: []string{"/evil"}},
			want: []GrepMatch{match("/etc/passwd", 1, 0, "root:x:0:0:root:/root:/bin/bash", "root", 0, 4)},
		},
		{
			name: "walk does not follow symlinks",
			q:    GrepQuery{Patterns: []string{"Welcome"}, Paths: []string{"/", "/rootlink"}},
			want: []GrepMatch{match("/etc/motd", 1, 0, "Welcome to arbor", "Welcome", 0, 7)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := f.Grep(context.Background(), tc.q)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want == nil {
				want = []GrepMatch{}
			}
			if !reflect.DeepEqual(res.Matches, want) {
				t.Errorf("Grep(%+v).Matches =\n%+v\nwant\n%+v", tc.q, res.Matches, want)
			}
			if res.Truncated != tc.truncated {
				t.Errorf("Grep(%+v).Truncated = %v, want %v", tc.q, res.Truncated, tc.truncated)
			}
			wantPath := "/"
			if len(tc.q.Paths) > 0 {
				wantPath = tc.q.Paths[0]
			}
			if res.Path != wantPath || !reflect.DeepEqual(res.Patterns, tc.q.Patterns) {
				t.Errorf("Grep(%+v) = path %q patterns %q, want %q %q", tc.q, res.Path, res.Patterns, wantPath, tc.q.Patterns)
			}
		})
	}
}

func TestGrepLongLine(t *testing.T) {
	f := New(newImage(t).layers)
	res, err := f.Grep(context.Background(), GrepQuery{Patterns: []string{"^x+$"}, Paths: []string{"/data/long.txt"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Matches) != 1 {
		t.Fatalf("got %d matches, want 1", len(res.Matches))
	}
	m := res.Matches[0]
	if m.LineText != strings.Repeat("x", maxLineLen) || m.LineBytes != 70006 || m.Submatches[0].End != maxLineLen {
		t.Errorf("long line match: text of %d bytes, LineBytes %d, submatch %d-%d; want %d, 70006, 0-%d",
			len(m.LineText), m.LineBytes, m.Submatches[0].Start, m.Submatches[0].End, maxLineLen, maxLineLen)
	}
}

// TestGrepFuncBounds: a line reports at most MaxSubmatches submatches, and
// a callback that says stop ends the search as truncated.
func TestGrepFuncBounds(t *testing.T) {
	f := New(newImage(t).layers)
	var got []GrepMatch
	truncated, err := f.GrepFunc(context.Background(), GrepQuery{Patterns: []string{"x|needle"}, Paths: []string{"/data/long.txt"}},
		func(m GrepMatch) error {
			got = append(got, m)
			return ErrStopGrep
		})
	if err != nil || !truncated {
		t.Fatalf("GrepFunc stopped by its callback = truncated %v, %v; want true, nil", truncated, err)
	}
	if len(got) != 1 || len(got[0].Submatches) != MaxSubmatches {
		t.Fatalf("got %d matches, the first with %d submatches; want 1 with %d", len(got), len(got[0].Submatches), MaxSubmatches)
	}
}

func TestGrepErrors(t *testing.T) {
	f := New(newImage(t).layers)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		q       GrepQuery
		wantErr func(error) bool
	}{
		{name: "no pattern", q: GrepQuery{}, wantErr: isInvalidArgument},
		{name: "bad pattern", q: GrepQuery{Patterns: []string{"ok", "("}}, wantErr: isInvalidArgument},
		{name: "bad case", q: GrepQuery{Patterns: []string{"x"}, Case: "upper"}, wantErr: isInvalidArgument},
		{name: "bad glob", q: GrepQuery{Patterns: []string{"x"}, Globs: []string{"["}}, wantErr: isInvalidArgument},
		{name: "negative limit", q: GrepQuery{Patterns: []string{"x"}, MaxCount: -1}, wantErr: isInvalidArgument},
		{name: "negative context", q: GrepQuery{Patterns: []string{"x"}, Before: -1}, wantErr: isInvalidArgument},
		{name: "too much context", q: GrepQuery{Patterns: []string{"x"}, After: MaxContext + 1}, wantErr: isInvalidArgument},
		{name: "missing path", q: GrepQuery{Patterns: []string{"x"}, Paths: []string{"/nope"}}, wantErr: isNotFound},
		{name: "path with NUL", q: GrepQuery{Patterns: []string{"x"}, Paths: []string{"/\x00"}}, wantErr: isInvalidArgument},
		{name: "canceled", ctx: canceled, q: GrepQuery{Patterns: []string{"x"}}, wantErr: isCanceled},
	}
	for _, tc := range tests {
		ctx := tc.ctx
		if ctx == nil {
			ctx = context.Background()
		}
		if _, err := f.Grep(ctx, tc.q); !tc.wantErr(err) {
			t.Errorf("%s: Grep(%+v) error = %v, want another class", tc.name, tc.q, err)
		}
	}
}
