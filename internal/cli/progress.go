package cli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress draws one status line on stderr. On a terminal it redraws the
// line in place (at most ten times a second); elsewhere (logs, CI) it prints
// a line only when the phase changes and when it ends, so logs stay short.
type progress struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	phase string
	last  time.Time
	drawn bool
}

func newProgress(w io.Writer, enabled bool) *progress {
	if !enabled {
		w = io.Discard
	}
	return &progress{w: w, tty: isTerminal(w)}
}

// update reports done of total units (bytes draw as sizes) in phase; total
// 0 means unknown.
func (p *progress) update(phase string, done, total int64, unit string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := phase != p.phase
	p.phase = phase
	if !p.tty {
		if changed {
			if total > 0 && unit == "bytes" {
				fmt.Fprintf(p.w, "arbor: %s %s\n", phase, humanBytes(total))
			} else {
				fmt.Fprintf(p.w, "arbor: %s\n", phase)
			}
		}
		return
	}
	line := progressLine(phase, done, total, unit)
	if !changed && time.Since(p.last) < 100*time.Millisecond && (total == 0 || done < total) {
		return
	}
	p.last = time.Now()
	p.drawn = true
	fmt.Fprintf(p.w, "\r\033[K%s", line)
}

// done ends the progress display with a final message (if any).
func (p *progress) done(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
	p.drawn = false
	if msg != "" {
		fmt.Fprintf(p.w, "arbor: %s\n", msg)
	}
}

func progressLine(phase string, done, total int64, unit string) string {
	amount := func(n int64) string {
		if unit == "bytes" {
			return humanBytes(n)
		}
		if unit == "" {
			return fmt.Sprint(n)
		}
		return fmt.Sprintf("%d %s", n, unit)
	}
	if total <= 0 {
		return fmt.Sprintf("%-10s %s", phase, amount(done))
	}
	const width = 30
	frac := min(float64(done)/float64(total), 1)
	fill := int(frac * width)
	return fmt.Sprintf("%-10s [%s%s] %3.0f%% %s / %s", phase, strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
		frac*100, amount(done), amount(total))
}

// progressReader reports bytes read through it. It forwards Seek, so the
// client can replay an upload it must retry.
type progressReader struct {
	r     io.ReadSeeker
	p     *progress
	phase string
	n     int64
	total int64
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.n += int64(n)
	r.p.update(r.phase, r.n, r.total, "bytes")
	return n, err
}

func (r *progressReader) Seek(off int64, whence int) (int64, error) {
	pos, err := r.r.Seek(off, whence)
	if err == nil {
		r.n = pos
	}
	return pos, err
}
