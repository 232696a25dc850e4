#!/usr/bin/env bash
# The quickstart: build berth, then walk through the GitOps story on this host, each step
# checked (the script exits non-zero when a step does not show what it says):
#   1. validate and audit the examples (no root needed);
#   2. a loopback registry, a demo image built from the host's busybox, signed;
#   3. a Git repository holding examples/webapp, with SSH-signed commits and an
#      allowed_signers file that the node trusts (source.allowed_signers); a loopback
#      MQTT broker (mosquitto, with a password) for the fleet's channel (source.notify);
#   4. `berth agent` follows it and runs the webapp;
#   5. a commit runs within a second (the local watch; the poll is minutes away);
#   6. a commit that breaks the policy (web as root) is refused; the old web runs on;
#   7. a broken update (web's health check fails) is rolled back to the instance it
#      replaced;
#   8. the fleet view over MQTT: the node's retained status message, the channel in
#      `berth status`, and `berth notify` announcing the repository's HEAD;
#   9. `berth status` and `berth audit --live`; then everything is removed.
# Everything lives under a temporary directory and is removed at the end, on success
# and on failure. Run as root on Debian 12. QUICKSTART_LATENCY_LIMIT (seconds, default
# 1) is what step 5 must beat.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s.%N)

if ! command -v cargo >/dev/null; then
  echo "error: cargo is needed to build berth (install a Rust toolchain)" >&2
  exit 3
fi
PACKAGES=(build-essential pkg-config libssl-dev zlib1g-dev git ca-certificates curl python3
  openssh-client runc containernetworking-plugins docker-registry umoci skopeo
  busybox-static iproute2 iptables mosquitto mosquitto-clients)
if [ "$(id -u)" = 0 ] && ! dpkg -s "${PACKAGES[@]}" >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
fi

cargo build --release --bin berth --bin berth-agentd --bin berth-shim
BERTH=$PWD/target/release/berth

heading() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }
say() { printf '\033[1m$ %s\033[0m\n' "$*"; }
step() { say "$*"; "$@"; }
ok() { printf '\033[32mok:\033[0m %s\n' "$*"; }
fail() {
  printf '\033[31mFAILED:\033[0m %s\n' "$*" >&2
  exit 1
}

heading "1. Validate and audit the examples (no root, no daemon)"
step "$BERTH" --version
for example in hello webapp fleet; do
  step "$BERTH" validate "examples/$example"
done
step "$BERTH" audit examples/webapp --policy restricted
say "$BERTH audit examples/insecure/repo --policy restricted | tail -4   # exit 1: violations"
rc=0
"$BERTH" audit examples/insecure/repo --policy restricted > /tmp/berth-quickstart-audit.$$ || rc=$?
tail -4 /tmp/berth-quickstart-audit.$$
rm -f /tmp/berth-quickstart-audit.$$
[ "$rc" = 1 ] || fail "auditing examples/insecure/repo exited $rc, not 1 (violations)"
ok "the insecure example is refused (exit 1)"

if [ "$(id -u)" != 0 ]; then
  echo "(run as root to go on: a local registry, a signed image and berth agent)"
  exit 0
fi

work=$(mktemp -d /var/tmp/berth-quickstart.XXXXXX)
reg_pid=""
mqtt_pid=""
agent_pid=""
cleanup() {
  local rc=$?
  set +e
  heading "Clean up: the agent, the containers, the registry, the broker, $work"
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    say "kill -TERM $agent_pid   # the agent stops; containers keep running until removed"
    kill -TERM "$agent_pid"
    wait "$agent_pid" 2>/dev/null
  fi
  if [ "$rc" != 0 ] && [ -f "$work/agent.log" ]; then
    echo "--- the agent's log (last 40 lines) ---"
    tail -40 "$work/agent.log"
    [ -s "$work/mqtt.log" ] && echo "--- the broker's log (last 10 lines) ---" && tail -10 "$work/mqtt.log"
  fi
  if [ -f "$work/node.toml" ]; then
    mkdir -p "$work/empty"
    say "berth apply <an empty tree>   # removes every container, network and volume of the demo"
    if ! "$BERTH" --config "$work/node.toml" apply "$work/empty"; then
      echo "error: the empty apply failed; the demo's containers may be left (state in $work/state)" >&2
      [ "$rc" = 0 ] && rc=1
      work_kept=1
    fi
  fi
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null && wait "$reg_pid" 2>/dev/null
  [ -n "$mqtt_pid" ] && kill "$mqtt_pid" 2>/dev/null && wait "$mqtt_pid" 2>/dev/null
  [ -z "${work_kept:-}" ] && rm -rf "$work"
  if [ "$rc" = 0 ]; then
    printf '\n\033[1;32mquickstart: every step showed what it claims, in %s s\033[0m\n' \
      "$(python3 -c 'import sys, time; print(round(time.time() - float(sys.argv[1])))' "$started")"
  else
    printf '\n\033[1;31mquickstart: failed (exit %s)\033[0m\n' "$rc" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

heading "2. A loopback registry, a demo image from the host's busybox, signed"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\nlog:\n  level: error\n' "$work/registry" "$port" > "$work/registry.yml"
say "docker-registry serve registry.yml &   # on 127.0.0.1:$port"
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$port/v2/" >/dev/null || fail "the registry does not answer on 127.0.0.1:$port"

# The image: busybox-static and a static page, built with umoci, pushed with skopeo.
umoci init --layout "$work/oci" && umoci new --image "$work/oci:demo"
umoci unpack --image "$work/oci:demo" "$work/bundle" >/dev/null
root="$work/bundle/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/srv" "$root/data" "$root/tmp"
cp /bin/busybox "$root/bin/"
for a in sh httpd wget sleep cat id true false stat echo; do ln -s busybox "$root/bin/$a"; done
printf 'root:x:0:0::/root:/bin/sh\napp:x:10001:10001::/srv:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\napp:x:10001:\n' > "$root/etc/group"
echo "hello from berth" > "$root/srv/index.html"
umoci repack --image "$work/oci:demo" "$work/bundle" >/dev/null
say "skopeo copy oci:demo docker://127.0.0.1:$port/berth/demo:v1"
skopeo copy -q --dest-tls-verify=false "oci:$work/oci:demo" "docker://127.0.0.1:$port/berth/demo:v1"
digest=$(skopeo inspect --tls-verify=false "docker://127.0.0.1:$port/berth/demo:v1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Digest"])')
image="127.0.0.1:$port/berth/demo@$digest"

# Sign it; the node trusts only that key (enforce), and only commits signed by the
# demo's SSH key (below).
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
resync = "5m"
[registries."127.0.0.1:$port"]
insecure = true
[secrets]
identity = "$PWD/examples/keys/demo-node.age.key"
TOML
B=("$BERTH" --config "$work/node.toml")
step "${B[@]}" sign "127.0.0.1:$port/berth/demo:v1" --key "$work/release.key"
step "${B[@]}" image verify "$image" --key "$work/release.pub" --remote

heading "3. A Git repository of examples/webapp, every commit SSH-signed; an MQTT broker"
repo=$work/repo
web_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ssh-keygen -q -t ed25519 -N '' -C demo@berth.example -f "$work/signer"
printf 'demo@berth.example namespaces="git" %s\n' "$(cat "$work/signer.pub")" > "$work/allowed_signers"
say "cat allowed_signers"
cat "$work/allowed_signers"
git init -q -b main "$repo"
git -C "$repo" config user.name "Demo Operator"
git -C "$repo" config user.email demo@berth.example
git -C "$repo" config gpg.format ssh
git -C "$repo" config user.signingkey "$work/signer"
git -C "$repo" config commit.gpgsign true
git -C "$repo" config gpg.ssh.allowedSignersFile "$work/allowed_signers"
cp -r examples/webapp/. "$repo/"
# This host's registry and a free port instead of the example's.
sed -i "s|^image = \"127.0.0.1:5000/berth/demo@sha256:[0-9a-f]*\"|image = \"$image\"|; s|127.0.0.1:8080:8080|127.0.0.1:$web_port:8080|" "$repo/webapp.toml"
git -C "$repo" add -A
say "git commit -m 'webapp: store, web and worker'   # signed: commit.gpgsign, gpg.format ssh"
git -C "$repo" commit -q -m "webapp: store, web and worker"
step git -C "$repo" log --show-signature -1 --format='%h %s'
step "${B[@]}" source verify --repo "$repo" --allowed-signers "$work/allowed_signers"

# The fleet's channel: a private mosquitto on a free loopback port, one user with a
# password. The node subscribes to berth/demo (revision messages) and publishes its
# status to berth/demo/nodes/quickstart. `user root`: as root, mosquitto would otherwise
# drop to the user mosquitto, who cannot read this directory.
mqtt_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(umask 077 && python3 -c 'import secrets; print(secrets.token_hex(16))' > "$work/mqtt-password")
mqtt_auth=(-h 127.0.0.1 -p "$mqtt_port" -u quickstart -P "$(cat "$work/mqtt-password")")
mosquitto_passwd -b -c "$work/mqtt-passwd" quickstart "$(cat "$work/mqtt-password")"
chmod 600 "$work/mqtt-passwd"
printf 'listener %s 127.0.0.1\nallow_anonymous false\npassword_file %s\npersistence false\nuser root\n' \
  "$mqtt_port" "$work/mqtt-passwd" > "$work/mosquitto.conf"
say "mosquitto -c mosquitto.conf &   # on 127.0.0.1:$mqtt_port, user quickstart with a password"
mosquitto -c "$work/mosquitto.conf" >"$work/mqtt.log" 2>&1 &
mqtt_pid=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null && break; sleep 0.1; done
(exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null || fail "the broker does not listen on 127.0.0.1:$mqtt_port"
cat >> "$work/node.toml" <<TOML
[source]
url = "$repo"
branch = "main"
interval = "5m"
allowed_signers = "$work/allowed_signers"
[source.notify]
mqtt = "mqtt://127.0.0.1:$mqtt_port"
topic = "berth/demo"
username = "quickstart"
password_file = "$work/mqtt-password"
spread = "0s"
TOML
say "cat node.toml"
cat "$work/node.toml"
step "${B[@]}" agent --check

# Helpers reading berth's JSON.
head_commit() { git -C "$repo" rev-parse HEAD; }
# instance NAME: the running instance of NAME (empty when it does not run).
instance() {
  "${B[@]}" ps --format json | python3 -c '
import json, sys
for c in json.load(sys.stdin):
    if c["name"] == sys.argv[1] and c["state"] == "running":
        print(c["instance"])' "$1"
}
# pass_done COMMIT [RESULT]: the agent ran a whole pass on COMMIT (with that result).
pass_done() {
  "${B[@]}" status --format json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
p = s.get("last_pass") or {}
running = any(c["type"] == "Progressing" and c["reason"] == "PassRunning" for c in s.get("conditions", []))
ok = s.get("agent") == "running" and p.get("revision") == sys.argv[1] and not running
if ok and len(sys.argv) > 2:
    ok = p.get("result") == sys.argv[2]
sys.exit(0 if ok else 1)' "$@"
}
# wait_pass SECONDS COMMIT [RESULT]
wait_pass() {
  local secs=$1
  shift
  for _ in $(seq "$((secs * 10))"); do
    pass_done "$@" && return 0
    sleep 0.1
  done
  "${B[@]}" status || true
  fail "no pass on ${1:0:12}${2:+ with result $2} within ${secs}s"
}
commit() {
  say "git commit -am '$1'"
  git -C "$repo" commit -q -am "$1"
}

heading "4. berth agent follows the repository; the first revision converges"
say "berth agent &   # berth-agentd; each pass in a process of its own"
"${B[@]}" agent > "$work/agent.log" 2>&1 &
agent_pid=$!
wait_pass 120 "$(head_commit)" converged
for _ in $(seq 50); do grep -q "watching the local repository" "$work/agent.log" && break; sleep 0.1; done
grep -q "watching the local repository" "$work/agent.log" || fail "the agent does not watch $repo"
step "${B[@]}" status
for c in store web worker; do [ -n "$(instance "$c")" ] || fail "$c does not run"; done
say "curl http://127.0.0.1:$web_port/"
page=$(curl -fsS "http://127.0.0.1:$web_port/") || fail "web does not serve on 127.0.0.1:$web_port"
echo "$page"
[ "$page" = "hello from berth" ] || fail "web served '$page'"
step "${B[@]}" exec worker -- wget -q -O- http://web:8080/
signer=$("${B[@]}" status --format json | python3 -c 'import json,sys; print(((json.load(sys.stdin).get("revision") or {}).get("signer") or {}).get("principal", ""))')
[ "$signer" = demo@berth.example ] || fail "the applied revision's signer is '$signer', not demo@berth.example"
ok "3 containers run; the revision applied is signed by $signer"

heading "5. A commit runs within a second: the local watch (source.interval is 5m)"
good_web=$(instance web)
sed -i 's/LOG_LEVEL = "info"/LOG_LEVEL = "debug"/' "$repo/webapp.toml"
say "git commit -am 'web: debug logs'   # then berth ps --format json every 50 ms"
latency=$(python3 - "$BERTH" "$work/node.toml" "$repo" "$good_web" <<'PY'
import json, subprocess, sys, time
berth, config, repo, old = sys.argv[1:5]
t0 = time.monotonic()
subprocess.run(["git", "-C", repo, "commit", "-q", "-am", "web: debug logs"], check=True)
committed = time.monotonic() - t0
while time.monotonic() - t0 < 60:
    out = subprocess.run([berth, "--config", config, "ps", "--format", "json"],
                         capture_output=True, text=True).stdout
    try:
        rows = json.loads(out)
    except ValueError:
        rows = []
    for c in rows:
        if c["name"] == "web" and c["instance"] != old and c["state"] == "running" and c.get("pid"):
            up = time.monotonic() - t0
            print(f"{up:.3f} {c['instance']} {c['pid']} {committed:.3f}")
            sys.exit(0)
    time.sleep(0.05)
print("none")
PY
)
read -r secs new_web new_pid took <<<"$latency"
[ "$secs" != none ] || fail "web's new instance did not run within 60 s of the commit"
echo "web's new instance $new_web runs (pid $new_pid) ${secs} s after 'git commit' began (the signed commit itself took ${took} s)"
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$secs" "${QUICKSTART_LATENCY_LIMIT:-1}" ||
  fail "the commit ran in ${secs} s, not within ${QUICKSTART_LATENCY_LIMIT:-1} s"
wait_pass 60 "$(head_commit)" converged
say "grep 'local watch' agent.log"
grep "local watch: refs/heads/main moved" "$work/agent.log" || fail "the agent's log does not show the local watch's fetch"
step "${B[@]}" exec web -- sh -c 'echo LOG_LEVEL=$LOG_LEVEL'
[ "$("${B[@]}" exec web -- sh -c 'echo $LOG_LEVEL')" = debug ] || fail "web does not run the new revision"
ok "commit to running in ${secs} s"

heading "6. A commit that breaks the policy (web as root) is refused; the old web runs on"
good_web=$(instance web)
sed -i '/^\[container.web\]/,/^\[container.web.resources\]/ s/^user = "10001:10001"/user = "0:0"/' "$repo/webapp.toml"
step git -C "$repo" diff --stat
commit "web: run as root"
wait_pass 60 "$(head_commit)" not-converged
step "${B[@]}" status
[ "$(instance web)" = "$good_web" ] || fail "web's instance changed: $(instance web), not $good_web"
[ "$("${B[@]}" exec web -- id -u)" = 10001 ] || fail "web does not run as 10001 any more"
"${B[@]}" status --format json | python3 -c '
import json, sys
s = json.load(sys.stdin)
m = s["last_pass"].get("message", "")
assert "blocked by policy" in m and "web" in m, m
assert any(f["rule"] == "run-as-non-root" for f in s.get("findings", {}).get("web", [])), s.get("findings")' ||
  fail "the status does not say web is blocked by run-as-non-root"
say "curl http://127.0.0.1:$web_port/"
curl -fsS "http://127.0.0.1:$web_port/" || fail "the old web does not serve"
ok "web is blocked by policy (run-as-non-root); $good_web still runs as uid 10001"

heading "7. A broken update (web listens on the wrong port) is rolled back to the instance it replaced"
sed -i '/^\[container.web\]/,/^\[container.web.resources\]/ {
  s/^user = "0:0"/user = "10001:10001"/
  s|^command = .*|command = ["/bin/httpd", "-f", "-p", "8081", "-h", "/srv"]\nupdate_timeout = "6s"|
}' "$repo/webapp.toml"
step git -C "$repo" diff
commit "web: serve on 8081"
echo "(web's health check, http://127.0.0.1:8080/, is refused: after update_timeout, 6s, the old web runs again)"
wait_pass 60 "$(head_commit)" not-converged
step "${B[@]}" status
say "berth events --since 30s"
"${B[@]}" events --since 30s | tee "$work/events.txt"
grep -q "RolledBack" "$work/events.txt" || fail "no RolledBack event"
step "${B[@]}" ps
[ "$(instance web)" = "$good_web" ] || fail "web runs '$(instance web)', not $good_web (the instance before the broken update)"
"${B[@]}" status --format json | python3 -c '
import json, sys
s = json.load(sys.stdin)
m = s["last_pass"].get("message", "")
assert "web: rolled back" in m and "Connection refused" in m, m' ||
  fail "the status does not say web was rolled back (its health check refused)"
say "curl http://127.0.0.1:$web_port/"
curl -fsS "http://127.0.0.1:$web_port/" || fail "the rolled-back web does not serve"
sleep 2
[ "$(instance web)" = "$good_web" ] || fail "2 s later, web runs '$(instance web)', not $good_web"
curl -fsS "http://127.0.0.1:$web_port/" >/dev/null || fail "2 s later, the rolled-back web does not serve"
ok "the broken update was rolled back: $good_web runs and serves again"

heading "8. The fleet view over MQTT: the node's status, the channel, berth notify"
# notify_field KEY: a field of the agent's MQTT channel (berth status --format json).
notify_field() {
  "${B[@]}" status --format json | python3 -c '
import json, sys
print((json.load(sys.stdin).get("notify") or {}).get(sys.argv[1], ""))' "$1"
}
for _ in $(seq 100); do [ "$(notify_field state)" = connected ] && break; sleep 0.1; done
[ "$(notify_field state)" = connected ] || fail "the agent is not connected to the broker: $("${B[@]}" status | grep '^notify:')"
say "mosquitto_sub -C 1 -W 5 -t 'berth/demo/nodes/+' -v   # the node's status, retained, after every pass"
mosquitto_sub "${mqtt_auth[@]}" -C 1 -W 5 -t 'berth/demo/nodes/+' -v > "$work/node-status" ||
  fail "no retained status on berth/demo/nodes/+"
cat "$work/node-status"
applied=$("${B[@]}" status --format json | python3 -c 'import json,sys; print((json.load(sys.stdin).get("revision") or {}).get("commit", ""))')
python3 - "$work/node-status" "$(head_commit)" "$applied" <<'PY' || fail "the node's status does not name the commit applied (${applied:0:12})"
import json, sys
topic, _, doc = open(sys.argv[1]).read().partition(" ")
s = json.loads(doc)
assert topic == "berth/demo/nodes/quickstart" and s["node"] == "quickstart", topic
assert s["commit"] == sys.argv[2] and s["applied"] == sys.argv[3], s
PY
say "cd repo && berth notify --mqtt mqtt://127.0.0.1:$mqtt_port --topic berth/demo --username quickstart --password-file mqtt-password"
out=$(cd "$repo" && "$BERTH" notify --mqtt "mqtt://127.0.0.1:$mqtt_port" --topic berth/demo \
  --username quickstart --password-file "$work/mqtt-password") || fail "berth notify failed"
echo "$out"
[ "$out" = "notified berth/demo: refs/heads/main at $(head_commit)" ] || fail "berth notify printed '$out'"
for _ in $(seq 50); do [ "$(notify_field messages)" = 1 ] && break; sleep 0.1; done
echo "(the node has that commit already, from the local watch: it takes the message and fetches nothing)"
say "grep 'mqtt: ' agent.log"
grep "mqtt: " "$work/agent.log" || true
grep -q "mqtt: a message on \`berth/demo\` ignored: $(head_commit | cut -c1-12) is the commit fetched last" "$work/agent.log" ||
  fail "the agent's log does not show berth notify's message"
say "berth status | grep '^notify:'"
line=$("${B[@]}" status | grep '^notify:') || fail "berth status has no notify: line"
echo "$line"
[[ "$line" == "notify: connected to mqtt://127.0.0.1:$mqtt_port, topic berth/demo, since "*"; 1 message(s)"* ]] ||
  fail "berth status does not show the channel connected with one message"
ok "the node's status is on the broker, and berth notify reached the node"

heading "9. The node now: berth status, berth audit --live"
step "${B[@]}" status
step "${B[@]}" audit --live
ok "what runs passes the node's policy"
