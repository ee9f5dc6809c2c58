#!/usr/bin/env bash
# Runs arbor's whole test suite as root: formatting, vet, staticcheck, the Go
# tests (real sandboxes under runsc and runc), and the Python tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# stage prints a stage's heading with the time it starts, so a slow CI run says
# which stage took the time.
stage() { echo "==> [$(date -u +%T)] $*"; }

stage "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*'))
if [ -n "$unformatted" ]; then
	echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi
stage "go vet"
go vet ./...
stage "staticcheck"
go tool staticcheck ./...

stage "go test -race"
# Privileged tests must run (never skip) under CI; testutil.RequiresRoot fails them if not root.
# -race needs cgo, so the test binaries are dynamic; warm sandboxes need a static init, which
# the tests build themselves with CGO_ENABLED=0 (testdaemon.StaticInit, the engine's
# staticInit), never the test binary. The stage took 19-20 min on 2 cores (2026-12-05; engine
# 845-936 s). Listing the engine first, to start it first, did not shorten it and held back
# every other package's output until the engine ended.
CGO_ENABLED=1 go test -race -count=1 -timeout 25m -skip '^TestManyIdleInstances$' ./...

stage "capacity: 200 idle gVisor instances, each answering an exec within a second"
# Alone, after the parallel suite: its one-second bound is about arbor and the sandboxes,
# not about the other test packages competing for the two cores (README "Many idle instances").
CGO_ENABLED=1 go test -race -count=1 -timeout 10m -run '^TestManyIdleInstances$' ./internal/api/

stage "cluster: the api package's tests against two API nodes and two workers (PostgreSQL, versitygw)"
# ARBOR_TEST_CLUSTER=1 makes each test daemon a cluster (testdaemon: a database and a bucket,
# arbor serve's composition per node, requests alternating between the API nodes). Tests whose
# subject is one node's skip, saying why (README "Scale-out"). 54 s of tests on 2 cores (96 s with the build).
ARBOR_TEST_CLUSTER=1 CGO_ENABLED=1 go test -race -count=1 -timeout 10m -skip '^TestManyIdleInstances$' ./internal/api/

stage "go test as an unprivileged user (tests over the fake runtime must not need root)"
./scripts/test-rootless.sh nobody

stage "fuzz: the init protocol's decoder and state machine (${FUZZTIME:-200000x} per target)"
# Every byte from a sandbox is hostile; the seed corpora also run in go test above.
# Budgets are counts, not durations: a duration's deadline can race Go's fuzz
# coordinator and fail a target with a bare "context deadline exceeded" and no
# crasher (golang/go#75804, fixed in Go 1.27; seen here in CI on 1.26).
for target in $(go test -list '^Fuzz' ./internal/initproc/ | grep '^Fuzz'); do
	go test -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZTIME:-200000x}" -fuzzminimizetime 2000x ./internal/initproc/
done

stage "python tests (SDK, and the branching example over raw HTTP)"
# Debian's python3 has python3-pytest; a pyenv python3 earlier in PATH may not.
ARBOR_BIN="$PWD/bin/arbor" /usr/bin/python3 -m pytest -q python/tests tests
stage "all tests passed"
