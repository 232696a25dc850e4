#!/usr/bin/env bash
# Fleet simulation (issue 20): N real `berth agent --observe` processes on this host, each
# with its own node name, labels, state and run directory, all following one repository
# served on loopback by `git http-backend` (tests/support/git-http-server.py), with a
# local mosquitto for revision notifications and node status. Prints Markdown tables.
#
#   bash bench/fleet.sh                  # N = 100: polling and MQTT, shallow and full fetches
#   bash bench/fleet.sh --nodes 10       # a smaller fleet
#   bash bench/fleet.sh --max            # then the largest N within the targets
#
# Options (defaults in brackets):
#   --nodes N          the fleet's size [100]; with --max, the first step
#   --max              after the first size, for polling and for MQTT (depth 1) apart:
#                      double N while the targets hold (until one fails, the memory would
#                      not hold the next step, or --max-nodes), else halve it until they
#                      do; then try the midpoint of the last N that held and the first
#                      that failed. Each failure says what limited it
#   --max-nodes N      largest N --max tries [3200]
#   --pushes K         pushes measured per phase [2]
#   --interval D       source.interval of the polling phase [30s]; pushes are this far apart
#                      in every phase, so that the Git server's average is per interval
#   --mqtt-interval D  source.interval of the MQTT phases [5m]: convergence comes from the
#                      notification, not a poll
#   --spread D         source.notify.spread [2s]
#   --history C        commits in the repository before the first push [1000]
#   --phases LIST      among poll,mqtt,mqtt-full,poll-full [poll,mqtt,mqtt-full,poll-full]:
#                      polling with depth = 1; notifications with depth = 1; notifications
#                      with depth = 0; polling with depth = 0
#   --status KIND      mqtt (status messages on <topic>/nodes/+) or file (the agents'
#                      state/agent.json, read every 0.2 s: a fallback for builds without
#                      MQTT) [mqtt when `berth notify` exists]
#   --timeout S        the whole run's bound in seconds [3600]; then it stops and cleans up
#   --keep DIR         copy the raw files (status messages, Git server request log, TSVs,
#                      tables) to DIR before the temp dir is removed
#
# What it measures, per phase (each phase starts N fresh agents):
#   - first clone: the time until every node reported the repository's head, the Git
#     server's CPU seconds, bytes sent and requests for it;
#   - per push: the time from the end of `git push` (the push goes to the served bare
#     repository through the file system) until each node reported the new commit in its
#     status (`commit` of <topic>/nodes/<node>, the time mosquitto_sub received it):
#     median, p99 and max over every node and push; with MQTT, `berth notify` runs right
#     after the push (its time included);
#   - the Git server's CPU (its own cgroup: cgroup v1 cpuacct.usage or v2 cpu.stat
#     usage_usec; the Python front end's own share from /proc/<pid>/stat) and the bytes
#     it sent (its request log: status line, headers, body, chunk framing), per push
#     period, polls included, and its average share of one core over the pushes;
#   - the agents' CPU (their own cgroup, pass workers included) and RSS (VmRSS of each
#     agent process after the pushes: median, max);
#   - the broker's and the registry's CPU (cgroups of their own);
#   - polling: one more interval without a push (what idle polls cost the server).
# Polling agents start spread over one interval (a fleet's polls are spread), MQTT agents
# all at once (the herd of a fleet-wide restart).
# Targets (issue 20): with MQTT every node reported a push within 5 s; by polling within
# one interval plus its 10 % jitter (+ 2 s for the pass); the Git server under 50 % of
# one core on average.
#
# Observe mode plans against a registry (manifest reads): a loopback docker-registry
# holds the busybox image of bench/lib.sh. The agents run from target/release if built,
# else target/debug (the output says which; no build is run). Run as root. Raises
# fs.inotify.max_user_instances/max_user_watches as needed and restores them; a trap
# stops every process it started (agents, pass workers, Git server, broker, registry,
# subscriber) and removes its cgroups and temp dir.
#
# Needs (Debian): git python3 mosquitto mosquitto-clients docker-registry umoci skopeo
# busybox-static curl.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=100 MAX=0 MAX_NODES=3200 PUSHES=2 INTERVAL=30s MQTT_INTERVAL=5m SPREAD=2s
HISTORY=1000 PHASES=poll,mqtt,mqtt-full,poll-full STATUS="" TIMEOUT=3600 KEEP=""
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2 ;;
    --max) MAX=1; shift ;;
    --max-nodes) MAX_NODES=$2; shift 2 ;;
    --pushes) PUSHES=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    --mqtt-interval) MQTT_INTERVAL=$2; shift 2 ;;
    --spread) SPREAD=$2; shift 2 ;;
    --history) HISTORY=$2; shift 2 ;;
    --phases) PHASES=$2; shift 2 ;;
    --status) STATUS=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown option: $1" >&2; usage ;;
  esac
done
secs() { # secs DURATION: 30s, 5m, 2s, 500ms, 1h -> seconds (float)
  python3 -c 'import re,sys
m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", sys.argv[1])
if not m: sys.exit("bad duration: " + sys.argv[1])
print(float(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]])' "$1"
}
INTERVAL_S=$(secs "$INTERVAL"); secs "$MQTT_INTERVAL" >/dev/null; secs "$SPREAD" >/dev/null
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 3; }
for tool in git python3 docker-registry umoci skopeo curl /bin/busybox; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 3; }
done

if [ -x target/release/berth ] && [ -x target/release/berth-agentd ]; then profile=release; else profile=debug; fi
BERTH=$PWD/target/$profile/berth
for b in "$BERTH" "$PWD/target/$profile/berth-agentd"; do
  [ -x "$b" ] || { echo "missing $b (cargo build --bin berth --bin berth-agentd)" >&2; exit 3; }
done
if [ -z "$STATUS" ]; then
  if "$BERTH" notify --help >/dev/null 2>&1; then STATUS=mqtt; else STATUS=file; fi
fi
case "$STATUS" in mqtt|file) ;; *) echo "--status: mqtt or file" >&2; exit 2 ;; esac
if [ "$STATUS" = mqtt ]; then
  for tool in mosquitto mosquitto_sub; do command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 3; }; done
fi
case ",$PHASES," in *,mqtt*) [ "$STATUS" = mqtt ] || { echo "the MQTT phases need --status mqtt (a berth with \`berth notify\`); use --phases poll" >&2; exit 3; } ;; esac

work=$(mktemp -d /var/tmp/berth-fleet.XXXXXX)
agent_pids=() reg_pid="" git_pid="" wait_pid="" mq_pid="" sub_pid="" watchdog_pid="" cg_base=""
old_instances="" old_watches=""
say() { echo "== $(date +%T) $*" >&2; }

# --- cgroups: the Git server, the agents, the broker and the registry, each apart -------
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  cg_kind=v2 cg_root=/sys/fs/cgroup
elif [ -f /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then
  cg_kind=v1 cg_root=/sys/fs/cgroup/cpuacct
elif [ -f /sys/fs/cgroup/cpu,cpuacct/cpuacct.usage ]; then
  cg_kind=v1 cg_root=/sys/fs/cgroup/cpu,cpuacct
else
  echo "no cgroup v2 nor v1 cpuacct hierarchy under /sys/fs/cgroup" >&2; exit 3
fi
cg_cpu() { # cg_cpu NAME: CPU seconds used in the cgroup so far
  if [ "$cg_kind" = v2 ]; then
    awk '$1 == "usage_usec" { printf "%.3f\n", $2 / 1e6 }' "$cg_base/$1/cpu.stat"
  else
    awk '{ printf "%.3f\n", $1 / 1e9 }' "$cg_base/$1/cpuacct.usage"
  fi
}
cg_drain() { # cg_drain NAME: SIGKILL what is left in the cgroup (only what this run started), remove it
  local d=$cg_base/$1 p
  [ -d "$d" ] || return 0
  for _ in $(seq 50); do
    [ -s "$d/cgroup.procs" ] || break
    while read -r p; do kill -KILL "$p" 2>/dev/null || true; done < "$d/cgroup.procs"
    sleep 0.1
  done
  rmdir "$d" 2>/dev/null || true
}
proc_cpu() { # proc_cpu PID: the process's own user+system CPU seconds (not its children's)
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

stop_agents() {
  [ ${#agent_pids[@]} -gt 0 ] || return 0
  local p
  for p in "${agent_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    for p in "${agent_pids[@]}"; do kill -0 "$p" 2>/dev/null && { alive=1; break; }; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${agent_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait "${agent_pids[@]}" 2>/dev/null || true
  agent_pids=()
  # Pass workers the agents left: they are in the agents' cgroup.
  [ -z "$cg_base" ] || { while read -r p; do kill -KILL "$p" 2>/dev/null || true; done < "$cg_base/agents/cgroup.procs"; } 2>/dev/null || true
}
stop_pid() { # stop_pid PID: TERM, then KILL after 3 s
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  set +e
  [ -n "$watchdog_pid" ] && kill "$watchdog_pid" 2>/dev/null
  stop_agents
  stop_pid "$wait_pid"; stop_pid "$sub_pid"; stop_pid "$mq_pid"; stop_pid "$git_pid"; stop_pid "$reg_pid"
  if [ -n "$cg_base" ]; then
    for c in agents git broker registry; do cg_drain "$c"; done
    rmdir "$cg_base" 2>/dev/null
  fi
  [ -n "$old_instances" ] && echo "$old_instances" > /proc/sys/fs/inotify/max_user_instances
  [ -n "$old_watches" ] && echo "$old_watches" > /proc/sys/fs/inotify/max_user_watches
  if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP" && cp "$work"/*.log "$work"/*.tsv "$work"/*.txt "$work"/*.md "$KEEP"/ 2>/dev/null
  fi
  rm -rf "$work"
  [ "$rc" = 0 ] || echo "bench/fleet.sh: FAILED (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'echo "bench/fleet.sh: stopped (TERM, or the --timeout of ${TIMEOUT}s)" >&2; exit 124' TERM
# The overall bound: TERM to this shell after TIMEOUT seconds.
( trap 'kill "$sp" 2>/dev/null; exit 0' TERM; sleep "$TIMEOUT" & sp=$!; wait "$sp" && kill -TERM $$ ) >/dev/null 2>&1 &
watchdog_pid=$!

cg_base=$cg_root/berth-fleet-$$
mkdir "$cg_base"
for c in agents git broker registry; do mkdir "$cg_base/$c"; done
ulimit -n "$(ulimit -Hn)" # the broker holds one connection per node

# inotify: raise_inotify N makes room for N more agents (never lowers).
raise_inotify() {
  local cur want
  [ -n "$old_instances" ] || old_instances=$(cat /proc/sys/fs/inotify/max_user_instances)
  [ -n "$old_watches" ] || old_watches=$(cat /proc/sys/fs/inotify/max_user_watches)
  cur=$(cat /proc/sys/fs/inotify/max_user_instances); want=$((old_instances + 4 * $1 + 64))
  [ "$cur" -ge "$want" ] || echo "$want" > /proc/sys/fs/inotify/max_user_instances
  cur=$(cat /proc/sys/fs/inotify/max_user_watches); want=$((old_watches + 64 * $1))
  [ "$cur" -ge "$want" ] || echo "$want" > /proc/sys/fs/inotify/max_user_watches
}

# --- helpers in Python: the status watcher (file fallback), convergence wait, stats ----
cat > "$work/fleet.py" <<'PY'
import glob, json, math, os, statistics, sys, time

def watch(out, nodes_dir, period):
    """The fallback for builds without MQTT status: one line `TIME fallback/nodes/NODE
    {"commit": REV}` each time a node's state/agent.json names a new pass revision."""
    seen = {}
    with open(out, "a", buffering=1) as f:
        while True:
            for path in glob.glob(os.path.join(nodes_dir, "*/state/state/agent.json")):
                node = path.split(os.sep)[-4]
                try:
                    with open(path) as j:
                        rev = (json.load(j).get("last_pass") or {}).get("revision")
                except (OSError, ValueError):
                    continue
                if rev and seen.get(path) != rev:
                    seen[path] = rev
                    f.write("%.6f fallback/nodes/%s %s\n" % (time.time(), node, json.dumps({"node": node, "commit": rev})))
            time.sleep(period)

def wait(log, commit, n, timeout, since, out):
    """Waits until N nodes reported COMMIT in LOG (lines `TIME TOPIC PAYLOAD`); writes
    each node's delay after SINCE to OUT; exit 1 on timeout."""
    first, pos, deadline = {}, 0, time.time() + timeout
    while True:
        with open(log, "rb") as f:
            f.seek(pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        pos += end
        for line in data[:end].decode("utf-8", "replace").splitlines():
            parts = line.split(" ", 2)
            if len(parts) < 3 or commit not in parts[2]:
                continue
            try:
                msg = json.loads(parts[2])
            except ValueError:
                continue
            if msg.get("commit") == commit:
                node = parts[1].rsplit("/", 1)[-1]
                first.setdefault(node, float(parts[0]))
        if len(first) >= n or time.time() > deadline:
            break
        time.sleep(0.05)
    with open(out, "w") as f:
        for node, t in sorted(first.items()):
            f.write("%s %.3f\n" % (node, t - since))
    print(len(first))
    sys.exit(0 if len(first) >= n else 1)

def pct(values, p):
    v = sorted(values)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]

def lat(n, pushes, *files):
    """median p99 max (s) over the delays in FILES; a node that never reported counts as inf."""
    vals = []
    for path in files:
        with open(path) as f:
            got = [float(line.split()[1]) for line in f if line.strip()]
        vals += got + [math.inf] * (n - len(got))
    fmt = lambda x: "inf" if math.isinf(x) else "%.2f" % x
    print(fmt(statistics.median(vals)), fmt(pct(vals, 99)), fmt(max(vals)))

def rss(*pids):
    """median max (MiB) of the agents' VmRSS, and the max VmHWM."""
    cur, hwm = [], []
    for pid in pids:
        try:
            with open("/proc/%s/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        cur.append(int(line.split()[1]) / 1024)
                    elif line.startswith("VmHWM:"):
                        hwm.append(int(line.split()[1]) / 1024)
        except OSError:
            pass
    if not cur:
        print("- - -"); return
    print("%.1f %.1f %.1f" % (statistics.median(cur), max(cur), max(hwm)))

def log_bytes(path, start):
    """requests and bytes sent in the Git server's log from line START on (1-based)."""
    req = total = 0
    try:
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if i >= start:
                    parts = line.split()
                    if len(parts) >= 5:
                        req += 1; total += int(parts[4])
    except OSError:
        pass
    print(req, total)

cmd = sys.argv[1]
args = sys.argv[2:]
if cmd == "watch": watch(args[0], args[1], float(args[2]))
elif cmd == "wait": wait(args[0], args[1], int(args[2]), float(args[3]), float(args[4]), args[5])
elif cmd == "lat": lat(int(args[0]), int(args[1]), *args[2:])
elif cmd == "rss": rss(*args)
elif cmd == "bytes": log_bytes(args[0], int(args[1]))
PY
fpy() { python3 "$work/fleet.py" "$@"; }
# fpy_wait ARGS…: `fpy wait ARGS…` in the background, so that a TERM (the timeout) or an
# INT is handled at once rather than after the wait; prints its output, keeps its status.
fpy_wait() {
  local rc=0
  python3 "$work/fleet.py" wait "$@" > "$work/wait.out" &
  wait_pid=$!
  wait "$wait_pid" || rc=$?
  wait_pid=""
  cat "$work/wait.out"
  return "$rc"
}
now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; } # calc FORMAT EXPR
loglines() { if [ -f "$work/git.log" ]; then wc -l < "$work/git.log"; else echo 0; fi; }

# --- The image (bench/lib.sh) in a loopback registry ------------------------------------
say "registry and image"
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_image >/dev/null 2>&1
echo "$reg_pid" > "$cg_base/registry/cgroup.procs"
reg_port=$port

# --- The repository: HISTORY commits of a spec of three containers ---------------------
say "repository with $HISTORY commits"
git init -q -b main "$work/src"
git init -q --bare "$work/srv/fleet.git"
spec() { # spec REV: the spec tree's one file, apps.toml, at revision REV
  cat <<TOML
# The fleet's containers. web runs on every node, metrics on site s0, cache on arm64.
[container.web]
image = "$image"
user = "10001:10001"
command = ["/bin/httpd", "-f", "-p", "8080", "-h", "/srv"]
env = { REVISION = "$1" }
read_only = true
cap_drop = ["ALL"]
resources = { memory = "16MiB", pids = 16 }
nodes = { names = ["edge-*"] }

[container.metrics]
image = "$image"
user = "10001:10001"
command = ["/bin/httpd", "-f", "-p", "9100", "-h", "/srv"]
read_only = true
cap_drop = ["ALL"]
resources = { memory = "16MiB", pids = 16 }
nodes = { labels = { site = "s0" } }

[container.cache]
image = "$image"
user = "10001:10001"
command = ["/bin/sleep", "100000"]
env = { REVISION = "$1" }
read_only = true
cap_drop = ["ALL"]
resources = { memory = "16MiB", pids = 16 }
nodes = { labels = { arch = "arm64" } }
TOML
}
python3 - "$HISTORY" "$(spec @REV@)" <<'PY' | git -C "$work/src" fast-import --quiet
import sys
n, template = int(sys.argv[1]), sys.argv[2] + "\n"
for i in range(1, n + 1):
    data = template.replace("@REV@", "h%d" % i).encode()
    msg = ("history %d\n" % i).encode()
    sys.stdout.buffer.write(b"commit refs/heads/main\n")
    sys.stdout.buffer.write(b"committer fleet <fleet@example.com> %d +0000\n" % (1700000000 + 60 * i))
    sys.stdout.buffer.write(b"data %d\n%s" % (len(msg), msg))
    sys.stdout.buffer.write(b"M 644 inline apps.toml\ndata %d\n%s\n" % (len(data), data))
PY
git -C "$work/src" checkout -q main
git -C "$work/src" push -q "$work/srv/fleet.git" main
git -C "$work/srv/fleet.git" repack -adq
push_n=0
push() { # push: one commit changing the web and cache containers, pushed; sets head
  push_n=$((push_n + 1))
  spec "p$push_n" > "$work/src/apps.toml"
  git -C "$work/src" -c user.name=fleet -c user.email=fleet@example.com commit -qam "push $push_n"
  git -C "$work/src" push -q "$work/srv/fleet.git" main
  head=$(git -C "$work/src" rev-parse HEAD)
}

# --- The Git server, in its cgroup --------------------------------------------------------
say "git http-backend on loopback"
( echo "$BASHPID" > "$cg_base/git/cgroup.procs"
  exec python3 tests/support/git-http-server.py --root "$work/srv" --log "$work/git.log" ) > "$work/git.port" 2> "$work/git.err" &
git_pid=$!
for _ in $(seq 50); do [ -s "$work/git.port" ] && break; sleep 0.1; done
git_port=$(head -1 "$work/git.port")
[ -n "$git_port" ] || { echo "the Git server did not start: $(cat "$work/git.err")" >&2; exit 1; }

# --- The broker ---------------------------------------------------------------------------
mq_port=""
if [ "$STATUS" = mqtt ]; then
  say "mosquitto on loopback"
  mq_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n' "$mq_port" > "$work/mosquitto.conf"
  ( echo "$BASHPID" > "$cg_base/broker/cgroup.procs"; exec mosquitto -c "$work/mosquitto.conf" ) > "$work/mosquitto.log" 2>&1 &
  mq_pid=$!
  for _ in $(seq 50); do mosquitto_sub -p "$mq_port" -t probe -W 1 -C 1 -E >/dev/null 2>&1 && break; sleep 0.1; done
fi

# --- One phase: N fresh agents, first clone, PUSHES pushes ------------------------------
results="$work/results.tsv"; : > "$results"
clones="$work/clones.tsv"; : > "$clones"
idle="$work/idle.tsv"; : > "$idle"
last_rss_max=0
# phase LABEL N MODE(poll|mqtt) DEPTH: appends one line to $results and $clones; returns
# 1 when a target failed (the reason in $limit).
phase() {
  local label=$1 n=$2 mode=$3 depth=$4 topic="fleet/$1" interval=$INTERVAL nodes_dir=$work/nodes/$1
  local i name t0 t1 status_log=$work/status-$1.log k
  [ "$mode" = mqtt ] && interval=$MQTT_INTERVAL
  say "phase $label: N=$n, $mode, depth $depth"
  raise_inotify "$n"
  : > "$status_log"
  if [ "$STATUS" = mqtt ]; then
    mosquitto_sub -p "$mq_port" -q 1 -t "$topic/nodes/+" -F '%U %t %p' >> "$status_log" 2> "$work/sub.err" &
    sub_pid=$!
  else
    python3 "$work/fleet.py" watch "$status_log" "$nodes_dir" 0.2 &
    sub_pid=$!
  fi
  for i in $(seq "$n"); do
    name=$(printf 'edge-%04d' "$i")
    mkdir -p "$nodes_dir/$name"
    {
      printf '[node]\nname = "%s"\nlabels = { site = "s%d", arch = "%s" }\n' "$name" $((i % 4)) "$([ $((i % 2)) = 0 ] && echo arm64 || echo amd64)"
      printf '[agent]\nmode = "observe"\n'
      printf '[source]\nurl = "http://127.0.0.1:%s/fleet.git"\nbranch = "main"\ninterval = "%s"\ndepth = %s\n' "$git_port" "$interval" "$depth"
      if [ -n "$mq_port" ]; then
        printf '[source.notify]\nmqtt = "mqtt://127.0.0.1:%s"\ntopic = "%s"\nspread = "%s"\n' "$mq_port" "$topic" "$SPREAD"
      fi
      printf '[runtime]\nstate_dir = "%s"\nrun_dir = "%s"\n' "$nodes_dir/$name/state" "$nodes_dir/$name/run"
      printf '[registries."127.0.0.1:%s"]\ninsecure = true\n' "$reg_port"
    } > "$nodes_dir/$name/node.toml"
  done
  head=$(git -C "$work/src" rev-parse HEAD)
  # First clone. With notifications every agent starts at once (the herd a fleet-wide
  # restart makes). Polling agents start spread over one interval, as a fleet's polls
  # are: a push then finds them anywhere in their interval.
  local stagger=0 start_kind="at once"
  if [ "$mode" = poll ]; then stagger=$(calc %.4f "$INTERVAL_S / $n"); start_kind="spread over $INTERVAL"; fi
  local l0 g0 a0 py0 b0 m0 r0
  l0=$(( $(loglines) + 1 )); g0=$(cg_cpu git); a0=$(cg_cpu agents); py0=$(proc_cpu "$git_pid")
  t0=$(now)
  for i in $(seq "$n"); do
    name=$(printf 'edge-%04d' "$i")
    ( echo "$BASHPID" > "$cg_base/agents/cgroup.procs"
      exec "$BERTH" --config "$nodes_dir/$name/node.toml" agent --observe ) > "$nodes_dir/$name/agent.log" 2>&1 &
    agent_pids+=($!)
    [ "$stagger" = 0 ] || sleep "$stagger"
  done
  local got ok=1
  fpy_wait "$status_log" "$head" "$n" "$(calc %d "120 + $n / 4 + $INTERVAL_S")" "$t0" "$work/lat-$label-clone.txt" > "$work/got" || ok=0
  got=$(cat "$work/got")
  t1=$(now)
  read -r creq cbytes < <(fpy bytes "$work/git.log" "$l0")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$n" "$depth" "$(calc %.1f "$t1 - $t0")" \
    "$(calc %.2f "$(cg_cpu git) - $g0")" "$cbytes" "$creq" "$(calc %.2f "$(cg_cpu agents) - $a0")" "$got" "$start_kind" >> "$clones"
  if [ "$ok" = 0 ]; then
    limit="$label: only $got of $n nodes reported the first clone's commit"
    verdict[$label]=$limit
    say "$limit"; tail -3 "$nodes_dir/edge-0001/agent.log" >&2
    stop_agents; stop_pid "$sub_pid"; sub_pid=""; rm -rf "$nodes_dir"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$n" "$mode" "$depth" inf inf inf - - - - - - - - - "clone failed" >> "$results"
    return 1
  fi
  # Settle: every agent's first pass is done; the first push comes a few seconds later.
  sleep 3
  local wall0 wall1 lats=() tp tw bw=0 bg=0 ba=0
  l0=$(( $(loglines) + 1 )); g0=$(cg_cpu git); a0=$(cg_cpu agents); py0=$(proc_cpu "$git_pid")
  m0=$(cg_cpu broker); r0=$(cg_cpu registry)
  wall0=$(now)
  local wait_s=60
  [ "$mode" = poll ] && wait_s=$(calc %d "$INTERVAL_S * 1.1 + 30")
  for k in $(seq "$PUSHES"); do
    push
    tp=$(now)
    if [ "$mode" = mqtt ]; then
      (cd "$work/src" && "$BERTH" notify --mqtt "mqtt://127.0.0.1:$mq_port" --topic "$topic" >/dev/null)
    fi
    local gp ap
    gp=$(cg_cpu git); ap=$(cg_cpu agents)
    fpy_wait "$status_log" "$head" "$n" "$wait_s" "$tp" "$work/lat-$label-$k.txt" > "$work/got" || true
    got=$(cat "$work/got")
    tw=$(now)
    # The push's window (push to every node reported): its length, the Git server's and
    # the agents' CPU in it (summed over the pushes).
    bw=$(calc %.3f "$bw + $tw - $tp"); bg=$(calc %.3f "$bg + $(cg_cpu git) - $gp"); ba=$(calc %.3f "$ba + $(cg_cpu agents) - $ap")
    lats+=("$work/lat-$label-$k.txt")
    say "push $k: $got of $n nodes in $(calc %.1f "$tw - $tp") s"
    # The next push one interval after this one (the last: the period's end).
    while [ "$(calc %d "(($(now) - $tp) < $INTERVAL_S)")" = 1 ]; do sleep 0.2; done
  done
  wall1=$(now)
  local wall gcpu pycpu acpu mcpu rcpu req bytes lat rss
  wall=$(calc %.3f "$wall1 - $wall0")
  gcpu=$(calc %.3f "$(cg_cpu git) - $g0"); pycpu=$(calc %.3f "$(proc_cpu "$git_pid") - $py0")
  acpu=$(calc %.3f "$(cg_cpu agents) - $a0"); mcpu=$(calc %.3f "$(cg_cpu broker) - $m0")
  rcpu=$(calc %.3f "$(cg_cpu registry) - $r0")
  read -r req bytes < <(fpy bytes "$work/git.log" "$l0")
  lat=$(fpy lat "$n" "$PUSHES" "${lats[@]}")
  rss=$(fpy rss "${agent_pids[@]}")
  if [ "$mode" = poll ]; then
    # One more interval without a push: what the fleet's polls cost when nothing changed.
    local ti
    l0=$(( $(loglines) + 1 )); g0=$(cg_cpu git); a0=$(cg_cpu agents); py0=$(proc_cpu "$git_pid"); ti=$(now)
    while [ "$(calc %d "(($(now) - $ti) < $INTERVAL_S)")" = 1 ]; do sleep 0.2; done
    read -r ireq ibytes < <(fpy bytes "$work/git.log" "$l0")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$depth" "$(calc %.2f "$(cg_cpu git) - $g0")" "$(calc %.2f "$(proc_cpu "$git_pid") - $py0")" \
      "$(calc %.1f "100 * ($(cg_cpu git) - $g0) / ($(now) - $ti)")" "$ibytes" "$ireq" "$(calc %.1f "1000 * ($(cg_cpu agents) - $a0) / $n")" >> "$idle"
  fi
  stop_agents; stop_pid "$sub_pid"; sub_pid=""
  rm -rf "$nodes_dir"
  # label n mode depth med p99 max git_cpu/push py_cpu/push git_avg% bytes/push req/push agents_cpu/push/node rss_med rss_max hwm_max broker/push registry/push burst_cpu
  set -- $lat $rss
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$n" "$mode" "$depth" "$1" "$2" "$3" \
    "$(calc %.2f "$gcpu / $PUSHES")" "$(calc %.2f "$pycpu / $PUSHES")" "$(calc %.1f "100 * $gcpu / $wall")" \
    "$(calc %d "$bytes / $PUSHES")" "$(calc %d "$req / $PUSHES")" "$(calc %.1f "1000 * $acpu / $PUSHES / $n")" \
    "$4" "$5" "$6" "$(calc %.2f "$mcpu / $PUSHES")" "$(calc %.2f "$rcpu / $PUSHES")" \
    "$(calc %.1f "$bw / $PUSHES"):$(calc %.2f "$bg / $PUSHES"):$(calc %.2f "$ba / $PUSHES")" "$(calc %.1f "100 * $acpu / $wall")" >> "$results"
  last_rss_max=$5
  # Targets.
  local max=$3 avg
  avg=$(calc %.1f "100 * $gcpu / $wall")
  limit=""
  if [ "$max" = inf ]; then
    limit="$label: not every node reported a push (waited $wait_s s)"
  elif [ "$mode" = mqtt ] && [ "$(calc %d "($max > 5)")" = 1 ]; then
    limit="$label: a node reported a push after $max s with MQTT (target 5 s)"
  elif [ "$mode" = poll ] && [ "$(calc %d "($max > $INTERVAL_S * 1.1 + 2)")" = 1 ]; then
    limit="$label: a node reported a push after $max s by polling (target $(calc %.0f "$INTERVAL_S * 1.1 + 2") s)"
  elif [ "$(calc %d "($avg >= 50)")" = 1 ]; then
    limit="$label: the Git server used $avg % of a core on average (target under 50 %)"
  fi
  # What the push windows cost the host: a latency target that failed with the host's
  # CPUs busy is the simulation's limit (every agent shares them), not the Git server's.
  [ -z "$limit" ] || limit="$limit; in the push windows ($(calc %.1f "$bw / $PUSHES") s each on average) the Git server used $(calc %.2f "$bg / $PUSHES") s of CPU and the agents $(calc %.2f "$ba / $PUSHES") s: $(calc %.0f "100 * ($bg + $ba) / $bw / $(nproc)") % of the host's $(nproc) CPUs"
  verdict[$label]=$limit
  [ -z "$limit" ] || { say "target failed: $limit"; return 1; }
}

run_size() { # run_size N: every phase of --phases at N nodes; 1 when a target failed
  local n=$1 failed=0 p
  for p in ${PHASES//,/ }; do
    case "$p" in
      poll) phase "poll-$n" "$n" poll 1 || failed=1 ;;
      mqtt) phase "mqtt-$n" "$n" mqtt 1 || failed=1 ;;
      mqtt-full) phase "mqttfull-$n" "$n" mqtt 0 || failed=1 ;;
      poll-full) phase "pollfull-$n" "$n" poll 0 || failed=1 ;;
      *) echo "unknown phase $p" >&2; exit 2 ;;
    esac
  done
  return "$failed"
}

declare -A verdict
limit="" max_lines=()
started=$(now)
load_before=$(cut -d" " -f1-3 /proc/loadavg)
run_size "$NODES" || true
mem_ok() { # mem_ok N: N agents fit in 90 % of the memory available (their RSS so far, +15 %)
  local avail
  avail=$(awk '$1 == "MemAvailable:" { print int($2 / 1024) }' /proc/meminfo)
  [ "$(calc %d "($last_rss_max * $1 * 1.15 > $avail * 0.9)")" = 0 ] && return 0
  limit="memory: $1 agents at up to $last_rss_max MiB each would not fit in $avail MiB available"
  return 1
}
# --max: for polling and for notifications (depth 1) apart, from N: doubling while the
# targets hold, else halving until they do.
if [ "$MAX" = 1 ]; then
  for mode in poll mqtt; do
    case ",$PHASES," in *",$mode,"*) ;; *) continue ;; esac
    best="" fail_n="" why="" n=$NODES
    if [ -z "${verdict[$mode-$NODES]-}" ]; then
      best=$NODES
      while :; do
        n=$((n * 2))
        if [ "$n" -gt "$MAX_NODES" ]; then why="--max-nodes $MAX_NODES reached"; break; fi
        mem_ok "$n" || { why=$limit; break; }
        if phase "$mode-$n" "$n" "$mode" 1; then best=$n; else fail_n=$n; why=${verdict[$mode-$n]-}; break; fi
      done
    else
      fail_n=$NODES why=${verdict[$mode-$NODES]-}
      while [ $((n / 2)) -ge 5 ]; do
        n=$((n / 2))
        if phase "$mode-$n" "$n" "$mode" 1; then best=$n; break; else fail_n=$n; why=${verdict[$mode-$n]-}; fi
      done
    fi
    # One step between the largest N that held and the smallest that failed.
    if [ -n "$best" ] && [ -n "$fail_n" ] && [ $((fail_n - best)) -ge 20 ]; then
      n=$(( (best + fail_n) / 2 ))
      if mem_ok "$n"; then
        if phase "$mode-$n" "$n" "$mode" 1; then best=$n; else fail_n=$n; why=${verdict[$mode-$n]-}; fi
      fi
    fi
    max_lines+=("$([ "$mode" = poll ] && echo "Polling every $INTERVAL" || echo "MQTT notifications (spread $SPREAD)"): largest N within the targets ${best:-none (below 10)}${fail_n:+; N = $fail_n failed} ($why).")
  done
fi

# --- Tables ---------------------------------------------------------------------------
{
  echo
  echo "### Fleet simulation: $(date -u +%FT%TZ), $(nproc) CPUs, berth target/$profile, status from $([ "$STATUS" = mqtt ] && echo "MQTT status messages" || echo "the agents' agent.json (fallback, read every 0.2 s)")"
  echo
  echo "Pushes every $INTERVAL ($PUSHES per phase); polling interval $INTERVAL (±10 % jitter); MQTT phases: interval $MQTT_INTERVAL, spread $SPREAD; repository of $HISTORY commits before the pushes; $(git --version); Git server: tests/support/git-http-server.py (Python) running \`git http-backend\` per request."
  echo
  echo "| N | fetch | depth | push → node reported: median / p99 / max (s) | Git server CPU per push period (s), of which Python front end | Git server average (% of a core) | bytes sent per push period | requests per push period | push window (s): Git server / agents CPU in it (s) | agents' CPU per node per push period (ms) | all agents (% of a core) | agent RSS median / max (MiB), max peak | broker / registry CPU per period (s) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  while IFS=$'\t' read -r label n mode depth med p99 mx gcpu pycpu gavg bytes req acpu rmed rmax hwm mcpu rcpu burst aavg; do
    echo "| $n | $([ "$mode" = poll ] && echo "polling $INTERVAL" || echo "MQTT, spread $SPREAD") | $depth | $med / $p99 / $mx | $gcpu ($pycpu) | $gavg | $(calc %.1f "$bytes / 1024") KiB | $req | ${burst%%:*}: $(echo "$burst" | cut -d: -f2) / ${burst##*:} | $acpu | $aavg | $rmed / $rmax, $hwm | $mcpu / $rcpu |"
  done < "$results"
  echo
  if [ -s "$idle" ]; then
    echo "Polling, one interval ($INTERVAL) without a push:"
    echo
    echo "| N | depth | Git server CPU (s), of which Python front end | Git server average (% of a core) | bytes sent | requests | agents' CPU per node (ms) |"
    echo "|---|---|---|---|---|---|---|"
    while IFS=$'\t' read -r n depth gcpu pycpu gavg bytes req acpu; do
      echo "| $n | $depth | $gcpu ($pycpu) | $gavg | $(calc %.1f "$bytes / 1024") KiB | $req | $acpu |"
    done < "$idle"
    echo
  fi
  echo "First clone (a fresh state directory per agent):"
  echo
  echo "| N | depth | agents started | all nodes reported (s) | Git server CPU (s) | bytes sent | per node | requests | agents' CPU (s) |"
  echo "|---|---|---|---|---|---|---|---|---|"
  while IFS=$'\t' read -r label n depth t gcpu bytes req acpu got kind; do
    echo "| $n | $depth | $kind | $t$([ "$got" = "$n" ] || echo " ($got of $n)") | $gcpu | $(calc %.1f "$bytes / 1048576") MiB | $(calc %.1f "$bytes / $n / 1024") KiB | $req | $acpu |"
  done < "$clones"
  echo
  for l in "${max_lines[@]}"; do echo "$l"; done
  printf '%s\n' "${verdict[@]}" | grep -q . || echo "Every target met."
  for k in $(printf '%s\n' "${!verdict[@]}" | sort); do
    [ -z "${verdict[$k]}" ] || echo "Target failed: ${verdict[$k]}."
  done
  echo "Run took $(calc %.0f "$(now) - $started") s; load average $load_before before, $(cut -d" " -f1-3 /proc/loadavg) after (other work on this host shares its CPUs)."
} | tee "$work/table.md"
