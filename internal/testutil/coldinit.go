package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

var coldInit struct {
	once sync.Once
	path string
	err  error
}

// ColdInit builds arbor's C init (cmd/arbor-init-c) as scripts/setup.sh
// does and returns its path. The build is kept in the temporary directory
// under the source's hash, so test binaries share it and leave no more
// behind. gcc and libc6-dev come with setup.sh: a missing one is an
// error, not a skip.
func ColdInit() (string, error) {
	coldInit.once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			coldInit.err = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		src := filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "cmd", "arbor-init-c", "init.c")
		b, err := os.ReadFile(src)
		if err != nil {
			coldInit.err = err
			return
		}
		sum := sha256.Sum256(b)
		// The user in the name: root's build and an unprivileged test
		// stage's are each reused, not rebuilt into a fresh directory.
		p := filepath.Join(os.TempDir(), fmt.Sprintf("arbor-init-c-%d-%s", os.Getuid(), hex.EncodeToString(sum[:8])))
		if fi, err := os.Lstat(p); err == nil {
			// Only a build of this user's that nobody else could change.
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && fi.Mode()&0o022 == 0 && int(st.Uid) == os.Getuid() {
				coldInit.path = p
				return
			}
			// Someone else's file under this name: build into this
			// process's BuildDir, removed after m.Run.
			if p, err = BuildDir("arbor-init-c"); err != nil {
				coldInit.err = err
				return
			}
			p = filepath.Join(p, "arbor-init-c")
		}
		tmp := fmt.Sprintf("%s.%d", p, os.Getpid())
		if out, err := exec.Command("gcc", "-static", "-O2", "-Wall", "-Werror", "-o", tmp, src).CombinedOutput(); err != nil {
			os.Remove(tmp)
			coldInit.err = fmt.Errorf("build %s: %v\n%s", src, err, out)
			return
		}
		if err := os.Rename(tmp, p); err != nil { // another test binary may have won: either is the same
			coldInit.err = err
			return
		}
		coldInit.path = p
	})
	return coldInit.path, coldInit.err
}
