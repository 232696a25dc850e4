#!/usr/bin/env bash
# The quickstart: build berth, then walk through what it does with the examples —
# validate and audit the specs, build and sign a demo image in a local registry, and
# converge this host to examples/webapp with `berth apply` (real runc containers, a
# CNI bridge, a volume and an age secret). Everything lives under a temporary
# directory and is removed at the end. Run as root on Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "error: cargo is needed to build berth (install a Rust toolchain)" >&2
  exit 3
fi
PACKAGES=(build-essential pkg-config libssl-dev zlib1g-dev git curl python3
  runc containernetworking-plugins docker-registry umoci skopeo busybox-static iproute2 iptables)
if [ "$(id -u)" = 0 ] && ! dpkg -s "${PACKAGES[@]}" >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
fi

cargo build --release --bin berth --bin berth-agentd --bin berth-shim
BERTH=$PWD/target/release/berth
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$BERTH" --version
for example in hello webapp fleet; do
  step "$BERTH" validate "examples/$example"
done
step "$BERTH" validate examples/fleet --node edge-042 --label site=berlin
step "$BERTH" agent --config examples/node.toml --check
step "$BERTH" audit examples/webapp --policy restricted
printf '\n\033[1m$ %s\033[0m\n' "$BERTH audit examples/insecure/repo --policy restricted   # exit 1: violations"
"$BERTH" audit examples/insecure/repo --policy restricted | tail -4 || true

if [ "$(id -u)" != 0 ]; then
  echo "(run as root to go on: a local registry, a signed image and berth apply)"
  exit 0
fi

work=$(mktemp -d /var/tmp/berth-quickstart.XXXXXX)
reg_pid=""
agent_pid=""
cleanup() {
  set +e
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid"; wait "$agent_pid" 2>/dev/null
  fi
  if [ -f "$work/node.toml" ]; then
    mkdir -p "$work/empty"
    printf '\n\033[1m$ %s\033[0m\n' "berth apply <empty tree>   # removes what the demo started"
    "$BERTH" --config "$work/node.toml" apply "$work/empty"
  fi
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# A local registry on loopback.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\nlog:\n  level: error\n' "$work/registry" "$port" > "$work/registry.yml"
docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
reg_pid=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done

# A demo image from the host's busybox, built with umoci and pushed with skopeo.
umoci init --layout "$work/oci" && umoci new --image "$work/oci:demo"
umoci unpack --image "$work/oci:demo" "$work/bundle" >/dev/null
root="$work/bundle/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/srv" "$root/data" "$root/tmp"
cp /bin/busybox "$root/bin/"
for a in sh httpd wget sleep cat id true stat; do ln -s busybox "$root/bin/$a"; done
printf 'root:x:0:0::/root:/bin/sh\napp:x:10001:10001::/srv:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\napp:x:10001:\n' > "$root/etc/group"
echo "hello from berth" > "$root/srv/index.html"
umoci repack --image "$work/oci:demo" "$work/bundle" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$work/oci:demo" "docker://127.0.0.1:$port/berth/demo:v1"

# Sign it, and trust only that key on this demo node.
step "$BERTH" key generate "$work/release"
cat > "$work/node.toml" <<TOML
[node]
name = "quickstart"
[policy]
profile = "restricted"
mode = "enforce"
trusted_keys = ["$work/release.pub"]
[runtime]
state_dir = "$work/state"
run_dir = "$work/run"
[registries."127.0.0.1:$port"]
insecure = true
[secrets]
identity = "$PWD/examples/keys/demo-node.age.key"
TOML
B=("$BERTH" --config "$work/node.toml")
step "${B[@]}" sign "127.0.0.1:$port/berth/demo:v1" --key "$work/release.key"
digest=$(skopeo inspect --tls-verify=false "docker://127.0.0.1:$port/berth/demo:v1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Digest"])')

# The webapp example, pointed at the signed image (and a free host port).
cp -r examples/webapp "$work/webapp"
web_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s|^image = \"127.0.0.1:5000/berth/demo@sha256:[0-9a-f]*\"|image = \"127.0.0.1:$port/berth/demo@$digest\"|; s|127.0.0.1:8080:8080|127.0.0.1:$web_port:8080|" "$work/webapp/webapp.toml"

step "${B[@]}" plan "$work/webapp"
step "${B[@]}" apply "$work/webapp"
step "${B[@]}" ps
step "${B[@]}" exec web -- id
step "${B[@]}" exec worker -- wget -q -O- http://web:8080/
step curl -s "http://127.0.0.1:$web_port/"
step "${B[@]}" network ls
step "${B[@]}" stats
printf '\n\033[1m$ %s\033[0m\n' "berth apply $work/webapp   # again: nothing to do"
"${B[@]}" apply "$work/webapp"

# GitOps: the same tree in a Git repository, followed by `berth agent`. It adopts what
# runs (nothing restarts), and a pushed commit is the deployment.
git init -q -b main "$work/repo"
cp -r "$work/webapp/." "$work/repo/"
git -C "$work/repo" add -A
git -C "$work/repo" -c user.name=demo -c user.email=demo@berth.example commit -q -m "webapp"
cat >> "$work/node.toml" <<TOML
[source]
url = "file://$work/repo"
branch = "main"
interval = "2s"
TOML
step "${B[@]}" agent --check
printf '\n\033[1m$ %s\033[0m\n' "berth agent &   # the daemon: berth-agentd, each pass in a process of its own"
"${B[@]}" agent > "$work/agent.log" 2>&1 &
agent_pid=$!
converged() { "${B[@]}" status --format json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s.get("agent") == "running" and (s.get("last_pass") or {}).get("result") == "converged" and s.get("revision", {}).get("commit", "").startswith(sys.argv[1]) else 1)' "$1"; }
for _ in $(seq 300); do converged "$(git -C "$work/repo" rev-parse HEAD)" && break; sleep 0.1; done
step "${B[@]}" status
sed -i 's/LOG_LEVEL = "info"/LOG_LEVEL = "debug"/' "$work/repo/webapp.toml"
git -C "$work/repo" -c user.name=demo -c user.email=demo@berth.example commit -q -am "web: debug logs"
printf '\n\033[1m$ %s\033[0m\n' "git commit -am 'web: debug logs'   # then the agent converges"
for _ in $(seq 300); do converged "$(git -C "$work/repo" rev-parse HEAD)" && break; sleep 0.1; done
step "${B[@]}" events
step "${B[@]}" exec web -- sh -c 'echo LOG_LEVEL=$LOG_LEVEL'
printf '\n\033[1m$ %s\033[0m\n' "kill -TERM $agent_pid   # the agent stops; the containers keep running"
kill -TERM "$agent_pid" && wait "$agent_pid" || true
step "${B[@]}" ps
