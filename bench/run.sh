#!/usr/bin/env bash
# The benchmark command: every figure of berth next to the tools it replaces, measured in
# one run on this host, printed as one Markdown table (ratios from the same run).
#
#   bash bench/run.sh            # full sizes, release build (cargo build --release); ~15 min
#   bash bench/run.sh --quick    # small sizes, no build: the release binaries if present,
#                                # else target/debug (CI's smoke test); < 3 min
#
# Run as root. What it measures:
#   - push -> running through the agent: local watch (file://), webhook (GitHub-signed
#     POST), polling (source.interval POLL); median and max of K updates each (from the
#     start of `git push` to the new container's process in /proc, seen every 10 ms);
#   - creating N containers: `berth apply` in order (runtime.parallel = 1) and in parallel
#     (the default), against a shell loop of raw `runc run -d` + CNI ADD with berth's own
#     conflist (bench/cni_add.py, run as libcni runs it), `podman run -d`, and `docker run
#     -d` on a temporary dockerd (its own data root, a user bridge network, no iptables);
#   - removing them: `berth apply` of an empty tree, against `runc delete -f` + CNI DEL,
#     `podman rm -f`, `docker rm -f`;
#   - no-op passes (`berth apply` of an unchanged tree) over M1 and M2 real, running
#     containers (median of 5);
#   - the agent's idle RSS/PSS and CPU converged on IDLE_N containers over IDLE_SECS; one
#     shim's RSS and PSS against podman's conmon and docker's containerd-shim-runc-v2;
#   - `berth image pull` (download, verify, unpack) of a multi-layer image against
#     `skopeo copy` + `umoci unpack` (median of RUNS);
#   - `berth validate` and `berth audit` of a generated tree of SPEC containers (median of 5).
# podman and docker columns are filled when the tools are installed (dockerd: Debian's
# docker.io), else the table says why they are empty. A step that fails fails the run
# (non-zero); a trap removes every container, network, registry, daemon and temp dir.
#
# Sizes can be set from the environment: N M1 M2 K POLL IDLE_N IDLE_SECS SPEC RUNS.
# BENCH_PROFILE=debug (or release) measures target/<profile> as it is, without a build.
# Needs (Debian): runc containernetworking-plugins docker-registry umoci skopeo
# busybox-static git iproute2 iptables python3 curl openssl; podman and docker.io for
# their columns.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
case "${1:-}" in
  --quick) QUICK=1 ;;
  "") ;;
  *) echo "usage: bash bench/run.sh [--quick]" >&2; exit 2 ;;
esac
if [ "$QUICK" = 1 ]; then
  N=${N:-5} M1=${M1:-20} M2=${M2:-50} K=${K:-2} POLL=${POLL:-1s} IDLE_N=${IDLE_N:-5}
  IDLE_SECS=${IDLE_SECS:-5} SPEC=${SPEC:-100} RUNS=${RUNS:-1} PULL_MB=${PULL_MB:-20} NOOP_RUNS=3
else
  N=${N:-20} M1=${M1:-200} M2=${M2:-1000} K=${K:-5} POLL=${POLL:-2s} IDLE_N=${IDLE_N:-20}
  IDLE_SECS=${IDLE_SECS:-60} SPEC=${SPEC:-1000} RUNS=${RUNS:-3} PULL_MB=${PULL_MB:-190} NOOP_RUNS=5
fi
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 3; }
for tool in runc docker-registry umoci skopeo git python3 curl openssl ip unshare /usr/lib/cni/bridge /bin/busybox; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 3; }
done

# The binaries: the full run builds the release; --quick builds nothing.
if [ -n "${BENCH_PROFILE:-}" ]; then
  profile=$BENCH_PROFILE # measure target/$BENCH_PROFILE as it is (no build)
elif [ "$QUICK" = 0 ]; then
  cargo build --release -q --bin berth --bin berth-agentd --bin berth-shim
  profile=release
elif [ -x target/release/berth ] && [ -x target/release/berth-agentd ] && [ -x target/release/berth-shim ]; then
  profile=release
else
  profile=debug
fi
BERTH=$PWD/target/$profile/berth
export BERTH_SHIM_BIN=$PWD/target/$profile/berth-shim
for b in "$BERTH" "$BERTH_SHIM_BIN" "$PWD/target/$profile/berth-agentd"; do
  [ -x "$b" ] || { echo "missing $b (cargo build --bin berth --bin berth-agentd --bin berth-shim)" >&2; exit 3; }
done

work=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
rows="$work/rows.tsv"; : > "$rows"
notes="$work/notes.txt"; : > "$notes"
podman_bridge_new="" podman_ipam_new=""
ip link show cni-podman0 >/dev/null 2>&1 || podman_bridge_new=1
[ -e /var/lib/cni/networks/podman ] || podman_ipam_new=1
reg_pid="" http_pid="" agent_pid="" dockerd_pid="" nodes=() raw_n=0
P="podman --root $work/podman/root --runroot $work/podman/run --tmpdir $work/podman/tmp --events-backend file --cgroup-manager cgroupfs --runtime runc"
D="docker -H unix://$work/docker/docker.sock"
stop_agent() {
  [ -n "$agent_pid" ] || return 0
  kill -TERM "$agent_pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$agent_pid" 2>/dev/null || true
  wait "$agent_pid" 2>/dev/null || true
  agent_pid=""
}
raw_remove() { # raw_remove I: the raw container I and its network namespace
  runc --root "$work/raw/runc" delete -f "raw$1" >/dev/null 2>&1 || true
  if [ -e "$work/raw/netns/raw$1" ]; then
    CNI_COMMAND=DEL /usr/bin/python3 bench/cni_add.py "$work/raw/net.conflist" "raw$1" "$work/raw/netns/raw$1" portmap >/dev/null 2>&1 || true
    umount "$work/raw/netns/raw$1" 2>/dev/null || true
    rm -f "$work/raw/netns/raw$1"
  fi
}
cleanup() {
  local rc=$?
  set +e
  stop_agent
  mkdir -p "$work/empty"
  for node in "${nodes[@]}"; do "$BERTH" --config "$node" apply "$work/empty" >/dev/null 2>&1; done
  for i in $(seq "$raw_n"); do raw_remove "$i"; done
  ip link del bthrawbench 2>/dev/null
  # podman's default network (CNI backend) leaves its bridge and IPAM directory behind.
  [ -n "$podman_bridge_new" ] && ip link del cni-podman0 2>/dev/null
  [ -n "$podman_ipam_new" ] && rm -rf /var/lib/cni/networks/podman
  if [ -d "$work/podman" ]; then $P rm -f -t 0 -a >/dev/null 2>&1; $P system reset -f >/dev/null 2>&1; fi
  if [ -n "$dockerd_pid" ]; then
    # shellcheck disable=SC2046
    $D rm -f $($D ps -aq 2>/dev/null) >/dev/null 2>&1
    $D network rm bthdock >/dev/null 2>&1
    kill -TERM "$dockerd_pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$dockerd_pid" 2>/dev/null
    umount -R "$work/docker" 2>/dev/null
  fi
  [ -n "$http_pid" ] && kill "$http_pid" 2>/dev/null
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null
  rm -rf "$work"
  [ "$rc" = 0 ] || echo "bench/run.sh: FAILED (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 }'; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; } # calc FORMAT EXPR
median() { python3 -c 'import statistics, sys; print(round(statistics.median(float(x) for x in sys.argv[1:])))' "$@"; }
# row METRIC UNIT BERTH RUNC PODMAN DOCKER: one line of the table ("" = not measured).
row() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$rows"; }
note() { echo "$*" >> "$notes"; echo "note: $*" >&2; }
step() { echo "== $(date +%T) $*" >&2; }
kb() { awk -v k="$1:" '$1 == k {print $2}' "$2"; }
start_time=$(now)
load_before=$(cut -d" " -f1-3 /proc/loadavg)

# --- The image: busybox in a loopback registry (bench/lib.sh) -----------------------
step "image and registry"
. bench/lib.sh
bench_image >/dev/null
cat > "$work/node.toml" <<TOML
[node]
name = "bench"
[runtime]
oci_runtime = "runc"
state_dir = "$work/state"
run_dir = "$work/run"
shim_path = "$BERTH_SHIM_BIN"
[registries."127.0.0.1:$port"]
insecure = true
TOML
sed 's/^\[runtime\]$/[runtime]\nparallel = 1/' "$work/node.toml" > "$work/node-seq.toml"
nodes+=("$work/node.toml")
"$BERTH" --config "$work/node.toml" image pull "$image" >/dev/null
mkdir -p "$work/empty"
# The runtime probe runs once per boot (cached in the run dir): an empty apply takes it
# out of the figures.
"$BERTH" --config "$work/node.toml" apply "$work/empty" >/dev/null

# --- Spec load, validate and audit of SPEC containers --------------------------------
step "validate and audit of $SPEC containers"
python3 - "$work/spec-tree" "$SPEC" "$image" <<'PY'
import os, sys
d, n, img = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.makedirs(d)
with open(os.path.join(d, "net.toml"), "w") as f:
    f.write('[network.front]\nsubnet = "10.252.64.0/22"\n[network.back]\nsubnet = "10.252.68.0/22"\n')
for start in range(0, n, 100):
    with open(os.path.join(d, "apps%03d.toml" % (start // 100)), "w") as f:
        for i in range(start, min(n, start + 100)):
            dep = 'depends_on = ["c%d"]\n' % (i - 1) if i % 10 else ""
            f.write('[container.c%d]\nimage = "%s"\nuser = "10001:10001"\n'
                    'command = ["/bin/httpd", "-f", "-p", "8080", "-h", "/srv"]\n'
                    'networks = ["front", "back"]\nports = ["127.0.0.1:%d:8080"]\n'
                    'read_only = true\ncap_drop = ["ALL"]\n'
                    'env = { ROLE = "web", INDEX = "%d" }\nlabels = { tier = "t%d" }\n'
                    'resources = { memory = "16MiB", pids = 16 }\n%s'
                    % (i, img, 20000 + i, i, i % 7, dep))
PY
for cmd in validate audit; do
  times=()
  for _ in 1 2 3 4 5; do
    t0=$(now)
    code=0; "$BERTH" --config "$work/node.toml" "$cmd" "$work/spec-tree" > "$work/$cmd.out" 2>&1 || code=$?
    t1=$(now)
    # audit exits 1 on findings; anything else is a failure.
    if [ "$code" != 0 ] && { [ "$cmd" = validate ] || [ "$code" != 1 ]; }; then
      echo "berth $cmd of the generated tree failed (exit $code):" >&2; tail -20 "$work/$cmd.out" >&2; exit 1
    fi
    times+=("$(ms "$t0" "$t1")")
  done
  row "\`berth $cmd\`, $SPEC containers (load + $cmd), median of 5" ms "$(median "${times[@]}")" "" "" ""
done

# --- Creating and removing N containers ----------------------------------------------
step "berth apply of $N containers"
bench_spec "$work/spec$N" "$N"
t0=$(now); "$BERTH" --config "$work/node-seq.toml" apply "$work/spec$N" >/dev/null; t1=$(now)
b_seq=$(ms "$t0" "$t1")
t0=$(now); "$BERTH" --config "$work/node-seq.toml" apply "$work/empty" >/dev/null; t1=$(now)
b_rm_seq=$(ms "$t0" "$t1")
t0=$(now); "$BERTH" --config "$work/node.toml" apply "$work/spec$N" >/dev/null; t1=$(now)
b_par=$(ms "$t0" "$t1")
running=$("$BERTH" --config "$work/node.toml" ps --format json | python3 -c 'import json,sys; print(sum(c["state"] == "running" for c in json.load(sys.stdin)))')
[ "$running" = "$N" ] || { echo "berth apply: $running of $N containers running" >&2; exit 1; }
shim=$(pgrep -f "berth-shim --id app1-" | head -1 || true)
[ -n "$shim" ] || { echo "no berth-shim process for app1" >&2; exit 1; }
# berth's conflist of the bench network, for the raw loop (removed with the network).
cp "$(find "$work/state/cni" -name '*.conflist' | sort | head -1)" "$work/bench.conflist"
shim_rss=$(kb Rss "/proc/$shim/smaps_rollup"); shim_pss=$(kb Pss "/proc/$shim/smaps_rollup")
t0=$(now); "$BERTH" --config "$work/node.toml" apply "$work/empty" >/dev/null; t1=$(now)
b_rm_par=$(ms "$t0" "$t1")

step "raw runc + CNI, $N containers"
mkdir -p "$work/raw/netns"
rootfs="$work/raw/rootfs"; mkdir -p "$rootfs"; cp -a "$work/bundle/rootfs/." "$rootfs/"
# berth's conflist for the bench network, renamed (bridge, CNI name, subnet, IPAM dir).
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
src = json.load(open(work + "/bench.conflist"))
text = json.dumps(src).replace(src["name"], "bthrawbench").replace("10.252.0.0/22", "10.253.0.0/22").replace("10.252.0.1", "10.253.0.1")
conf = json.loads(text)
for p in conf["plugins"]:
    if p.get("type") == "bridge":
        p["ipam"]["dataDir"] = work + "/raw/ipam"
json.dump(conf, open(work + "/raw/net.conflist", "w"))
PY
for i in $(seq "$N"); do
  b="$work/raw/b$i"; mkdir -p "$b"
  (cd "$b" && runc spec >/dev/null)
  python3 - "$b/config.json" "$rootfs" "$work/raw/netns/raw$i" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["root"] = {"path": sys.argv[2], "readonly": True}
c["process"]["args"] = ["/bin/httpd", "-f", "-p", "8080", "-h", "/srv"]
c["process"]["terminal"] = False
c["process"]["user"] = {"uid": 10001, "gid": 10001}
c["linux"]["namespaces"] = [n if n["type"] != "network" else {"type": "network", "path": sys.argv[3]} for n in c["linux"]["namespaces"]]
c["linux"]["resources"] = {"memory": {"limit": 16777216}, "pids": {"limit": 16}}
json.dump(c, open(sys.argv[1], "w"))
PY
done
t0=$(now)
for i in $(seq "$N"); do
  raw_n=$i
  ns="$work/raw/netns/raw$i"; touch "$ns"
  unshare --net="$ns" true
  /usr/bin/python3 bench/cni_add.py "$work/raw/net.conflist" "raw$i" "$ns" portmap
  runc --root "$work/raw/runc" run -d --bundle "$work/raw/b$i" "raw$i" >/dev/null 2>&1 </dev/null
done
t1=$(now)
r_run=$(ms "$t0" "$t1")
t0=$(now)
for i in $(seq "$N"); do raw_remove "$i"; done
t1=$(now)
r_rm=$(ms "$t0" "$t1")
raw_n=0
# The raw loop drives CNI from Python: what the interpreter's start costs (twice per
# container: ADD and DEL are one process each), to read the raw figures without it.
t0=$(now); for _ in $(seq "$N"); do /usr/bin/python3 -c 'import json, os, subprocess, sys'; done; t1=$(now)
note "the raw runc + CNI loop drives the CNI plugins from Python (bench/cni_add.py); its interpreter's start costs $(calc %.1f "$(ms "$t0" "$t1") / $N") ms per container per CNI call, included in that column."

# engine_bench CLI PREFIX SHIM IMAGE RM_OPTIONS [RUN OPTIONS…]: `CLI run -d` of N web
# servers named PREFIX1…, then `CLI rm -f RM_OPTIONS` of each; sets e_run and e_rm (ms),
# e_rss and e_pss (KiB) of the first container's SHIM process.
engine_bench() {
  local cli=$1 pre=$2 shim_name=$3 img=$4 rm_opts=$5 t0 t1 cid pid
  shift 5
  t0=$(now)
  for i in $(seq "$N"); do
    $cli run -d --name "$pre$i" "$@" --user 10001:10001 --read-only --memory 16m --pids-limit 16 \
      "$img" /bin/httpd -f -p 8080 -h /srv >/dev/null
  done
  t1=$(now)
  e_run=$(ms "$t0" "$t1")
  cid=$($cli inspect -f '{{.Id}}' "${pre}1")
  pid=$(pgrep -f "$shim_name.*$cid" | head -1 || true)
  e_rss="" e_pss=""
  if [ -n "$pid" ]; then e_rss=$(kb Rss "/proc/$pid/smaps_rollup"); e_pss=$(kb Pss "/proc/$pid/smaps_rollup"); fi
  t0=$(now)
  # shellcheck disable=SC2086
  for i in $(seq "$N"); do $cli rm -f $rm_opts "$pre$i" >/dev/null; done
  t1=$(now)
  e_rm=$(ms "$t0" "$t1")
}

p_run="" p_rm="" conmon_rss="" conmon_pss=""
if command -v podman >/dev/null; then
  step "podman, $N containers"
  mkdir -p "$work/podman"
  skopeo copy -q "oci:$work/oci:bb" "containers-storage:[overlay@$work/podman/root+$work/podman/run]localhost/bb:latest"
  engine_bench "$P" pod conmon localhost/bb:latest "-t 0" --ulimit nofile=20000:20000 --ulimit nproc=32768:32768
  p_run=$e_run p_rm=$e_rm conmon_rss=$e_rss conmon_pss=$e_pss
  note "podman $(podman --version | awk '{print $3}'): \`podman run -d\` / \`podman rm -f -t 0\` in a shell loop, its own storage root, its default bridge network, runc."
else
  note "podman: not installed (apt-get install podman): its column is empty."
fi

d_run="" d_rm="" dshim_rss="" dshim_pss=""
if command -v dockerd >/dev/null && command -v docker >/dev/null; then
  step "dockerd in a temporary root, $N containers"
  mkdir -p "$work/docker/data" "$work/docker/exec"
  dockerd --data-root "$work/docker/data" --exec-root "$work/docker/exec" --pidfile "$work/docker/dockerd.pid" \
    -H "unix://$work/docker/docker.sock" --bridge=none --iptables=false --ip-masq=false --storage-driver overlay2 \
    --cgroup-parent /berth-bench-docker > "$work/docker/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 300); do $D version >/dev/null 2>&1 && break; kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
  if $D version >/dev/null 2>&1 && $D network create --subnet 10.254.0.0/22 -o com.docker.network.bridge.name=bthdock bthdock >/dev/null \
    && skopeo copy -q "oci:$work/oci:bb" "docker-archive:$work/docker/bb.tar:bb:latest" && $D load -q -i "$work/docker/bb.tar" >/dev/null; then
    engine_bench "$D" dock containerd-shim-runc-v2 bb:latest "" --network bthdock
    d_run=$e_run d_rm=$e_rm dshim_rss=$e_rss dshim_pss=$e_pss
    note "docker: dockerd $(dockerd --version | awk '{print $3}' | tr -d ,) started for this run in a temporary root (no iptables, a user bridge network); \`docker run -d\` / \`docker rm -f\` in a shell loop."
  else
    note "docker: the temporary dockerd did not start or could not load the image: its column is empty ($(tail -1 "$work/docker/dockerd.log" | cut -c1-160))."
  fi
else
  note "docker: dockerd is not installed (apt-get install docker.io): its column is empty."
fi

row "create $N containers, in order (parallel = 1)" ms "$b_seq" "$r_run" "$p_run" "$d_run"
row "create $N containers, in parallel (berth's default parallel = 4; others in order)" ms "$b_par" "$r_run" "$p_run" "$d_run"
row "remove $N containers, in order" ms "$b_rm_seq" "$r_rm" "$p_rm" "$d_rm"
row "remove $N containers, in parallel (others in order)" ms "$b_rm_par" "$r_rm" "$p_rm" "$d_rm"
row "per-container shim RSS (berth-shim / - / conmon / containerd-shim-runc-v2)" KiB "$shim_rss" "" "$conmon_rss" "$dshim_rss"
row "per-container shim PSS (idem)" KiB "$shim_pss" "" "$conmon_pss" "$dshim_pss"

# --- No-op passes over M1 and M2 running containers ------------------------------------
for m in "$M1" "$M2"; do
  step "no-op apply over $m containers"
  rm -rf "$work/spec-noop"; bench_spec "$work/spec-noop" "$m"
  t0=$(now); "$BERTH" --config "$work/node.toml" apply "$work/spec-noop" >/dev/null; t1=$(now)
  up=$(ms "$t0" "$t1")
  times=()
  for _ in $(seq "$NOOP_RUNS"); do
    t0=$(now); "$BERTH" --config "$work/node.toml" apply "$work/spec-noop" > "$work/noop.out"; t1=$(now)
    times+=("$(ms "$t0" "$t1")")
  done
  if grep -Eq 'create|replace|remove' "$work/noop.out"; then
    echo "the no-op apply over $m containers planned work:" >&2; head -20 "$work/noop.out" >&2; exit 1
  fi
  running=$("$BERTH" --config "$work/node.toml" ps --format json | python3 -c 'import json,sys; print(sum(c["state"] == "running" for c in json.load(sys.stdin)))')
  [ "$running" = "$m" ] || { echo "no-op over $m: only $running running" >&2; exit 1; }
  row "no-op \`berth apply\` over $m running containers, median of $NOOP_RUNS" ms "$(median "${times[@]}")" "" "" ""
  t0=$(now); "$BERTH" --config "$work/node.toml" apply "$work/empty" >/dev/null; t1=$(now)
  note "setting up the $m containers of the no-op pass took $up ms (\`berth apply\`, parallel), removing them $(ms "$t0" "$t1") ms."
done

# --- Pull and unpack against skopeo + umoci --------------------------------------------
step "image pull of a ~${PULL_MB} MB image"
layout="$work/pull/layout"; mkdir -p "$work/pull"
umoci init --layout "$layout" && umoci new --image "$layout:bench"
i=0
# Layers of real files (libraries and shared data, so compression is realistic).
if [ "$QUICK" = 1 ]; then srcs=(/usr/lib/python3.11 /etc); else srcs=(/usr/lib/python3.11 /usr/share/doc /usr/share/locale /usr/lib/gcc /usr/libexec /usr/bin); fi
for src in "${srcs[@]}"; do
  i=$((i + 1))
  umoci unpack --image "$layout:bench" "$work/pull/bundle" >/dev/null
  mkdir -p "$work/pull/bundle/rootfs/layer$i"
  cp -a "$src" "$work/pull/bundle/rootfs/layer$i/" 2>/dev/null || true
  umoci repack --image "$layout:bench" "$work/pull/bundle" >/dev/null
  rm -rf "$work/pull/bundle"
  [ "$(du -sb "$layout" | cut -f1)" -gt $((PULL_MB * 1000 * 1000)) ] && break
done
skopeo copy -q --dest-tls-verify=false "oci:$layout:bench" "docker://127.0.0.1:$port/bench/image:v1"
pull_mb=$(( $(du -sb "$layout/blobs" | cut -f1) / 1000000 ))
ref="127.0.0.1:$port/bench/image:v1"
b_pull=() s_pull=() pull_rss=()
for _ in $(seq "$RUNS"); do
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now)
  # The peak RSS of the pull (its maxrss as a child, in KiB).
  python3 -c 'import resource, subprocess, sys; subprocess.run(sys.argv[2:], check=True, stdout=subprocess.DEVNULL); open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))' \
    "$work/pull/rss" "$BERTH" --config "$work/node.toml" --state-dir "$work/pull/state" image pull "$ref" >/dev/null
  sync
  t1=$(now)
  b_pull+=("$(ms "$t0" "$t1")"); pull_rss+=("$(cat "$work/pull/rss")")
  rm -rf "$work/pull/state"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now)
  skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/pull/out:bench"
  umoci unpack --image "$work/pull/out:bench" "$work/pull/out-bundle" >/dev/null
  sync
  t1=$(now)
  s_pull+=("$(ms "$t0" "$t1")")
  rm -rf "$work/pull/out" "$work/pull/out-bundle"
done
row "pull + unpack of an image of $i layers, $pull_mb MB compressed, median of $RUNS (runc+CNI column: skopeo copy + umoci unpack)" ms \
  "$(median "${b_pull[@]}")" "$(median "${s_pull[@]}")" "" ""
row "peak RSS of \`berth image pull\`" KiB "$(median "${pull_rss[@]}")" "" "" ""
rm -rf "$work/pull"

# --- The agent: push -> running, three ways --------------------------------------------
step "agent: push to running, $K updates each through watch, webhook, poll"
git init -q --bare -b main "$work/git/repo.git"
git init -q -b main "$work/clone"
gitc() { git -C "$work/clone" -c user.name=bench -c user.email=bench@berth.example -c commit.gpgsign=false "$@"; }
webspec() { # webspec N: the container `web` running `sleep N`
  mkdir -p "$work/clone/fleet"
  cat > "$work/clone/fleet/web.toml" <<TOML
[container.web]
image = "$image"
user = "10001:10001"
command = ["sleep", "$1"]
read_only = true
cap_drop = ["ALL"]
resources = { memory = "16MiB", pids = 16 }
stop_signal = "SIGKILL"
TOML
}
# A number of this run's own (from the clock), so that no other process runs `sleep n`.
n=$(( 1000000000 + $(date +%s) % 1000000 * 100 ))
webspec "$n"
gitc add -A; gitc commit -q -m web; gitc push -q "$work/git/repo.git" HEAD:refs/heads/main
python3 tests/support/git-http-server.py --root "$work/git" --port 0 > "$work/http.port" 2> "$work/http.log" &
http_pid=$!
for _ in $(seq 100); do [ -s "$work/http.port" ] && break; sleep 0.05; done
http_port=$(head -1 "$work/http.port")
[ -n "$http_port" ] || { echo "the git HTTP server did not start:" >&2; cat "$work/http.log" >&2; exit 1; }
hook_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
openssl rand -hex 32 > "$work/webhook.secret"; chmod 600 "$work/webhook.secret"
agent_config() { # agent_config NAME URL INTERVAL RESYNC [EXTRA SOURCE KEYS]: $work/NAME/node.toml
  mkdir -p "$work/$1"
  cat > "$work/$1/node.toml" <<TOML
[node]
name = "bench-$1"
[policy]
mode = "audit"
[runtime]
oci_runtime = "runc"
state_dir = "$work/$1/state"
run_dir = "$work/$1/run"
resync = "$4"
shim_path = "$BERTH_SHIM_BIN"
default_subnet = "10.252.28.0/24"
[registries."127.0.0.1:$port"]
insecure = true
[source]
url = "$2"
branch = "main"
path = "fleet"
interval = "$3"
${5:-}
TOML
  nodes+=("$work/$1/node.toml")
}
converged() { # converged DIR [COMMIT]: the agent's last pass converged (on COMMIT)
  python3 - "$1/state/state/agent.json" "${2:-}" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(1)
p = s.get("last_pass") or {}
sys.exit(0 if p.get("result") == "converged" and sys.argv[2] in ("", p.get("revision")) else 1)
PY
}
wait_converged() { # wait_converged DIR [COMMIT]
  for _ in $(seq 1200); do
    converged "$@" && return 0
    kill -0 "$agent_pid" 2>/dev/null || { echo "the agent ended:" >&2; tail -30 "$1/agent.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "not converged after 120 s:" >&2; tail -50 "$1/agent.log" >&2; exit 1
}
running_after() { # running_after N T0: ms from T0 until a process runs `sleep N` (120 s at most)
  python3 - "$1" "$2" <<'PY'
import os, sys, time
want = b"sleep\0" + sys.argv[1].encode() + b"\0"
t0 = float(sys.argv[2])
def up():
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                with open(e.path + "/cmdline", "rb") as f:
                    if f.read() == want:
                        return True
            except OSError:
                pass
    return False
while not up():
    if time.time() - t0 > 120:
        sys.exit(1)
    time.sleep(0.01)
print(round((time.time() - t0) * 1000))
PY
}
webhook_post() { # webhook_post COMMIT: what GitHub sends for a push to main, signed
  local body sig code
  body="{\"ref\":\"refs/heads/main\",\"after\":\"$1\",\"repository\":{\"full_name\":\"bench/fleet\"}}"
  sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$(cat "$work/webhook.secret")" | sed 's/.*= //')
  code=$(curl -sS -o "$work/webhook.answer" -w '%{http_code}' -X POST "http://127.0.0.1:$hook_port/v1/webhook" \
    -H 'Content-Type: application/json' -H 'X-GitHub-Event: push' -H "X-GitHub-Delivery: bench-$1" \
    -H "X-Hub-Signature-256: sha256=$sig" --data-binary "$body")
  [ "$code" = 202 ] || { echo "webhook answered $code: $(cat "$work/webhook.answer")" >&2; exit 1; }
}
measure_push() { # measure_push MODE: K updates; adds the median and max rows
  local mode=$1 dir="$work/$1" head ms t0 figs=()
  "$BERTH" --config "$dir/node.toml" agent > "$dir/agent.log" 2>&1 &
  agent_pid=$!
  head=$(gitc rev-parse HEAD)
  wait_converged "$dir" "$head"
  if [ "$mode" = webhook ]; then
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$hook_port/" && break; sleep 0.05; done
  fi
  for i in $(seq "$K"); do
    n=$((n + 1)); webspec "$n"
    gitc commit -q -am "web: sleep $n"; head=$(gitc rev-parse HEAD)
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.5, 2.5), 3))')"
    t0=$(now)
    gitc push -q "$work/git/repo.git" HEAD:refs/heads/main
    [ "$mode" = webhook ] && webhook_post "$head"
    ms=$(running_after "$n" "$t0") || { echo "$mode: update $i did not run within 120 s:" >&2; tail -50 "$dir/agent.log" >&2; exit 1; }
    figs+=("$ms")
    wait_converged "$dir" "$head"
  done
  stop_agent
  "$BERTH" --config "$dir/node.toml" apply "$work/empty" >/dev/null
  push_med[$mode]=$(median "${figs[@]}")
  push_max[$mode]=$(printf '%s\n' "${figs[@]}" | sort -n | tail -1)
  push_all[$mode]="${figs[*]}"
}
declare -A push_med push_max push_all
agent_config watch "file://$work/git/repo.git" 5m 5m
agent_config webhook "http://127.0.0.1:$http_port/repo.git" 5m 5m \
  "webhook = { listen = \"127.0.0.1:$hook_port\", secret_file = \"$work/webhook.secret\" }"
agent_config poll "http://127.0.0.1:$http_port/repo.git" "$POLL" 5m
for mode in watch webhook poll; do measure_push "$mode"; done
row "push → running, webhook (http, signed POST; interval 5m): median / max of $K" ms "${push_med[webhook]} / ${push_max[webhook]}" "" "" ""
row "push → running, local watch (file://; interval 5m): median / max of $K" ms "${push_med[watch]} / ${push_max[watch]}" "" "" ""
row "push → running, polling (http, interval $POLL): median / max of $K" ms "${push_med[poll]} / ${push_max[poll]}" "" "" ""
note "push → running, every update (ms): watch ${push_all[watch]}; webhook ${push_all[webhook]}; poll ${push_all[poll]} (from the start of \`git push\` to the new process in /proc, sampled every 10 ms; updates 0.5–2.5 s apart)."
kill "$http_pid" 2>/dev/null || true; http_pid=""

# --- The agent idle on IDLE_N containers ------------------------------------------------
step "agent idle on $IDLE_N containers, ${IDLE_SECS}s"
git init -q --bare -b main "$work/idle-repo.git"
git init -q -b main "$work/idle-clone"
bench_spec "$work/idle-clone/fleet" "$IDLE_N"
git -C "$work/idle-clone" add -A
git -C "$work/idle-clone" -c user.name=bench -c user.email=bench@berth.example -c commit.gpgsign=false commit -q -m idle
git -C "$work/idle-clone" push -q "$work/idle-repo.git" HEAD:refs/heads/main
agent_config idle "file://$work/idle-repo.git" 30s 60s
"$BERTH" --config "$work/idle/node.toml" agent > "$work/idle/agent.log" 2>&1 &
agent_pid=$!
wait_converged "$work/idle"
running=$("$BERTH" --config "$work/idle/node.toml" ps --format json | python3 -c 'import json,sys; print(sum(c["state"] == "running" for c in json.load(sys.stdin)))')
[ "$running" = "$IDLE_N" ] || { echo "agent idle: $running of $IDLE_N running" >&2; exit 1; }
sleep "$([ "$QUICK" = 1 ] && echo 1 || echo 5)"
hz=$(getconf CLK_TCK)
c0=$(awk '{print $14 + $15}' "/proc/$agent_pid/stat"); a0=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$agent_pid/stat"); s0=$(now)
sleep "$IDLE_SECS"
c1=$(awk '{print $14 + $15}' "/proc/$agent_pid/stat"); a1=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$agent_pid/stat"); s1=$(now)
idle_rss=$(kb VmRSS "/proc/$agent_pid/status"); idle_pss=$(kb Pss "/proc/$agent_pid/smaps_rollup")
cpu=$(calc %.3f "($c1 - $c0) * 100 / $hz / ($s1 - $s0)")
cpu_all=$(calc %.3f "($a1 - $a0) * 100 / $hz / ($s1 - $s0)")
stop_agent
"$BERTH" --config "$work/idle/node.toml" apply "$work/empty" >/dev/null
row "agent idle with $IDLE_N containers: RSS (berth-agentd)" KiB "$idle_rss" "" "" ""
row "agent idle with $IDLE_N containers: PSS" KiB "$idle_pss" "" "" ""
row "agent idle CPU over ${IDLE_SECS} s (the agent alone / with its fetch and pass processes)" "% of a core" "$cpu / $cpu_all" "" "" ""
note "the agent idles with source.interval 30s and runtime.resync 60s (the default delays): fetches and passes fall in the window; their child processes are the second CPU figure."

# --- The table -------------------------------------------------------------------------
elapsed=$(calc %.0f "$(now) - $start_time")
mem=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
berth_version=$("$BERTH" --version | awk '{print $2}')
python3 - "$rows" "$notes" <<PY
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
notes = [l.strip() for l in open(sys.argv[2]) if l.strip()]
def num(s):
    try:
        return float(s)
    except ValueError:
        return None
def ratio(b, o):
    b, o = num(b), num(o)
    return "%.2f" % (b / o) if b is not None and o else ""
print("# berth benchmarks")
print()
print("$(date -u '+%Y-%m-%d %H:%M UTC') · $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $mem RAM, kernel $(uname -r) · "
      "berth $berth_version, **$profile** build (target/$profile) · sizes: N=$N, no-op over $M1 and $M2, K=$K updates, "
      "idle $IDLE_N containers for ${IDLE_SECS}s, spec tree $SPEC, pull runs $RUNS$( [ "$QUICK" = 1 ] && echo ' (--quick)') · "
      "load average before/after: $load_before / $(cut -d' ' -f1-3 /proc/loadavg) · wall time ${elapsed}s")
print()
print("| metric | unit | berth | runc + CNI | podman | docker | berth / runc+CNI | berth / podman | berth / docker |")
print("|---|---|--:|--:|--:|--:|--:|--:|--:|")
for m, u, b, r, p, d in rows:
    print(f"| {m} | {u} | {b} | {r} | {p} | {d} | {ratio(b, r)} | {ratio(b, p)} | {ratio(b, d)} |")
print()
for n in notes:
    print(f"- {n}")
PY
