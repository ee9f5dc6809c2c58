package engine

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arborsh/arbor/internal/errdefs"
)

// readSpy is a reader that records whether it was read.
type readSpy struct {
	r    io.Reader
	read bool
}

func (s *readSpy) Read(p []byte) (int, error) { s.read = true; return s.r.Read(p) }

// TestUploadDiskReserve: uploads are held to the disk reserve like runs
// and imports: under it one is refused with a 507 naming the reserve
// before its body is read; one that would fill the filesystem to half the
// reserve stops with a 507 and keeps nothing; the space comes back.
func TestUploadDiskReserve(t *testing.T) {
	inSmallFS(t, "48m", func(t *testing.T, home string) {
		ctx := context.Background()
		e, err := New(ctx, Config{Home: home, Runtime: "runc", DiskReserveBytes: 16 << 20, WarmPerImage: -1, GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		if _, err := e.PutFile(ctx, acct, strings.NewReader("small"), 0); err != nil {
			t.Fatalf("small upload: %v", err)
		}
		before, _, err := e.diskSpace()
		if err != nil {
			t.Fatal(err)
		}
		// More than the space above half the reserve, streamed in small
		// reads as an HTTP body is: it must stop.
		big := bytes.Repeat([]byte("x"), int(before))
		_, err = e.PutFile(ctx, acct, struct{ io.Reader }{bytes.NewReader(big)}, 0)
		if !errors.Is(err, errdefs.ErrInsufficientStorage) || !strings.Contains(err.Error(), "would fill up with this upload") || !strings.Contains(err.Error(), "--disk-reserve") {
			t.Fatalf("upload that fills the disk: %v, want an insufficient-storage error saying it filled up, naming --disk-reserve", err)
		}
		after, _, err := e.diskSpace()
		if err != nil {
			t.Fatal(err)
		}
		if after < before-(1<<20) {
			t.Errorf("free space after the refused upload: %d, was %d: its staging file was kept", after, before)
		}
		if ents, _ := os.ReadDir(filepath.Join(home, "tmp")); len(ents) != 0 {
			t.Errorf("staging after the refused upload: %d entries, want none", len(ents))
		}

		// Under the reserve: refused before the body is read.
		filler := filepath.Join(home, "filler")
		if err := os.WriteFile(filler, make([]byte, after-8<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		spy := &readSpy{r: strings.NewReader("y")}
		_, err = e.PutFile(ctx, acct, spy, 0)
		if !errors.Is(err, errdefs.ErrInsufficientStorage) || !strings.Contains(err.Error(), "uploads are refused") || !strings.Contains(err.Error(), "arbor gc") {
			t.Fatalf("upload under the reserve: %v, want an insufficient-storage error saying uploads are refused and naming the fix", err)
		}
		if spy.read {
			t.Error("the refused upload's body was read: it should fail before")
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		if _, err := e.PutFile(ctx, acct, strings.NewReader("y"), 0); err != nil {
			t.Fatalf("upload once space is back: %v", err)
		}
	})
}

// TestUploadQuota: uploads count in the account's storage and stop with
// a 403 naming the quota when they would go past it.
func TestUploadQuota(t *testing.T) {
	ctx := context.Background()
	e, _ := newEngine(t, "runc")
	used, err := e.storedBytes(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg.MaxStorageBytes = used + 1<<20
	if _, err := e.PutFile(ctx, acct, bytes.NewReader(bytes.Repeat([]byte("a"), 512<<10)), 0); err != nil {
		t.Fatalf("upload within the quota: %v", err)
	}
	now, err := e.storedBytes(ctx, acct)
	if err != nil {
		t.Fatal(err)
	}
	if now != used+512<<10 {
		t.Errorf("stored bytes after a 512 KiB upload: %d, want %d", now, used+512<<10)
	}
	_, err = e.PutFile(ctx, acct, bytes.NewReader(bytes.Repeat([]byte("b"), 1<<20)), 0)
	if !errors.Is(err, errdefs.ErrForbidden) || !strings.Contains(err.Error(), "--max-storage-bytes") {
		t.Fatalf("upload past the quota: %v, want forbidden naming --max-storage-bytes", err)
	}
	if after, _ := e.storedBytes(ctx, acct); after != now {
		t.Errorf("stored bytes after the refused upload: %d, want %d", after, now)
	}
}
