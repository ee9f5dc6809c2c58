package api

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/arborsh/arbor/internal/errdefs"
	"github.com/arborsh/arbor/internal/layerfs"
)

// findByTag answers GET /v1/inspect/?tag=NAME with 302 and a Location
// relative to /v1/inspect/ ("<uuid>/"), as ConTree does; the Go client reads
// the uuid from it without following. The legacy slash-less form
// /v1/inspect?tag= gets "inspect/<uuid>/", which resolves to the same place.
func (s *server) findByTag(w http.ResponseWriter, r *http.Request) error {
	tag := strings.TrimPrefix(strings.TrimSpace(tagQuery(r)), "tag:")
	if tag == "" {
		return errdefs.InvalidArgument("tag is required")
	}
	im, err := s.e.ResolveImage(r.Context(), accountOf(r), tag)
	if err != nil {
		return err
	}
	loc := im.UUID + "/"
	if !strings.HasSuffix(r.URL.Path, "/") {
		loc = "inspect/" + loc
	}
	w.Header().Set("Location", loc)
	w.WriteHeader(http.StatusFound)
	return nil
}

// inspectImage answers GET /v1/inspect/{uuid}/ (and without the slash) with
// the Image.
func (s *server) inspectImage(w http.ResponseWriter, r *http.Request) error {
	im, err := s.e.Image(r.Context(), accountOf(r), r.PathValue("uuid"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, imageView(im))
	return nil
}

// imageFS opens the image of r's {uuid} for reading; release must be called.
func (s *server) imageFS(r *http.Request) (*layerfs.FS, func(), error) {
	id, err := uuidParam("image", r.PathValue("uuid"))
	if err != nil {
		return nil, nil, err
	}
	return s.e.ImageFS(r.Context(), accountOf(r), id)
}

// download answers GET and HEAD /v1/inspect/{uuid}/download?path=: the raw
// bytes of one regular file with its Content-Length (HEAD: headers only).
func (s *server) download(w http.ResponseWriter, r *http.Request) error {
	p := r.URL.Query().Get("path")
	if p == "" {
		return errdefs.InvalidArgument("path is required: ?path=/etc/hostname")
	}
	fsys, release, err := s.imageFS(r)
	if err != nil {
		return err
	}
	defer release()
	// One look at the path decides: HEAD is ConTree's existence probe (200
	// for any path that exists, a directory included), GET needs a file.
	st, err := fsys.Stat(p)
	if errdefs.IsNotFound(err) {
		return errdefs.NotFound("file not found: %s", p)
	}
	if err != nil {
		return err
	}
	if !st.Mode.IsRegular() {
		if r.Method != http.MethodHead {
			if st.Mode.IsDir() {
				return errdefs.InvalidArgument("%s is a directory: list it (GET /v1/inspect/{uuid}/list?path=) or download it as a tar archive (GET /v1/inspect/{uuid}/archive?path=)", p)
			}
			return errdefs.InvalidArgument("not a regular file: %s", p)
		}
		// Says what it is, for clients (arbor's) that need a file.
		kind := "other"
		if st.Mode.IsDir() {
			kind = "directory"
		}
		w.Header().Set(apitypes.PathTypeHeader, kind)
		w.WriteHeader(http.StatusOK)
		return nil
	}
	f, ent, err := fsys.Open(p)
	if errdefs.IsNotFound(err) {
		return errdefs.NotFound("file not found: %s", p)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(ent.Size, 10))
	h.Set("Last-Modified", ent.ModTime.UTC().Format(http.TimeFormat))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	n, err := io.Copy(newFlushWriter(w), f)
	if err == nil && n != ent.Size {
		err = fmt.Errorf("file size changed while reading: %d of %d bytes", n, ent.Size)
	}
	if err != nil {
		s.abort(r, "download", err)
	}
	return nil
}

// archive answers GET and HEAD /v1/inspect/{uuid}/archive?path=: a PAX tar
// stream of the subtree (members relative to it). The size is unknown up
// front, so the stream is chunked and cut on failure.
func (s *server) archive(w http.ResponseWriter, r *http.Request) error {
	p := r.URL.Query().Get("path")
	if p == "" {
		p = "/"
	}
	fsys, release, err := s.imageFS(r)
	if err != nil {
		return err
	}
	defer release()
	if _, err := fsys.Stat(p); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	fw := newFlushWriter(w)
	err = fsys.WriteTar(r.Context(), fw, p)
	if err == nil {
		err = fw.Flush()
	}
	if err != nil {
		s.abort(r, "archive", err)
	}
	return nil
}

// abort ends a response that failed after its headers went out by dropping
// the connection: no final chunk and no gzip trailer, so the client sees a
// truncated stream rather than a short but valid one.
func (s *server) abort(r *http.Request, what string, err error) {
	if r.Context().Err() == nil {
		s.log.WarnContext(r.Context(), what+" failed mid-stream", "path", r.URL.Path, "err", err, "request_id", requestIDOf(r.Context()))
	}
	panic(http.ErrAbortHandler)
}

// flushWriter flushes the response every 64 KiB, so a gzip-compressed
// stream reaches the client as it is produced instead of at the end.
type flushWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	pending int
}

func newFlushWriter(w http.ResponseWriter) *flushWriter {
	return &flushWriter{w: w, rc: http.NewResponseController(w)}
}

func (f *flushWriter) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	f.pending += n
	if err == nil && f.pending >= 64<<10 {
		err = f.Flush()
	}
	return n, err
}

func (f *flushWriter) Flush() error {
	f.pending = 0
	return f.rc.Flush()
}

// list answers GET /v1/inspect/{uuid}/list?path=: a DirectoryList, or with
// the text parameter present (any value) ls -l style plain text. A path that
// is not a directory lists that one entry, as ls does.
func (s *server) list(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	p := path.Clean("/" + q.Get("path"))
	fsys, release, err := s.imageFS(r)
	if err != nil {
		return err
	}
	defer release()
	ent, err := fsys.Stat(p)
	if err != nil {
		return err
	}
	ents := []layerfs.Entry{ent}
	if ent.Mode.IsDir() {
		if ents, err = fsys.ReadDir(p); err != nil {
			return err
		}
	}
	names := readNames(fsys)
	if _, text := q["text"]; text {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, lsLong(ents, names, time.Now()))
		return nil
	}
	out := apitypes.DirectoryList{Path: p, Files: make([]apitypes.FileItem, 0, len(ents))}
	for _, e := range ents {
		out.Files = append(out.Files, apitypes.FileItem{
			Size: e.Size, Path: e.Name, Owner: names.owner(e.UID), Group: names.group(e.GID), UID: int(e.UID), GID: int(e.GID),
			Mode: e.RawMode, Mtime: e.ModTime.Unix(), Nlink: int64(e.Nlink),
			IsDir:     e.RawMode&unix.S_IFMT == unix.S_IFDIR,
			IsRegular: e.RawMode&unix.S_IFMT == unix.S_IFREG,
			IsSymlink: e.RawMode&unix.S_IFMT == unix.S_IFLNK,
			IsSocket:  e.RawMode&unix.S_IFMT == unix.S_IFSOCK,
			IsFifo:    e.RawMode&unix.S_IFMT == unix.S_IFIFO,
			SymlinkTo: e.Linkname,
		})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// idNames maps the image's own uids and gids to names (from its /etc/passwd
// and /etc/group), which is what ls inside the sandbox would show.
type idNames struct{ users, groups map[uint32]string }

func (n idNames) owner(uid uint32) any {
	if s, ok := n.users[uid]; ok {
		return s
	}
	return int(uid)
}

func (n idNames) group(gid uint32) any {
	if s, ok := n.groups[gid]; ok {
		return s
	}
	return int(gid)
}

func readNames(fsys *layerfs.FS) idNames {
	return idNames{users: readIDFile(fsys, "/etc/passwd"), groups: readIDFile(fsys, "/etc/group")}
}

// readIDFile parses name:x:id lines; a missing or odd file yields no names.
func readIDFile(fsys *layerfs.FS, p string) map[uint32]string {
	out := map[uint32]string{}
	f, _, err := fsys.Open(p)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), ":", 4)
		if len(fields) < 3 {
			continue
		}
		if id, err := strconv.ParseUint(fields[2], 10, 32); err == nil {
			if _, dup := out[uint32(id)]; !dup {
				out[uint32(id)] = fields[0]
			}
		}
	}
	return out
}

// lsLong renders entries like ls -l: mode, links, owner, group, size, mtime
// (time of day within six months, else the year), name and link target.
func lsLong(ents []layerfs.Entry, names idNames, now time.Time) string {
	rows := make([][]string, len(ents))
	widths := make([]int, 5)
	for i, e := range ents {
		rows[i] = []string{lsMode(e.RawMode), strconv.FormatUint(e.Nlink, 10), fmt.Sprint(names.owner(e.UID)),
			fmt.Sprint(names.group(e.GID)), strconv.FormatInt(e.Size, 10)}
		for j, c := range rows[i] {
			widths[j] = max(widths[j], len(c))
		}
	}
	var b strings.Builder
	for i, e := range ents {
		r := rows[i]
		stamp := e.ModTime.Local().Format("Jan _2 15:04")
		if age := now.Sub(e.ModTime); age > 182*24*time.Hour || age < -time.Hour {
			stamp = e.ModTime.Local().Format("Jan _2  2006")
		}
		fmt.Fprintf(&b, "%s %*s %-*s %-*s %*s %s %s", r[0], widths[1], r[1], widths[2], r[2], widths[3], r[3], widths[4], r[4], stamp, e.Name)
		if e.Linkname != "" {
			b.WriteString(" -> " + e.Linkname)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// lsMode renders st_mode as ls does, e.g. "drwxr-xr-x" or "-rwsr-xr-x".
func lsMode(m uint32) string {
	b := []byte("?rwxrwxrwx")
	switch m & unix.S_IFMT {
	case unix.S_IFREG:
		b[0] = '-'
	case unix.S_IFDIR:
		b[0] = 'd'
	case unix.S_IFLNK:
		b[0] = 'l'
	case unix.S_IFCHR:
		b[0] = 'c'
	case unix.S_IFBLK:
		b[0] = 'b'
	case unix.S_IFIFO:
		b[0] = 'p'
	case unix.S_IFSOCK:
		b[0] = 's'
	}
	for i := range 9 {
		if m&(1<<(8-i)) == 0 {
			b[1+i] = '-'
		}
	}
	special := func(bit uint32, at int, set, unset byte) {
		if m&bit != 0 {
			if b[at] == '-' {
				b[at] = unset
			} else {
				b[at] = set
			}
		}
	}
	special(unix.S_ISUID, 3, 's', 'S')
	special(unix.S_ISGID, 6, 's', 'S')
	special(unix.S_ISVTX, 9, 't', 'T')
	return string(b)
}

// grep answers GET /v1/inspect/{uuid}/grep. pattern, path and glob repeat.
func (s *server) grep(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	gq := layerfs.GrepQuery{Patterns: values(q, "pattern"), Paths: values(q, "path"), Globs: values(q, "glob"),
		Case: strings.ToLower(strings.TrimSpace(q.Get("case")))}
	if len(gq.Patterns) == 0 {
		return errdefs.InvalidArgument("pattern is required: ?pattern=REGEX (repeat it for several)")
	}
	var err error
	for _, p := range []struct {
		name string
		dst  *int
	}{{"max_count", &gq.MaxCount}, {"max_total", &gq.MaxTotal}, {"before", &gq.Before}, {"after", &gq.After}} {
		if *p.dst, err = intParam(q, p.name, 0, 0); err != nil {
			return err
		}
	}
	fsys, release, err := s.imageFS(r)
	if err != nil {
		return err
	}
	defer release()
	out := &grepStream{w: w, fw: newFlushWriter(w), max: s.opts.MaxGrepBytes, path: cmp.Or(firstOf(gq.Paths), "/"), patterns: gq.Patterns}
	truncated, err := fsys.GrepFunc(r.Context(), gq, out.match)
	if err == nil {
		err = out.finish(truncated)
	}
	if err != nil {
		if !out.started {
			return err
		}
		s.abort(r, "grep", err)
	}
	return nil
}

func firstOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// grepStream writes a GrepResult as its matches are found, so the daemon
// holds one match at a time, and stops the search (truncated: true) before
// the answer would grow past max bytes, so clients that read it whole stay
// bounded too. Nothing is written before the first match, so an error up
// to then still gets a proper error status.
type grepStream struct {
	w        http.ResponseWriter
	fw       *flushWriter
	max      int64
	path     string
	patterns []string
	started  bool
	n        int64 // bytes written
	buf      bytes.Buffer
}

// grepTail is the most the end of the answer takes: "],\"truncated\":false}\n".
const grepTail = 24

func (g *grepStream) start() error {
	g.started = true
	head, err := json.Marshal(struct {
		Path     string   `json:"path"`
		Patterns []string `json:"patterns"`
	}{g.path, g.patterns})
	if err != nil {
		return err
	}
	g.w.Header().Set("Content-Type", "application/json")
	g.w.WriteHeader(http.StatusOK)
	return g.write(append(head[:len(head)-1], `,"matches":[`...))
}

func (g *grepStream) write(b []byte) error {
	n, err := g.fw.Write(b)
	g.n += int64(n)
	return err
}

func (g *grepStream) match(m layerfs.GrepMatch) error {
	gm := apitypes.GrepMatch{Path: m.Path, LineNumber: m.LineNumber, AbsoluteOffset: m.AbsoluteOffset, LineText: m.LineText,
		LineBytes: m.LineBytes, Type: m.Type, Submatches: make([]apitypes.GrepSubmatch, 0, len(m.Submatches))}
	for _, sm := range m.Submatches {
		gm.Submatches = append(gm.Submatches, apitypes.GrepSubmatch{Text: sm.Text, Start: sm.Start, End: sm.End})
	}
	g.buf.Reset()
	if !g.started {
		g.buf.WriteByte(' ') // stands in for the comma the first match does not need
	} else {
		g.buf.WriteByte(',')
	}
	enc := json.NewEncoder(&g.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(gm); err != nil {
		return err
	}
	b := bytes.TrimSuffix(g.buf.Bytes(), []byte{'\n'})
	if !g.started {
		if err := g.start(); err != nil {
			return err
		}
		b = b[1:]
	}
	if g.n+int64(len(b))+grepTail > g.max {
		return layerfs.ErrStopGrep
	}
	return g.write(b)
}

func (g *grepStream) finish(truncated bool) error {
	if !g.started {
		if err := g.start(); err != nil {
			return err
		}
	}
	if err := g.write([]byte(`],"truncated":` + strconv.FormatBool(truncated) + "}\n")); err != nil {
		return err
	}
	return g.fw.Flush()
}
