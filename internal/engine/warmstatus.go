package engine

import (
	"fmt"
	"os"
)

// WarmStatus is the warm pool's state as operators see it: whether it is
// on, and if not why, its size and how well it serves.
type WarmStatus struct {
	Enabled    bool
	Reason     string // why the pool is off; empty when on
	InitBinary string // the static init its sandboxes run
	PerImage   int    // sandboxes booted for each new image
	Max        int    // idle and booting sandboxes overall
	WarmStats
}

// WarmStatus reports whether the pool is on and its counters.
func (e *Engine) WarmStatus() WarmStatus {
	s := WarmStatus{Enabled: e.warmEnabled(), InitBinary: e.initBin, PerImage: max(e.cfg.WarmPerImage, 0), Max: e.cfg.WarmMax, WarmStats: e.WarmStats()}
	if !s.Enabled {
		s.Reason = e.warmOffReason()
	}
	return s
}

// warmOffReason says why the pool is off, naming the fix.
func (e *Engine) warmOffReason() string {
	if e.cfg.WarmPerImage < 0 {
		return "turned off by configuration (WarmPerImage < 0)"
	}
	if e.cfg.InitBinary != "" {
		return fmt.Sprintf("the configured init binary %s is not a static executable: build it with CGO_ENABLED=0", e.cfg.InitBinary)
	}
	exe, _ := os.Executable() // only named in the message
	return fmt.Sprintf("no static init binary: this arbor (%s) is dynamically linked, as a default `go build` with cgo makes it; "+
		"rebuild with CGO_ENABLED=0 (scripts/setup.sh does) or install a static arbor-init beside it", exe)
}
