package testutil

import (
	"os"
	"path/filepath"
	"sync"
)

var buildDir struct {
	once sync.Once
	dir  string
	err  error
}

// BuildDir returns a directory named name inside one made once per test
// process, for the binaries its tests build once and share (the static
// init, helper programs). RemoveBuildDir, from TestMain after m.Run,
// removes it all: a directory per binary made with os.MkdirTemp and never
// removed left ~5 MB in /tmp at every test run.
func BuildDir(name string) (string, error) {
	buildDir.once.Do(func() {
		buildDir.dir, buildDir.err = os.MkdirTemp("", "arbor-build-*")
	})
	if buildDir.err != nil {
		return "", buildDir.err
	}
	d := filepath.Join(buildDir.dir, name)
	return d, os.MkdirAll(d, 0o755)
}

// RemoveBuildDir removes what BuildDir made in this process, if anything.
func RemoveBuildDir() {
	if buildDir.dir != "" {
		_ = os.RemoveAll(buildDir.dir)
	}
}
