#!/usr/bin/env bash
# bench-peers.sh: in-memory encrypt/decrypt throughput of sealpipe (`sealpipe bench`)
# next to the official Rust AWS Encryption SDK (aws-esdk, through the driver in
# benches/peers/esdk-rust), on the same message sizes, suite 0x0478 and 64 KiB frames,
# with a raw AES-256 key and no network. Also checks once that each side decrypts the
# other's messages. Prints one markdown table on stdout.
#
# Run `bench-peers.sh --help` for usage.

set -euo pipefail
export LC_ALL=C

usage() {
	cat <<'EOF'
Usage: bench-peers.sh [-h|--help] [SEALPIPE_BIN]

SEALPIPE_BIN is a sealpipe release binary [default: target/release/sealpipe of this
repository; build it with `cargo build --release`].

Builds the Rust ESDK driver (`cargo build --release --manifest-path
benches/peers/esdk-rust/Cargo.toml`, a workspace of its own; its first build takes
10+ minutes on 2 cores), checks interop once (a 3 MiB + 123 byte file sealed by each
side decrypts with the other, raw AES key raw-aes:sealpipe-peers:k1:KEYFILE), then
measures each workload with both, for 1 thread and for THREADS threads:

  100MiB   104,857,600-byte messages, one per thread at a time
  1MiB     1,048,576-byte messages, 32 per thread per round
  4KiB     4,096-byte messages, 2,000 per thread per round

Figures are medians of timed rounds after a warm-up round (at least 5 rounds and
SECONDS_PER_FIGURE seconds each); each side checks its round trip, untimed.
MB/s are 10^6 plaintext bytes per second.

Environment (defaults in brackets):
  THREADS=$(nproc)       threads of the "all threads" columns
  SECONDS_PER_FIGURE=2   minimum measuring time of every figure
  WORKLOADS=100MiB,1MiB,4KiB   a comma-separated subset
  OUT_DIR=./bench-peers-out-YYYYmmdd-HHMMSS   raw JSON of every run, build log,
                         summary.md

A peer that is missing or fails to build or run is named in the table and in a note
saying how to get it, and the script then exits 1.
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

THREADS=${THREADS:-$(nproc)}
SECONDS_PER_FIGURE=${SECONDS_PER_FIGURE:-2}
WORKLOADS=${WORKLOADS:-100MiB,1MiB,4KiB}
OUT_DIR=${OUT_DIR:-./bench-peers-out-$(date +%Y%m%d-%H%M%S)}
MANIFEST=$ROOT/benches/peers/esdk-rust/Cargo.toml
ESDK_BIN=$ROOT/benches/peers/esdk-rust/target/release/esdk-rust-bench
FRAME_LEN=65536

log() { echo "bench-peers: $*" >&2; }

if ! command -v jq >/dev/null; then
	log "jq is needed to read the JSON results: apt-get install -y jq"
	exit 2
fi
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || {
	log "THREADS must be a positive integer, not '$THREADS'"
	exit 2
}

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/bench-peers.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

# Peers that cannot be measured: one note each, printed under the table.
declare -a NOTES=()
have_esdk=1 have_sealpipe=1

log "building the Rust ESDK driver (log: $OUT_DIR/esdk-build.log)"
build_start=$SECONDS
# `env -u OUT_DIR`: with our OUT_DIR (the results directory) in its environment, cargo
# found ring's fingerprint changed and rebuilt it and every crate above it (aws-esdk).
if env -u OUT_DIR cargo build --release --locked --manifest-path "$MANIFEST" >"$OUT_DIR/esdk-build.log" 2>&1 &&
	[[ -x $ESDK_BIN ]]; then
	log "driver built in $((SECONDS - build_start)) s"
else
	have_esdk=0
	NOTES+=("**Rust ESDK (aws-esdk) not measured**: its driver failed to build, see \
$OUT_DIR/esdk-build.log. It needs cargo, crates.io (or a filled cargo cache: \`cargo fetch \
--manifest-path benches/peers/esdk-rust/Cargo.toml\`) and a C compiler for aws-lc-sys; \
build it with \`cargo build --release --manifest-path benches/peers/esdk-rust/Cargo.toml\`.")
fi
ESDK_VERSION=$(awk '/^name = "aws-esdk"$/ { getline; gsub(/[^0-9.]/, ""); print }' \
	"$ROOT/benches/peers/esdk-rust/Cargo.lock")

if [[ ! -x $SEALPIPE_BIN ]] || ! "$SEALPIPE_BIN" bench --help >/dev/null 2>&1; then
	have_sealpipe=0
	NOTES+=("**sealpipe not measured**: \`$SEALPIPE_BIN\` is not a sealpipe binary with \`bench\`; \
build one with \`cargo build --release\` and pass its path.")
fi

# --- interop, once -------------------------------------------------------------------
INTEROP="not checked (needs both peers)"
if ((have_esdk && have_sealpipe)); then
	log "checking interop"
	head -c 32 /dev/urandom >"$SCRATCH/key.bin"
	head -c $((3 * 1048576 + 123)) /dev/urandom >"$SCRATCH/plain.bin"
	key=raw-aes:sealpipe-peers:k1:$SCRATCH/key.bin
	if "$ESDK_BIN" encrypt "$SCRATCH/plain.bin" "$SCRATCH/esdk.msg" --key "$key" \
		--frame-len $FRAME_LEN 2>"$OUT_DIR/interop.log" &&
		"$SEALPIPE_BIN" decrypt "$SCRATCH/esdk.msg" "$SCRATCH/esdk.out" --key "$key" \
			>>"$OUT_DIR/interop.log" 2>&1 &&
		cmp -s "$SCRATCH/plain.bin" "$SCRATCH/esdk.out"; then
		esdk_to_sealpipe=ok
	else
		esdk_to_sealpipe=FAILED
	fi
	if "$SEALPIPE_BIN" encrypt "$SCRATCH/plain.bin" "$SCRATCH/sealpipe.msg" --key "$key" \
		>>"$OUT_DIR/interop.log" 2>&1 &&
		"$ESDK_BIN" decrypt "$SCRATCH/sealpipe.msg" "$SCRATCH/sealpipe.out" --key "$key" \
			2>>"$OUT_DIR/interop.log" &&
		cmp -s "$SCRATCH/plain.bin" "$SCRATCH/sealpipe.out"; then
		sealpipe_to_esdk=ok
	else
		sealpipe_to_esdk=FAILED
	fi
	esdk_header=$("$SEALPIPE_BIN" inspect "$SCRATCH/esdk.msg" 2>>"$OUT_DIR/interop.log" |
		jq -r '"suite \(.suite.id), frame \(.frame_length)"' 2>>"$OUT_DIR/interop.log" || true)
	INTEROP="Rust ESDK → sealpipe: $esdk_to_sealpipe; sealpipe → Rust ESDK: $sealpipe_to_esdk \
(3,145,851 random bytes; the ESDK's message, per \`sealpipe inspect\`: ${esdk_header:-unreadable})"
	if [[ $esdk_to_sealpipe$sealpipe_to_esdk != okok ]]; then
		NOTES+=("**interop failed**: see $OUT_DIR/interop.log.")
	fi
	log "interop: $INTEROP"
fi

# Other processes on the machine take cores from both peers. To show it, every workload
# also reports the CPU time the whole machine was busy (/proc/stat) and how much of it
# was this script's children (bash `times`), and the time the hypervisor stole.
HZ=$(getconf CLK_TCK)
machine_cpu() { # -> "BUSY_SECONDS STEAL_SECONDS" since boot
	awk -v hz="$HZ" '/^cpu / { printf "%.2f %.2f\n", ($2 + $3 + $4 + $7 + $8) / hz, $9 / hz }' /proc/stat
}
children_cpu() { # CHILD_CPU= user+sys seconds of this script's finished children
	# Not in $(...): `times` in a subshell counts only the subshell's children.
	times >"$SCRATCH/times"
	CHILD_CPU=$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); t += a[1] * 60 + a[2] }
		printf "%.2f\n", t }' "$SCRATCH/times")
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
LOAD_START=$(loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
	log "warning: 1-minute load average is ${LOAD_START%% *} (the build counts too): other" \
		"processes may lower the figures"
fi
cpu_table="| workload | wall s | CPU-s of these runs | CPU-s of other processes | stolen s |
| --- | --- | --- | --- | --- |"

# --- measurements --------------------------------------------------------------------
workload_params() { # NAME -> "SIZE COUNT_PER_THREAD"
	case $1 in
	100MiB) echo "104857600 1" ;;
	1MiB) echo "1048576 32" ;;
	4KiB) echo "4096 2000" ;;
	*)
		log "unknown workload '$1' (one of 100MiB, 1MiB, 4KiB)"
		exit 2
		;;
	esac
}

# esdk_rate FILE THREADS OP -> bytes/s, or nothing when FILE is missing
esdk_rate() {
	[[ -s $1 ]] || return 0
	jq -r --argjson t "$2" --arg op "$3" \
		'first(.results[] | select(.threads == $t)) | .[$op].bytes_per_sec' "$1"
}
# json_field FILE FIELD -> its value, or nothing when FILE is missing
json_field() {
	[[ -s $1 ]] || return 0
	jq -r ".$2" "$1"
}

# cell BYTES_PER_SEC SIZE -> "143.2 MB/s, 1.4 msg/s"
cell() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f MB/s, %.1f msg/s", b / 1e6, b / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f×", a / b }'; }

table="| workload | op | Rust ESDK $ESDK_VERSION, 1 thread | Rust ESDK, $THREADS threads \
| sealpipe, 1 thread | sealpipe, $THREADS threads | sealpipe/ESDK, 1 thread \
| sealpipe/ESDK, $THREADS threads |
| --- | --- | --- | --- | --- | --- | --- | --- |"

IFS=, read -r -a names <<<"$WORKLOADS"
for name in "${names[@]}"; do
	read -r size count <<<"$(workload_params "$name")"
	read -r busy0 steal0 <<<"$(machine_cpu)"
	children_cpu
	own0=$CHILD_CPU wall0=$EPOCHREALTIME
	esdk_json=$OUT_DIR/esdk-$name.json
	if ((have_esdk)); then
		log "$name: Rust ESDK (1 and $THREADS threads)"
		if ! "$ESDK_BIN" --size "$size" --count "$count" --threads "$THREADS" \
			--frame-len $FRAME_LEN --seconds "$SECONDS_PER_FIGURE" --json \
			>"$esdk_json" 2>"$OUT_DIR/esdk-$name.err"; then
			NOTES+=("**Rust ESDK failed on $name**: see $OUT_DIR/esdk-$name.err.")
			rm -f "$esdk_json"
		fi
	fi
	for t in 1 "$THREADS"; do
		if ((have_sealpipe)) && [[ ! -e $OUT_DIR/sealpipe-$name-$t.json ]]; then
			log "$name: sealpipe bench, $t thread(s)"
			if ! "$SEALPIPE_BIN" bench --json --size "$size" --frame-len $FRAME_LEN \
				--threads "$t" --seconds "$SECONDS_PER_FIGURE" \
				>"$OUT_DIR/sealpipe-$name-$t.json" 2>"$OUT_DIR/sealpipe-$name-$t.err"; then
				NOTES+=("**sealpipe bench failed on $name, $t thread(s)**: see \
$OUT_DIR/sealpipe-$name-$t.err.")
				rm -f "$OUT_DIR/sealpipe-$name-$t.json"
			fi
		fi
	done
	read -r busy1 steal1 <<<"$(machine_cpu)"
	children_cpu
	own1=$CHILD_CPU wall1=$EPOCHREALTIME
	cpu_table+=$'\n'$(awk -v n="$name" -v w0="$wall0" -v w1="$wall1" -v b0="$busy0" -v b1="$busy1" \
		-v o0="$own0" -v o1="$own1" -v s0="$steal0" -v s1="$steal1" 'BEGIN {
		other = (b1 - b0) - (o1 - o0); if (other < 0) other = 0
		printf "| %s | %.0f | %.1f | %.1f | %.1f |", n, w1 - w0, o1 - o0, other, s1 - s0 }')
	for op in encrypt decrypt; do
		sp_field=$([[ $op == encrypt ]] && echo seal_bytes_per_sec || echo open_bytes_per_sec)
		row="| $name | $op"
		declare -A rate=()
		for t in 1 "$THREADS"; do
			rate[esdk$t]=$(esdk_rate "$esdk_json" "$t" "$op")
			rate[sp$t]=$(json_field "$OUT_DIR/sealpipe-$name-$t.json" "$sp_field")
		done
		for k in esdk1 "esdk$THREADS" sp1 "sp$THREADS"; do
			if [[ -n ${rate[$k]} ]]; then
				row+=" | $(cell "${rate[$k]}" "$size")"
			else
				row+=" | not measured"
			fi
		done
		for t in 1 "$THREADS"; do
			if [[ -n ${rate[sp$t]} && -n ${rate[esdk$t]} ]]; then
				row+=" | $(ratio "${rate[sp$t]}" "${rate[esdk$t]}")"
			else
				row+=" | –"
			fi
		done
		table+=$'\n'"$row |"
		unset rate
	done
done

{
	echo "## sealpipe and the Rust ESDK, in memory ($(nproc) cores, $(date -u +%Y-%m-%d))"
	echo
	echo "$table"
	echo
	echo "Interop: $INTEROP."
	echo
	echo "Load average (1, 5, 15 min) at start: $LOAD_START; at end: $(loadavg). CPU time"
	echo "while each workload ran ($(nproc) cores; other processes' time is taken from both"
	echo "peers' figures):"
	echo
	echo "$cpu_table"
	echo
	echo "Both: suite 0x0478, 64 KiB frames, raw AES-256 key, plaintext in memory, medians"
	echo "of at least 5 rounds and ${SECONDS_PER_FIGURE} s per figure after a warm-up."
	echo "Rust ESDK: one client, keyring and current-thread tokio runtime per thread; each"
	echo "message is one encrypt/decrypt call on one thread, so with $THREADS threads the"
	echo "100MiB row has $THREADS messages in flight; every call has the keyring generate and"
	echo "wrap (or unwrap) a fresh data key. The owned input copies the API takes are made"
	echo "before the clock starts. sealpipe: \`sealpipe bench\`, which seals one 100 MiB"
	echo "message with all threads, and up to 4,096 small messages at once; it builds its"
	echo "data key once for all messages and opens with it, so its figures leave out the"
	echo "keyring's per-message work that the ESDK's include."
	for n in "${NOTES[@]}"; do
		echo
		echo "$n"
	done
} | tee "$OUT_DIR/summary.md"

((${#NOTES[@]} == 0))
