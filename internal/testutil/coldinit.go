package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

var coldInit struct {
	once sync.Once
	path string
	err  error
}

// ColdInit builds arbor's C init (cmd/arbor-init-c) as scripts/setup.sh
// does, once per test binary, into a temporary directory, and returns its
// path. gcc and libc6-dev come with setup.sh: a missing one is an error,
// not a skip.
func ColdInit() (string, error) {
	coldInit.once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			coldInit.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		src := filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "cmd", "arbor-init-c", "init.c")
		dir, err := os.MkdirTemp("", "arbor-init-c-")
		if err != nil {
			coldInit.err = err
			return
		}
		p := filepath.Join(dir, "arbor-init-c")
		if out, err := exec.Command("gcc", "-static", "-O2", "-Wall", "-Werror", "-o", p, src).CombinedOutput(); err != nil {
			coldInit.err = fmt.Errorf("build %s: %v\n%s", src, err, out)
			return
		}
		coldInit.path = p
	})
	return coldInit.path, coldInit.err
}
