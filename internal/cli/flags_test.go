package cli

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/client/apitypes"
	"github.com/spf13/cobra"
)

// TestSpawnFlags: run's and branch's sandbox flags become the spawn
// request's fields, and a value out of the daemon's range is refused with
// the range, before anything is sent.
func TestSpawnFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		want    apitypes.InstanceSpawnRequest
		wantErr string
	}{
		{"none", nil, apitypes.InstanceSpawnRequest{}, ""},
		{"limits", []string{"--pids", "64", "--max-layer-bytes", "100M", "--memory", "64M", "--cpus", "0.5"},
			apitypes.InstanceSpawnRequest{ResourcesLimits: &apitypes.ResourcesLimits{Pids: ptr[int64](64), MaxLayerBytes: ptr[int64](100 << 20),
				MemoryBytes: ptr[int64](64 << 20), CPUs: ptr(0.5)}}, ""},
		{"identity", []string{"--uid", "1000", "--gid", "0", "--hostname", "build-1", "--preserve-env", "--disposable"},
			apitypes.InstanceSpawnRequest{UID: ptr(1000), GID: ptr(0), Hostname: ptr("build-1"), PreserveEnv: ptr(true), Disposable: ptr(true)}, ""},
		{"truncate", []string{"--truncate-output-at", "4K"}, apitypes.InstanceSpawnRequest{TruncateOutputAt: ptr[int64](4096)}, ""},
		{"truncate 0 keeps none", []string{"--truncate-output-at", "0"}, apitypes.InstanceSpawnRequest{TruncateOutputAt: ptr[int64](0)}, ""},
		{"timeout in seconds", []string{"--timeout", "90"}, apitypes.InstanceSpawnRequest{Timeout: ptr(90.0)}, ""},
		{"pids 0", []string{"--pids", "0"}, apitypes.InstanceSpawnRequest{}, "--pids 0: use 1 to 65536"},
		{"pids too many", []string{"--pids", "100000"}, apitypes.InstanceSpawnRequest{}, "use 1 to 65536"},
		{"negative uid", []string{"--uid", "-1"}, apitypes.InstanceSpawnRequest{}, "--uid -1: use 0 to 2147483646"},
		{"gid too big", []string{"--gid", "2147483647"}, apitypes.InstanceSpawnRequest{}, "--gid 2147483647: use 0 to"},
		{"empty hostname", []string{"--hostname", ""}, apitypes.InstanceSpawnRequest{}, "--hostname"},
		{"hostname with a space", []string{"--hostname", "a b"}, apitypes.InstanceSpawnRequest{}, "letters, digits, dots and dashes"},
		{"long hostname", []string{"--hostname", strings.Repeat("h", 65)}, apitypes.InstanceSpawnRequest{}, "up to 64"},
		{"bad max-layer-bytes", []string{"--max-layer-bytes", "lots"}, apitypes.InstanceSpawnRequest{}, "--max-layer-bytes"},
		{"zero max-layer-bytes", []string{"--max-layer-bytes", "0"}, apitypes.InstanceSpawnRequest{}, "512M"},
		{"truncate too big", []string{"--truncate-output-at", "65M"}, apitypes.InstanceSpawnRequest{}, "at most 64M"},
		{"bad truncate", []string{"--truncate-output-at", "-1"}, apitypes.InstanceSpawnRequest{}, "0 keeps none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sf spawnFlags
			cmd := &cobra.Command{}
			sf.register(cmd)
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			got, err := sf.spawnRequest()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("spawnRequest(%q) = %v, want an error containing %q", tc.args, err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("spawnRequest(%q) = %+v, %v; want %+v", tc.args, got, err, tc.want)
			}
		})
	}
}

// TestTagBlocker: --tag (and branch --keep) moves a tag only onto the
// result of a command that exited 0, and never takes the input image's own
// tag away when the run changed nothing.
func TestTagBlocker(t *testing.T) {
	in := &apitypes.Image{UUID: "11111111-1111-4111-8111-111111111111", Tag: ptr("busybox")}
	untagged := &apitypes.Image{UUID: in.UUID}
	other := "22222222-2222-4222-8222-222222222222"
	ok := func(image string) outcome {
		return outcome{status: apitypes.StatusSuccess, exitCode: 0, image: &image}
	}
	for _, tc := range []struct {
		name string
		o    outcome
		in   *apitypes.Image
		want string // in the reason; "" for tag it
	}{
		{"new image, exit 0", ok(other), in, ""},
		{"exit 3", outcome{status: apitypes.StatusSuccess, exitCode: 3, image: &other}, in, "exited 3"},
		{"timed out", outcome{status: apitypes.StatusSuccess, exitCode: -1, signal: 9, timedOut: true, image: &other}, in, "timed out"},
		{"killed", outcome{status: apitypes.StatusSuccess, exitCode: -1, signal: 9, image: &other}, in, "signal 9"},
		{"failed run", outcome{status: apitypes.StatusFailed, exitCode: -1}, in, "FAILED"},
		{"disposable", outcome{status: apitypes.StatusSuccess}, in, "saved no image"},
		// The daemon's rule: an unchanged run made no new image to tag.
		{"unchanged, input tagged", ok(in.UUID), in, "changed nothing"},
		{"unchanged, input untagged", ok(in.UUID), untagged, "changed nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.o.tagBlocker(tc.in, "env")
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("tagBlocker(%+v, %+v, env) = %q, want %q", tc.o, tc.in, got, tc.want)
			}
		})
	}
}

func TestExposeTTL(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int
		wantErr string
	}{
		{"3600", 3600, ""},
		{"1h", 3600, ""},
		{"90s", 90, ""},
		{"1.4", 1, ""},
		{"24h", 86400, ""},
		{"0.2", 0, "use 1s to 24h"},
		{"25h", 0, "use 1s to 24h"},
		{"2d", 0, "use 1s to 24h"},
		{"0", 0, "must be positive"},
		{"soon", 0, "seconds (30)"},
	} {
		got, err := exposeTTL(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("exposeTTL(%q) = %d, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("exposeTTL(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

// TestDurationFlag: serve's duration flags take seconds as well as Go
// durations, and keep taking 0 and negative values.
func TestDurationFlag(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"60", time.Minute, false},
		{"0.5", 500 * time.Millisecond, false},
		{"90s", 90 * time.Second, false},
		{"1h30m", 90 * time.Minute, false},
		{"2d", 48 * time.Hour, false},
		{"0", 0, false},
		{"-1", -time.Second, false},
		{"-1s", -time.Second, false},
		{"soon", 0, true},
		{"1e300", 0, true},
	} {
		var d time.Duration
		err := (*durationFlag)(&d).Set(tc.in)
		if tc.bad {
			if err == nil || !strings.Contains(err.Error(), "use seconds (60)") {
				t.Errorf("Set(%q) = %v, want an error naming the forms", tc.in, err)
			}
			continue
		}
		if err != nil || d != tc.want {
			t.Errorf("Set(%q) = %v, %v; want %v", tc.in, d, err, tc.want)
		}
	}
}

// TestMistakesNeedNoDaemon: flag mistakes are named before the CLI
// reaches for a daemon (there is none at the URL), each with its fix.
func TestMistakesNeedNoDaemon(t *testing.T) {
	t.Setenv("ARBOR_CONFIG", "")
	t.Setenv("ARBOR_DB", "")
	home := t.TempDir()
	noDaemon := []string{"--url", "http://127.0.0.1:1", "--token", "x", "--home", home}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"ps --limit 0", []string{"ps", "--limit", "0"}, []string{"--limit 0: use 1 to 1000"}},
		{"ps --limit 1001", []string{"ps", "--all", "--limit", "1001"}, []string{"--limit 1001: use 1 to 1000"}},
		{"expose --ttl past a day", []string{"expose", "--ttl", "90000", "7c1d", "8080"}, []string{"--ttl 90000: use 1s to 24h"}},
		{"run --pids 0", []string{"run", "--image", "busybox", "--pids", "0", "--", "true"}, []string{"--pids 0: use 1 to 65536"}},
		{"run --uid -5", []string{"run", "--image", "busybox", "--uid", "-5", "--", "true"}, []string{"--uid -5"}},
		{"branch --keep --disposable", []string{"branch", "--keep", "--disposable", "busybox", "--", "true", "false"}, []string{"--keep with --disposable"}},
		{"branch --hostname", []string{"branch", "--hostname", "a/b", "busybox", "--", "true", "false"}, []string{"--hostname"}},
		{"restore an image", []string{"restore", "tag:warm-repl"}, []string{"tag:warm-repl: no such file", "arbor checkpoint restore IMAGE"}},
		{"restore a directory", []string{"restore", home}, []string{"is not a file", "arbor backup"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mainCLI(t, append(noDaemon, tc.args...)...)
			if r.code != 1 {
				t.Fatalf("arbor %s: exit %d, want 1\n%v", strings.Join(tc.args, " "), r.code, r)
			}
			wantContains(t, "stderr", r.stderr, tc.want...)
			for _, wrong := range []string{"cannot reach", "stop it first"} {
				if strings.Contains(r.stderr, wrong) {
					t.Errorf("stderr = %q: it names %q, not the mistake", r.stderr, wrong)
				}
			}
		})
	}
}
