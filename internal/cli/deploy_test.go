package cli

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/arborsh/arbor/deploy"
)

// TestDeployFilesUseServeFlags: every `arbor serve` flag the deployment
// files use (the Kubernetes manifests' container arguments, the systemd
// units' ExecStart lines, scripts/cluster-local.sh), every ARBOR_* variable
// they set and every key of the config file in the ConfigMap is a setting
// of arbor serve, with a value it takes, so the files cannot drift from
// the binary.
func TestDeployFilesUseServeFlags(t *testing.T) {
	serveFlags := func() *pflag.FlagSet { return newServe(&globals{stdout: io.Discard, stderr: io.Discard}).LocalFlags() }
	checked := 0
	check := func(where string, args []string) {
		t.Helper()
		fs := serveFlags()
		for i := 0; i < len(args); i++ {
			a := args[i]
			if !strings.HasPrefix(a, "-") {
				continue
			}
			name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
			f := fs.Lookup(name)
			if f == nil && len(name) == 1 {
				f = fs.ShorthandLookup(name)
			}
			switch {
			case f == nil:
				t.Errorf("%s: arbor serve has no flag --%s", where, name)
				continue
			}
			checked++
			if !hasVal && f.NoOptDefVal == "" {
				if i+1 >= len(args) {
					t.Errorf("%s: --%s needs a value", where, name)
					continue
				}
				i++
				val = args[i]
			} else if !hasVal {
				val = f.NoOptDefVal
			}
			if err := f.Value.Set(val); err != nil {
				t.Errorf("%s: --%s %q: %v", where, name, val, err)
			}
		}
	}
	checkEnv := func(where, name string) {
		t.Helper()
		if !strings.HasPrefix(name, "ARBOR_") {
			return
		}
		fs := serveFlags()
		for _, n := range settingNames(fs) {
			if envName(n) == name {
				checked++
				return
			}
		}
		t.Errorf("%s: %s is no arbor serve setting's variable", where, name)
	}

	// Kubernetes manifests.
	manifests, err := filepath.Glob("../../deploy/kubernetes/*.yaml")
	if err != nil || len(manifests) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	kinds := map[string]int{}
	for _, path := range manifests {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			kind, _ := doc["kind"].(string)
			if kind == "" || doc["apiVersion"] == nil {
				t.Errorf("%s: a document without kind or apiVersion", path)
			}
			kinds[kind]++
			where := filepath.Base(path) + " " + kind
			switch kind {
			case "ConfigMap":
				data, _ := doc["data"].(map[string]any)
				for key, v := range data {
					if strings.HasSuffix(key, ".toml") {
						conf := filepath.Join(t.TempDir(), key)
						if err := os.WriteFile(conf, []byte(v.(string)), 0o644); err != nil {
							t.Fatal(err)
						}
						if _, err := resolveSettings(serveFlags(), func(string) string { return "" }, conf); err != nil {
							t.Errorf("%s: %s: %v", where, key, err)
						}
						checked++
					}
				}
			case "Secret":
				for _, field := range []string{"stringData", "data"} {
					m, _ := doc[field].(map[string]any)
					for name := range m {
						checkEnv(where, name)
					}
				}
			}
			for _, c := range containers(doc) {
				for _, e := range list(c["env"]) {
					if n, _ := e.(map[string]any)["name"].(string); n != "" {
						checkEnv(where, n)
					}
				}
				argv := append(strs(c["command"]), strs(c["args"])...)
				if len(argv) > 1 && filepath.Base(argv[0]) == "arbor" && argv[1] == "serve" {
					check(where, argv[2:])
				}
			}
		}
	}
	for _, k := range []string{"Deployment", "Service", "DaemonSet", "Secret", "ConfigMap"} {
		if kinds[k] == 0 {
			t.Errorf("the manifests have no %s", k)
		}
	}

	// systemd units.
	for name, unit := range map[string]string{"arbor.service": deploy.SystemdUnit, "arbor-api.service": deploy.SystemdAPIUnit, "arbor-worker.service": deploy.SystemdWorkerUnit} {
		sc := bufio.NewScanner(strings.NewReader(unit))
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
				f := strings.Fields(rest)
				if len(f) < 2 || filepath.Base(f[0]) != "arbor" || f[1] != "serve" {
					t.Errorf("%s: ExecStart is not arbor serve: %s", name, rest)
					continue
				}
				check(name, f[2:])
			}
		}
	}

	// The local recipe: every line that starts arbor serve, and the node
	// helper's lines that continue it.
	b, err := os.ReadFile("../../scripts/cluster-local.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "node ") || strings.Contains(line, `"$ARBOR" serve --home`) || strings.HasPrefix(line, "--blobs") || strings.HasPrefix(line, `--advertise`) {
			var args []string
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "--") {
					args = append(args, f, "x") // values are shell expressions
				}
			}
			// Only names are checked here: the values are the shell's.
			for i := 0; i < len(args); i += 2 {
				name := strings.TrimPrefix(args[i], "--")
				if serveFlags().Lookup(name) == nil {
					t.Errorf("cluster-local.sh: arbor serve has no flag --%s (%s)", name, line)
				}
				checked++
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d flags and settings checked: the parsing missed the files' arbor invocations", checked)
	}
}

// containers returns the containers and init containers of a workload's
// pod template.
func containers(doc map[string]any) []map[string]any {
	spec, _ := doc["spec"].(map[string]any)
	tmpl, _ := spec["template"].(map[string]any)
	pod, _ := tmpl["spec"].(map[string]any)
	var out []map[string]any
	for _, key := range []string{"containers", "initContainers"} {
		for _, c := range list(pod[key]) {
			if m, ok := c.(map[string]any); ok {
				out = append(out, m)
			}
		}
	}
	return out
}

func list(v any) []any { l, _ := v.([]any); return l }

func strs(v any) []string {
	var out []string
	for _, s := range list(v) {
		if str, ok := s.(string); ok {
			out = append(out, str)
		}
	}
	return out
}

// TestScaleOutUnitsVerify: systemd's own parser takes the scale-out units
// (where systemd-analyze is installed: it warns, and still exits 0, on a
// key or value it does not take).
func TestScaleOutUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("no systemd-analyze")
	}
	for name, unit := range map[string]string{"arbor-api.service": deploy.SystemdAPIUnit, "arbor-worker.service": deploy.SystemdWorkerUnit} {
		p := filepath.Join(t.TempDir(), name)
		// verify wants the command to exist.
		if err := os.WriteFile(p, []byte(strings.Replace(unit, "/usr/local/bin/arbor", "/bin/true", 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(sa, "verify", "--man=no", p).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
	}
}
