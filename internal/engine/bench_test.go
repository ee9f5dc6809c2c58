package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkCommit measures a run that changes one file on a small (1 MiB of
// data) and a large (1 GiB) image. Committing moves the run's upper dir into
// the layer store with one rename, so the two must cost about the same:
//
//	go test -run '^$' -bench Commit -benchtime 20x ./internal/engine/
func BenchmarkCommit(b *testing.B) {
	e, base := newEngine(b, "runc")
	per := map[string]time.Duration{}
	for _, size := range []struct {
		name  string
		bytes int64
	}{{"1MiB", 1 << 20}, {"1GiB", 1 << 30}} {
		img, err := e.NewImage(context.Background(), acct, base, func(dir string) error {
			return fillBytes(filepath.Join(dir, "data"), size.bytes)
		})
		if err != nil {
			b.Fatal(err)
		}
		unix.Sync() // the image's own data must not be flushed by the runs we time
		b.Run(size.name, func(b *testing.B) {
			start := time.Now()
			for i := range b.N {
				o, _ := run(b, e, img, fmt.Sprintf("echo %d > /root/change", i))
				if o.ResultImageUUID == img {
					b.Fatal("no new image")
				}
			}
			per[size.name] = time.Since(start) / time.Duration(b.N)
		})
	}
	if per["1MiB"] > 0 {
		b.Logf("commit run on 1 GiB image / 1 MiB image = %.2f", float64(per["1GiB"])/float64(per["1MiB"]))
	}
}

// fillBytes writes n bytes of non-sparse data under dir in 1 MiB files.
func fillBytes(dir string, n int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	for i := int64(0); i*int64(len(chunk)) < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)), chunk, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkColdRun compares a disposable cold run of `true` with arbor's
// init first (booted, command run through the init) against the command
// as the sandbox's PID 1 (no init):
//
//	go test -run '^$' -bench ColdRun -benchtime 20x ./internal/engine/
func BenchmarkColdRun(b *testing.B) {
	for _, rt := range runtimes {
		for _, withInit := range []bool{true, false} {
			name := rt + "/init"
			if !withInit {
				name = rt + "/no-init"
			}
			b.Run(name, func(b *testing.B) {
				e, base := newEngine(b, rt)
				if !withInit {
					e.initBin = ""
				}
				run(b, e, base, "true", disposable)
				b.ResetTimer()
				for range b.N {
					run(b, e, base, "true", disposable)
				}
			})
		}
	}
}
