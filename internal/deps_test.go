// Dependency rules of arbor's packages, in the spirit of
// go-containerregistry's depcheck and tailscale's deps tests: the layering
// the code is meant to have is written down here, and a change that breaks
// it fails this test instead of slipping through review.
package internal_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/arborsh/arbor/"

// leaves are the packages below the engine: they must not reach the engine
// or anything built on it, even indirectly.
var leaves = []string{
	"internal/archive", "internal/baseimage", "internal/bearer", "internal/copyroot", "internal/duration", "internal/errdefs", "internal/initproc", "internal/layerfs", "internal/layers/...",
	"internal/egress", "internal/netns", "internal/oplog", "internal/overlay", "internal/runtime", "internal/runtime/fakeruntime", "internal/runtime/runtimetest",
	"internal/store", "internal/store/postgres", "internal/testutil", "internal/warmpool", "internal/webui",
	"client", "client/apitypes", "imageref",
}

// above are the packages built on the engine.
var above = []string{"internal/engine", "internal/api", "internal/registry", "internal/daemon", "internal/cli", "internal/mcp", "internal/bench"}

// A rule forbids every package in from to import a package in to: directly
// (the package's own import lines, tests excluded), or with transitive set,
// anywhere in its dependencies. A path ending in "/..." also matches the
// packages below it.
type rule struct {
	from, to   []string
	transitive bool
	why        string
}

var rules = []rule{
	{from: []string{"internal/engine"}, to: []string{"client", "client/apitypes"},
		why: "the engine has its own domain types; api converts them to and from the wire"},
	{from: []string{"internal/engine"}, to: []string{"internal/baseimage"},
		why: "base images are content, not something the engine decides with"},
	{from: []string{"internal/api", "internal/registry"}, to: []string{"internal/store"},
		why: "only the engine sees store rows"},
	{from: []string{"internal/cli"}, to: []string{"internal/engine", "internal/store", "internal/runtime", "internal/overlay"},
		why: "the CLI talks to the daemon only through client (serve and bench reach the engine through daemon)"},
	{from: []string{"internal/bench"}, to: []string{"internal/engine", "internal/daemon", "internal/api", "internal/registry", "internal/store", "internal/layers/...", "internal/runtime/..."}, transitive: true,
		why: "arbor bench measures through the client and the raw runtime binaries; the CLI passes it the daemon to start"},
	{from: []string{"internal/mcp"}, to: []string{"internal/engine", "internal/store", "internal/api", "internal/daemon"}, transitive: true,
		why: "MCP tools talk to the daemon only through client"},
	{from: []string{"internal/layers"}, to: []string{"internal/store", "internal/runtime", "internal/overlay"},
		why: "layers knows layer ids and directories, not image rows, sandboxes or how a view is mounted"},
	{from: []string{"internal/daemon"}, to: []string{"client"},
		why: "the composition root must not call its own API over HTTP"},
	{from: leaves, to: above, transitive: true,
		why: "leaf packages sit below the engine"},
	{from: []string{"client", "client/apitypes"}, to: []string{"internal/..."}, transitive: true,
		why: "the public SDK must build outside this module"},
	{from: []string{"imageref", "internal/duration", "internal/oplog"}, to: []string{"..."}, transitive: true,
		why: "the shared grammars and the operation record's vocabulary depend on nothing of arbor's"},
	{from: []string{"internal/warmpool"}, to: []string{"internal/..."}, transitive: true,
		why: "the warm pool is policy only: sandboxes reach it through its Booter, so it is tested without root"},
	{from: []string{"..."}, to: []string{"internal/testutil/..."},
		why: "test helpers are for tests only"},
}

// knownViolations are forbidden edges that exist today; the engine split
// (issue 16) removed the last. The test fails when one disappears, so this
// list only shrinks: never add to it, fix the import.
var knownViolations = map[string]string{}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", module+"...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		rel := strings.TrimPrefix(p.ImportPath, module)
		pkgs[rel] = p
	}
	return pkgs
}

func matches(patterns []string, rel string) bool {
	for _, p := range patterns {
		if p == "..." || p == rel {
			return true
		}
		if base, ok := strings.CutSuffix(p, "/..."); ok && (rel == base || strings.HasPrefix(rel, base+"/")) {
			return true
		}
	}
	return false
}

// forbiddenEdges returns "from -> to" for every edge the rules forbid,
// with the rule's reason.
func forbiddenEdges(pkgs map[string]pkg) map[string]string {
	edges := map[string]string{}
	for rel, p := range pkgs {
		for _, r := range rules {
			if !matches(r.from, rel) {
				continue
			}
			deps := p.Imports
			if r.transitive {
				deps = p.Deps
			}
			for _, d := range deps {
				to, ok := strings.CutPrefix(d, module)
				if !ok || to == rel || !matches(r.to, to) {
					continue
				}
				if matches(r.from, to) && matches(r.to, rel) {
					continue // a rule on a group does not forbid its members each other
				}
				edges[rel+" -> "+to] = r.why
			}
		}
	}
	return edges
}

func TestDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list over the module")
	}
	pkgs := listPackages(t)
	for _, must := range []string{"internal/engine", "internal/api", "internal/cli", "client/apitypes"} {
		if _, ok := pkgs[must]; !ok {
			t.Fatalf("go list did not report %s: the rules below would check nothing", must)
		}
	}
	got := forbiddenEdges(pkgs)
	var news, gone []string
	for e, why := range got {
		if _, ok := knownViolations[e]; !ok {
			news = append(news, fmt.Sprintf("%s (%s)", e, why))
		}
	}
	for e := range knownViolations {
		if _, ok := got[e]; !ok {
			gone = append(gone, e)
		}
	}
	sort.Strings(news)
	sort.Strings(gone)
	for _, e := range news {
		t.Errorf("forbidden import: %s", e)
	}
	for _, e := range gone {
		t.Errorf("known violation %s is gone: delete it from knownViolations", e)
	}
}

// TestDependencyRulesBite: the checker finds an edge of each kind (direct,
// transitive, pattern) in a made-up graph, so a bug in it cannot make
// TestDependencies pass vacuously.
func TestDependencyRulesBite(t *testing.T) {
	m := func(s ...string) []string {
		for i := range s {
			s[i] = module + s[i]
		}
		return s
	}
	pkgs := map[string]pkg{
		"internal/mcp":     {Imports: m("client", "internal/engine"), Deps: m("client", "internal/engine", "internal/store")},
		"internal/cli":     {Imports: m("internal/daemon"), Deps: m("internal/daemon", "internal/engine")},
		"internal/overlay": {Deps: m("internal/api")},
		"client":           {Deps: m("internal/errdefs")},
		"internal/api":     {Imports: m("internal/testutil")},
		"internal/engine":  {Imports: m("internal/store", "internal/runtime")},
	}
	got := forbiddenEdges(pkgs)
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := []string{
		"client -> internal/errdefs",
		"internal/api -> internal/testutil",
		"internal/mcp -> internal/engine",
		"internal/mcp -> internal/store",
		"internal/overlay -> internal/api",
	}
	if !slices.Equal(keys, want) {
		t.Errorf("forbidden edges = %q, want %q (cli -> engine through daemon and engine -> store are allowed)", keys, want)
	}
}
