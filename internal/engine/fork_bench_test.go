package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/arborsh/arbor/internal/oplog"
	"github.com/arborsh/arbor/internal/testutil"
)

// BenchmarkFork measures a live fork of an idle shell that holds its state
// in memory after a set-up, until every copy has answered a line, against
// starting the same program fresh (a cold run, set-up included) until it
// answers:
//
//	go test -run '^$' -bench Fork -benchtime 5x ./internal/engine/
func BenchmarkFork(b *testing.B) {
	testutil.RequiresRoot(b)
	// Slots for the parent and 8 copies at once (the default is 8), each
	// asking little memory (the default limit admits 8 at once).
	e, err := New(context.Background(), Config{Home: testutil.Home(b), Runtime: "runsc", InitBinary: staticInit(b), WarmPerImage: -1, Slots: 16})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	base := busybox(b, e)
	ctx := context.Background()
	// The program's set-up: a loop standing for loading data or warming a
	// cache (about 0.7 s in busybox sh under gVisor here).
	const setup = `n=0; while [ $n -lt 300000 ]; do n=$((n+1)); done; `
	spawnCounter := func() string {
		op, _, err := e.Spawn(ctx, acct, SpawnRequest{Command: setup + `i=0; while read l; do i=$((i+1)); echo "$l $i"; done`,
			Image: base, Shell: ptr(true), Disposable: ptr(true), ResourcesLimits: &oplog.ResourcesLimits{MemoryBytes: ptr(int64(256 << 20))}, Stdin: &Stdin{Value: "a\n", Close: ptr(false)}})
		if err != nil {
			b.Fatal(err)
		}
		return op
	}
	answer := func(op, line, want string) {
		if err := e.WriteStdin(ctx, acct, op, 1, Stdin{Value: line + "\n", Close: ptr(false)}); err != nil {
			b.Fatal(err)
		}
		waitStdout(b, e, op, want)
	}
	end := func(ops ...string) {
		for _, op := range ops {
			_ = e.Cancel(ctx, acct, op)
			_, _ = e.WaitOperation(ctx, acct, op)
		}
	}
	b.Run("cold-run", func(b *testing.B) {
		for range b.N {
			op := spawnCounter()
			waitStdout(b, e, op, "a 1\n")
			b.StopTimer()
			end(op)
			b.StartTimer()
		}
	})
	for _, n := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("fork-%d", n), func(b *testing.B) {
			parent := spawnCounter()
			waitStdout(b, e, parent, "a 1\n")
			b.ResetTimer()
			for range b.N {
				res, err := e.Fork(ctx, acct, parent, ForkRequest{Count: n})
				if err != nil {
					b.Fatal(err)
				}
				for _, f := range res.Operations {
					answer(f, "x", "x 2\n")
				}
				b.StopTimer()
				end(res.Operations...)
				b.StartTimer()
			}
			b.StopTimer()
			end(parent)
		})
	}
}

// BenchmarkCopyUpper measures copyUpper (cp -a, once per fork point) on
// an upper of small files and on one of a single large file.
func BenchmarkCopyUpper(b *testing.B) {
	for _, tc := range []struct {
		name       string
		files, per int
	}{{"1000x50KiB", 1000, 50 << 10}, {"1x50MiB", 1, 50 << 20}} {
		b.Run(tc.name, func(b *testing.B) {
			dir := b.TempDir()
			src := filepath.Join(dir, "upper")
			if err := os.MkdirAll(filepath.Join(src, "d"), 0o755); err != nil {
				b.Fatal(err)
			}
			data := make([]byte, tc.per)
			for i := range data {
				data[i] = byte(i * 7)
			}
			for i := range tc.files {
				if err := os.WriteFile(filepath.Join(src, "d", fmt.Sprint(i)), data, 0o644); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				if err := copyUpper(src, filepath.Join(dir, fmt.Sprint("c", i))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
