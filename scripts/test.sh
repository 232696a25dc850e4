#!/usr/bin/env bash
# The project's test command: installs what a fresh Debian machine needs, builds
# everything from scratch, and runs formatting, lints, unit and end-to-end tests.
# Run as root (CI does); without root the install step is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build: build-essential pkg-config libssl-dev zlib1g-dev git.
# Tests: the real components berth meets (DESIGN.md §8, §9).
# The package test: lintian, systemd-analyze (systemd), adduser (the package's postinst).
# The metrics test: prometheus, a real server scraping the agent.
# The MQTT tests and bench/fleet.sh: mosquitto (the broker) and mosquitto-clients.
PACKAGES=(
  build-essential pkg-config libssl-dev zlib1g-dev git ca-certificates curl
  runc crun containernetworking-plugins docker-registry umoci skopeo busybox-static
  age gnupg openssh-client openssh-server iproute2 iptables openssl python3 python3-pip python3-venv
  lintian systemd adduser prometheus mosquitto mosquitto-clients
)
# Python test oracles (third-party readers of berth's outputs), in a private venv so the
# system Python stays untouched.
PY_PACKAGES=(cryptography sarif-tools junitparser prometheus-client jsonschema opentelemetry-proto)

if [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
else
  echo "note: not root: skipping apt-get install of ${PACKAGES[*]}" >&2
fi

VENV="${BERTH_TEST_VENV:-$PWD/target/test-venv}"
if [ ! -x "$VENV/bin/python3" ]; then
  /usr/bin/python3 -m venv "$VENV"
fi
"$VENV/bin/python3" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
export PATH="$VENV/bin:$PATH"

if [ -z "${BERTH_SHARED_FIXTURES:-}" ] && [ -d ../shared/fixtures ]; then
  BERTH_SHARED_FIXTURES="$(cd ../shared/fixtures && pwd)"
  export BERTH_SHARED_FIXTURES
fi

export CARGO_INCREMENTAL=0
cargo fmt --all -- --check
# The failpoints feature lets the crash tests stop `berth apply` at named points.
cargo build --workspace --all-targets --locked --features berth/failpoints
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --features berth/failpoints

# The Debian package, from the debug binaries built above: listed, linted, installed,
# checked and purged (scripts/package-test.sh purges it in a trap, also when a step
# fails). After cargo test, which orders nothing between its tests; root only.
if [ "$(id -u)" = 0 ]; then
  scripts/package-test.sh
elif [ "${CI:-}" = true ]; then
  echo "error: scripts/package-test.sh needs root (CI=true)" >&2
  exit 1
else
  echo "note: not root: skipping scripts/package-test.sh" >&2
fi

# The benchmarks at small sizes, as a smoke test (the debug build above unless a release
# build is there; fails when a step fails, cleans up after itself); root only.
if [ "$(id -u)" = 0 ]; then
  bash bench/run.sh --quick
elif [ "${CI:-}" = true ]; then
  echo "error: bench/run.sh needs root (CI=true)" >&2
  exit 1
else
  echo "note: not root: skipping bench/run.sh --quick" >&2
fi
