#!/usr/bin/env bash
# Checks the dependency graph against deny.toml with a pinned cargo-deny, installed from
# crates.io into target/tools/ (ignored by git) unless that exact version is there.
#
#   bans, licenses, sources   always.
#   advisories                only with SEALPIPE_ADVISORY_DB, a git checkout of
#                             https://github.com/rustsec/advisory-db (any commit; it is
#                             used as is, offline). That database is only published on
#                             GitHub, which this project's machines and CI cannot reach
#                             (only package registries are): without a copy, this script
#                             says loudly that advisories were NOT checked and goes on.
#                             That is the one check allowed to be missing.
#
# Usage: scripts/deny.sh            (from any directory)
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
TOOLS="target/tools"
DENY="$TOOLS/bin/cargo-deny"

if [[ ! -x "$DENY" || "$("$DENY" --version 2>/dev/null)" != "cargo-deny $DENY_VERSION" ]]; then
    echo "deny.sh: installing cargo-deny $DENY_VERSION into $TOOLS (once; about 3-4 minutes on 2 cores)" >&2
    start=$SECONDS
    if ! cargo install cargo-deny --version "$DENY_VERSION" --locked --root "$TOOLS"; then
        echo "deny.sh: ERROR: cannot install cargo-deny $DENY_VERSION from crates.io (see cargo's output)." >&2
        echo "  crates.io must be reachable (cargo honours its proxy and source-replacement settings)," >&2
        echo "  or install it yourself: cargo install cargo-deny --version $DENY_VERSION --locked --root $TOOLS" >&2
        exit 1
    fi
    echo "deny.sh: installed in $((SECONDS - start))s" >&2
fi

"$DENY" --locked check --hide-inclusion-graph bans licenses sources

if [[ -z "${SEALPIPE_ADVISORY_DB:-}" ]]; then
    echo "deny.sh: WARNING: RUSTSEC ADVISORIES NOT CHECKED: SEALPIPE_ADVISORY_DB is unset and the advisory database is only on GitHub, which this machine cannot reach (only package registries are); set SEALPIPE_ADVISORY_DB to a git checkout of rustsec/advisory-db" >&2
    exit 0
fi

db="$(cd -- "$SEALPIPE_ADVISORY_DB" 2>/dev/null && pwd -P)" || {
    echo "deny.sh: ERROR: SEALPIPE_ADVISORY_DB=$SEALPIPE_ADVISORY_DB is not a directory" >&2
    exit 1
}
# cargo-deny reads the database's date from git, so a plain export will not do.
if [[ ! -d "$db/crates" ]] || ! commit="$(git -C "$db" log -1 --format='%H %cI' 2>/dev/null)"; then
    echo "deny.sh: ERROR: SEALPIPE_ADVISORY_DB=$db is not a git checkout of rustsec/advisory-db" >&2
    echo "  (it needs crates/ and a .git: cargo-deny reads the checkout's commit date)" >&2
    exit 1
fi
# cargo-deny looks for the default database under db-path in a directory named after a
# hash of its URL (this name is cargo-deny $DENY_VERSION's; re-check it when the pin
# moves: with an empty db-path, `cargo deny --offline check advisories` names it).
root="$(mktemp -d)"
trap 'rm -rf -- "$root"' EXIT
ln -s "$db" "$root/advisory-db-3157b0e258782691"
echo "deny.sh: advisories from $db at $commit (offline)" >&2
SEALPIPE_ADVISORY_DB_ROOT="$root" "$DENY" --offline --locked check --hide-inclusion-graph advisories
