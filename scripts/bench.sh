#!/usr/bin/env bash
# bench.sh: side-by-side throughput of sealpipe builds against rclone (S3 to S3)
# and `cp -r` (local trees), plus `sealpipe bench`, with medians of several runs.
#
# Everything runs on this machine: a fresh s3s-fs server (a native S3 server from
# crates.io) on a free loopback port with a fresh data directory, stopped on exit.
# For every run the script records wall time, the client's CPU time (user+sys of the
# client process and its children only, from GNU time's getrusage of the child), the
# client's peak RSS and the S3 server's CPU time. It prints a markdown summary on
# stdout and writes the raw per-run lines to a TSV file.
#
# Run `bench.sh --help` for usage.

set -euo pipefail
export LC_ALL=C

usage() {
	cat <<'EOF'
Usage: bench.sh [-h|--help] SEALPIPE_BIN [SEALPIPE_BIN...]

Each SEALPIPE_BIN is a path to a sealpipe binary (release build), or LABEL=PATH to
name it in the tables, e.g.  bench.sh before=./sealpipe-old after=target/release/sealpipe

Workloads (sizes at scale 1; WORKLOADS selects a comma-separated subset):
  s3-small     S3 to S3, 10,000 x 4 KiB objects, encrypt     sealpipe builds, rclone
  s3-medium    S3 to S3,  1,000 x 1 MiB objects, encrypt     sealpipe builds, rclone
  s3-large     S3 to S3,      1 x 2 GiB object,  encrypt     sealpipe builds, rclone
  local-large  local tree,    2 x 256 MiB files, encrypt     sealpipe builds, cp -r
  local-small  local tree, 1,000 x 64 KiB files, encrypt     sealpipe builds, cp -r
  bench        `sealpipe bench --json` (64 MiB messages)     sealpipe builds

Rewrap workloads (not in the default set): every sealpipe build runs both
`sealpipe rewrap` and `sealpipe reencrypt` (old key -> new key, both raw AES) on the
same source, sealed once by `sealpipe encrypt` (first build, default settings) from
random data, each run into a fresh destination:
  s3-rewrap-large  S3 to S3,      4 x 512 MiB objects        sealpipe builds
                   (above --copy-threshold: rewrap has S3 copy the bodies)
  s3-rewrap-small  S3 to S3,  1,000 x 1 MiB objects          sealpipe builds
                   (below --copy-threshold: rewritten whole through the client)
  local-rewrap     local tree, 2 x 256 MiB + 1,000 x 64 KiB  sealpipe builds, cp -r
                   (bodies copied by the kernel; cp -r is the reference floor)
  Their table adds client bytes per object (s3.bytes_received + s3.bytes_sent of the
  --report, over objects), S3-copied bytes per object, S3 requests and other CPU (what
  the rest of the machine used during the run: outside load, kernel writeback), and a
  table of reencrypt/rewrap ratios. MiB/s counts source (sealed) bytes. The output of
  run 1 of every build and command is checked, untimed: `sealpipe verify` with the
  new key; for the first object of each size, its header holds only the new key's
  data key (rewrap: same message ID as the source; reencrypt: a new one), and it
  decrypts to the original plaintext (sha256).

Environment (defaults in brackets):
  RUNS=3               runs per tool and workload; the tables show medians
  COUNT_SCALE=1        multiply object counts by this (at least 1 object)
  SIZE_SCALE=1         multiply object and message sizes by this (at least 1 byte)
                       e.g. COUNT_SCALE=0.02 SIZE_SCALE=0.02 RUNS=1 for a quick check
  WORKLOADS=s3-small,s3-medium,s3-large,local-large,local-small,bench
                       (add s3-rewrap-large,s3-rewrap-small,local-rewrap by name)
  OUT_DIR=./bench-out-YYYYmmdd-HHMMSS   results.tsv, summary.md, runs.log, reports/
  BENCH_TMPDIR=${TMPDIR:-/tmp}          parent of the scratch directory (needs about
                       7 GiB free at scale 1, 9 GiB with s3-rewrap-large; removed
                       on exit unless KEEP_WORK=1)
  S3S_FS               s3s-fs binary [s3s-fs on PATH, else $BENCH_TOOLS/bin/s3s-fs]
  BENCH_TOOLS=target/bench-tools       where `cargo install --root` put s3s-fs
  RCLONE=rclone        rclone binary, or "none" to leave rclone out
  AWS_CLI=aws          AWS CLI used to fill the source buckets, or "none" to fill
                       them with rclone instead
  PORT                 s3s-fs port [a free random port on 127.0.0.1]
  RCLONE_TRANSFERS=64  rclone --transfers and --checkers (sealpipe's default S3
                       concurrency is 64)
  RCLONE_PART=8Mi      rclone --s3-chunk-size and --s3-upload-cutoff (sealpipe's
                       default --part-size is 8 MiB)
  RCLONE_UPLOAD_CONCURRENCY=16  rclone --s3-upload-concurrency (parts of one object)
  RCLONE_ARGS          extra rclone flags (word-split)
  SEALPIPE_ARGS        extra flags for every `sealpipe encrypt` (word-split),
                       e.g. "--concurrency 256"
  REWRAP_ARGS          extra flags for every `sealpipe rewrap` (word-split),
                       e.g. "--copy-threshold 64MiB"
  REENCRYPT_ARGS       extra flags for every `sealpipe reencrypt` (word-split)
  BENCH_SECONDS=2      `sealpipe bench --seconds` (time per figure)
  RUN_TIMEOUT=1800     seconds before one run is killed and counted as failed

Install the S3 server with (any target dir outside the repo):
  cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$BENCH_TOOLS"

Notes:
  * sealpipe and rclone get a fresh, empty destination bucket each run (nothing is
    skipped by resume), rclone with `--disable Copy` so the bytes go through the client.
  * Local rows run with a warm page cache: the source is read once before every run
    (caches cannot be dropped here). Neither sealpipe nor cp fsyncs its outputs; the
    script runs `sync` (untimed) before every run.
  * Runs are interleaved (run 1 of every tool, then run 2, ...), and the order of the
    tools rotates from run to run.
  * Rewrap workloads need jq (reports). With them only, rclone and the AWS CLI only
    create buckets (either one will do: RCLONE=none or AWS_CLI=none leaves one out).
    At SIZE_SCALE=0.03125 (1/32) or below, s3-rewrap-large objects are no longer above
    the default 16 MiB --copy-threshold, so rewrap rewrites them whole (logged).
  * s3s-fs is a local file system behind S3: its UploadPartCopy reads and writes the
    range on this machine (and CompleteMultipartUpload concatenates the parts), so
    the "server CPU" and the wall time of S3 rewraps include copy work that AWS S3
    would do elsewhere.
  * Exit status: 0 if every run succeeded and produced the expected outputs (and every
    rewrap check passed), else 1.
EOF
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench.sh: error: %s\n' "$*" >&2; exit 2; }
abspath() { printf '%s/%s\n' "$(cd -- "$(dirname -- "$1")" && pwd)" "$(basename -- "$1")"; }

# ---------------------------------------------------------------- arguments

if [[ $# -eq 0 ]]; then usage >&2; exit 2; fi
case "${1:-}" in -h | --help) usage; exit 0 ;; esac

RUNS=${RUNS:-3}
COUNT_SCALE=${COUNT_SCALE:-1}
SIZE_SCALE=${SIZE_SCALE:-1}
WORKLOADS=${WORKLOADS:-s3-small,s3-medium,s3-large,local-large,local-small,bench}
BENCH_TOOLS=${BENCH_TOOLS:-$(cd "$(dirname "$0")/.." && pwd)/target/bench-tools}
# Settings named like the tools' own variables (AWS_*, RCLONE_*) are copied here:
# the caller's AWS_*, RCLONE_* and SEALPIPE_* variables are unset further down.
RCLONE=${RCLONE:-rclone}
AWSCLI=${AWS_CLI:-aws}
RC_TRANSFERS=${RCLONE_TRANSFERS:-64}
RC_PART=${RCLONE_PART:-8Mi}
RC_UPLOAD_CONCURRENCY=${RCLONE_UPLOAD_CONCURRENCY:-16}
BENCH_SECONDS=${BENCH_SECONDS:-2}
RUN_TIMEOUT=${RUN_TIMEOUT:-1800}
OUT_DIR=${OUT_DIR:-./bench-out-$(date +%Y%m%d-%H%M%S)}
SP_ARGS=${SEALPIPE_ARGS:-}
read -r -a SEALPIPE_EXTRA <<<"$SP_ARGS"
read -r -a RCLONE_EXTRA <<<"${RCLONE_ARGS:-}"
RW_ARGS=${REWRAP_ARGS:-}
RE_ARGS=${REENCRYPT_ARGS:-}
read -r -a REWRAP_EXTRA <<<"$RW_ARGS"
read -r -a REENCRYPT_EXTRA <<<"$RE_ARGS"

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, not '$RUNS'"
for v in COUNT_SCALE SIZE_SCALE BENCH_SECONDS; do
	[[ ${!v} =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || die "$v must be a number, not '${!v}'"
done
awk -v c="$COUNT_SCALE" -v s="$SIZE_SCALE" 'BEGIN { exit !(c > 0 && s > 0) }' ||
	die "COUNT_SCALE and SIZE_SCALE must be greater than 0"

declare -A WANT=()
IFS=, read -r -a _wl <<<"$WORKLOADS"
for w in "${_wl[@]}"; do
	case "$w" in
	s3-small | s3-medium | s3-large | local-large | local-small | bench) WANT[$w]=1 ;;
	s3-rewrap-large | s3-rewrap-small | local-rewrap) WANT[$w]=1 ;;
	*) die "unknown workload '$w' (see --help)" ;;
	esac
done
wants() { [[ -n ${WANT[$1]:-} ]]; }
wants_s3_copy() { wants s3-small || wants s3-medium || wants s3-large; }
wants_rewrap() { wants s3-rewrap-large || wants s3-rewrap-small || wants local-rewrap; }
wants_s3() { wants_s3_copy || wants s3-rewrap-large || wants s3-rewrap-small; }
wants_local() { wants local-large || wants local-small || wants local-rewrap; }

# Tools: index i has a label, a kind (sealpipe, rclone, cp) and a binary.
T_LABEL=() T_KIND=() T_BIN=()
declare -A _seen_label=()
for arg in "$@"; do
	if [[ $arg == *=* ]]; then label=${arg%%=*} bin=${arg#*=}; else label=$(basename -- "$arg") bin=$arg; fi
	[[ -x $bin && -f $bin ]] || die "not an executable file: $bin"
	bin=$(abspath "$bin")
	[[ -n ${_seen_label[$label]:-} ]] && label="$label#${#T_LABEL[@]}"
	_seen_label[$label]=1
	T_LABEL+=("$label") T_KIND+=(sealpipe) T_BIN+=("$bin")
done

need_cmd() { command -v "$1" >/dev/null 2>&1 || die "$1 not found${2:+ ($2)}"; }
need_cmd awk
need_cmd split
need_cmd timeout
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) not found (apt-get install time)"

if wants_s3; then
	if [[ -z ${S3S_FS:-} ]]; then
		S3S_FS=$(command -v s3s-fs || true)
		[[ -n $S3S_FS ]] || S3S_FS=$BENCH_TOOLS/bin/s3s-fs
	fi
	[[ -x $S3S_FS ]] || die "s3s-fs not found at '$S3S_FS': set S3S_FS, or install it:
  cargo install s3s-fs --version 0.14.1 --features binary --locked --root $BENCH_TOOLS"
	S3S_FS=$(abspath "$S3S_FS")
	if [[ $RCLONE != none ]]; then
		RCLONE=$(command -v "$RCLONE") || die "rclone not found (apt-get install rclone), or set RCLONE=none"
		RCLONE=$(abspath "$RCLONE")
		# rclone is a compared tool only in the encrypt workloads; else it makes buckets.
		if wants_s3_copy; then T_LABEL+=(rclone) T_KIND+=(rclone) T_BIN+=("$RCLONE"); fi
	fi
	if [[ $AWSCLI != none ]]; then
		AWSCLI=$(command -v "$AWSCLI") || die "AWS CLI not found: set AWS_CLI, or AWS_CLI=none to fill buckets with rclone"
		AWSCLI=$(abspath "$AWSCLI")
	elif [[ $RCLONE == none ]]; then
		die "AWS_CLI=none needs rclone to fill the source buckets"
	fi
fi
wants_rewrap && need_cmd jq "needed to read sealpipe's reports: apt-get install jq"
if wants_local; then
	need_cmd cp
	T_LABEL+=("cp -r") T_KIND+=(cp) T_BIN+=("$(command -v cp)")
fi

# ---------------------------------------------------------------- scratch space, output

mkdir -p "$OUT_DIR/reports"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
TSV=$OUT_DIR/results.tsv
RUN_LOG=$OUT_DIR/runs.log
: >"$RUN_LOG"
WORK=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/sealpipe-bench.XXXXXX")
S3S_PID=

cleanup() {
	local rc=$?
	if [[ -n $S3S_PID ]] && kill -0 "$S3S_PID" 2>/dev/null; then
		kill "$S3S_PID" 2>/dev/null || true
		wait "$S3S_PID" 2>/dev/null || true
	fi
	if [[ -n ${KEEP_WORK:-} ]]; then
		log "scratch directory kept: $WORK"
	else
		rm -rf -- "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Run the clients from the scratch directory, so that no ./config.toml is picked up,
# and without the caller's sealpipe, AWS or logging settings.
cd "$WORK"
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(SEALPIPE_|AWS_|RCLONE_)' || true)
unset RUST_LOG RUST_BACKTRACE
# rclone 1.60 fails on a plain-HTTP endpoint when AWS_CA_BUNDLE is set
# ("LoadCustomCABundleError ... unsupported transport"); it stays unset for every tool.

KEYFILE=$WORK/bench.key
head -c 32 /dev/urandom >"$KEYFILE"
KEYREF=raw-aes:bench:k1:$KEYFILE
# Rewrap workloads: sources sealed under KEYREF move to NEWKEYREF.
NEWKEYFILE=$WORK/bench-new.key
head -c 32 /dev/urandom >"$NEWKEYFILE"
NEWKEYREF=raw-aes:bench:k2:$NEWKEYFILE

# ---------------------------------------------------------------- helpers

scale_count() { awk -v n="$1" -v s="$COUNT_SCALE" 'BEGIN { v = int(n * s + 0.5); printf "%.0f\n", (v < 1 ? 1 : v) }'; }
scale_size() { awk -v n="$1" -v s="$SIZE_SCALE" 'BEGIN { v = int(n * s + 0.5); printf "%.0f\n", (v < 1 ? 1 : v) }'; }
human() { # bytes -> e.g. 4 KiB, 1.5 MiB
	awk -v b="$1" 'BEGIN { split("B KiB MiB GiB TiB", u, " "); i = 1
		while (b >= 1024 && i < 5) { b /= 1024; i++ }
		if (b == int(b)) printf "%d %s", b, u[i]; else printf "%.1f %s", b, u[i] }'
}
# Files and bytes in a tree: "COUNT BYTES"
tree_stats() { find "$1" -type f -printf '%s\n' 2>/dev/null | awk '{ n++; b += $1 } END { printf "%.0f %.0f\n", n, b }'; }

# gen_tree DIR COUNT SIZE: COUNT files of SIZE random bytes (incompressible).
gen_tree() {
	local dir=$1 count=$2 size=$3
	mkdir -p "$dir"
	head -c "$((count * size))" /dev/urandom | split -b "$size" -a "${#count}" -d - "$dir/obj-"
}

server_ticks() {
	if [[ -n $S3S_PID && -r /proc/$S3S_PID/stat ]]; then
		awk '{ print $14 + $15 }' "/proc/$S3S_PID/stat"
	else
		echo 0
	fi
}
CLK_TCK=$(getconf CLK_TCK)
# Busy CPU ticks of the whole machine (user, nice, system, irq, softirq, steal): the
# CPU used meanwhile by neither the client nor the server shows other load.
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# timed CMD...: runs CMD under GNU time and a timeout, stdout to $TIMED_STDOUT (default
# the run log), stderr to the run log. Sets M_RC, M_WALL, M_USER, M_SYS, M_RSS (KiB),
# M_SRV (server CPU seconds during the run), M_OTHER (CPU seconds the rest of the
# machine used meanwhile: other processes and kernel threads; near 0 on an idle machine).
timed() {
	local tf=$WORK/time.out t0 t1 s0 s1 m0 m1 line
	: >"$tf"
	s0=$(server_ticks)
	m0=$(machine_ticks)
	t0=${EPOCHREALTIME:-$(date +%s.%N)}
	M_RC=0
	timeout -k 10 "$RUN_TIMEOUT" /usr/bin/time -f '%U %S %M' -o "$tf" "$@" \
		>>"${TIMED_STDOUT:-$RUN_LOG}" 2>>"$RUN_LOG" || M_RC=$?
	t1=${EPOCHREALTIME:-$(date +%s.%N)}
	s1=$(server_ticks)
	m1=$(machine_ticks)
	M_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	M_SRV=$(awk -v a="$s0" -v b="$s1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')
	# GNU time writes "Command exited with non-zero status N" before the figures.
	line=$(tail -n 1 "$tf")
	if [[ $line =~ ^[0-9.]+\ [0-9.]+\ [0-9]+$ ]]; then
		read -r M_USER M_SYS M_RSS <<<"$line"
	else
		M_USER=NA M_SYS=NA M_RSS=NA
	fi
	M_OTHER=NA
	[[ $M_USER != NA ]] && M_OTHER=$(awk -v a="$m0" -v b="$m1" -v t="$CLK_TCK" -v c="$M_USER" -v d="$M_SYS" \
		-v s="$M_SRV" 'BEGIN { v = (b - a) / t - c - d - s; printf "%.2f", v < 0 ? 0 : v }')
	return 0
}

# Header of the TSV; one row per run follows.
cols=(workload description tool run status wall_s user_s sys_s cpu_s peak_rss_kib server_cpu_s
	objects bytes objects_out bytes_out seal_Bps open_Bps ceiling_Bps parallel_ceiling_Bps
	command s3_bytes_received s3_bytes_sent s3_bytes_copied s3_requests distinct_data_keys other_cpu_s)
(IFS=$'\t'; printf '%s\n' "${cols[*]}") >"$TSV"
FAILED=0

# record WORKLOAD DESC TOOL RUN STATUS OBJECTS BYTES OBJECTS_OUT BYTES_OUT [SEAL OPEN CEIL PCEIL
#        [COMMAND S3_RECEIVED S3_SENT S3_COPIED S3_REQUESTS DISTINCT_KEYS]]
# (COMMAND and what follows: rewrap workloads only; BYTES there are source bytes)
record() {
	local cpu=NA
	[[ $M_USER != NA ]] && cpu=$(awk -v u="$M_USER" -v s="$M_SYS" 'BEGIN { printf "%.2f", u + s }')
	[[ $5 == ok ]] || FAILED=1
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
		"$1" "$2" "$3" "$4" "$5" "$M_WALL" "$M_USER" "$M_SYS" "$cpu" "$M_RSS" "$M_SRV" \
		"$6" "$7" "$8" "$9" "${10:-}" "${11:-}" "${12:-}" "${13:-}" \
		"${14:-}" "${15:-}" "${16:-}" "${17:-}" "${18:-}" "${19:-}" "$M_OTHER" >>"$TSV"
	log "  $1 run $4 $3${14:+ ${14}}: $5, wall ${M_WALL}s, cpu ${cpu}s, rss ${M_RSS} KiB, server cpu ${M_SRV}s, other cpu ${M_OTHER}s"
}

# status RC OBJECTS_OUT EXPECTED BYTES_OUT MIN_BYTES -> "ok" or "FAIL(...)"
status_of() {
	if [[ $1 != 0 ]]; then echo "FAIL(exit $1)"
	elif [[ $2 != "$3" ]]; then echo "FAIL($2/$3 objects)"
	elif ((${4:-0} < $5)); then echo "FAIL(short output: $4 < $5 bytes)"
	else echo ok; fi
}

# Tool indexes for a workload kind, rotated by the run number (interleaved runs).
tools_for() { # KIND(s3|local|bench) RUN
	local kind=$1 run=$2 i idx=() n
	for i in "${!T_KIND[@]}"; do
		case "$kind:${T_KIND[$i]}" in
		*:sealpipe | s3:rclone | local:cp) idx+=("$i") ;;
		esac
	done
	n=${#idx[@]}
	for ((i = 0; i < n; i++)); do echo "${idx[$(((i + run - 1) % n))]}"; done
}

# ---------------------------------------------------------------- S3 server

EP=
RCLONE_REMOTE=bs3
start_server() {
	local port i
	DATA=$WORK/s3data
	mkdir -p "$DATA"
	for _ in 1 2 3 4 5; do
		port=${PORT:-$((20000 + RANDOM % 40000))}
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			[[ -n ${PORT:-} ]] && die "port $PORT is in use"
			continue
		fi
		"$S3S_FS" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
			--secret-key "$AWS_SECRET_ACCESS_KEY" "$DATA" >"$OUT_DIR/s3s-fs.log" 2>&1 &
		S3S_PID=$!
		for i in $(seq 100); do
			if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
				EP=http://127.0.0.1:$port
				log "s3s-fs $("$S3S_FS" --version | awk '{print $2}') (pid $S3S_PID) at $EP, data in $DATA"
				return 0
			fi
			kill -0 "$S3S_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill "$S3S_PID" 2>/dev/null || true
		wait "$S3S_PID" 2>/dev/null || true
		S3S_PID=
	done
	die "could not start s3s-fs (see $OUT_DIR/s3s-fs.log)"
}

if wants_s3; then
	export AWS_ACCESS_KEY_ID=sealpipebench AWS_SECRET_ACCESS_KEY=sealpipebenchsecret
	export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
	# Keep the caller's ~/.aws out of the measurement.
	mkdir -p "$WORK/aws"
	printf '[default]\nregion = us-east-1\n' >"$WORK/aws/config"
	: >"$WORK/aws/credentials"
	export AWS_CONFIG_FILE=$WORK/aws/config AWS_SHARED_CREDENTIALS_FILE=$WORK/aws/credentials
	# Only the AWS CLI (filling the source buckets) reads these transfer settings.
	printf '[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = 32\n  multipart_threshold = 64MB\n  multipart_chunksize = 64MB\n' \
		>"$WORK/aws/cli-config"
	start_server
	export AWS_ENDPOINT_URL=$EP AWS_ENDPOINT_URL_S3=$EP
	# rclone, configured entirely through the environment.
	export RCLONE_CONFIG=$WORK/rclone.conf
	: >"$RCLONE_CONFIG"
	export RCLONE_CONFIG_BS3_TYPE=s3 RCLONE_CONFIG_BS3_PROVIDER=Other RCLONE_CONFIG_BS3_ENDPOINT=$EP
	export RCLONE_CONFIG_BS3_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID RCLONE_CONFIG_BS3_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
	export RCLONE_CONFIG_BS3_REGION=us-east-1 RCLONE_CONFIG_BS3_FORCE_PATH_STYLE=true
	# --disable Copy: no server-side copy, every byte goes through rclone.
	# --s3-no-check-bucket: the destination bucket is created (untimed) beforehand.
	# No --fast-list: s3s-fs 0.14.1 mishandles the empty delimiter= that rclone's
	# recursive listing sends (all keys collapse into one common prefix).
	RCLONE_FLAGS=(--disable Copy --s3-no-check-bucket
		--transfers "$RC_TRANSFERS" --checkers "$RC_TRANSFERS"
		--s3-chunk-size "$RC_PART" --s3-upload-cutoff "$RC_PART"
		--s3-upload-concurrency "$RC_UPLOAD_CONCURRENCY" -q "${RCLONE_EXTRA[@]}")
fi

make_bucket() {
	if [[ $RCLONE != none ]]; then
		"$RCLONE" mkdir "$RCLONE_REMOTE:$1" >>"$RUN_LOG" 2>&1
	else
		"$AWSCLI" --endpoint-url "$EP" s3 mb "s3://$1" >>"$RUN_LOG" 2>&1
	fi
}

# s3s-fs keeps a bucket's objects in DATA/BUCKET and their metadata beside it as
# DATA/.bucket-<base64url(BUCKET)>.object-*; deleting 10,000 objects through the API
# would take longer than the run, so a used bucket is removed on disk between runs.
drop_bucket() {
	local enc
	enc=$(printf '%s' "$1" | base64 -w0 | tr '+/' '-_' | tr -d '=')
	rm -rf -- "${DATA:?}/$1"
	find "$DATA" -maxdepth 1 -name ".bucket-$enc.*" -delete
}

# fill_bucket BUCKET DIR: upload a local tree as the source bucket.
fill_bucket() {
	local bucket=$1 dir=$2
	make_bucket "$bucket"
	if [[ $AWSCLI != none ]]; then
		AWS_CONFIG_FILE=$WORK/aws/cli-config "$AWSCLI" --endpoint-url "$EP" \
			s3 cp --recursive --only-show-errors "$dir" "s3://$bucket/" >>"$RUN_LOG" 2>&1
	else
		"$RCLONE" copy "$dir" "$RCLONE_REMOTE:$bucket" --transfers 32 -q >>"$RUN_LOG" 2>&1
	fi
}

# ---------------------------------------------------------------- workloads

run_s3() { # WORKLOAD COUNT SIZE
	local wl=$1 count=$2 size=$3 desc src st st_n st_b got i r dst rep
	desc="S3 to S3, $count x $(human "$size"), encrypt"
	src=src-$wl
	log "$wl: $desc: filling bucket $src"
	gen_tree "$WORK/gen-$wl" "$count" "$size"
	fill_bucket "$src" "$WORK/gen-$wl" || die "filling $src failed (see $RUN_LOG)"
	rm -rf -- "$WORK/gen-$wl"
	read -r got _ < <(tree_stats "$DATA/$src")
	[[ $got == "$count" ]] || die "source bucket $src holds $got objects, not $count (see $RUN_LOG)"
	for ((r = 1; r <= RUNS; r++)); do
		for i in $(tools_for s3 "$r"); do
			dst=d-$wl-$i-$r
			make_bucket "$dst"
			sync
			printf '=== %s run %s: %s\n' "$wl" "$r" "${T_LABEL[$i]}" >>"$RUN_LOG"
			case ${T_KIND[$i]} in
			sealpipe)
				rep=$OUT_DIR/reports/$wl-$i-$r.json
				timed "${T_BIN[$i]}" encrypt "s3://$src" "s3://$dst" --key "$KEYREF" \
					--report "$rep" --quiet "${SEALPIPE_EXTRA[@]}"
				;;
			rclone)
				timed "${T_BIN[$i]}" copy "$RCLONE_REMOTE:$src" "$RCLONE_REMOTE:$dst" "${RCLONE_FLAGS[@]}"
				;;
			esac
			read -r st_n st_b < <(tree_stats "$DATA/$dst")
			st=$(status_of "$M_RC" "$st_n" "$count" "$st_b" "$((count * size))")
			record "$wl" "$desc" "${T_LABEL[$i]}" "$r" "$st" "$count" "$((count * size))" "$st_n" "$st_b"
			drop_bucket "$dst"
		done
	done
	drop_bucket "$src"
}

run_local() { # WORKLOAD COUNT SIZE
	local wl=$1 count=$2 size=$3 desc src i r dst rep st st_n st_b
	desc="local tree, $count x $(human "$size"), encrypt"
	src=$WORK/src-$wl
	log "$wl: $desc: generating $src"
	gen_tree "$src" "$count" "$size"
	for ((r = 1; r <= RUNS; r++)); do
		for i in $(tools_for local "$r"); do
			dst=$WORK/out-$wl-$i-$r
			rm -rf -- "$dst"
			find "$src" -type f -exec cat {} + >/dev/null # warm page cache
			sync
			printf '=== %s run %s: %s\n' "$wl" "$r" "${T_LABEL[$i]}" >>"$RUN_LOG"
			case ${T_KIND[$i]} in
			sealpipe)
				rep=$OUT_DIR/reports/$wl-$i-$r.json
				timed "${T_BIN[$i]}" encrypt "$src" "$dst" --key "$KEYREF" \
					--report "$rep" --quiet "${SEALPIPE_EXTRA[@]}"
				;;
			cp) timed "${T_BIN[$i]}" -r "$src" "$dst" ;;
			esac
			read -r st_n st_b < <(tree_stats "$dst")
			st=$(status_of "$M_RC" "$st_n" "$count" "$st_b" "$((count * size))")
			record "$wl" "$desc" "${T_LABEL[$i]}" "$r" "$st" "$count" "$((count * size))" "$st_n" "$st_b"
			rm -rf -- "$dst"
		done
	done
	rm -rf -- "$src"
}

json_num() { # KEY FILE: a number field of sealpipe bench --json, or empty
	sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\([-0-9.eE+]*\).*/\1/p" "$2" | head -n 1
}

run_bench() { # SIZE
	local size=$1 desc i r out st seal
	desc="sealpipe bench --json, $(human "$size") messages, ${BENCH_SECONDS}s per figure"
	log "bench: $desc"
	for ((r = 1; r <= RUNS; r++)); do
		for i in $(tools_for bench "$r"); do
			out=$OUT_DIR/reports/bench-$i-$r.json
			printf '=== bench run %s: %s\n' "$r" "${T_LABEL[$i]}" >>"$RUN_LOG"
			TIMED_STDOUT=$out timed "${T_BIN[$i]}" bench --json --size "$size" \
				--seconds "$BENCH_SECONDS" --quiet
			seal=$(json_num seal_bytes_per_sec "$out")
			if [[ $M_RC != 0 ]]; then st="FAIL(exit $M_RC)"
			elif [[ -z $seal ]]; then st="FAIL(no seal_bytes_per_sec)"
			else st=ok; fi
			record bench "$desc" "${T_LABEL[$i]}" "$r" "$st" "" "" "" "" "$seal" \
				"$(json_num open_bytes_per_sec "$out")" "$(json_num ceiling_bytes_per_sec "$out")" \
				"$(json_num parallel_ceiling_bytes_per_sec "$out")"
		done
	done
}

# ---------------------------------------------------------------- rewrap workloads

# report_fields REPORT: "OK RECEIVED SENT COPIED REQUESTS DISTINCT_KEYS" from a sealpipe
# --report (objects.ok, s3.bytes_received, s3.bytes_sent, s3.bytes_copied, s3.requests,
# distinct_data_keys), NA for what it lacks (no s3 section for local jobs).
report_fields() {
	if [[ -s $1 ]] && jq -e . "$1" >/dev/null 2>&1; then
		jq -r '[.objects.ok, .s3.bytes_received, .s3.bytes_sent, .s3.bytes_copied, .s3.requests,
			.distinct_data_keys] | map(if . == null then "NA" else tostring end) | join(" ")' "$1"
	else
		echo NA NA NA NA NA NA
	fi
}
na() { if [[ $1 == NA ]]; then echo; else echo "$1"; fi; }

# first_error REPORT LOG_OFFSET: the first failure a report lists, else the first
# line of the run log after LOG_OFFSET that looks like an error (one line).
first_error() {
	local e=
	[[ -s $1 ]] && e=$(jq -r '.failures[0] // empty | "\(.path): \(.error)"' "$1" 2>/dev/null || true)
	[[ -n $e ]] || e=$(tail -c +"$(($2 + 1))" "$RUN_LOG" | grep -m 1 -i -E 'error|fail|panick' || true)
	printf '%s\n' "${e:-no error message}" | head -n 1 | tr '\t' ' '
}

# Jobs of a rewrap workload for one run: BUILD_INDEX:COMMAND for every sealpipe build
# (rewrap and reencrypt), plus cp -r for local trees, rotated by the run number.
rewrap_jobs() { # KIND(s3|local) RUN
	local kind=$1 run=$2 i jobs=() n
	for i in "${!T_KIND[@]}"; do
		case "$kind:${T_KIND[$i]}" in
		*:sealpipe) jobs+=("$i:rewrap" "$i:reencrypt") ;;
		local:cp) jobs+=("$i:reference") ;;
		esac
	done
	n=${#jobs[@]}
	for ((i = 0; i < n; i++)); do echo "${jobs[$(((i + run - 1) % n))]}"; done
}

CHECK_NOTES=() ERROR_NOTES=()

# header_of FILE: "MESSAGE_ID EDKS" of a message file (EDKS: provider/name, comma-separated).
header_of() {
	"${T_BIN[0]}" inspect "$1" 2>>"$RUN_LOG" |
		jq -r '.message_id + " " + ([.encrypted_data_keys[] | .provider_id + "/" + .key_name] | join(","))'
}

# check_output WL BUILD COMMAND DST DST_DISK SRC_DISK COUNT: untimed checks of one
# run's output (DST as sealpipe names it, DST_DISK and SRC_DISK where the message
# files are on this machine: s3s-fs keeps an object as DATA/BUCKET/KEY). Uses the
# CHECKS array of "RELPATH SHA256" (plaintext) that run_rewrap fills.
check_output() {
	local wl=$1 i=$2 cmd=$3 dst=$4 dst_disk=$5 src_disk=$6 count=$7
	local rep=$OUT_DIR/reports/$wl-$i-$cmd-verify.json ok problems=() c rel sum got mid edks smid out
	out=$WORK/check.out
	printf '=== %s check: %s %s\n' "$wl" "${T_LABEL[$i]}" "$cmd" >>"$RUN_LOG"
	if "${T_BIN[$i]}" verify "$dst" --key "$NEWKEYREF" --quiet --report "$rep" >>"$RUN_LOG" 2>&1; then
		read -r ok _ < <(report_fields "$rep")
		[[ $ok == "$count" ]] || problems+=("verify with the new key: $ok of $count objects ok")
	else
		problems+=("verify with the new key failed: $(first_error "$rep" 0)")
	fi
	for c in "${CHECKS[@]}"; do
		read -r rel sum <<<"$c"
		read -r mid edks < <(header_of "$dst_disk/$rel" || true) || true
		read -r smid _ < <(header_of "$src_disk/$rel" || true) || true
		[[ ${edks:-} == bench/k2 ]] || problems+=("$rel: data keys '${edks:-?}', not bench/k2 alone")
		if [[ -z ${mid:-} || -z ${smid:-} ]]; then
			problems+=("$rel: no message ID")
		elif [[ $cmd == rewrap && $mid != "$smid" ]]; then
			problems+=("$rel: message ID changed (the body was not kept)")
		elif [[ $cmd == reencrypt && $mid == "$smid" ]]; then
			problems+=("$rel: message ID unchanged")
		fi
		rm -f -- "$out"
		got=
		if "${T_BIN[$i]}" decrypt "$dst/$rel" "$out" --key "$NEWKEYREF" --quiet >>"$RUN_LOG" 2>&1; then
			got=$(sha256sum <"$out" | cut -d' ' -f1)
		fi
		[[ $got == "$sum" ]] || problems+=("$rel: does not decrypt to the original plaintext")
		rm -f -- "$out"
	done
	if ((${#problems[@]} == 0)); then
		mid=new
		[[ $cmd == rewrap ]] && mid="kept from the source"
		CHECK_NOTES+=("$wl, ${T_LABEL[$i]} $cmd: ok (verify with the new key: $count/$count objects; inspected and decrypted, the first object of each size ($(IFS=' '; printf '%s' "${CHECKS[*]%% *}")): only bench/k2's data key, message ID $mid, plaintext sha256 matches)")
		log "  $wl check ${T_LABEL[$i]} $cmd: ok"
	else
		FAILED=1
		CHECK_NOTES+=("$wl, ${T_LABEL[$i]} $cmd: FAILED: $(IFS=';'; printf '%s' "${problems[*]}")")
		log "  $wl check ${T_LABEL[$i]} $cmd: FAILED: ${problems[*]}"
	fi
}

# run_rewrap WORKLOAD KIND(s3|local) SUBDIR:COUNT:SIZE...: a source tree (SUBDIR "."
# for the top) of random data sealed once under KEYREF, then every build's rewrap
# and reencrypt to NEWKEYREF into a fresh destination per run (and cp -r of local trees).
run_rewrap() {
	local wl=$1 kind=$2 spec sub c s count=0 plain=0 parts=() desc gen src src_disk srcb n
	local r job i cmd dst dst_disk rep off st st_n st_b ok recv sent copied reqs keys err
	shift 2
	gen=$WORK/gen-$wl
	for spec in "$@"; do
		IFS=: read -r sub c s <<<"$spec"
		gen_tree "$gen/$sub" "$c" "$s"
		count=$((count + c)) plain=$((plain + c * s))
		parts+=("$c x $(human "$s")")
		if [[ $kind == s3 ]] && ((s <= 16777216)) && [[ $wl == s3-rewrap-large ]]; then
			log "$wl: note: $(human "$s") objects are not above the default --copy-threshold (16 MiB): rewrap rewrites them whole"
		fi
	done
	desc="local tree"
	[[ $kind == s3 ]] && desc="S3 to S3"
	desc+=", ${parts[0]}"
	for s in "${parts[@]:1}"; do desc+=" + $s"; done
	desc+=", rewrap vs reencrypt"
	# The first file of each directory (one per size) is decrypted and compared later.
	CHECKS=()
	while read -r f; do
		CHECKS+=("${f#"$gen"/} $(sha256sum <"$f" | cut -d' ' -f1)")
	done < <(find "$gen" -type f | sort | awk '{ d = $0; sub(/\/[^\/]*$/, "", d); if (!(d in seen)) { seen[d] = 1; print } }')
	if [[ $kind == s3 ]]; then
		make_bucket "src-$wl"
		src=s3://src-$wl src_disk=$DATA/src-$wl
	else
		src=$WORK/src-$wl src_disk=$WORK/src-$wl
	fi
	log "$wl: $desc: sealing the source $src"
	rep=$OUT_DIR/reports/$wl-source.json
	"${T_BIN[0]}" encrypt "$gen" "$src" --key "$KEYREF" --quiet --report "$rep" >>"$RUN_LOG" 2>&1 ||
		die "sealing $src failed (see $RUN_LOG)"
	rm -rf -- "$gen"
	read -r n srcb < <(tree_stats "$src_disk")
	[[ $n == "$count" ]] || die "the source $src holds $n objects, not $count (see $RUN_LOG)"
	for ((r = 1; r <= RUNS; r++)); do
		for job in $(rewrap_jobs "$kind" "$r"); do
			i=${job%%:*} cmd=${job#*:}
			if [[ $kind == s3 ]]; then
				dst=s3://d-$wl-$i-$cmd-$r dst_disk=$DATA/d-$wl-$i-$cmd-$r
				make_bucket "d-$wl-$i-$cmd-$r"
			else
				dst=$WORK/out-$wl-$i-$cmd-$r dst_disk=$dst
				rm -rf -- "$dst"
				find "$src" -type f -exec cat {} + >/dev/null # warm page cache
			fi
			sync
			printf '=== %s run %s: %s %s\n' "$wl" "$r" "${T_LABEL[$i]}" "$cmd" >>"$RUN_LOG"
			off=$(stat -c %s "$RUN_LOG")
			rep=$OUT_DIR/reports/$wl-$i-$cmd-$r.json
			rm -f -- "$rep"
			case $cmd in
			rewrap)
				# The sources are v2 messages (sealpipe encrypt): their rewrap is the
				# accepted reuse of the header nonce (README: "The nonce of a v2 header").
				timed "${T_BIN[$i]}" rewrap "$src" "$dst" --old-key "$KEYREF" --key "$NEWKEYREF" \
					--allow-header-nonce-reuse --report "$rep" --quiet "${REWRAP_EXTRA[@]}"
				;;
			reencrypt)
				timed "${T_BIN[$i]}" reencrypt "$src" "$dst" --old-key "$KEYREF" --key "$NEWKEYREF" \
					--report "$rep" --quiet "${REENCRYPT_EXTRA[@]}"
				;;
			reference) timed "${T_BIN[$i]}" -r "$src" "$dst" ;;
			esac
			read -r st_n st_b < <(tree_stats "$dst_disk")
			# Outputs: as many objects as the source, none shorter than its plaintext.
			st=$(status_of "$M_RC" "$st_n" "$count" "$st_b" "$plain")
			ok=NA recv=NA sent=NA copied=NA reqs=NA keys=NA
			if [[ $cmd != reference ]]; then
				read -r ok recv sent copied reqs keys < <(report_fields "$rep")
				if [[ $st == ok && $ok != "$count" ]]; then st="FAIL(report: $ok/$count objects ok)"; fi
			fi
			record "$wl" "$desc" "${T_LABEL[$i]}" "$r" "$st" "$count" "$srcb" "$st_n" "$st_b" "" "" "" "" \
				"$cmd" "$(na "$recv")" "$(na "$sent")" "$(na "$copied")" "$(na "$reqs")" "$(na "$keys")"
			if [[ $st != ok ]]; then
				err=$(first_error "$rep" "$off")
				ERROR_NOTES+=("$wl run $r, ${T_LABEL[$i]} $cmd: $st: $err")
				log "  error: $err"
			elif ((r == 1)) && [[ $cmd != reference ]]; then
				check_output "$wl" "$i" "$cmd" "$dst" "$dst_disk" "$src_disk" "$count"
			fi
			if [[ $kind == s3 ]]; then drop_bucket "d-$wl-$i-$cmd-$r"; else rm -rf -- "$dst"; fi
		done
	done
	if [[ $kind == s3 ]]; then drop_bucket "src-$wl"; else rm -rf -- "$src"; fi
}

# ---------------------------------------------------------------- disk space check

need=0
for w in s3-small:10000:4096 s3-medium:1000:1048576 s3-large:1:2147483648 local-large:2:268435456 \
	local-small:1000:65536 s3-rewrap-large:4:536870912 s3-rewrap-small:1000:1048576 \
	local-rewrap:2:268435456:1000:65536; do
	IFS=: read -r name c s c2 s2 <<<"$w"
	wants "$name" || continue
	b=$(($(scale_count "$c") * $(scale_size "$s")))
	[[ -n ${c2:-} ]] && b=$((b + $(scale_count "$c2") * $(scale_size "$s2")))
	# Workloads run one after the other, each removing its data when done: at most the
	# generated tree, the source and one destination at once, plus some slack. S3
	# rewraps: the source, one destination and s3s-fs's multipart parts, then the
	# concatenation of those parts (each part removed once appended).
	f=3
	[[ $name == s3-rewrap-* ]] && f=4
	need=$((need > f * b ? need : f * b))
done
need=$((need + 256 * 1048576))
avail=$(df -PB1 "$WORK" | awk 'NR == 2 { print $4 }')
((avail > need)) || die "about $(human "$need") of scratch space needed in $WORK, $(human "$avail") free (set BENCH_TMPDIR)"

# ---------------------------------------------------------------- run

T_START=$(date +%s)
log "output in $OUT_DIR; runs: $RUNS; COUNT_SCALE=$COUNT_SCALE SIZE_SCALE=$SIZE_SCALE"
wants s3-small && run_s3 s3-small "$(scale_count 10000)" "$(scale_size 4096)"
wants s3-medium && run_s3 s3-medium "$(scale_count 1000)" "$(scale_size 1048576)"
wants s3-large && run_s3 s3-large "$(scale_count 1)" "$(scale_size 2147483648)"
wants local-large && run_local local-large "$(scale_count 2)" "$(scale_size 268435456)"
wants local-small && run_local local-small "$(scale_count 1000)" "$(scale_size 65536)"
wants bench && run_bench "$(scale_size 67108864)"
wants s3-rewrap-large && run_rewrap s3-rewrap-large s3 ".:$(scale_count 4):$(scale_size 536870912)"
wants s3-rewrap-small && run_rewrap s3-rewrap-small s3 ".:$(scale_count 1000):$(scale_size 1048576)"
wants local-rewrap && run_rewrap local-rewrap local "large:$(scale_count 2):$(scale_size 268435456)" \
	"small:$(scale_count 1000):$(scale_size 65536)"
T_END=$(date +%s)

# ---------------------------------------------------------------- summary

summary() {
	local cpu_model i
	cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
	echo "# sealpipe throughput"
	echo
	echo "- $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -sr), $(nproc) cores${cpu_model:+ ($cpu_model)}, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM"
	echo "- runs per cell: $RUNS (medians shown); COUNT_SCALE=$COUNT_SCALE, SIZE_SCALE=$SIZE_SCALE; total time $((T_END - T_START)) s"
	awk -F'\t' 'NR > 1 && $26 ~ /^[0-9.]+$/ { t += $26; if ($26 > m) m = $26; n++ }
		END { if (n) printf "- outside load: %.2f CPU s in all %d timed runs together, at most %.2f s in one (other CPU, below)\n", t, n, m }' "$TSV"
	for i in "${!T_KIND[@]}"; do
		case ${T_KIND[$i]} in
		sealpipe) echo "- \`${T_LABEL[$i]}\`: ${T_BIN[$i]} ($("${T_BIN[$i]}" --version 2>/dev/null | head -n 1), sha256 $(sha256sum "${T_BIN[$i]}" | cut -c1-12))${SP_ARGS:+, extra flags: \`$SP_ARGS\`}" ;;
		rclone) echo "- rclone: $("$RCLONE" version 2>/dev/null | head -n 1), \`rclone copy\` ${RCLONE_FLAGS[*]}" ;;
		cp) echo "- \`cp -r\`: $(cp --version 2>/dev/null | head -n 1)" ;;
		esac
	done
	if wants_s3; then
		echo "- S3 server: s3s-fs $("$S3S_FS" --version | awk '{print $2}') on 127.0.0.1, same machine (its CPU time is the \"server CPU\" column)"
	fi
	echo "- CPU = user+sys of the client process (and its children); RSS = client peak RSS (GNU time); other CPU (rewrap table, and results.tsv) = CPU the rest of the machine used during the run (/proc/stat busy time less client and server), i.e. outside load (other processes, and kernel threads such as page-cache writeback)."
	if wants_local; then
		echo "- Local rows: warm page cache (source read once before each run), \`sync\` before each run, no fsync by either tool."
	fi
	if wants_rewrap; then
		echo "- Rewrap rows: source sealed once (\`sealpipe encrypt\`, first build, raw AES key bench/k1), rewrapped or re-encrypted to bench/k2 into a fresh destination per run${RW_ARGS:+; rewrap flags: \`$RW_ARGS\`}${RE_ARGS:+; reencrypt flags: \`$RE_ARGS\`}. MiB/s counts source bytes. Client bytes/object = (s3.bytes_received + s3.bytes_sent) / objects, from sealpipe's report (local jobs have no S3 counters); S3-copied = s3.bytes_copied / objects (UploadPartCopy, done by the server)."
	fi
	if wants_s3_copy || wants local-large || wants local-small; then
		echo
		echo "| workload | tool | ok/runs | wall s | CPU s | peak RSS MiB | MiB/s | objects/s | server CPU s |"
		echo "|---|---|---|---:|---:|---:|---:|---:|---:|"
		awk -F'\t' -v part=main -f <(summary_awk) "$TSV"
	fi
	if wants bench; then
		echo
		echo "| \`sealpipe bench\` | ok/runs | seal GiB/s | open GiB/s | AES-GCM ceiling GiB/s (one core x cores) | all-threads ceiling GiB/s | seal / ceiling | wall s | CPU s | peak RSS MiB |"
		echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
		awk -F'\t' -v part=bench -f <(summary_awk) "$TSV"
	fi
	if wants_rewrap; then
		echo
		echo "| workload | build | command | ok/runs | wall s | objects/s | MiB/s | client CPU s | peak RSS MiB | server CPU s | other CPU s | client bytes/object | S3-copied bytes/object | S3 requests |"
		echo "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		awk -F'\t' -v part=rewrap -f <(summary_awk) "$TSV"
		echo
		echo "| workload | build | reencrypt / rewrap: wall | client CPU | client + server CPU | client bytes/object, rewrap | client bytes/object, reencrypt |"
		echo "|---|---|---:|---:|---:|---:|---:|"
		awk -F'\t' -v part=ratio -f <(summary_awk) "$TSV"
		if ((${#CHECK_NOTES[@]})); then
			echo
			echo "Output checks (run 1, untimed):"
			printf -- '- %s\n' "${CHECK_NOTES[@]}"
		fi
	fi
	if ((${#ERROR_NOTES[@]})); then
		echo
		echo "Failed runs, first error of each:"
		printf -- '- %s\n' "${ERROR_NOTES[@]}"
	fi
	echo
	echo "Raw runs: $TSV"
}

summary_awk() {
	cat <<'AWK'
function median(s,    a, n, i, j, t, m) {
	n = 0
	m = split(s, t, " ")
	for (i = 1; i <= m; i++) if (t[i] ~ /^[-0-9.eE+]+$/) a[++n] = t[i] + 0
	if (n == 0) return ""
	for (i = 2; i <= n; i++) { t0 = a[i]; for (j = i - 1; j >= 1 && a[j] > t0; j--) a[j + 1] = a[j]; a[j + 1] = t0 }
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function f(v, fmt) { return v == "" ? "-" : sprintf(fmt, v) }
function rate(v) { return v == "" ? "-" : sprintf(v < 10 ? "%.2f" : "%.0f", v) }
function hb(v,    u, i) { # bytes, human-readable
	if (v == "") return "-"
	split("B KiB MiB GiB TiB", u, " ")
	for (i = 1; v >= 1024 && i < 5; i++) v /= 1024
	return sprintf(i == 1 ? "%.0f %s" : "%.2f %s", v, u[i])
}
function num(v) { return v ~ /^[-0-9.eE+]+$/ }
function pct(v, whole) { return (v == "" || whole <= 0) ? "" : sprintf(100 * v / whole < 10 ? " (%.2f%%)" : " (%.0f%%)", 100 * v / whole) }
NR == 1 { next }
{
	k = $1 SUBSEP $3 SUBSEP $20
	if (!(k in runs)) { order[++n] = k; wl[k] = $1; desc[k] = $2; tool[k] = $3; cmd[k] = $20; objs[k] = $12; bytes[k] = $13 }
	runs[k]++
	if ($5 == "ok") {
		ok[k]++
		W[k] = W[k] " " $6; C[k] = C[k] " " $9; R[k] = R[k] " " $10; S[k] = S[k] " " $11
		SE[k] = SE[k] " " $16; OP[k] = OP[k] " " $17; CE[k] = CE[k] " " $18; PC[k] = PC[k] " " $19
		if (num($21) && num($22) && $12 > 0) IO[k] = IO[k] " " ($21 + $22) / $12
		if (num($23) && $12 > 0) CP[k] = CP[k] " " $23 / $12
		RQ[k] = RQ[k] " " $24; OT[k] = OT[k] " " $26
		if (num($9) && num($11)) T[k] = T[k] " " ($9 + $11)
	} else fails[k] = fails[k] (fails[k] == "" ? "" : " ") $5
}
END {
	for (x = 1; x <= n; x++) {
		k = order[x]
		isbench = (wl[k] == "bench")
		isrewrap = (cmd[k] != "")
		if (part == "main" && (isbench || isrewrap)) continue
		if (part == "bench" && !isbench) continue
		if ((part == "rewrap" || part == "ratio") && !isrewrap) continue
		w = median(W[k]); c = median(C[k]); r = median(R[k]); s = median(S[k])
		okr = (ok[k] + 0) "/" runs[k] (fails[k] != "" ? " " fails[k] : "")
		label = (wl[k] != last) ? "**" wl[k] "**: " desc[k] : ""
		if (part == "main") {
			last = wl[k]
			mbs = (w > 0) ? bytes[k] / 1048576 / w : ""
			ops = (w > 0) ? objs[k] / w : ""
			printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label, tool[k], okr, f(w, "%.3f"), f(c, "%.2f"),
				f(r == "" ? "" : r / 1024, "%.0f"), rate(mbs), rate(ops), f(s, "%.2f")
		} else if (part == "bench") {
			se = median(SE[k]); op = median(OP[k]); ce = median(CE[k]); pc = median(PC[k])
			g = 1073741824
			printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", tool[k], okr,
				f(se == "" ? "" : se / g, "%.2f"), f(op == "" ? "" : op / g, "%.2f"), f(ce == "" ? "" : ce / g, "%.2f"),
				f(pc == "" ? "" : pc / g, "%.2f"), f((se == "" || ce == "") ? "" : 100 * se / ce, "%.1f%%"),
				f(w, "%.3f"), f(c, "%.2f"), f(r == "" ? "" : r / 1024, "%.0f")
		} else if (part == "rewrap") {
			last = wl[k]
			mbs = (w > 0) ? bytes[k] / 1048576 / w : ""
			ops = (w > 0) ? objs[k] / w : ""
			avg = (objs[k] > 0) ? bytes[k] / objs[k] : 0
			io = median(IO[k]); cpy = median(CP[k]); rq = median(RQ[k])
			printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label,
				(cmd[k] == "reference" ? "-" : tool[k]), (cmd[k] == "reference" ? tool[k] " (reference)" : cmd[k]),
				okr, f(w, "%.3f"), rate(ops), rate(mbs), f(c, "%.2f"), f(r == "" ? "" : r / 1024, "%.0f"), f(s, "%.2f"),
				f(median(OT[k]), "%.2f"), hb(io) pct(io, avg), hb(cpy) pct(cpy, avg), f(rq, "%.0f")
		} else if (cmd[k] == "rewrap") {
			last = wl[k]
			k2 = wl[k] SUBSEP tool[k] SUBSEP "reencrypt"
			w2 = median(W[k2]); c2 = median(C[k2]); t1 = median(T[k]); t2 = median(T[k2])
			avg = (objs[k] > 0) ? bytes[k] / objs[k] : 0
			io = median(IO[k]); io2 = median(IO[k2])
			printf "| %s | %s | %s | %s | %s | %s | %s |\n", (label == "" ? "" : "**" wl[k] "**"), tool[k],
				f((w > 0 && w2 != "") ? w2 / w : "", "%.1fx"), f((c > 0 && c2 != "") ? c2 / c : "", "%.1fx"),
				f((t1 > 0 && t2 != "") ? t2 / t1 : "", "%.1fx"), hb(io) pct(io, avg), hb(io2) pct(io2, avg)
		}
	}
}
AWK
}

summary | tee "$OUT_DIR/summary.md"
log "done in $((T_END - T_START)) s; results in $OUT_DIR"
if ((FAILED)); then
	log "some runs failed: see the status column of $TSV and $RUN_LOG"
	exit 1
fi
