#!/usr/bin/env bash
# serve.sh: load on `sealpipe serve` with oha (HTTP load generator, crates.io),
# over loopback only:
#   - raw AES key: POST /v1/encrypt of 1 KiB and 1 MiB bodies, POST /v1/decrypt of a
#     1 KiB and a 1 MiB message (each made once, before its run);
#   - one AWS KMS key on a local moto server: the direct design, POST /v1/kms/encrypt
#     (one KMS Encrypt per request), beside sealpipe's POST /v1/encrypt with the same
#     key (the data-key pool: one GenerateDataKey per pooled data key).
# Prints a table (route, size, requests/s, p50 and p99 in ms, success rate = 2xx of all
# answered requests, KMS calls per 10,000 requests from GET /metrics'
# sealpipe_kms_requests_total before and after each run) and every command it ran.
# Writes the table (summary.md), oha's JSON of each run and the server logs to OUT_DIR.
#
# Run `serve.sh --help` for usage.

set -Eeuo pipefail
export LC_ALL=C
trap 'echo "serve.sh: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR

usage() {
	cat <<'EOF'
Usage: serve.sh [-h|--help]

Environment (defaults in brackets):
  SEALPIPE_BIN   the sealpipe binary [target/release/sealpipe of this repository;
                 build it with `cargo build --release`]
  BENCH_SECONDS  seconds of load per figure [10]
  CONNECTIONS    oha's concurrent connections (-c) [16]
  OHA            the oha binary [oha on PATH, else $OHA_ROOT/bin/oha, installed there
                 if missing with `cargo install oha --version 1.16.0 --locked --root
                 $OHA_ROOT`]
  OHA_ROOT       where that install goes [target/bench-tools]
  SEALPIPE_TEST_PYTHON  the test venv's python, beside moto_server and boto3
                 [.venv-test/bin/python; scripts/setup-venv.sh makes it]
  OUT_DIR        results [./bench-serve-out-YYYYmmdd-HHMMSS]
  ROUTES         comma-separated subset of raw,kms [raw,kms]

Only loopback addresses are used: the servers listen on 127.0.0.1 ports of their own
choosing, and oha sends to them alone. Every run is bounded by BENCH_SECONDS.
EOF
}

case ${1:-} in
-h | --help)
	usage
	exit 0
	;;
"") ;;
*)
	echo "serve.sh: unknown argument $1 (see --help)" >&2
	exit 2
	;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SEALPIPE_BIN=${SEALPIPE_BIN:-$ROOT/target/release/sealpipe}
BENCH_SECONDS=${BENCH_SECONDS:-10}
CONNECTIONS=${CONNECTIONS:-16}
OHA_ROOT=${OHA_ROOT:-$ROOT/target/bench-tools}
OHA_VERSION=1.16.0
VENV_PY=${SEALPIPE_TEST_PYTHON:-$ROOT/.venv-test/bin/python}
ROUTES=${ROUTES:-raw,kms}
OUT_DIR=${OUT_DIR:-$PWD/bench-serve-out-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)

log() { echo "[bench-serve $(date +%H:%M:%S)] $*" >&2; }
die() {
	echo "serve.sh: $*" >&2
	exit 1
}
wants() { [[ ,$ROUTES, == *,$1,* ]]; }

[[ $BENCH_SECONDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS=$BENCH_SECONDS is not a whole number of seconds"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS=$CONNECTIONS is not a positive number"
[[ -x $SEALPIPE_BIN ]] || die "no sealpipe binary at $SEALPIPE_BIN: build it with \`cargo build --release\` or set SEALPIPE_BIN"
"$SEALPIPE_BIN" serve --help >/dev/null 2>&1 || die "$SEALPIPE_BIN has no \`serve\` command (an older build?)"
command -v curl >/dev/null || die "curl is needed (apt-get install -y curl)"
command -v python3 >/dev/null || die "python3 is needed to read oha's JSON (apt-get install -y python3)"

# The one bearer token of every server (a fresh one each run).
TOKEN=bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

# The commands, as run, for the record.
COMMANDS=()
record() {
	local quoted
	printf -v quoted '%q ' "$@"
	# The token is a throwaway, but the record names it rather than showing it.
	quoted=${quoted//$TOKEN/\$TOKEN}
	COMMANDS+=("${quoted% }")
	log "+ ${quoted% }"
}

# ---------------------------------------------------------------- oha
if [[ -z ${OHA:-} ]]; then
	OHA=$(command -v oha || echo "$OHA_ROOT/bin/oha")
fi
if [[ ! -x $OHA ]]; then
	log "no oha at $OHA: installing oha $OHA_VERSION into $OHA_ROOT (a few minutes; log: $OUT_DIR/oha-install.log)"
	record cargo install oha --version "$OHA_VERSION" --locked --root "$OHA_ROOT"
	cargo install oha --version "$OHA_VERSION" --locked --root "$OHA_ROOT" >"$OUT_DIR/oha-install.log" 2>&1 ||
		die "cargo install oha failed (see $OUT_DIR/oha-install.log); it needs cargo and crates.io"
	OHA=$OHA_ROOT/bin/oha
fi
OHA_SAYS=$("$OHA" --version 2>&1 | head -n 1)
log "oha: $OHA ($OHA_SAYS)"

# ---------------------------------------------------------------- scratch, processes
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-serve.XXXXXX")
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

printf '# serve.sh\n%s\n' "$TOKEN" >"$WORK/tokens"
head -c 32 /dev/urandom >"$WORK/k.key"
head -c 1024 /dev/urandom >"$WORK/1KiB.bin"
head -c 1048576 /dev/urandom >"$WORK/1MiB.bin"

# start_server NAME ARGS...: starts `sealpipe serve --listen 127.0.0.1:0 ARGS...` and sets
# BASE to the URL of its first stderr line.
BASE=
start_server() {
	local name=$1
	shift
	local err=$OUT_DIR/$name.stderr
	record "$SEALPIPE_BIN" serve --listen 127.0.0.1:0 --token-file "$WORK/tokens" "$@"
	"$SEALPIPE_BIN" serve --listen 127.0.0.1:0 --token-file "$WORK/tokens" "$@" \
		</dev/null >"$OUT_DIR/$name.stdout" 2>"$err" &
	local pid=$!
	PIDS+=("$pid")
	BASE=
	for _ in $(seq 300); do
		BASE=$(sed -n '1s|^sealpipe serve: listening on \(http[s]*://[^ ]*\).*|\1|p' "$err")
		[[ -n $BASE ]] && break
		kill -0 "$pid" 2>/dev/null || die "sealpipe serve ($name) exited: $(cat "$err")"
		sleep 0.1
	done
	[[ -n $BASE ]] || die "sealpipe serve ($name) did not say where it listens in 30 s: $(head -n 5 "$err")"
	curl -fsS "$BASE/healthz" >/dev/null || die "GET $BASE/healthz failed"
	log "$name: $BASE (pid $pid)"
}

# kms_total: the sum of sealpipe_kms_requests_total over its actions, from GET /metrics.
kms_total() {
	curl -fsS -H "Authorization: Bearer $TOKEN" "$BASE/metrics" |
		awk '/^sealpipe_kms_requests_total[{ ]/ { s += $NF } END { printf "%d\n", s }'
}

ROWS=()
# load LABEL KEY ROUTE SIZE BODYFILE: BENCH_SECONDS of POSTs of BODYFILE to ROUTE of the
# server at BASE, whose key is described by KEY.
load() {
	local label=$1 key=$2 route=$3 size=$4 body=$5
	local json=$OUT_DIR/$label.json
	local before after
	before=$(kms_total)
	record "$OHA" --no-tui --output-format json -z "${BENCH_SECONDS}s" -w -c "$CONNECTIONS" \
		-m POST -H "Authorization: Bearer $TOKEN" -T application/octet-stream \
		-D "$body" "$BASE$route"
	"$OHA" --no-tui --output-format json -z "${BENCH_SECONDS}s" -w -c "$CONNECTIONS" \
		-m POST -H "Authorization: Bearer $TOKEN" -T application/octet-stream \
		-D "$body" "$BASE$route" >"$json" 2>"$OUT_DIR/$label.oha.stderr" ||
		die "oha failed for $label (see $OUT_DIR/$label.oha.stderr)"
	after=$(kms_total)
	ROWS+=("$key|$(python3 - "$json" "$route" "$size" "$((after - before))" <<'PY'
import json, sys
path, route, size, kms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
doc = json.load(open(path))
summary = doc["summary"]
codes = {int(k): v for k, v in doc.get("statusCodeDistribution", {}).items()}
answered = sum(codes.values())
errors = sum(doc.get("errorDistribution", {}).values())
ok = sum(v for k, v in codes.items() if 200 <= k < 300)
total = answered + errors
pct = doc.get("latencyPercentiles") or doc.get("latency_percentiles") or {}
def ms(v):
    return "-" if v is None else f"{v * 1000:.2f}"
rate = ok / total * 100 if total else 0.0
rps = ok / summary["total"] if summary.get("total") else 0.0
per10k = f"{kms / ok * 10000:.1f}" if ok else "-"
others = ", ".join(f"{k}: {v}" for k, v in sorted(codes.items()) if not 200 <= k < 300)
if errors:
    others = (others + ", " if others else "") + f"{errors} errors"
print("|".join([route, size, f"{rps:.0f}", ms(pct.get("p50")), ms(pct.get("p99")),
                f"{rate:.2f}%" + (f" ({others})" if others else ""), per10k, str(ok)]))
PY
)")
	log "$label: ${ROWS[-1]}"
}

# ---------------------------------------------------------------- raw AES key
if wants raw; then
	start_server raw --key "raw-aes:bench:k1:$WORK/k.key"
	for size in 1KiB 1MiB; do
		load "raw-encrypt-$size" "raw AES" /v1/encrypt "$size" "$WORK/$size.bin"
	done
	for size in 1KiB 1MiB; do
		record curl -fsS -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/octet-stream" \
			--data-binary "@$WORK/$size.bin" -o "$WORK/$size.sealed" "$BASE/v1/encrypt"
		curl -fsS -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/octet-stream" \
			--data-binary "@$WORK/$size.bin" -o "$WORK/$size.sealed" "$BASE/v1/encrypt"
		# The message opens to its plaintext before it is measured.
		record curl -fsS -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/octet-stream" \
			--data-binary "@$WORK/$size.sealed" -o "$WORK/$size.opened" "$BASE/v1/decrypt"
		curl -fsS -X POST -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/octet-stream" \
			--data-binary "@$WORK/$size.sealed" -o "$WORK/$size.opened" "$BASE/v1/decrypt"
		cmp -s "$WORK/$size.bin" "$WORK/$size.opened" || die "/v1/decrypt of the $size message is not its plaintext"
		load "raw-decrypt-$size" "raw AES" /v1/decrypt "$size" "$WORK/$size.sealed"
	done
	kill "${PIDS[-1]}"
	wait "${PIDS[-1]}" 2>/dev/null || true
fi

# ---------------------------------------------------------------- KMS on moto
if wants kms; then
	VENV_BIN=$(dirname "$VENV_PY")
	[[ -x $VENV_BIN/moto_server && -x $VENV_PY ]] ||
		die "no moto_server beside $VENV_PY: run scripts/setup-venv.sh (or set SEALPIPE_TEST_PYTHON), or ROUTES=raw"
	MOTO_PORT=$("$VENV_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	record "$VENV_BIN/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
	"$VENV_BIN/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$OUT_DIR/moto.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 600); do
		(exec 3<>"/dev/tcp/127.0.0.1/$MOTO_PORT") 2>/dev/null && break
		kill -0 "${PIDS[-1]}" 2>/dev/null || die "moto_server exited (see $OUT_DIR/moto.log)"
		sleep 0.1
	done
	export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
		AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
	MOTO=http://127.0.0.1:$MOTO_PORT
	KEY_ARN=$("$VENV_PY" -c 'import sys, boto3; print(boto3.client("kms", endpoint_url=sys.argv[1]).create_key()["KeyMetadata"]["Arn"])' "$MOTO")
	log "moto at $MOTO, KMS key $KEY_ARN"
	start_server kms --key "$KEY_ARN" --kms-endpoint "$MOTO"
	# The server checks its key at start by generating the first pooled data key.
	KMS_AT_START=$(kms_total)
	log "KMS calls before the first request: $KMS_AT_START"
	load kms-kms-encrypt-1KiB "KMS (moto)" /v1/kms/encrypt 1KiB "$WORK/1KiB.bin"
	load kms-encrypt-1KiB "KMS (moto)" /v1/encrypt 1KiB "$WORK/1KiB.bin"
	load kms-encrypt-1MiB "KMS (moto)" /v1/encrypt 1MiB "$WORK/1MiB.bin"
fi

# ---------------------------------------------------------------- the table
{
	echo "sealpipe serve under oha: ${BENCH_SECONDS} s per row, $CONNECTIONS connections, loopback"
	echo "machine: $(nproc) CPUs, $(uname -sr); $("$SEALPIPE_BIN" --version 2>/dev/null | head -n 1) ($SEALPIPE_BIN); $OHA_SAYS"
	echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
	echo
	echo "| route | key | size | requests/s | p50 ms | p99 ms | success | KMS calls / 10,000 requests | 2xx requests |"
	echo "|---|---|---|---:|---:|---:|---:|---:|---:|"
	for row in "${ROWS[@]}"; do
		IFS='|' read -r key route size rps p50 p99 rate per10k ok <<<"$row"
		case $route in
		/v1/kms/encrypt) route="$route (one KMS Encrypt each)" ;;
		esac
		echo "| $route | $key | $size | $rps | $p50 | $p99 | $rate | $per10k | $ok |"
	done
	echo
	echo "requests/s: 2xx answers per second of the run; success: 2xx of all requests sent."
	if wants kms; then
		echo "KMS (moto): a local mock, whose latency and throughput are not AWS KMS's; what"
		echo "carries over is the count of KMS calls. The KMS server made $KMS_AT_START KMS call(s) at"
		echo "start (its first pooled data key), before the first row."
	fi
	echo
	echo "Commands:"
	for c in "${COMMANDS[@]}"; do
		echo "  $c"
	done
} | tee "$OUT_DIR/summary.md"
log "results in $OUT_DIR"
