#!/usr/bin/env bash
# Runs the tests that need no sandbox as an unprivileged user, so that a
# test which quietly starts needing root is caught: the api, cli and mcp
# tests of API behaviour run over the fake runtime with copied roots
# (testdaemon.Options.Fake); those that need a real sandbox skip (outside
# CI=true, which this run unsets). Run as root, it builds the test binaries
# and runs them as the user (default nobody) from a copy of the tree the
# user can read; run as another user, it runs go test.
# Usage: scripts/test-rootless.sh [user [packages...]]
set -euo pipefail
cd "$(dirname "$0")/.."
user=${1:-nobody}
shift || true
pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
	pkgs=(internal/api internal/cli internal/mcp internal/copyroot)
fi
if [ "$(id -u)" != 0 ]; then
	exec env -u CI go test -count=1 "${pkgs[@]/#/./}"
fi
tmp=$(mktemp -d /tmp/arbor-rootless-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src" "$tmp/bin" "$tmp/home"
git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - | tar -xf - -C "$tmp/src"
for p in "${pkgs[@]}"; do
	go test -c -o "$tmp/bin/${p//\//_}.test" "./$p"
done
chmod -R a+rX "$tmp"
chmod 755 "$tmp"
chown "$user" "$tmp/home"
for p in "${pkgs[@]}"; do
	echo "--- $p as $user"
	(cd "$tmp/src/$p" && runuser -u "$user" -- env -u CI HOME="$tmp/home" PATH="$PATH" \
		"$tmp/bin/${p//\//_}.test" -test.count=1 -test.timeout=10m)
done
