#!/usr/bin/env bash
# Installs what arbor needs on Debian 12 as root, idempotently, and builds
# ./bin/arbor. Quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# The pinned gVisor build. It must be static, or runsc cannot start
# sandboxes here ("error executing umounter"); see ../shared/design.md.
RUNSC_VERSION=v0.0.0-20260905035102-160fafc42237
CACHE=${ARBOR_CACHE:-/var/cache/arbor}
PKGS=(busybox-static runc crun iproute2 nftables debootstrap python3-pytest ca-certificates
	python3-venv # Debian's python3 refuses pip installs (PEP 668): the SDK installs into a venv
	gcc libc6-dev # go test -race needs cgo; bin/arbor-init-c
	chromium
	postgresql-15) # the PostgreSQL store's tests start throwaway clusters (internal/testutil/pgtest)

if [ "$(id -u)" != 0 ]; then
	echo "setup.sh: run as root (sandboxes need it): sudo $0" >&2
	exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "==> installing Debian packages: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# With precompiled seccomp programs (scripts/runsc/build.sh): the "-seccomp"
# in the cache key keeps caches of the plain `go install` build from being reused.
runsc_bin="$CACHE/runsc-$RUNSC_VERSION-seccomp/runsc"
if [ ! -x "$runsc_bin" ]; then
	echo "==> building static runsc $RUNSC_VERSION with precompiled seccomp programs (about 2 minutes, once)"
	mkdir -p "$(dirname "$runsc_bin")"
	./scripts/runsc/build.sh "$RUNSC_VERSION" "$runsc_bin.tmp"
	mv "$runsc_bin.tmp" "$runsc_bin"
fi
if ! cmp -s "$runsc_bin" /usr/local/bin/runsc 2>/dev/null; then
	install -m 0755 "$runsc_bin" /usr/local/bin/runsc
fi

# versitygw: the real S3 server the layer-storage tests run on loopback
# (internal/layers/s3store; ../shared/scaleout-notes.md §2.2).
VERSITYGW_VERSION=v1.8.0
versitygw_bin="$CACHE/versitygw-$VERSITYGW_VERSION/versitygw"
if [ ! -x "$versitygw_bin" ]; then
	echo "==> building versitygw $VERSITYGW_VERSION (about 5 minutes, once)"
	mkdir -p "$(dirname "$versitygw_bin")"
	tmp=$(mktemp -d)
	CGO_ENABLED=0 GOBIN="$tmp" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
	mv "$tmp/versitygw" "$versitygw_bin"
	rmdir "$tmp"
fi
if ! cmp -s "$versitygw_bin" /usr/local/bin/versitygw 2>/dev/null; then
	install -m 0755 "$versitygw_bin" /usr/local/bin/versitygw
fi

# The web UI's browser test drives Debian's chromium with playwright-core.
if [ ! -d internal/webui/e2e/node_modules ]; then
	echo "==> npm ci (web UI test driver)"
	npm ci --prefix internal/webui/e2e --no-audit --no-fund >/dev/null
fi

echo "==> building bin/arbor and bin/arbor-init"
mkdir -p bin
# Static (no cgo): the init runs inside images that have no libc. The daemon
# uses bin/arbor-init beside it (small: sandboxes copy it into their memory to be
# forkable) and falls back to serving as its own init.
CGO_ENABLED=0 go build -o bin/arbor ./cmd/arbor
CGO_ENABLED=0 go build -o bin/arbor-init ./cmd/arbor-init # the sandboxes' init, found beside bin/arbor
# The C init of cold batch runs (a fraction of the Go init's CPU under
# gVisor), found beside bin/arbor-init; static glibc from libc6-dev.
if [ ! bin/arbor-init-c -nt cmd/arbor-init-c/init.c ]; then
	gcc -static -O2 -Wall -Werror -o bin/arbor-init-c.tmp cmd/arbor-init-c/init.c
	mv bin/arbor-init-c.tmp bin/arbor-init-c
fi
