#!/bin/sh
# A throwaway scale-out arbor on this machine, no docker: a PostgreSQL
# cluster (initdb under DIR, a Unix socket, no TCP), versitygw serving an S3
# bucket on loopback, one API node and two workers, each with its own home.
#
#   sudo scripts/cluster-local.sh up [DIR]     # start; prints the API's URL and token file
#   sudo scripts/cluster-local.sh down [DIR]   # stop everything and delete DIR
#
# DIR defaults to /tmp/arbor-cluster. Needs root (workers start sandboxes),
# PostgreSQL's binaries (Debian: postgresql-15), versitygw and curl
# (scripts/setup.sh installs them), and bin/arbor
# (CGO_ENABLED=0 go build -o bin/arbor ./cmd/arbor) or $ARBOR.
set -eu

cmd=${1:-}
DIR=${2:-/tmp/arbor-cluster}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ARBOR=${ARBOR:-$ROOT/bin/arbor}
API_PORT=${API_PORT:-7777}
S3_PORT=${S3_PORT:-7070}
BUCKET=arbor-layers

die() { echo "cluster-local: $*" >&2; exit 1; }

pgbin() {
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -rn) "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")"; do
		[ -x "$d/initdb" ] && { echo "$d"; return; }
	done
	die "no PostgreSQL binaries: apt-get install postgresql-15 (scripts/setup.sh)"
}

versitygw_bin() {
	for p in "${ARBOR_VERSITYGW:-}" /var/cache/arbor/versitygw-v1.8.0/versitygw "$(command -v versitygw 2>/dev/null || true)"; do
		[ -n "$p" ] && [ -x "$p" ] && { echo "$p"; return; }
	done
	die "no versitygw: run scripts/setup.sh (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0)"
}

# wait_for TRIES CMD...: run CMD every 0.2 s until it succeeds.
wait_for() {
	n=$1; shift
	while ! "$@" >/dev/null 2>&1; do
		n=$((n - 1)); [ "$n" -gt 0 ] || return 1
		sleep 0.2
	done
}

# node NAME ARGS...: start an arbor serve in the background, home DIR/NAME.
node() {
	name=$1; shift
	mkdir -p "$DIR/$name"
	# shellcheck disable=SC2086 # the environment file holds plain assignments
	env $(cat "$DIR/env") "$ARBOR" serve --home "$DIR/$name" --db "$DB" \
		--blobs "s3://$BUCKET/cluster" --blobs-endpoint "http://127.0.0.1:$S3_PORT" "$@" \
		>"$DIR/$name.log" 2>&1 &
	echo $! >"$DIR/$name.pid"
	wait_for 150 test -s "$DIR/$name/url" || die "$name did not start (is its port taken? set API_PORT): see $DIR/$name.log"
	echo "$name: $(cat "$DIR/$name/url") (log $DIR/$name.log)"
}

up() {
	[ "$(id -u)" = 0 ] || die "run as root (workers start sandboxes)"
	[ -x "$ARBOR" ] || die "no $ARBOR: CGO_ENABLED=0 go build -o bin/arbor ./cmd/arbor (or set ARBOR)"
	[ ! -e "$DIR" ] || die "$DIR exists: scripts/cluster-local.sh down $DIR first"
	command -v curl >/dev/null || die "no curl"
	PG=$(pgbin)
	GW=$(versitygw_bin)
	mkdir -p "$DIR/pg" "$DIR/s3"
	chown postgres:postgres "$DIR/pg"

	echo "==> PostgreSQL ($PG)"
	runuser -u postgres -- "$PG/initdb" -D "$DIR/pg/data" -U arbor --auth=trust -E UTF8 --no-locale >"$DIR/pg/initdb.log"
	runuser -u postgres -- "$PG/pg_ctl" -D "$DIR/pg/data" -l "$DIR/pg/log" -w start \
		-o "-c listen_addresses='' -k $DIR/pg -c max_connections=200" >/dev/null
	runuser -u postgres -- "$PG/psql" -h "$DIR/pg" -U arbor -d postgres -qc "CREATE DATABASE arbor"
	DB="postgres://arbor@/arbor?host=$DIR/pg"

	echo "==> versitygw on 127.0.0.1:$S3_PORT"
	key=k$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
	secret=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
	printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nAWS_REGION=us-east-1\nAWS_CONFIG_FILE=/dev/null\nAWS_SHARED_CREDENTIALS_FILE=/dev/null\nAWS_EC2_METADATA_DISABLED=true\n' \
		"$key" "$secret" >"$DIR/env"
	chmod 600 "$DIR/env"
	ROOT_ACCESS_KEY=$key ROOT_SECRET_KEY=$secret "$GW" --port "127.0.0.1:$S3_PORT" posix "$DIR/s3" >"$DIR/s3.log" 2>&1 &
	echo $! >"$DIR/s3.pid"
	wait_for 100 curl -s "http://127.0.0.1:$S3_PORT/" || die "versitygw did not start: see $DIR/s3.log"
	kill -0 "$(cat "$DIR/s3.pid")" 2>/dev/null || die "versitygw exited (is port $S3_PORT taken? set S3_PORT): see $DIR/s3.log"
	curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret" -X PUT "http://127.0.0.1:$S3_PORT/$BUCKET" \
		-H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
		|| die "could not create bucket $BUCKET"

	echo "==> one API node and two workers"
	node api --role api --listen "127.0.0.1:$API_PORT"
	for i in 1 2; do
		node "worker$i" --role worker --worker-id "worker$i" --listen "127.0.0.1:$((API_PORT + i))" \
			--advertise "http://127.0.0.1:$((API_PORT + i))"
	done
	echo "ready: export ARBOR_URL=http://127.0.0.1:$API_PORT ARBOR_TOKEN=\$(cat $DIR/api/token)"
}

down() {
	[ -d "$DIR" ] || { echo "nothing at $DIR"; return; }
	for f in "$DIR"/*.pid; do
		[ -e "$f" ] || continue
		pid=$(cat "$f")
		kill "$pid" 2>/dev/null || true
		# arbor drains for up to its shutdown timeout
		n=450; while kill -0 "$pid" 2>/dev/null && [ $n -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
	done
	if [ -d "$DIR/pg/data" ]; then
		PG=$(pgbin)
		runuser -u postgres -- "$PG/pg_ctl" -D "$DIR/pg/data" -m fast -w stop >/dev/null 2>&1 || true
	fi
	rm -rf "$DIR"
	echo "stopped and removed $DIR"
}

case "$cmd" in
up) up ;;
down) down ;;
*) die "usage: $0 up|down [DIR]" ;;
esac
