#!/usr/bin/env bash
# arbor's main job on the embedded default: start the daemon (SQLite store
# under /var/lib/arbor), bring in a base image, make one install-like step,
# then branch three fixes from that same state in parallel, one PASS/FAIL
# line each. Safe to run again: it reuses a running daemon and the base.
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

if ! $arbor images --prefix busybox --json | grep -q '"busybox"'; then
	echo "==> importing a busybox base image from the host's busybox-static"
	$arbor import --busybox --tag busybox
fi

echo "==> install step (non-disposable: its filesystem becomes a new image)"
$arbor run --image busybox --tag demo-env --shell -- '
	mkdir -p /app &&
	printf "#!/bin/sh\nmode=\$(cat /app/mode)\n[ \"\$mode\" = pool ] || { echo \"test failed: \$mode does not fix the bug\"; exit 1; }\necho \"test passed: \$mode\"\n" > /app/test.sh &&
	chmod +x /app/test.sh && echo installed'

echo "==> three branches from the same image, in parallel"
status=0
$arbor branch demo-env -- \
	'echo retry > /app/mode && /app/test.sh' \
	'echo pool > /app/mode && /app/test.sh' \
	'echo async > /app/mode && /app/test.sh' || status=$?
echo
echo "The daemon keeps running: try 'bin/arbor images', 'bin/arbor log demo-env', 'bin/arbor ps --all'."
echo "Stop it with: pkill -f 'arbor serve'"
# One branch failing is the point of the example; only errors of arbor itself fail the demo.
[ "$status" -le 1 ]
