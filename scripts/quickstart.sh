#!/usr/bin/env bash
# The quickstart: build berth and walk through what it does today with the examples.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "error: cargo is needed to build berth (install a Rust toolchain)" >&2
  exit 3
fi
if [ "$(id -u)" = 0 ] && ! dpkg -s build-essential pkg-config libssl-dev zlib1g-dev >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev git
fi

cargo build --release --bin berth
BERTH=target/release/berth
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$BERTH" --version
for example in hello webapp fleet; do
  step "$BERTH" validate "examples/$example"
done
step "$BERTH" validate examples/fleet --node edge-042 --label site=berlin
step "$BERTH" agent --config examples/node.toml --check

# A typo is a located error with a suggestion, and nothing is applied.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r examples/webapp "$tmp/"
sed -i '0,/^image = /s//imgae = /' "$tmp/webapp/webapp.toml"
printf '\n\033[1m$ %s\033[0m\n' "$BERTH validate webapp   # with a typo: exit 1"
(cd "$tmp" && "$OLDPWD/$BERTH" validate webapp) || echo "(exit $?)"
