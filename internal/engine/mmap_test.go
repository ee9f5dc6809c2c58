package engine

import "testing"

// TestMappedWriteTwice chains runs that each write one file through a
// shared mapping (with msync or without), and nothing else: each run's
// image must hold its write.
// Cold runs, pre-booted sandboxes and continued ones (a step's layer is
// the tracked diff of the sandbox's upper dir, and under runsc the sentry
// still holds the file open for writing after the step: no inotify event
// reports the write).
func TestMappedWriteTwice(t *testing.T) {
	for _, rt := range runtimes {
		for _, kind := range []string{"cold", "continued"} {
			t.Run(rt+"/"+kind, func(t *testing.T) {
				t.Parallel()
				e, im := newEngine(t, rt)
				if kind == "continued" {
					e, im = warmedEngine(t, rt)
				}
				for i, s := range []string{
					"mkdir /w; echo 0123456789 > /w/m",
					"/probe mmapwrite /w/m AAA",
					"/probe mmapwrite /w/m BB msync",
					"/probe mmapwrite /w/m C",
				} {
					o, m := run(t, e, im, s, probe(t, e))
					im = o.ResultImageUUID
					if i > 0 && stdout(t, m) != "mmapwrite: ok\n" {
						t.Fatalf("step %d: %q", i+1, stdout(t, m))
					}
					want := []string{"0123456789\n", "AAA3456789\n", "BBA3456789\n", "CBA3456789\n"}[i]
					if got, err := readFile(t, e, im, "/w/m"); got != want {
						t.Errorf("after step %d (%q): /w/m = %q (%v), want %q", i+1, s, got, err, want)
					}
				}
				if kind == "continued" && continuedOn(e, im) != 1 {
					t.Errorf("the steps did not continue one sandbox")
				}
			})
		}
	}
}
