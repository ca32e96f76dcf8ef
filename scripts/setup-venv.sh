#!/usr/bin/env bash
# Create (or reuse) the project-local test virtualenv .venv-test/ with the pinned
# packages of scripts/requirements-test.txt (official AWS Encryption SDK for Python,
# its CLI, moto). Idempotent: when .venv-test/ was already built from the same
# requirements file and the same Python, it returns at once.
#
# Usage: scripts/setup-venv.sh            (from any directory)
# Env:   SEALPIPE_PYTHON   interpreter used to create the venv (default: python3)
# Prints the path of the venv's python as its last line of stdout.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
VENV="$ROOT/.venv-test"
REQS="$SCRIPT_DIR/requirements-test.txt"
HASH_FILE="$VENV/.sealpipe-reqs-hash"
VENV_PY="$VENV/bin/python"
PYTHON="${SEALPIPE_PYTHON:-python3}"

fail() {
    echo "setup-venv.sh: ERROR: $1" >&2
    shift
    local line
    for line in "$@"; do echo "  $line" >&2; done
    exit 1
}

[[ -f "$REQS" ]] || fail "requirements file not found: $REQS"

command -v "$PYTHON" >/dev/null 2>&1 ||
    fail "'$PYTHON' not found on PATH." \
        "Install Python 3.11 or newer with venv and pip, e.g. on Debian/Ubuntu:" \
        "  apt-get update && apt-get install -y python3 python3-venv python3-pip" \
        "or point SEALPIPE_PYTHON at a suitable interpreter."

PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)" ||
    fail "'$PYTHON' does not run."
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
    fail "'$PYTHON' is Python $PY_VERSION; the pinned requirements need Python >= 3.11." \
        "Install python3.11 (or newer) and set SEALPIPE_PYTHON=python3.11 if it is not 'python3'."

# Serialise concurrent runs (e.g. several test binaries starting at once): lock the
# script file itself, so nothing extra is created in the work tree.
if command -v flock >/dev/null 2>&1; then
    exec 9<"${BASH_SOURCE[0]}"
    flock 9
fi

# What the venv must match: the requirements file, the interpreter version, and the
# interpreter path (a venv is tied to the python it was made from).
PY_REAL="$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))')"
WANT_HASH="$({ sha256sum <"$REQS"; echo "python $PY_VERSION $PY_REAL"; } | sha256sum | cut -d' ' -f1)"

if [[ -f "$HASH_FILE" && -x "$VENV_PY" ]] && [[ "$(cat "$HASH_FILE")" == "$WANT_HASH" ]] &&
    "$VENV_PY" -c 'pass' >/dev/null 2>&1; then
    echo "setup-venv.sh: $VENV is up to date" >&2
    echo "$VENV_PY"
    exit 0
fi

START=$SECONDS

# A venv built from other requirements (or another python) is rebuilt from scratch,
# so that it holds exactly the pinned set. A half-built one (no hash file yet, e.g. an
# interrupted install) is reused: pip picks up where it stopped.
if [[ -e "$VENV" ]] && { [[ -f "$HASH_FILE" ]] || ! "$VENV_PY" -c 'pass' >/dev/null 2>&1; }; then
    echo "setup-venv.sh: rebuilding $VENV (requirements or python changed)" >&2
    rm -rf -- "$VENV"
fi

if [[ ! -x "$VENV_PY" ]]; then
    echo "setup-venv.sh: creating $VENV with $PYTHON ($PY_VERSION)" >&2
    if ! "$PYTHON" -m venv "$VENV" >&2; then
        rm -rf -- "$VENV"
        fail "'$PYTHON -m venv' failed: the venv module or ensurepip is missing." \
            "On Debian/Ubuntu install it with:" \
            "  apt-get update && apt-get install -y python3-venv" \
            "(for a non-default interpreter: python3.11-venv), then run this script again."
    fi
fi
# Keep the whole venv out of git whatever the repo's .gitignore says.
echo '*' >"$VENV/.gitignore"

"$VENV_PY" -m pip --version >/dev/null 2>&1 ||
    fail "pip is not available in $VENV." \
        "Install python3-venv / python3-pip (apt-get install -y python3-venv python3-pip)," \
        "then: rm -rf '$VENV' && '$0'"

echo "setup-venv.sh: installing $(basename "$REQS") into $VENV" >&2
if ! "$VENV_PY" -m pip install --require-virtualenv --no-input --disable-pip-version-check \
    -r "$REQS" >&2; then
    fail "pip install -r $REQS failed (see pip's output above)." \
        "Check that PyPI is reachable (pip honours PIP_INDEX_URL / proxy settings)," \
        "then run this script again; it resumes in the existing $VENV." \
        "To start over: rm -rf '$VENV'"
fi

echo "$WANT_HASH" >"$HASH_FILE"
echo "setup-venv.sh: done in $((SECONDS - START))s" >&2
echo "$VENV_PY"
