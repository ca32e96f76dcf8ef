#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one: installs the pinned Python
# interop peers into .venv-test/, checks the dependency graph with the pinned cargo-deny
# (scripts/deny.sh), builds once, then runs every test (unit, integration, official ESDK
# vectors, Python interop, property tests, doc tests) plus fmt and clippy.
#
# Usage: scripts/test.sh [extra cargo test args]
# Env:   SEALPIPE_ADVISORY_DB  a git checkout of github.com/rustsec/advisory-db; without
#                              it, RustSec advisories are not checked (see deny.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "Python test environment (pinned aws-encryption-sdk, aws-encryption-sdk-cli, moto)"
SEALPIPE_TEST_PYTHON="$(scripts/setup-venv.sh | tail -n 1)"
export SEALPIPE_TEST_PYTHON

step "ESDK test vectors"
vectors="${SEALPIPE_VECTORS:-../shared/esdk-vectors}"
if [ ! -f "$vectors/raw-aes/decrypt-manifest.json" ]; then
  echo "error: ESDK vectors not found at $vectors: check out shared/ beside this repository or set SEALPIPE_VECTORS" >&2
  exit 1
fi

step "Formatting"
cargo fmt --all -- --check

step "Supply chain: cargo-deny bans, licenses, sources (deny.toml)"
scripts/deny.sh

step "Build (once, locked)"
cargo build --locked --all-targets

step "Lints"
cargo clippy --locked --all-targets -- -D warnings

step "Tests"
cargo test --locked --all-targets "$@"
cargo test --locked --doc
