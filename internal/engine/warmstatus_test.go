package engine

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/arborsh/arbor/internal/baseimage"
	"github.com/arborsh/arbor/internal/testutil"
)

// warnings records the WARN records of a logger.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnings) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool { msg += " " + a.Key + "=" + a.Value.String(); return true })
	w.msgs = append(w.msgs, msg)
	return nil
}
func (w *warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *warnings) WithGroup(string) slog.Handler      { return w }

// TestWarmPoolOffIsLoud: an engine that cannot run warm sandboxes says so
// with a warning at start-up naming the fix, and WarmStatus says why.
func TestWarmPoolOffIsLoud(t *testing.T) {
	testutil.RequiresRoot(t)
	exe, _ := os.Executable()
	static := baseimage.IsStatic(exe)
	for _, tc := range []struct {
		name    string
		cfg     Config
		off     bool
		because string
	}{
		{"configured off", Config{WarmPerImage: -1}, true, "configuration"},
		{"this binary", Config{}, !static, "dynamically linked"},
		{"static init", Config{InitBinary: staticInit(t)}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &warnings{}
			tc.cfg.Home, tc.cfg.Runtime, tc.cfg.Logger = testutil.Home(t), "runc", slog.New(w)
			e, err := New(context.Background(), tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			st := e.WarmStatus()
			if st.Enabled == tc.off || (tc.off && !strings.Contains(st.Reason, tc.because)) {
				t.Fatalf("WarmStatus = %+v, want off %v because %q", st, tc.off, tc.because)
			}
			warned := strings.Join(w.msgs, "\n")
			switch {
			case tc.off && tc.because == "dynamically linked" && !strings.Contains(warned, "CGO_ENABLED=0"):
				t.Errorf("start-up warnings %q do not say the pool is off and how to fix it", warned)
			case !tc.off && strings.Contains(warned, "warm sandboxes off"):
				t.Errorf("pool on, yet warned %q", warned)
			}
		})
	}
}
