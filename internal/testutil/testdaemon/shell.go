package testdaemon

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"

	"github.com/arborsh/arbor/internal/runtime/fakeruntime"
)

// Shell is a fakeruntime.Handler that plays simple shell lines in Go, for
// tests of the API rather than of sandboxes: commands separated by ";",
// "&&" or newlines, words in plain, single or double quotes (no
// expansion), and the redirections "> FILE", ">> FILE" and ">&2". It knows
// true, false, exit N, echo, cat [FILE...], sleep N, touch FILE...,
// rm [-f] [-r] FILE..., mkdir [-p] DIR... and sha256sum FILE...; any other
// command is "not found" (127).
// Files are resolved inside the sandbox's root, relative ones from its
// working directory.
func Shell(ctx context.Context, p *fakeruntime.Process) fakeruntime.Exit {
	line := strings.Join(p.Args, " ")
	if len(p.Args) == 3 && (p.Args[0] == "/bin/sh" || p.Args[0] == "sh") && p.Args[1] == "-c" {
		line = p.Args[2]
	}
	sh := &shell{p: p}
	status := 0
	for _, cmd := range parseShell(line) {
		if cmd.and && status != 0 {
			continue
		}
		var exit bool
		if status, exit = sh.run(ctx, cmd); exit || ctx.Err() != nil {
			break
		}
	}
	return fakeruntime.Exited(status)
}

type shellCmd struct {
	and    bool // after "&&": runs only if the one before succeeded
	words  []string
	out    string // "" stdout, "&2" stderr, else a file
	append bool
}

// parseShell splits line into commands.
func parseShell(line string) []shellCmd {
	var cmds []shellCmd
	var cur shellCmd
	var word strings.Builder
	inWord, redirect := false, ""
	endWord := func() {
		if !inWord {
			return
		}
		w := word.String()
		word.Reset()
		inWord = false
		switch {
		case redirect != "":
			cur.out, cur.append, redirect = w, redirect == ">>", ""
		case w == ">&2" || w == "1>&2":
			cur.out = "&2"
		case w == ">" || w == ">>":
			redirect = w
		default:
			cur.words = append(cur.words, w)
		}
	}
	endCmd := func() {
		endWord()
		if len(cur.words) > 0 {
			cmds = append(cmds, cur)
		}
		cur = shellCmd{}
	}
	for i := 0; i < len(line); i++ {
		switch c := line[i]; c {
		case ';', '\n':
			endCmd()
		case '&':
			if !strings.HasPrefix(line[i:], "&&") {
				inWord = true
				word.WriteByte(c)
				continue
			}
			endCmd()
			cur.and = true
			i++
		case ' ', '\t':
			endWord()
		case '\'', '"':
			inWord = true
			j := strings.IndexByte(line[i+1:], c)
			if j < 0 {
				j = len(line) - i - 1
			}
			word.WriteString(line[i+1 : i+1+j])
			i += j + 1
		default:
			inWord = true
			word.WriteByte(c)
		}
	}
	endCmd()
	return cmds
}

type shell struct{ p *fakeruntime.Process }

// file resolves name inside the root.
func (s *shell) file(name string) (string, error) {
	if !path.IsAbs(name) {
		name = path.Join(s.p.Cwd, name)
	}
	return securejoin.SecureJoin(s.p.Rootfs, name)
}

// run runs one command and returns its status, and whether the line ends.
func (s *shell) run(ctx context.Context, c shellCmd) (int, bool) {
	var out io.Writer = s.p.Stdout
	switch c.out {
	case "":
	case "&2":
		out = s.p.Stderr
	default:
		p, err := s.file(c.out)
		if err != nil {
			return s.fail(err), false
		}
		flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		if c.append {
			flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
		}
		f, err := os.OpenFile(p, flags, 0o644)
		if err != nil {
			return s.fail(err), false
		}
		defer f.Close()
		out = f
	}
	args := c.words[1:]
	switch c.words[0] {
	case "true":
		return 0, false
	case "false":
		return 1, false
	case "exit":
		n := 0
		if len(args) > 0 {
			n, _ = strconv.Atoi(args[0])
		}
		return n, true
	case "echo":
		fmt.Fprintln(out, strings.Join(args, " "))
		return 0, false
	case "cat":
		if len(args) == 0 {
			// Returns when killed: the fake closes stdin only after.
			done := make(chan struct{})
			go func() { _, _ = io.Copy(out, s.p.Stdin); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
			}
			return 0, false
		}
		for _, a := range args {
			p, err := s.file(a)
			if err == nil {
				var b []byte
				if b, err = os.ReadFile(p); err == nil {
					_, _ = out.Write(b)
				}
			}
			if err != nil {
				return s.fail(err), false
			}
		}
		return 0, false
	case "sleep":
		secs, _ := strconv.ParseFloat(strings.Join(args, ""), 64)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(secs * float64(time.Second))):
		}
		return 0, false
	case "touch":
		for _, a := range args {
			p, err := s.file(a)
			if err == nil {
				var f *os.File
				if f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644); err == nil {
					err = f.Close()
				}
			}
			if err != nil {
				return s.fail(err), false
			}
		}
		return 0, false
	case "rm", "mkdir":
		force, deep := false, false
		for _, a := range args {
			if strings.HasPrefix(a, "-") {
				force, deep = force || strings.Contains(a, "f"), deep || strings.ContainsAny(a, "rp")
				continue
			}
			p, err := s.file(a)
			switch {
			case err != nil:
			case c.words[0] == "mkdir" && deep:
				err = os.MkdirAll(p, 0o755)
			case c.words[0] == "mkdir":
				err = os.Mkdir(p, 0o755)
			case deep:
				err = os.RemoveAll(p)
			default:
				err = os.Remove(p)
			}
			if err != nil && !(force && os.IsNotExist(err)) {
				return s.fail(err), false
			}
		}
		return 0, false
	case "sha256sum":
		for _, a := range args {
			p, err := s.file(a)
			if err == nil {
				var b []byte
				if b, err = os.ReadFile(p); err == nil {
					fmt.Fprintf(out, "%x  %s\n", sha256.Sum256(b), a)
				}
			}
			if err != nil {
				return s.fail(err), false
			}
		}
		return 0, false
	}
	fmt.Fprintf(s.p.Stderr, "sh: %s: not found\n", c.words[0])
	return 127, false
}

func (s *shell) fail(err error) int {
	fmt.Fprintf(s.p.Stderr, "sh: %v\n", strings.ReplaceAll(err.Error(), s.p.Rootfs, ""))
	return 1
}
