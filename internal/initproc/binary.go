package initproc

import (
	"debug/elf"
	"os"
	"path/filepath"
)

// IsStatic reports whether p is an ELF executable without an interpreter,
// i.e. one that runs inside an image with no libc, as the init must.
func IsStatic(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// FindBinary picks the static init binary sandboxes run: configured, else
// arbor-init beside this executable, else this executable if it is static
// (arbor serves as its own init); the first of them that is static, or ""
// if none is. The small arbor-init comes first: a forkable sandbox copies
// its init into sandbox memory, and under gVisor every command started
// from an init of the daemon's size (~40 MB) then took ~130 ms instead of
// ~12 ms (arbor bench, warm disposable /bin/true).
func FindBinary(configured string) string {
	cands := []string{configured}
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(exe), "arbor-init"), exe)
	}
	for _, c := range cands {
		if c != "" && IsStatic(c) {
			return c
		}
	}
	return ""
}

// ColdInitName is the file name of arbor's C init (cmd/arbor-init-c):
// the serve --exit mode alone, for cold batch runs, where Go's runtime
// alive inside gVisor cost ~20 ms of CPU per run (BENCHMARKS.md).
const ColdInitName = "arbor-init-c"

// FindColdInit picks the C init for cold batch runs: configured ("off":
// none), else arbor-init-c beside the Go init, else beside this
// executable; the first that is static, or "" (cold runs then use the Go
// init).
func FindColdInit(configured, goInit string) string {
	if configured == "off" {
		return ""
	}
	cands := []string{configured}
	if goInit != "" {
		cands = append(cands, filepath.Join(filepath.Dir(goInit), ColdInitName))
	}
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(exe), ColdInitName))
	}
	for _, c := range cands {
		if c != "" && IsStatic(c) {
			return c
		}
	}
	return ""
}
