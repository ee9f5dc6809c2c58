#!/usr/bin/env bash
# arbor's main job on the embedded default: start the daemon (SQLite store
# under /var/lib/arbor), bring in a base image (a Debian base with python3 and
# pytest, built once with debootstrap from this machine's apt mirror), make
# one install-like step, then branch three fixes from that same state in
# parallel, with a PASS/FAIL line each. Safe to run again: it reuses a running
# daemon and the base. ARBOR_DEMO_BASE=busybox uses a busybox base instead
# (seconds instead of minutes, shell tests instead of pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null

export ARBOR_HOME=${ARBOR_HOME:-/var/lib/arbor}
arbor=bin/arbor
if ! $arbor whoami >/dev/null 2>&1; then
	echo "==> starting the daemon (home $ARBOR_HOME, log $ARBOR_HOME/arbor.log)"
	mkdir -p "$ARBOR_HOME"
	nohup $arbor serve --home "$ARBOR_HOME" >"$ARBOR_HOME/arbor.log" 2>&1 &
	for _ in $(seq 1 100); do
		$arbor whoami >/dev/null 2>&1 && break
		sleep 0.1
	done
	$arbor whoami >/dev/null || { cat "$ARBOR_HOME/arbor.log"; exit 1; }
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
if [ "${ARBOR_DEMO_BASE:-python}" = busybox ]; then
	if ! $arbor images --prefix busybox --json | grep -q '"busybox"'; then
		echo "==> importing a busybox base image from the host's busybox-static"
		$arbor import --busybox --tag busybox
	fi
	printf '#!/bin/sh\nmode=$(cat /app/mode)\n[ "$mode" = pool ] || { echo "test failed: $mode does not fix the bug"; exit 1; }\necho "test passed: $mode"\n' >"$work/test.sh"
	echo "==> install step (non-disposable: its filesystem becomes a new image)"
	$arbor run --image busybox --tag demo-env -f "$work/test.sh:/app/test.sh:0755" --shell -- 'echo installed'
	echo "==> three branches from the same image, in parallel"
	$arbor branch demo-env -- \
		'echo retry > /app/mode && /app/test.sh' \
		'echo pool > /app/mode && /app/test.sh' \
		'echo async > /app/mode && /app/test.sh' || status=$?
else
	if ! $arbor images --prefix python:bookworm --json | grep -q '"python:bookworm"'; then
		echo "==> building the Python base once (debootstrap from this machine's apt mirror, 2-3 minutes)"
		$arbor import --python --tag python:bookworm
	fi
	cat >"$work/calc.py" <<'PY'
def mean(xs):
    return sum(xs) / len(xs) + 1
PY
	cat >"$work/test_calc.py" <<'PY'
from calc import mean


def test_mean():
    assert mean([1, 2, 3]) == 2


def test_half():
    assert mean([1, 2]) == 1.5


def test_empty():
    assert mean([]) == 0
PY
	echo "==> install step (non-disposable: its filesystem becomes a new image)"
	$arbor run --image python:bookworm --tag demo-env \
		-f "$work/calc.py:/app/calc.py" -f "$work/test_calc.py:/app/test_calc.py" \
		--shell -- 'cd /app && python3 -m pytest --version && python3 -m pytest -q -p no:cacheprovider | tail -1 || true'
	echo "==> three fixes branched from the same image, tested in parallel"
	$arbor branch demo-env -- \
		'cd /app && sed -i "s|return .*|return sum(xs) / len(xs)  # retry|" calc.py && python3 -m pytest -q -p no:cacheprovider' \
		'cd /app && sed -i "s|return .*|return sum(xs) / len(xs) if xs else 0  # pool|" calc.py && python3 -m pytest -q -p no:cacheprovider' \
		'cd /app && sed -i "s|return .*|return sum(xs) // max(len(xs), 1)  # async|" calc.py && python3 -m pytest -q -p no:cacheprovider' || status=$?
fi
echo
echo "The daemon keeps running: try 'bin/arbor images', 'bin/arbor log demo-env', 'bin/arbor ps --all',"
echo "or open http://127.0.0.1:7777/ with the token from $ARBOR_HOME/token."
echo "Stop it with: pkill -f 'arbor serve'"
# One branch failing is the point of the example; only errors of arbor itself fail the demo.
[ "$status" -le 1 ]
