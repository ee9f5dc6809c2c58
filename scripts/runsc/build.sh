#!/usr/bin/env bash
# Builds a static runsc of gVisor module version $1 into file $2 with
# precompiled seccomp programs for the sandboxes arbor starts (gen.go says
# which). `go install gvisor.dev/gvisor/runsc@V` leaves them out (only
# gVisor's Bazel build generates them), and every sandbox boot and restore
# then builds its filters from scratch: about 0.16 s of CPU each here.
# Needs only the Go module proxy. Run by scripts/setup.sh.
set -euo pipefail
version=$1 out=$(realpath -m "$2")
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CGO_ENABLED=0
# A writable copy of the module, built as the main module (as go install
# builds it: its own go.mod and go.sum); the module cache is read-only.
go mod download "gvisor.dev/gvisor@$version"
src="$(go env GOMODCACHE)/gvisor.dev/gvisor@$version"
cp -r "$src" "$work/gvisor"
chmod -R u+w "$work/gvisor"
cd "$work/gvisor"

# 1. Precompile: gen.go, with export hooks added to the config packages.
cp "$here/sentry_export.go.in" runsc/boot/filter/config/zz_arbor_export.go
cp "$here/gofer_export.go.in" runsc/fsgofer/filter/config/zz_arbor_export.go
cp "$here/gen.go" arbor_gen.go
go run arbor_gen.go -sentry "$work/sentry.go" -gofer "$work/gofer.go"

# 2. Build runsc with the generated programs in place of gVisor's empty set.
mv "$work/sentry.go" runsc/boot/filter/filter_precompiled.go
mv "$work/gofer.go" runsc/fsgofer/filter/filter_precompiled.go
go build -o "$out" ./runsc
