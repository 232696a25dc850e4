#!/usr/bin/env bash
# Benchmark: `berth apply` bringing up N containers (default 20) from pulled images,
# next to a shell loop doing the same with raw `runc run -d` on prepared bundles plus
# CNI ADD with the identical network config, and with `podman run -d` when podman is
# installed; then a no-op apply over M containers (default 200), and the RSS/PSS of
# one berth-shim. Prints the figures and ratios.
#
#   bash bench/apply.sh            # N=20 M=200; run as root
#
# Needs (Debian): runc containernetworking-plugins docker-registry umoci skopeo
# busybox-static iproute2 iptables; podman for the podman column.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20}
M=${M:-200}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 3; }
cargo build --release -q --bin berth --bin berth-shim
BERTH=$PWD/target/release/berth
export BERTH_SHIM_BIN=$PWD/target/release/berth-shim

work=$(mktemp -d /var/tmp/berth-bench-apply.XXXXXX)
reg_pid=""
cleanup() {
  set +e
  [ -f "$work/node.toml" ] && mkdir -p "$work/empty" && "$BERTH" --config "$work/node.toml" apply "$work/empty" >/dev/null 2>&1
  for i in $(seq "$N"); do
    runc --root "$work/raw/runc" delete -f "raw$i" >/dev/null 2>&1
    [ -e "$work/raw/netns/raw$i" ] && CNI_COMMAND=DEL /usr/bin/python3 bench/cni_add.py "$work/raw/net.conflist" "raw$i" "$work/raw/netns/raw$i" portmap >/dev/null 2>&1
    umount "$work/raw/netns/raw$i" 2>/dev/null
  done
  ip link del bthrawbench 2>/dev/null
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
ms() { echo "scale=1; ($2 - $1) * 1000 / 1" | bc; }

# A busybox image in a loopback registry.
. bench/lib.sh
bench_image

cat > "$work/node.toml" <<TOML
[node]
name = "bench"
[runtime]
oci_runtime = "runc"
state_dir = "$work/state"
run_dir = "$work/run"
[registries."127.0.0.1:$port"]
insecure = true
TOML
spec() { bench_spec "$@"; } # spec DIR COUNT
"$BERTH" --config "$work/node.toml" image pull "$image" >/dev/null

mkdir -p "$work/empty"
# The runtime probe runs once per boot (its verdict is cached in the run dir): an empty
# apply takes it out of the figures.
"$BERTH" --config "$work/node.toml" apply "$work/empty" >/dev/null
sed 's/^\[runtime\]$/[runtime]\nparallel = 1/' "$work/node.toml" > "$work/node-seq.toml"
spec "$work/spec$N" "$N"

echo "== berth apply: $N containers from a pulled image, in order (runtime.parallel = 1)"
t0=$(date +%s.%N); "$BERTH" --config "$work/node-seq.toml" apply "$work/spec$N" >/dev/null; t1=$(date +%s.%N)
seq_ms=$(ms "$t0" "$t1")
echo "berth apply:      total ${seq_ms} ms, $(echo "scale=1; $seq_ms / $N" | bc) ms per container"
t0=$(date +%s.%N); "$BERTH" --config "$work/node-seq.toml" apply "$work/empty" >/dev/null; t1=$(date +%s.%N)
echo "berth apply (remove all $N, in order): $(ms "$t0" "$t1") ms"

echo "== berth apply: $N containers from a pulled image, default runtime.parallel (4)"
t0=$(date +%s.%N); "$BERTH" --config "$work/node.toml" apply "$work/spec$N" >/dev/null; t1=$(date +%s.%N)
berth_ms=$(ms "$t0" "$t1")
echo "berth apply:      total ${berth_ms} ms, $(echo "scale=1; $berth_ms / $N" | bc) ms per container"

shim=$(pgrep -f "berth-shim --id app1-" | head -1 || true)
if [ -n "$shim" ]; then
  rss=$(awk '/^Rss:/ {print $2}' "/proc/$shim/smaps_rollup"); pss=$(awk '/^Pss:/ {print $2}' "/proc/$shim/smaps_rollup")
  echo "berth-shim:       RSS ${rss} kB, PSS ${pss} kB (conmon 2.0 MB RSS, containerd shim 13.2 MB)"
fi


echo "== raw runc run -d + CNI ADD (berth's own conflist, run as libcni runs it), $N containers"
mkdir -p "$work/raw/netns"
rootfs="$work/raw/rootfs"; mkdir -p "$rootfs"; cp -a "$work/bundle/rootfs/." "$rootfs/"
# berth's conflist for the bench network, renamed (bridge, CNI name, subnet, IPAM dir)
# so both sets of containers can coexist.
python3 - "$work" <<'PY'
import glob, json, sys
work = sys.argv[1]
src = json.load(open(sorted(glob.glob(work + "/state/cni/*.conflist"))[0]))
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
t0=$(date +%s.%N)
for i in $(seq "$N"); do
  ns="$work/raw/netns/raw$i"; touch "$ns"
  unshare --net="$ns" true
  /usr/bin/python3 bench/cni_add.py "$work/raw/net.conflist" "raw$i" "$ns" portmap
  runc --root "$work/raw/runc" run -d --bundle "$work/raw/b$i" "raw$i" >/dev/null 2>&1 </dev/null
done
t1=$(date +%s.%N)
raw_ms=$(ms "$t0" "$t1")
echo "raw runc + CNI:   total ${raw_ms} ms, $(echo "scale=1; $raw_ms / $N" | bc) ms per container"
# The raw loop drives CNI from Python: measure what the interpreter itself costs per
# container (start + imports), so it can be taken out of the comparison.
t0=$(date +%s.%N)
for i in $(seq "$N"); do /usr/bin/python3 -c 'import json, os, subprocess, sys' ; done
t1=$(date +%s.%N)
py_ms=$(ms "$t0" "$t1")
echo "  (of which the Python CNI driver's own start: $(echo "scale=1; $py_ms / $N" | bc) ms per container)"
over() { # over BERTH_MS: the per-container overhead over raw, with and without the driver's start
  echo "$(echo "scale=1; ($1 - $raw_ms) / $N" | bc) ms; without the driver's start: $(echo "scale=1; ($1 - $raw_ms + $py_ms) / $N" | bc) ms"
}
echo "berth overhead per container over raw runc + CNI, in order:  $(over "$seq_ms")"
echo "berth overhead per container over raw runc + CNI, parallel:  $(over "$berth_ms") (target < 25 ms)"
t0=$(date +%s.%N); "$BERTH" --config "$work/node.toml" apply "$work/empty" >/dev/null; t1=$(date +%s.%N)
echo "berth apply (remove all $N, parallel): $(ms "$t0" "$t1") ms"

if command -v podman >/dev/null; then
  echo "== podman run -d, $N containers"
  P="podman --root $work/podman/root --runroot $work/podman/run --tmpdir $work/podman/tmp --events-backend file --cgroup-manager cgroupfs --runtime runc"
  skopeo copy -q "oci:$work/oci:bb" "containers-storage:[overlay@$work/podman/root+$work/podman/run]localhost/bb:latest"
  t0=$(date +%s.%N)
  for i in $(seq "$N"); do
    $P run -d --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 --user 10001:10001 --read-only --memory 16m --pids-limit 16 \
      localhost/bb:latest /bin/httpd -f -p 8080 -h /srv >/dev/null
  done
  t1=$(date +%s.%N)
  pod_ms=$(ms "$t0" "$t1")
  echo "podman run -d:    total ${pod_ms} ms, $(echo "scale=1; $pod_ms / $N" | bc) ms per container"
  echo "ratio berth / podman: $(echo "scale=2; $berth_ms / $pod_ms" | bc) (in order: $(echo "scale=2; $seq_ms / $pod_ms" | bc))"
  $P rm -f -t 0 -a >/dev/null 2>&1 || true
else
  echo "podman: not installed (apt-get install podman) — column skipped"
fi

echo "== no-op apply over $M containers"
spec "$work/spec$M" "$M"
"$BERTH" --config "$work/node.toml" apply "$work/spec$M" >/dev/null
times=()
for _ in 1 2 3 4 5; do
  t0=$(date +%s.%N); "$BERTH" --config "$work/node.toml" apply "$work/spec$M" > "$work/noop.out"; t1=$(date +%s.%N)
  times+=("$(ms "$t0" "$t1")")
done
grep -q create "$work/noop.out" && echo "warning: the no-op apply planned work"
echo "no-op apply ($M containers): $(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') ms median (runs: ${times[*]}; target < 100 ms)"
