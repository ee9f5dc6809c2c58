package archive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/arborsh/arbor/internal/errdefs"
)

func listDir(t *testing.T, d string) []string {
	t.Helper()
	ents, err := os.ReadDir(d)
	must(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestStage(t *testing.T) {
	errFill := errors.New("fill failed")
	tests := []struct {
		name    string
		exists  bool
		cancel  bool
		fill    func(t *testing.T, tmp string) error
		wantErr error
	}{
		{
			name: "success renames",
			fill: func(_ *testing.T, tmp string) error {
				return os.WriteFile(filepath.Join(tmp, "f"), []byte("data"), 0o644)
			},
		},
		{
			name: "failure leaves nothing",
			fill: func(t *testing.T, tmp string) error {
				must(t, os.WriteFile(filepath.Join(tmp, "partial"), nil, 0o644))
				return errFill
			},
			wantErr: errFill,
		},
		{
			name:    "final exists",
			exists:  true,
			fill:    func(t *testing.T, _ string) error { t.Error("fill called although final exists"); return nil },
			wantErr: errdefs.ErrConflict,
		},
		{
			name:   "canceled during fill",
			cancel: true,
			fill: func(_ *testing.T, tmp string) error {
				return os.Mkdir(filepath.Join(tmp, "d"), 0o755)
			},
			wantErr: context.Canceled,
		},
		{
			name: "fill that chmods the root read-only",
			fill: func(t *testing.T, tmp string) error {
				must(t, os.Mkdir(filepath.Join(tmp, "ro"), 0o755))
				return os.Chmod(tmp, 0o555)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			final := filepath.Join(parent, "layer")
			// Runs before t.TempDir's cleanup, which needs a writable
			// final when not running as root.
			t.Cleanup(func() { os.Chmod(final, 0o755) })
			if tc.exists {
				must(t, os.Mkdir(final, 0o700))
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			err := Stage(ctx, final, func(tmp string) error {
				if filepath.Dir(tmp) != parent || !IsStaging(filepath.Base(tmp)) {
					t.Errorf("staging dir %s, want a staging sibling of %s", tmp, final)
				}
				if fi, err := os.Stat(tmp); err != nil || fi.Mode().Perm() != 0o755 {
					t.Errorf("staging dir mode = %v, %v, want 0755", fi.Mode(), err)
				}
				if tc.cancel {
					cancel()
				}
				return tc.fill(t, tmp)
			})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Stage() = %v, want %v", err, tc.wantErr)
			}
			names := listDir(t, parent)
			switch {
			case tc.wantErr != nil && tc.exists:
				if len(names) != 1 || names[0] != "layer" || len(listDir(t, final)) != 0 {
					t.Errorf("parent holds %v, want the untouched existing layer only", names)
				}
			case tc.wantErr != nil:
				if len(names) != 0 {
					t.Errorf("parent holds %v after a failed Stage, want nothing", names)
				}
			default:
				if len(names) != 1 || names[0] != "layer" {
					t.Errorf("parent holds %v, want only the final layer", names)
				}
			}
		})
	}
}

func TestStageApplyTar(t *testing.T) {
	requireRoot(t)
	final := filepath.Join(t.TempDir(), "layer")
	in := tarball(t, file("etc/hostname", "box"))
	err := Stage(context.Background(), final, func(tmp string) error {
		_, err := ApplyTar(context.Background(), bytes.NewReader(in), tmp, Options{})
		return err
	})
	if err != nil {
		t.Fatalf("Stage(ApplyTar) = %v", err)
	}
	if got := readFile(t, filepath.Join(final, "etc/hostname")); got != "box" {
		t.Errorf("etc/hostname = %q", got)
	}

	bad := filepath.Join(filepath.Dir(final), "bad")
	err = Stage(context.Background(), bad, func(tmp string) error {
		_, err := ApplyTar(context.Background(), bytes.NewReader(tarball(t, file("ok", "x"), file("../x", "y"))), tmp, Options{})
		return err
	})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("Stage(hostile ApplyTar) = %v, want ErrInvalidArgument passed through", err)
	}
	if names := listDir(t, filepath.Dir(final)); len(names) != 1 {
		t.Errorf("parent holds %v, want only the first layer", names)
	}
}
