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
// this executable if it is static (arbor serves as its own init), else
// arbor-init beside it; the first of them that is static, or "" if none is.
func FindBinary(configured string) string {
	cands := []string{configured}
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, exe, filepath.Join(filepath.Dir(exe), "arbor-init"))
	}
	for _, c := range cands {
		if c != "" && IsStatic(c) {
			return c
		}
	}
	return ""
}
