package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// staleCgroupAge is how long an empty sandbox cgroup of another runtime
// state directory (another arbor home, a test's, or an older arbor's
// unscoped /arbor/<id>) must have gone unmodified before Cleanup removes
// it. A sandbox's cgroup is empty only for the moment between its
// creation and the sandbox's first process joining it, and from the
// sandbox's death until its daemon removes it: one empty for this long
// belongs to a daemon that was killed, or to a home that is gone.
var staleCgroupAge = 10 * time.Minute

// sweepCgroups removes sandbox cgroups under /arbor in every hierarchy
// that no sandbox will use: those of this driver's own state directory
// (its scope), after killing whatever is left in them and removing what
// the runtime recorded of their sandboxes, since Cleanup runs before any
// of its sandboxes starts (a runtime process a killed daemon left
// launching one may record it after Cleanup's list); and empty ones of
// other scopes left for staleCgroupAge. Only names for which match is
// true are looked at (nil: all). A cgroup a process joins meanwhile fails
// its removal and stays.
func (o *OCI) sweepCgroups(ctx context.Context, match func(name string) bool) error {
	names := map[string]bool{}
	for _, m := range cgroupMounts() {
		ents, err := os.ReadDir(filepath.Join(m, "arbor"))
		if err != nil {
			continue // no sandbox ever made a cgroup in this hierarchy
		}
		for _, ent := range ents {
			if ent.IsDir() && (match == nil || match(ent.Name())) {
				names[ent.Name()] = true
			}
		}
	}
	var errs []error
	for name := range names {
		rel := "/arbor/" + name
		dirs := cgroupDirs(rel)
		if id, ok := strings.CutPrefix(name, o.scope+"-"); o.scope != "" && ok {
			// Killed with what is in it, the runtime process that was
			// launching it included, that process leaves its record: it
			// goes too, as after a launch the daemon gave up on.
			kctx, cancel := context.WithTimeout(ctx, clearLimit)
			err := killCgroup(kctx, rel, dirs)
			if err == nil {
				err = o.clearKilled(kctx, id, dirs)
			}
			cancel()
			errs = append(errs, err)
			continue
		}
		if cgroupInUse(dirs) || !unmodifiedFor(dirs, staleCgroupAge) {
			continue
		}
		for _, d := range dirs {
			if err := unix.Rmdir(d); err != nil && err != unix.ENOENT && err != unix.EBUSY && err != unix.ENOTEMPTY {
				errs = append(errs, &os.PathError{Op: "rmdir", Path: d, Err: err})
			}
		}
	}
	return errors.Join(errs...)
}

// unmodifiedFor reports whether none of dirs that exist was modified
// within age.
func unmodifiedFor(dirs []string, age time.Duration) bool {
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err == nil && time.Since(fi.ModTime()) < age {
			return false
		}
	}
	return true
}
