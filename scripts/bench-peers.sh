#!/usr/bin/env bash
# bench-peers.sh: sealpipe next to the official AWS Encryption SDKs and plain copies, on
# the same bytes, suite 0x0478 and 64 KiB frames:
#   - in memory: `sealpipe bench` beside the Rust ESDK (benches/peers/esdk-rust) and the
#     Python ESDK (benches/peers/python), raw AES-256 key, 1 thread and all threads;
#   - local trees: `sealpipe encrypt/decrypt DIR OUT` beside aws-encryption-cli -r, both
#     with the same AWS KMS key on a local moto server, and `cp -r` as the floor;
#   - S3 to S3 on a local s3s-fs server: `sealpipe encrypt s3://src/ s3://dst/` (raw AES
#     key) beside unencrypted copies by `rclone copy` and `aws s3 cp --recursive`.
# Checks once that each side decrypts the others' messages. Writes results.json,
# summary.md and throughput.svg (benches/peers/chart) to OUT_DIR.
#
# Run `bench-peers.sh --help` for usage.

set -Eeuo pipefail
export LC_ALL=C
# Never a silent stop: name the command that ended the script.
trap 'echo "bench-peers.sh: line $LINENO: \`$BASH_COMMAND\` failed (exit $?)" >&2' ERR

usage() {
	cat <<'EOF'
Usage: bench-peers.sh [-h|--help] [SEALPIPE_BIN]

SEALPIPE_BIN is a sealpipe release binary [default: target/release/sealpipe of this
repository; build it with `cargo build --release`].

Workloads (WORKLOADS selects a comma-separated subset; all by default):

  In memory, raw AES-256 key, no network; sealpipe, Rust ESDK, Python ESDK; 1 thread
  and THREADS threads:
    100MiB       104,857,600-byte messages, one per thread at a time
    1MiB         1,048,576-byte messages, 32 per thread per round
    4KiB         4,096-byte messages, 2,000 per thread per round
  Figures are medians of timed rounds after a warm-up round (at least 5 rounds and
  SECONDS_PER_FIGURE seconds each); each driver checks its round trip, untimed. Python
  runs one thread per process (the GIL): its "THREADS" figure is THREADS worker
  processes, each with its own client.

  Local trees (sizes at scale 1), encrypt then decrypt; sealpipe, aws-encryption-cli,
  and `cp -r` of the same tree as the floor:
    local-small  1,000 x 64 KiB files
    local-large  2 x 256 MiB files
  Both encrypt with one AWS KMS key on a local moto server (the CLI has no raw-key
  provider): sealpipe `--key ARN` (its data key cache: one GenerateDataKey per job),
  aws-encryption-cli -r with `--caching capacity=1000 max_age=300
  max_messages_encrypted=1048576` (sealpipe's cache limits) and
  --algorithm AES_256_GCM_HKDF_SHA512_COMMIT_KEY --frame-length 65536. sealpipe runs
  with --concurrency LOCAL_CONCURRENCY (8 files at once, its default); the CLI and cp
  have no such option and do one file at a time. Decrypt outputs are compared with the source.

  S3 to S3 (sizes at scale 1) on one fresh s3s-fs server, raw AES key:
    s3-medium    1,000 x 1 MiB objects
    s3-small     10,000 x 4 KiB objects
  `rclone copy --disable Copy` (every byte through rclone, no server-side copy),
  `aws s3 cp --recursive` (between buckets of one endpoint the AWS CLI asks S3 to copy:
  CopyObject, no body through the client), and `sealpipe encrypt s3://src s3://dst`.
  All three with S3_CONCURRENCY requests at once: sealpipe --concurrency, rclone
  --transfers/--checkers, the AWS CLI's s3.max_concurrent_requests.

Interop, checked once, untimed: a 3 MiB + 123 byte file sealed by the Rust ESDK and by
the Python ESDK decrypts with sealpipe and one sealed by sealpipe decrypts with both
(raw AES key raw-aes:sealpipe-peers:k1:KEYFILE); a small tree encrypted by sealpipe
(KMS key) decrypts with aws-encryption-cli and the CLI's with sealpipe.

Every figure has wall seconds, MB/s (10^6 plaintext bytes per second), objects/s and the
client's CPU seconds (user + system). Files and S3: the whole command under GNU time
(getrusage of the child and its children), plus the CPU time of the server (moto, s3s-fs)
from /proc. In memory: the drivers' CPU time over their timed rounds, per round
(sealpipe: its bytes per CPU-second), with seconds and CPU for one round of THREADS x
COUNT messages (sealpipe: the same bytes).

Environment (defaults in brackets):
  THREADS=$(nproc)        threads of the "all threads" figures
  SECONDS_PER_FIGURE=2    minimum measuring time of every in-memory figure
  WORKLOADS=100MiB,1MiB,4KiB,local-small,local-large,s3-medium,s3-small
  COUNT_SCALE=1           multiply file and object counts by this (at least 1)
  SIZE_SCALE=1            multiply file and object sizes by this (at least 1 byte);
                          e.g. COUNT_SCALE=0.05 SIZE_SCALE=0.05 for a quick check
  RUNS=3                  runs of every file and S3 figure; the median run is kept
  S3_CONCURRENCY=64       requests at once of every S3 tool (sealpipe's default)
  LOCAL_CONCURRENCY=8     sealpipe --concurrency on local trees (its default)
  OUT_DIR=./bench-peers-out-YYYYmmdd-HHMMSS   results.json, summary.md, throughput.svg,
                          the drivers' JSON, build and run logs
  BENCH_TMPDIR=${TMPDIR:-/tmp}   parent of the scratch directory (about 3 GiB at
                          scale 1; removed on exit)
  UPDATE_DOCS=1           also write docs/bench/throughput.svg and docs/bench/peers.md
                          (summary with the machine, load, date, commit, command line)
  ESDK_BIN                a built esdk-rust-bench to use instead of building
                          benches/peers/esdk-rust (its first build takes 6+ minutes on
                          2 cores)
  S3S_FS                  s3s-fs binary [s3s-fs on PATH, else $BENCH_TOOLS/bin/s3s-fs]
  BENCH_TOOLS=target/bench-tools   where `cargo install --root` put s3s-fs:
                          cargo install s3s-fs --version 0.14.1 --features binary --locked
                          --root target/bench-tools
  SEALPIPE_PYTHON         interpreter scripts/setup-venv.sh makes .venv-test from
                          [python3]; the venv holds the Python ESDK, aws-encryption-cli,
                          boto3 and moto_server (scripts/requirements-test.txt)

Also needed: jq, GNU time (/usr/bin/time), cargo (the chart and the Rust driver), rclone
and the AWS CLI `aws` for S3. A peer or tool that is missing or fails to build or run is
named in the table and in a note saying how to get it, and the script then exits 1.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SEALPIPE_BIN=$ROOT/target/release/sealpipe
case ${1:-} in
-h | --help)
	usage
	exit 0
	;;
-*)
	echo "bench-peers.sh: unknown option $1 (see --help)" >&2
	exit 2
	;;
"") ;;
*) SEALPIPE_BIN=$1 ;;
esac
if (($# > 1)); then
	echo "bench-peers.sh: at most one SEALPIPE_BIN (see --help)" >&2
	exit 2
fi
# The command line as given, for the docs: the settings above from the environment, then
# the script and its argument.
COMMAND_LINE=
for v in THREADS SECONDS_PER_FIGURE WORKLOADS COUNT_SCALE SIZE_SCALE RUNS S3_CONCURRENCY \
	LOCAL_CONCURRENCY UPDATE_DOCS ESDK_BIN S3S_FS BENCH_TOOLS; do
	[[ -n ${!v:-} ]] && COMMAND_LINE+="$v=${!v} "
done
COMMAND_LINE+="scripts/bench-peers.sh${1:+ $1}"

log() { printf '[%s] bench-peers: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	echo "bench-peers.sh: error: $*" >&2
	exit 2
}

THREADS=${THREADS:-$(nproc)}
SECONDS_PER_FIGURE=${SECONDS_PER_FIGURE:-2}
WORKLOADS=${WORKLOADS:-100MiB,1MiB,4KiB,local-small,local-large,s3-medium,s3-small}
COUNT_SCALE=${COUNT_SCALE:-1}
SIZE_SCALE=${SIZE_SCALE:-1}
RUNS=${RUNS:-3}
S3_CONCURRENCY=${S3_CONCURRENCY:-64}
LOCAL_CONCURRENCY=${LOCAL_CONCURRENCY:-8}
BENCH_TOOLS=${BENCH_TOOLS:-$ROOT/target/bench-tools}
UPDATE_DOCS=${UPDATE_DOCS:-}
OUT_DIR=${OUT_DIR:-./bench-peers-out-$(date +%Y%m%d-%H%M%S)}
MANIFEST=$ROOT/benches/peers/esdk-rust/Cargo.toml
CHART_MANIFEST=$ROOT/benches/peers/chart/Cargo.toml
CHART_BIN=$ROOT/benches/peers/chart/target/release/peers-chart
PY_DRIVER=$ROOT/benches/peers/python/esdk_python_bench.py
FRAME_LEN=65536

command -v jq >/dev/null || die "jq is needed to read and write the JSON results: apt-get install -y jq"
[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is needed: apt-get install -y time"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer, not '$THREADS'"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, not '$RUNS'"
for v in S3_CONCURRENCY LOCAL_CONCURRENCY; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done
for v in COUNT_SCALE SIZE_SCALE SECONDS_PER_FIGURE; do
	[[ ${!v} =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || die "$v must be a number, not '${!v}'"
done
awk -v c="$COUNT_SCALE" -v s="$SIZE_SCALE" 'BEGIN { exit !(c > 0 && s > 0) }' ||
	die "COUNT_SCALE and SIZE_SCALE must be greater than 0"

declare -A WANT=()
IFS=, read -r -a _wl <<<"$WORKLOADS"
for w in "${_wl[@]}"; do
	case $w in
	100MiB | 1MiB | 4KiB | local-small | local-large | s3-medium | s3-small) WANT[$w]=1 ;;
	*) die "unknown workload '$w' (see --help)" ;;
	esac
done
wants() { [[ -n ${WANT[$1]:-} ]]; }
wants_memory() { wants 100MiB || wants 1MiB || wants 4KiB; }
wants_local() { wants local-small || wants local-large; }
wants_s3() { wants s3-medium || wants s3-small; }

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
[[ $SEALPIPE_BIN == /* ]] || SEALPIPE_BIN=$PWD/$SEALPIPE_BIN
[[ -z ${ESDK_BIN:-} || $ESDK_BIN == /* ]] || ESDK_BIN=$PWD/$ESDK_BIN
WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/bench-peers.XXXXXX")
RUN_LOG=$OUT_DIR/runs.log
ROWS=$OUT_DIR/rows.jsonl
: >"$RUN_LOG"
: >"$ROWS"
declare -a SERVER_PIDS=()
cleanup() {
	local rc=$? pid
	for pid in "${SERVER_PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf -- "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Peers and tools that cannot be measured, or failed: one note each, under the tables.
declare -a NOTES=()
note() { NOTES+=("$1"); }

# ---------------------------------------------------------------- peers and tools

have_sealpipe=1
# Measure a copy: a rebuild of SEALPIPE_BIN during the run changes nothing here.
SEALPIPE_ORIGIN=$SEALPIPE_BIN SEALPIPE_BUILT=
if [[ -x $SEALPIPE_BIN && -f $SEALPIPE_BIN ]]; then
	SEALPIPE_BUILT=$(stat -c %Y "$SEALPIPE_BIN")
	cp "$SEALPIPE_BIN" "$WORK/sealpipe"
	SEALPIPE_BIN=$WORK/sealpipe
fi
if [[ ! -x $SEALPIPE_BIN ]] || ! "$SEALPIPE_BIN" bench --help >/dev/null 2>&1; then
	have_sealpipe=0
	note "**sealpipe not measured**: \`$SEALPIPE_ORIGIN\` is not a sealpipe binary with \`bench\`; \
build one with \`cargo build --release\` and pass its path."
fi

have_esdk=0
ESDK_VERSION=$(awk '/^name = "aws-esdk"$/ { getline; gsub(/[^0-9.]/, ""); print }' \
	"$ROOT/benches/peers/esdk-rust/Cargo.lock")
if wants_memory; then
	if [[ -n ${ESDK_BIN:-} ]]; then
		if [[ -x $ESDK_BIN ]]; then have_esdk=1; else
			note "**Rust ESDK (aws-esdk) not measured**: ESDK_BIN=$ESDK_BIN is not executable; \
unset it to build the driver, or build it with \`cargo build --release --manifest-path \
benches/peers/esdk-rust/Cargo.toml\`."
		fi
	else
		ESDK_BIN=$ROOT/benches/peers/esdk-rust/target/release/esdk-rust-bench
		log "building the Rust ESDK driver (log: $OUT_DIR/esdk-build.log)"
		build_start=$SECONDS
		# `env -u OUT_DIR`: with our OUT_DIR (the results directory) in its environment,
		# cargo found ring's fingerprint changed and rebuilt it and every crate above it.
		if env -u OUT_DIR cargo build --release --locked --manifest-path "$MANIFEST" \
			>"$OUT_DIR/esdk-build.log" 2>&1 && [[ -x $ESDK_BIN ]]; then
			have_esdk=1
			log "driver built in $((SECONDS - build_start)) s"
		else
			note "**Rust ESDK (aws-esdk) not measured**: its driver failed to build, see \
$OUT_DIR/esdk-build.log. It needs cargo, crates.io (or a filled cargo cache: \`cargo fetch \
--manifest-path benches/peers/esdk-rust/Cargo.toml\`) and a C compiler for aws-lc-sys; \
build it with \`cargo build --release --manifest-path benches/peers/esdk-rust/Cargo.toml\`."
		fi
	fi
fi

# The project's test venv: the Python ESDK, aws-encryption-cli, boto3, moto_server.
VENV_PY=
if wants_memory || wants_local; then
	log "checking the Python venv (scripts/setup-venv.sh; log: $OUT_DIR/venv.log)"
	if VENV_PY=$("$ROOT/scripts/setup-venv.sh" 2>"$OUT_DIR/venv.log" | tail -n 1) &&
		[[ -x $VENV_PY ]]; then
		VENV_BIN=$(dirname "$VENV_PY")
	else
		VENV_PY=
		note "**Python ESDK, aws-encryption-cli and moto not available**: \
\`scripts/setup-venv.sh\` failed (see $OUT_DIR/venv.log). It makes .venv-test from \
scripts/requirements-test.txt with python3 >= 3.11 and pip (PyPI); on Debian: \
\`apt-get install -y python3 python3-venv\`, then run it again."
	fi
fi
PY_VERSION=
have_python=0
if wants_memory && [[ -n $VENV_PY ]]; then
	if PY_VERSION=$("$VENV_PY" -c 'import aws_encryption_sdk; print(aws_encryption_sdk.__version__)' \
		2>>"$OUT_DIR/venv.log"); then
		have_python=1
	else
		note "**Python ESDK not measured**: \`import aws_encryption_sdk\` fails in $VENV_PY \
(see $OUT_DIR/venv.log); \`rm -rf .venv-test && scripts/setup-venv.sh\` rebuilds the venv."
	fi
fi
have_cli=0 CLI_VERSION=
if wants_local && [[ -n $VENV_PY ]]; then
	if [[ -x $VENV_BIN/aws-encryption-cli && -x $VENV_BIN/moto_server ]] &&
		CLI_VERSION=$("$VENV_BIN/aws-encryption-cli" --version 2>&1 |
		sed -n 's|.*aws-encryption-sdk-cli/\([0-9.]*\).*|\1|p' | head -n 1) && [[ -n $CLI_VERSION ]]; then
		have_cli=1
	else
		note "**aws-encryption-cli not measured**: aws-encryption-cli or moto_server missing in \
$VENV_BIN; \`rm -rf .venv-test && scripts/setup-venv.sh\` rebuilds the venv \
(scripts/requirements-test.txt pins aws-encryption-sdk-cli and moto[server])."
	fi
fi

have_s3s=0 have_rclone=0 have_awscli=0
if wants_s3; then
	if [[ -z ${S3S_FS:-} ]]; then
		S3S_FS=$(command -v s3s-fs || echo "$BENCH_TOOLS/bin/s3s-fs")
	fi
	if [[ -x $S3S_FS ]]; then have_s3s=1; else
		note "**S3 workloads not measured**: no s3s-fs at '$S3S_FS'. Install it with \`cargo \
install s3s-fs --version 0.14.1 --features binary --locked --root $BENCH_TOOLS\` or set S3S_FS."
	fi
	if command -v rclone >/dev/null; then have_rclone=1; else
		note "**rclone not measured**: rclone is not on PATH (\`apt-get install -y rclone\`)."
	fi
	if command -v aws >/dev/null; then have_awscli=1; else
		note "**aws s3 cp not measured**: the AWS CLI \`aws\` is not on PATH \
(\`apt-get install -y awscli\`)."
	fi
fi

have_chart=0
log "building the chart program (log: $OUT_DIR/chart-build.log)"
if env -u OUT_DIR cargo build --release --locked --manifest-path "$CHART_MANIFEST" \
	>"$OUT_DIR/chart-build.log" 2>&1 && [[ -x $CHART_BIN ]]; then
	have_chart=1
else
	note "**no chart**: benches/peers/chart failed to build, see $OUT_DIR/chart-build.log \
(\`cargo build --release --manifest-path benches/peers/chart/Cargo.toml\` needs crates.io or \
a filled cargo cache)."
fi

# Run the clients from the scratch directory, so that no ./config.toml is picked up, and
# without the caller's sealpipe, AWS or rclone settings.
cd "$WORK"
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(SEALPIPE_|AWS_|RCLONE_)' || true)
unset RUST_LOG RUST_BACKTRACE
export AWS_ACCESS_KEY_ID=sealpipepeers AWS_SECRET_ACCESS_KEY=sealpipepeerssecret
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export HOME=$WORK
mkdir -p "$WORK/aws"
printf '[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = %s\n' "$S3_CONCURRENCY" \
	>"$WORK/aws/config"
: >"$WORK/aws/credentials"
export AWS_CONFIG_FILE=$WORK/aws/config AWS_SHARED_CREDENTIALS_FILE=$WORK/aws/credentials

KEYFILE=$WORK/key.bin
head -c 32 /dev/urandom >"$KEYFILE"
RAWKEY=raw-aes:sealpipe-peers:k1:$KEYFILE

# ---------------------------------------------------------------- measuring helpers

scale_count() { awk -v n="$1" -v s="$COUNT_SCALE" 'BEGIN { v = int(n * s + 0.5); printf "%.0f\n", (v < 1 ? 1 : v) }'; }
scale_size() { awk -v n="$1" -v s="$SIZE_SCALE" 'BEGIN { v = int(n * s + 0.5); printf "%.0f\n", (v < 1 ? 1 : v) }'; }
human() { # bytes -> e.g. 4 KiB, 1.5 MiB
	awk -v b="$1" 'BEGIN { split("B KiB MiB GiB TiB", u, " "); i = 1
		while (b >= 1024 && i < 5) { b /= 1024; i++ }
		if (b == int(b)) printf "%d %s", b, u[i]; else printf "%.1f %s", b, u[i] }'
}
tree_stats() { find "$1" -type f -printf '%s\n' 2>/dev/null | awk '{ n++; b += $1 } END { printf "%.0f %.0f\n", n, b }'; }
# gen_tree DIR COUNT SIZE: COUNT files of SIZE random bytes (incompressible).
gen_tree() {
	mkdir -p "$1"
	head -c "$(($2 * $3))" /dev/urandom | split -b "$3" -a "${#2}" -d - "$1/obj-"
}

HZ=$(getconf CLK_TCK)
pid_cpu() { # PID -> user+sys CPU seconds so far, 0 when PID is empty or gone
	if [[ -n $1 && -r /proc/$1/stat ]]; then
		awk -v hz="$HZ" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"
	else
		echo 0
	fi
}
machine_cpu() { # -> "BUSY_SECONDS STEAL_SECONDS" since boot
	awk -v hz="$HZ" '/^cpu / { printf "%.2f %.2f\n", ($2 + $3 + $4 + $7 + $8) / hz, $9 / hz }' /proc/stat
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# timed SERVER_PID CMD...: runs CMD under GNU time, output to the run log. Sets M_RC,
# M_WALL, M_CPU (user+sys of CMD and its children), M_RSS (KiB), M_SRV (CPU seconds of
# SERVER_PID meanwhile; give "" for none).
timed() {
	local srv=$1 tf=$WORK/time.out t0 t1 s0 s1 line
	shift
	: >"$tf"
	s0=$(pid_cpu "$srv")
	t0=$EPOCHREALTIME
	M_RC=0
	/usr/bin/time -f '%U %S %M' -o "$tf" "$@" >>"$RUN_LOG" 2>&1 || M_RC=$?
	t1=$EPOCHREALTIME
	s1=$(pid_cpu "$srv")
	M_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	M_SRV=$(awk -v a="$s0" -v b="$s1" 'BEGIN { printf "%.2f", b - a }')
	line=$(tail -n 1 "$tf")
	if [[ $line =~ ^[0-9.]+\ [0-9.]+\ [0-9]+$ ]]; then
		read -r u s M_RSS <<<"$line"
		M_CPU=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
	else
		M_CPU="" M_RSS=""
	fi
}

# row KEY=VALUE...: one result in rows.jsonl. Numbers stay numbers, empty values are
# null. Known keys: workload category tool label op threads seconds mb_per_s
# objects_per_s cpu_s objects bytes status and any more.
row() {
	local args=() kv k v
	for kv in "$@"; do
		k=${kv%%=*} v=${kv#*=}
		args+=(--arg "$k" "$v")
	done
	jq -cn "${args[@]}" '$ARGS.named | with_entries(.value |=
		(if . == "" then null elif test("^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$") then tonumber else . end))' \
		>>"$ROWS"
}
# rates BYTES OBJECTS SECONDS -> "MB_PER_S OBJECTS_PER_S"
rates() { awk -v b="$1" -v n="$2" -v s="$3" 'BEGIN { printf "%.2f %.1f\n", b / 1e6 / s, n / s }'; }

# A figure of a file or S3 tool: RUNS runs of a command, the median run kept. The run
# function (given as its name) does one run and sets M_* plus RUN_STATUS ("ok" or why
# not); figure records the median one.
# figure FUNC WORKLOAD CATEGORY TOOL LABEL OP CONCURRENCY OBJECTS BYTES SERVER_PID
figure() {
	local fn=$1 wl=$2 cat=$3 tool=$4 label=$5 op=$6 conc=$7 n=$8 bytes=$9 srv=${10} r
	local runs=() walls st=ok median mb ops
	for ((r = 1; r <= RUNS; r++)); do
		printf '=== %s %s %s run %s\n' "$wl" "$label" "$op" "$r" >>"$RUN_LOG"
		"$fn" "$r"
		log "  $wl $op $label run $r: $RUN_STATUS, wall ${M_WALL}s, cpu ${M_CPU:-?}s, server cpu ${M_SRV}s"
		[[ $RUN_STATUS == ok ]] || st=$RUN_STATUS
		runs+=("$M_WALL $M_CPU $M_RSS $M_SRV")
	done
	if [[ $st != ok ]]; then
		note "**$label failed on $wl ($op)**: $st; see $RUN_LOG."
		row workload="$wl" category="$cat" tool="$tool" label="$label" op="$op" \
			threads="$conc" objects="$n" bytes="$bytes" status="$st"
		return
	fi
	walls=$(printf '%s\n' "${runs[@]}" | sort -n)
	median=$(sed -n "$(((RUNS + 1) / 2))p" <<<"$walls")
	read -r M_WALL M_CPU M_RSS M_SRV <<<"$median"
	read -r mb ops <<<"$(rates "$bytes" "$n" "$M_WALL")"
	row workload="$wl" category="$cat" tool="$tool" label="$label" op="$op" threads="$conc" \
		seconds="$M_WALL" mb_per_s="$mb" objects_per_s="$ops" cpu_s="$M_CPU" \
		peak_rss_kib="$M_RSS" server_cpu_s="$M_SRV" objects="$n" bytes="$bytes" runs="$RUNS" \
		status=ok
}
# missing WORKLOAD CATEGORY TOOL LABEL OP [THREADS]: a row for a peer not measured.
missing() {
	row workload="$1" category="$2" tool="$3" label="$4" op="$5" threads="${6:-}" status="not measured"
}

# Other processes on the machine take cores from every tool. Every workload also reports
# the CPU time the whole machine was busy (/proc/stat) beyond this script's children
# (bash `times`: not in $(...), where it counts only the subshell's children) and the
# servers, and the time the hypervisor stole.
children_cpu() {
	times >"$WORK/times"
	CHILD_CPU=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); t += a[1] * 60 + a[2] }
		printf "%.2f\n", t }' "$WORK/times")
}
servers_cpu() {
	local pid t=0
	for pid in "${SERVER_PIDS[@]}"; do t=$(awk -v a="$t" -v b="$(pid_cpu "$pid")" 'BEGIN { print a + b }'); done
	echo "$t"
}
cpu_table="| workload | wall s | CPU-s of these runs | CPU-s of the servers | CPU-s of other processes | stolen s |
| --- | --- | --- | --- | --- | --- |"
workload_start() {
	read -r W_BUSY0 W_STEAL0 <<<"$(machine_cpu)"
	children_cpu
	W_OWN0=$CHILD_CPU W_SRV0=$(servers_cpu) W_WALL0=$EPOCHREALTIME
}
workload_end() { # NAME
	local busy1 steal1 srv1
	read -r busy1 steal1 <<<"$(machine_cpu)"
	children_cpu
	srv1=$(servers_cpu)
	cpu_table+=$'\n'$(awk -v n="$1" -v w0="$W_WALL0" -v w1="$EPOCHREALTIME" -v b0="$W_BUSY0" \
		-v b1="$busy1" -v o0="$W_OWN0" -v o1="$CHILD_CPU" -v s0="$W_STEAL0" -v s1="$steal1" \
		-v v0="$W_SRV0" -v v1="$srv1" 'BEGIN {
		other = (b1 - b0) - (o1 - o0) - (v1 - v0); if (other < 0) other = 0
		printf "| %s | %.0f | %.1f | %.1f | %.1f | %.1f |", n, w1 - w0, o1 - o0, v1 - v0, other, s1 - s0 }')
}

# The busiest processes over one second (top's second sample), for the docs.
busiest() {
	top -bn2 -d 1 -w 200 2>/dev/null | awk '/^top -/ { n++ } n == 2' | sed -n '8,12p' |
		awk '$9 + 0 >= 1 { printf "%s%s %s%%", (n++ ? ", " : ""), $12, $9 }'
}
LOAD_START=$(loadavg)
BUSY_START=$(busiest || true)
if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
	log "warning: 1-minute load average is ${LOAD_START%% *} (the builds count too): other" \
		"processes may lower the figures"
fi

# ---------------------------------------------------------------- KMS (moto), for trees

MOTO_PID="" KMS_ARN=""
free_port() {
	local port
	for _ in $(seq 20); do
		port=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	return 1
}
# wait_port PORT PID: until PORT accepts connections (60 s: moto starts slowly on a busy
# machine), or PID is gone.
wait_port() {
	for _ in $(seq 600); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
start_moto() {
	local port
	port=$(free_port) || return 1
	"$VENV_BIN/moto_server" -H 127.0.0.1 -p "$port" >"$OUT_DIR/moto.log" 2>&1 &
	MOTO_PID=$!
	SERVER_PIDS+=("$MOTO_PID")
	wait_port "$port" "$MOTO_PID" || return 1
	export AWS_ENDPOINT_URL_KMS=http://127.0.0.1:$port
	KMS_ARN=$("$VENV_PY" -c 'import boto3; print(boto3.client("kms").create_key()["KeyMetadata"]["Arn"])' \
		2>>"$OUT_DIR/moto.log") || return 1
	log "moto (pid $MOTO_PID) at $AWS_ENDPOINT_URL_KMS, KMS key $KMS_ARN"
}
if wants_local && ((have_cli || have_sealpipe)) && [[ -n $VENV_PY ]]; then
	if ! start_moto; then
		have_cli=0 have_sealpipe_kms=0
		note "**local-tree workloads not measured**: moto_server did not start or would not \
create a KMS key (see $OUT_DIR/moto.log)."
	fi
fi
have_sealpipe_kms=$((have_sealpipe && ${#KMS_ARN} > 0))
if wants_local && ((have_sealpipe)) && ((!have_sealpipe_kms)) && [[ -z $VENV_PY ]]; then
	note "**sealpipe not measured on local trees**: they use a KMS key on moto, which comes \
from the venv (see the venv note)."
fi
# aws-encryption-cli with the KMS key: key commitment, suite 0x0478, 64 KiB frames, its
# caching materials manager with sealpipe's cache limits, no metadata output, output
# names as the input's (--suffix with no value).
CLI_CACHE=(--caching capacity=1000 max_age=300 max_messages_encrypted=1048576)
# `$CLI encrypt|decrypt IN OUT`: a script, so that GNU time can run it.
CLI=$WORK/cli
cat >"$CLI" <<EOF
#!/usr/bin/env bash
set -euo pipefail
mode=-e extra=(--algorithm AES_256_GCM_HKDF_SHA512_COMMIT_KEY --frame-length $FRAME_LEN)
[[ \$1 == decrypt ]] && mode=-d extra=()
mkdir -p "\$3"
exec "${VENV_BIN:-/nonexistent}/aws-encryption-cli" "\$mode" -r -i "\$2" -o "\$3" -w "key=$KMS_ARN" \\
	--commitment-policy require-encrypt-require-decrypt ${CLI_CACHE[*]} "\${extra[@]}" -S --suffix -q
EOF
chmod +x "$CLI"

# ---------------------------------------------------------------- interop, once

INTEROP=()
if ((have_sealpipe)); then
	head -c $((3 * 1048576 + 123)) /dev/urandom >"$WORK/plain.bin"
	# peer_interop NAME ENCRYPT_CMD... -- DECRYPT_CMD...: IN and OUT appended to each.
	peer_interop() {
		local name=$1 enc=() dec=() a to fro
		shift
		while (($#)) && [[ $1 != -- ]]; do enc+=("$1") && shift; done
		shift
		dec=("$@")
		to=FAILED fro=FAILED
		if "${enc[@]}" "$WORK/plain.bin" "$WORK/peer.msg" --key "$RAWKEY" >>"$RUN_LOG" 2>&1 &&
			"$SEALPIPE_BIN" decrypt "$WORK/peer.msg" "$WORK/peer.out" --key "$RAWKEY" -q \
				>>"$RUN_LOG" 2>&1 && cmp -s "$WORK/plain.bin" "$WORK/peer.out"; then
			a=$("$SEALPIPE_BIN" inspect "$WORK/peer.msg" 2>>"$RUN_LOG" |
				jq -r '"suite \(.suite.id), frame \(.frame_length)"' 2>>"$RUN_LOG" || true)
			to="ok (${a:-header unreadable})"
		fi
		if "$SEALPIPE_BIN" encrypt "$WORK/plain.bin" "$WORK/sp.msg" --key "$RAWKEY" -q \
			>>"$RUN_LOG" 2>&1 && "${dec[@]}" "$WORK/sp.msg" "$WORK/sp.out" --key "$RAWKEY" \
			>>"$RUN_LOG" 2>&1 && cmp -s "$WORK/plain.bin" "$WORK/sp.out"; then
			fro=ok
		fi
		rm -f "$WORK/peer.msg" "$WORK/peer.out" "$WORK/sp.msg" "$WORK/sp.out"
		INTEROP+=("$name → sealpipe: $to; sealpipe → $name: $fro")
		[[ $to == ok* && $fro == ok ]] || note "**interop with $name failed**: see $RUN_LOG."
	}
	log "checking interop"
	if ((have_esdk)); then
		peer_interop "Rust ESDK" "$ESDK_BIN" encrypt -- "$ESDK_BIN" decrypt
	fi
	if ((have_python)); then
		peer_interop "Python ESDK" "$VENV_PY" "$PY_DRIVER" encrypt -- "$VENV_PY" "$PY_DRIVER" decrypt
	fi
	if ((have_cli && have_sealpipe_kms)); then
		t=$WORK/interop-tree
		gen_tree "$t/src" 20 70001
		cp "$WORK/plain.bin" "$t/src/big"
		cli_to=FAILED sp_to=FAILED
		if "$CLI" encrypt "$t/src" "$t/cli.enc" >>"$RUN_LOG" 2>&1 &&
			"$SEALPIPE_BIN" decrypt "$t/cli.enc" "$t/cli.dec" --key "$KMS_ARN" -q >>"$RUN_LOG" 2>&1 &&
			diff -r "$t/src" "$t/cli.dec" >>"$RUN_LOG" 2>&1; then
			cli_to=ok
		fi
		if "$SEALPIPE_BIN" encrypt "$t/src" "$t/sp.enc" --key "$KMS_ARN" -q >>"$RUN_LOG" 2>&1 &&
			"$CLI" decrypt "$t/sp.enc" "$t/sp.dec" >>"$RUN_LOG" 2>&1 &&
			diff -r "$t/src" "$t/sp.dec" >>"$RUN_LOG" 2>&1; then
			sp_to=ok
		fi
		rm -rf -- "$t"
		INTEROP+=("aws-encryption-cli → sealpipe: $cli_to; sealpipe → aws-encryption-cli: $sp_to \
(a tree of 21 files, KMS key on moto)")
		[[ $cli_to$sp_to == okok ]] || note "**interop with aws-encryption-cli failed**: see $RUN_LOG."
	fi
	rm -f "$WORK/plain.bin"
	for i in "${INTEROP[@]}"; do log "interop: $i"; done
fi

# ---------------------------------------------------------------- in memory

workload_params() { # NAME -> "SIZE COUNT_PER_THREAD"
	case $1 in
	100MiB) echo "104857600 1" ;;
	1MiB) echo "1048576 32" ;;
	4KiB) echo "4096 2000" ;;
	esac
}
# driver_rows JSON WORKLOAD TOOL NAME UNIT SIZE COUNT: rows of an ESDK driver's figures.
driver_rows() {
	local json=$1 wl=$2 tool=$3 name=$4 unit=$5 size=$6 count=$7
	jq -c --arg wl "$wl" --arg tool "$tool" --arg name "$name" --arg unit "$unit" \
		--argjson size "$size" --argjson count "$count" '.results[] | . as $f |
		("encrypt", "decrypt") as $op | $f[$op] as $m |
		{workload: $wl, category: "memory", tool: $tool,
		 label: "\($name), \($f.threads) \($unit)\(if $f.threads == 1 then ""
			elif $unit == "process" then "es" else "s" end)",
		 op: $op, threads: $f.threads, seconds: $m.median_round_sec, mb_per_s: $m.mb_per_sec,
		 objects_per_s: $m.messages_per_sec, cpu_s: $m.cpu_sec_per_round,
		 objects: ($f.threads * $count), bytes: ($f.threads * $count * $size),
		 rounds: $m.rounds, status: "ok"}' "$json" >>"$ROWS"
}
THREAD_COUNTS=(1)
if ((THREADS > 1)); then THREAD_COUNTS+=("$THREADS"); fi
plural() { # COUNT [UNIT]: the ending of UNIT's plural for COUNT
	if (($1 > 1)); then
		if [[ ${2:-} == process ]]; then echo es; else echo s; fi
	fi
}
mem_missing() { # WORKLOAD TOOL NAME UNIT
	local t
	for t in "${THREAD_COUNTS[@]}"; do
		for op in encrypt decrypt; do
			missing "$1" memory "$2" "$3, $t $4$(plural "$t" "$4")" "$op" "$t"
		done
	done
}
for name in 100MiB 1MiB 4KiB; do
	wants "$name" || continue
	read -r size count <<<"$(workload_params "$name")"
	workload_start
	if ((have_esdk)); then
		log "$name: Rust ESDK (1 and $THREADS threads)"
		if "$ESDK_BIN" --size "$size" --count "$count" --threads "$THREADS" \
			--frame-len $FRAME_LEN --seconds "$SECONDS_PER_FIGURE" --json \
			>"$OUT_DIR/esdk-rust-$name.json" 2>"$OUT_DIR/esdk-rust-$name.err"; then
			driver_rows "$OUT_DIR/esdk-rust-$name.json" "$name" rust-esdk "Rust ESDK $ESDK_VERSION" \
				thread "$size" "$count"
		else
			note "**Rust ESDK failed on $name**: see $OUT_DIR/esdk-rust-$name.err."
			mem_missing "$name" rust-esdk "Rust ESDK $ESDK_VERSION" thread
		fi
	else
		mem_missing "$name" rust-esdk "Rust ESDK $ESDK_VERSION" thread
	fi
	if ((have_python)); then
		log "$name: Python ESDK (1 and $THREADS processes)"
		if "$VENV_PY" "$PY_DRIVER" --size "$size" --count "$count" --threads "$THREADS" \
			--frame-len $FRAME_LEN --seconds "$SECONDS_PER_FIGURE" --json \
			>"$OUT_DIR/esdk-python-$name.json" 2>"$OUT_DIR/esdk-python-$name.err"; then
			driver_rows "$OUT_DIR/esdk-python-$name.json" "$name" python-esdk \
				"Python ESDK $PY_VERSION" process "$size" "$count"
		else
			note "**Python ESDK failed on $name**: see $OUT_DIR/esdk-python-$name.err."
			mem_missing "$name" python-esdk "Python ESDK ${PY_VERSION:-3}" process
		fi
	else
		mem_missing "$name" python-esdk "Python ESDK ${PY_VERSION:-3}" process
	fi
	for t in "${THREAD_COUNTS[@]}"; do
		label="sealpipe, $t thread$(plural "$t")"
		json=$OUT_DIR/sealpipe-$name-$t.json
		if ((!have_sealpipe)); then
			missing "$name" memory sealpipe "$label" encrypt "$t"
			missing "$name" memory sealpipe "$label" decrypt "$t"
			continue
		fi
		log "$name: sealpipe bench, $t thread(s)"
		if "$SEALPIPE_BIN" bench --json --size "$size" --frame-len $FRAME_LEN --threads "$t" \
			--seconds "$SECONDS_PER_FIGURE" >"$json" 2>"$OUT_DIR/sealpipe-$name-$t.err"; then
			# Seconds and CPU seconds for the bytes of one of the drivers' rounds.
			jq -c --arg wl "$name" --arg lab "$label" --argjson t "$t" --argjson size "$size" \
				--argjson count "$count" '($t * $count) as $n | ($n * $size) as $bytes |
				({op: "encrypt", r: .seal_bytes_per_sec, c: .seal_bytes_per_cpu_sec},
				 {op: "decrypt", r: .open_bytes_per_sec, c: .open_bytes_per_cpu_sec}) |
				{workload: $wl, category: "memory", tool: "sealpipe", label: $lab, op: .op,
				 threads: $t, seconds: ($bytes / .r), mb_per_s: (.r / 1e6),
				 objects_per_s: (.r / $size), cpu_s: ($bytes / .c), objects: $n, bytes: $bytes,
				 status: "ok"}' "$json" >>"$ROWS"
		else
			note "**sealpipe bench failed on $name, $t thread(s)**: see $OUT_DIR/sealpipe-$name-$t.err."
			rm -f "$json"
			missing "$name" memory sealpipe "$label" encrypt "$t"
			missing "$name" memory sealpipe "$label" decrypt "$t"
		fi
	done
	workload_end "$name"
done

# ---------------------------------------------------------------- local trees

tree_params() { # NAME -> "COUNT SIZE" at scale 1
	case $1 in
	local-small) echo "1000 65536" ;;
	local-large) echo "2 268435456" ;;
	s3-medium) echo "1000 1048576" ;;
	s3-small) echo "10000 4096" ;;
	esac
}
# check_tree DIR COUNT MIN_BYTES [SAME_AS]: RUN_STATUS from the outcome of a run.
check_tree() {
	local n b
	read -r n b < <(tree_stats "$1")
	if [[ $M_RC != 0 ]]; then RUN_STATUS="FAILED (exit $M_RC)"
	elif [[ $n != "$2" ]]; then RUN_STATUS="FAILED ($n of $2 files)"
	elif ((b < $3)); then RUN_STATUS="FAILED (short output: $b < $3 bytes)"
	elif [[ -n ${4:-} ]] && ! diff -rq "$4" "$1" >>"$RUN_LOG" 2>&1; then
		RUN_STATUS="FAILED (decrypted tree differs from the source)"
	else RUN_STATUS=ok; fi
}
prepare() { # warm page cache, flush earlier writes (untimed)
	find "$1" -type f -exec cat {} + >/dev/null
	sync
}
for name in local-small local-large; do
	wants "$name" || continue
	read -r count size <<<"$(tree_params "$name")"
	count=$(scale_count "$count") size=$(scale_size "$size")
	bytes=$((count * size))
	desc="$count × $(human "$size")"
	log "$name: local tree, $desc"
	workload_start
	src=$WORK/src-$name
	gen_tree "$src" "$count" "$size"
	run_cp() {
		rm -rf -- "$WORK/out"
		prepare "$src"
		timed "" cp -r "$src" "$WORK/out"
		check_tree "$WORK/out" "$count" "$bytes" "$src"
	}
	figure run_cp "$name" files cp "cp -r" copy 1 "$count" "$bytes" ""
	for tool in sealpipe aws-encryption-cli; do
		if [[ $tool == sealpipe ]]; then
			label=sealpipe conc=$LOCAL_CONCURRENCY ok=$have_sealpipe_kms
		else
			label="aws-encryption-cli ${CLI_VERSION:-4}" conc=1 ok=$have_cli
		fi
		if ((!ok)); then
			missing "$name" files "$tool" "$label" encrypt "$conc"
			missing "$name" files "$tool" "$label" decrypt "$conc"
			continue
		fi
		enc_dir=$WORK/enc-$tool
		run_enc() {
			rm -rf -- "$enc_dir"
			prepare "$src"
			if [[ $tool == sealpipe ]]; then
				timed "$MOTO_PID" "$SEALPIPE_BIN" encrypt "$src" "$enc_dir" --key "$KMS_ARN" \
					--concurrency "$LOCAL_CONCURRENCY" -q
			else
				timed "$MOTO_PID" "$CLI" encrypt "$src" "$enc_dir"
			fi
			check_tree "$enc_dir" "$count" "$bytes"
		}
		run_dec() {
			rm -rf -- "$WORK/dec"
			prepare "$enc_dir"
			if [[ $tool == sealpipe ]]; then
				timed "$MOTO_PID" "$SEALPIPE_BIN" decrypt "$enc_dir" "$WORK/dec" --key "$KMS_ARN" \
					--concurrency "$LOCAL_CONCURRENCY" -q
			else
				timed "$MOTO_PID" "$CLI" decrypt "$enc_dir" "$WORK/dec"
			fi
			check_tree "$WORK/dec" "$count" "$bytes" "$src"
		}
		figure run_enc "$name" files "$tool" "$label" encrypt "$conc" "$count" "$bytes" "$MOTO_PID"
		if [[ -d $enc_dir ]]; then
			figure run_dec "$name" files "$tool" "$label" decrypt "$conc" "$count" "$bytes" "$MOTO_PID"
		else
			missing "$name" files "$tool" "$label" decrypt "$conc"
		fi
		rm -rf -- "$enc_dir" "$WORK/dec"
	done
	rm -rf -- "$src" "$WORK/out"
	workload_end "$name"
done
export -n AWS_ENDPOINT_URL_KMS 2>/dev/null || true

# ---------------------------------------------------------------- S3 to S3

S3S_PID="" EP="" DATA=$WORK/s3data
start_s3s() {
	local port
	mkdir -p "$DATA"
	port=$(free_port) || return 1
	"$S3S_FS" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
		--secret-key "$AWS_SECRET_ACCESS_KEY" "$DATA" >"$OUT_DIR/s3s-fs.log" 2>&1 &
	S3S_PID=$!
	SERVER_PIDS+=("$S3S_PID")
	wait_port "$port" "$S3S_PID" || return 1
	EP=http://127.0.0.1:$port
	log "s3s-fs $("$S3S_FS" --version | awk '{ print $2 }') (pid $S3S_PID) at $EP, data in $DATA"
}
if wants_s3 && ((have_s3s)); then
	if start_s3s; then
		export AWS_ENDPOINT_URL_S3=$EP
		# rclone, configured entirely through the environment (as in scripts/bench.sh).
		export RCLONE_CONFIG=$WORK/rclone.conf
		: >"$RCLONE_CONFIG"
		export RCLONE_CONFIG_BS3_TYPE=s3 RCLONE_CONFIG_BS3_PROVIDER=Other RCLONE_CONFIG_BS3_ENDPOINT=$EP
		export RCLONE_CONFIG_BS3_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
		export RCLONE_CONFIG_BS3_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
		export RCLONE_CONFIG_BS3_REGION=us-east-1 RCLONE_CONFIG_BS3_FORCE_PATH_STYLE=true
	else
		have_s3s=0
		note "**S3 workloads not measured**: s3s-fs did not start (see $OUT_DIR/s3s-fs.log)."
	fi
fi
# --disable Copy: no server-side copy, every byte goes through rclone.
# --s3-no-check-bucket: the destination bucket is created (untimed) beforehand.
# No --fast-list: s3s-fs 0.14.1 mishandles the empty delimiter= of rclone's recursive
# listing (see scripts/bench.sh).
RCLONE_FLAGS=(--disable Copy --s3-no-check-bucket --transfers "$S3_CONCURRENCY"
	--checkers "$S3_CONCURRENCY" -q)
make_bucket() { mkdir -p "$DATA/$1"; } # s3s-fs: a bucket is a directory of its data dir
# s3s-fs keeps a bucket's objects in DATA/BUCKET and their metadata beside it as
# DATA/.bucket-<base64url(BUCKET)>.object-*; a used bucket is removed on disk.
drop_bucket() {
	local enc
	enc=$(printf '%s' "$1" | base64 -w0 | tr '+/' '-_' | tr -d '=')
	rm -rf -- "${DATA:?}/$1"
	find "$DATA" -maxdepth 1 -name ".bucket-$enc_dir.*" -delete
}
for name in s3-medium s3-small; do
	wants "$name" || continue
	read -r count size <<<"$(tree_params "$name")"
	count=$(scale_count "$count") size=$(scale_size "$size")
	bytes=$((count * size))
	declare -A s3tools=([sealpipe]=$have_sealpipe [rclone]=$have_rclone [awscli]=$have_awscli)
	if ((!have_s3s)); then s3tools=([sealpipe]=0 [rclone]=0 [awscli]=0); fi
	log "$name: S3 to S3, $count × $(human "$size")"
	workload_start
	src=src-$name
	if ((have_s3s)); then
		# The source: written by hand into the server's data directory would skip its
		# metadata, so it is uploaded (untimed) by whichever client there is.
		gen_tree "$WORK/gen" "$count" "$size"
		make_bucket "$src"
		if ((have_rclone)); then
			rclone copy "$WORK/gen" "bs3:$src" --transfers 32 -q >>"$RUN_LOG" 2>&1 || true
		elif ((have_awscli)); then
			aws s3 cp --recursive --only-show-errors "$WORK/gen" "s3://$src/" >>"$RUN_LOG" 2>&1 || true
		fi
		rm -rf -- "$WORK/gen"
		read -r got _ < <(tree_stats "$DATA/$src")
		if [[ $got != "$count" ]]; then
			note "**S3 workload $name not measured**: its source bucket holds $got of $count objects \
after the upload (see $RUN_LOG)."
			s3tools=([sealpipe]=0 [rclone]=0 [awscli]=0)
		fi
	fi
	for tool in rclone awscli sealpipe; do
		case $tool in
		rclone) label="rclone copy" op=copy ;;
		awscli) label="aws s3 cp" op=copy ;;
		sealpipe) label=sealpipe op=encrypt ;;
		esac
		if ((!s3tools[$tool])); then
			missing "$name" s3 "$tool" "$label" "$op" "$S3_CONCURRENCY"
			continue
		fi
		run_s3() {
			local dst=dst-$tool-$1
			make_bucket "$dst"
			sync
			case $tool in
			rclone) timed "$S3S_PID" rclone copy "bs3:$src" "bs3:$dst" "${RCLONE_FLAGS[@]}" ;;
			awscli)
				timed "$S3S_PID" aws --endpoint-url "$EP" s3 cp --recursive --only-show-errors \
					"s3://$src/" "s3://$dst/"
				;;
			sealpipe)
				timed "$S3S_PID" "$SEALPIPE_BIN" encrypt "s3://$src/" "s3://$dst/" --key "$RAWKEY" \
					--concurrency "$S3_CONCURRENCY" -q
				;;
			esac
			check_tree "$DATA/$dst" "$count" "$bytes"
			drop_bucket "$dst"
		}
		figure run_s3 "$name" s3 "$tool" "$label" "$op" "$S3_CONCURRENCY" "$count" "$bytes" "$S3S_PID"
	done
	((have_s3s)) && drop_bucket "$src"
	workload_end "$name"
done

# ---------------------------------------------------------------- results

jq -s . "$ROWS" >"$OUT_DIR/results.json"
rm -f "$ROWS"

# One table per category; "sealpipe ÷ this": sealpipe's MB/s over this row's, on the same
# workload and op (in memory: and threads; copies: sealpipe's encrypt).
table() { # CATEGORY
	jq -r --arg cat "$1" '
		def f(d): d as $d | if . == null then "–" else (. * pow(10; $d) | round / pow(10; $d) | tostring) end;
		[.[] | select(.category == $cat)] as $rows |
		($rows[] | . as $r |
		 ([$rows[] | select(.tool == "sealpipe" and .workload == $r.workload and .status == "ok"
			and .op == (if $r.op == "copy" then "encrypt" else $r.op end)
			and ($cat != "memory" or .threads == $r.threads))][0].mb_per_s) as $sp |
		 "| \(.workload) | \(.op) | \(.label) | \(.threads // "–") | " +
		 (if .status == "ok" then
			"\(.seconds | f(3)) | \(.mb_per_s | f(if . < 10 then 2 else 1 end)) | \(.objects_per_s | f(1)) | \(.cpu_s | f(3)) | " +
			(if $sp != null and .tool != "sealpipe" then "\($sp / .mb_per_s | f(2))×" else "–" end) + " |"
		  else "**\(.status)** | – | – | – | – |" end))' "$OUT_DIR/results.json"
}
header="| workload | op | tool | threads | seconds | MB/s | objects/s | CPU-s | sealpipe ÷ this |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
{
	echo "## sealpipe beside the official ESDKs and plain copies ($(nproc) cores, $(date -u +%Y-%m-%d))"
	if wants_memory; then
		echo
		echo "### In memory, raw AES-256 key"
		echo
		echo "$header"
		table memory
		echo
		echo "Suite 0x0478, 64 KiB frames, plaintext in memory. Threads: worker threads (Python:"
		echo "worker processes; one interpreter runs one thread at a time). Seconds and CPU-s are"
		echo "for one round of threads × COUNT messages (100MiB: 1, 1MiB: 32, 4KiB: 2,000 per"
		echo "thread), medians of at least 5 rounds and $SECONDS_PER_FIGURE s per figure after a"
		echo "warm-up; the ESDKs' CPU-s are their CPU time over the timed rounds per round."
		echo "Rust ESDK: one client, keyring and current-thread tokio runtime per thread; Python"
		echo "ESDK: a RawMasterKey (the 3.x SDK has no keyring without the separate material"
		echo "providers package), one client per process. Each ESDK message is one call on one"
		echo "thread, so with $THREADS threads the 100MiB row has $THREADS messages in flight, and"
		echo "every call generates and wraps (or unwraps) a fresh data key. sealpipe: \`sealpipe"
		echo "bench\`, which seals one 100 MiB message with all threads and builds its data key"
		echo "once, so its figures leave out the per-message keyring work the ESDKs' include;"
		echo "its seconds and CPU-s are for the same bytes, from its rates per wall and CPU second."
	fi
	if wants_local; then
		echo
		echo "### Local trees, AWS KMS key on a local moto server"
		echo
		echo "$header"
		table files
		echo
		echo "Random files, page cache warm (the source is read before every run), \`sync\` before"
		echo "every run, no fsync by any tool. Threads: files at once (sealpipe's local default"
		echo "8; aws-encryption-cli and cp do one at a time). aws-encryption-cli -r with"
		echo "\`${CLI_CACHE[*]}\`, \`--algorithm AES_256_GCM_HKDF_SHA512_COMMIT_KEY"
		echo "--frame-length 65536 --commitment-policy require-encrypt-require-decrypt\`; sealpipe"
		echo "\`--key ARN\` with its default data key cache. Both reach moto through"
		echo "AWS_ENDPOINT_URL_KMS. CPU-s are the client's (GNU time); results.json also has"
		echo "moto's (server_cpu_s). Decrypted trees are compared with the source, untimed."
	fi
	if wants_s3; then
		echo
		echo "### S3 to S3 on a local s3s-fs server: what encryption costs"
		echo
		echo "$header"
		table s3
		echo
		echo "Random objects, fresh destination bucket every run. Threads: requests at once"
		echo "(sealpipe --concurrency, rclone --transfers/--checkers, the AWS CLI's"
		echo "s3.max_concurrent_requests). \`rclone copy --disable Copy\` moves every byte"
		echo "through rclone; \`aws s3 cp --recursive\` between two buckets has the server copy"
		echo "each object (CopyObject: the client sends no body), so it is the floor of an"
		echo "unencrypted move, not a transfer through the client. sealpipe encrypts with a raw"
		echo "AES key. CPU-s are the client's; results.json also has s3s-fs's (server_cpu_s)."
	fi
	if ((${#INTEROP[@]})); then
		echo
		echo "Interop (untimed): $(printf '%s; ' "${INTEROP[@]}" | sed 's/; $//')."
	fi
	echo
	echo "Load average (1, 5, 15 min) at start: $LOAD_START; at end: $(loadavg). CPU time"
	echo "while each workload ran ($(nproc) cores; other processes' time is taken from every"
	echo "tool's figures):"
	echo
	echo "$cpu_table"
	echo
	echo "Sizes: COUNT_SCALE=$COUNT_SCALE, SIZE_SCALE=$SIZE_SCALE, RUNS=$RUNS (the median run"
	echo "of each file and S3 figure). Raw figures: results.json."
	for n in "${NOTES[@]}"; do
		echo
		echo "$n"
	done
} | tee "$OUT_DIR/summary.md"

if ((have_chart)); then
	if "$CHART_BIN" "$OUT_DIR/results.json" "$OUT_DIR/throughput.svg" --title \
		"sealpipe and peers: throughput per workload, $(nproc) cores ($(date -u +%Y-%m-%d))" \
		>>"$RUN_LOG" 2>&1; then
		log "chart: $OUT_DIR/throughput.svg"
	else
		NOTES+=("chart failed")
		log "the chart program failed: see $RUN_LOG"
	fi
fi

if [[ -n $UPDATE_DOCS && -s $OUT_DIR/throughput.svg ]]; then
	mkdir -p "$ROOT/docs/bench"
	cp "$OUT_DIR/throughput.svg" "$ROOT/docs/bench/throughput.svg"
	commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
	dirty=$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | head -c 1)
	{
		echo "# Throughput beside the official ESDKs"
		echo
		echo "Written by \`scripts/bench-peers.sh\` with UPDATE_DOCS=1; the chart is"
		echo "[throughput.svg](throughput.svg)."
		echo
		echo "- machine: $(lscpu | awk -F: '/^Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(nproc) cores"
		echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
		# The binary's repository (when it sits in one, e.g. its target/release) and the
		# newest commit there older than the binary: most likely what it was built from.
		sp_repo=$(git -C "$(dirname "$SEALPIPE_ORIGIN")" rev-parse --show-toplevel 2>/dev/null || true)
		sp_commit=
		if [[ -n $sp_repo && -n $SEALPIPE_BUILT ]]; then
			sp_commit=$(git -C "$sp_repo" log -1 --format=%h --before="@$SEALPIPE_BUILT" 2>/dev/null || true)
		fi
		echo "- scripts and drivers: commit $commit${dirty:+ (with uncommitted changes)}"
		echo "- sealpipe: \`$SEALPIPE_ORIGIN\` ($("$SEALPIPE_BIN" --version 2>/dev/null || echo unknown), built \
$(date -u -d "@${SEALPIPE_BUILT:-0}" '+%Y-%m-%d %H:%M UTC')${sp_commit:+; the newest commit of $sp_repo \
before that: $sp_commit})"
		echo "- command: \`$COMMAND_LINE\`"
		echo "- load average at start: $LOAD_START; at end: $(loadavg); busiest processes at"
		echo "  start (CPU over 1 s, one core = 100%): ${BUSY_START:-none above 1%}; at end:"
		echo "  $(busiest || true)"
		echo
		sed 's/^## /## Results: /' "$OUT_DIR/summary.md"
	} >"$ROOT/docs/bench/peers.md"
	log "docs: docs/bench/throughput.svg and docs/bench/peers.md"
elif [[ -n $UPDATE_DOCS ]]; then
	NOTES+=("no chart for the docs")
	log "UPDATE_DOCS: no chart was drawn, docs/bench left alone"
fi

if ((${#NOTES[@]})); then
	log "${#NOTES[@]} note(s) above: a peer or tool was not measured or failed; exit status 1"
	exit 1
fi
