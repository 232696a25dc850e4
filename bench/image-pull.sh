#!/usr/bin/env bash
# Benchmark: pull and unpack a multi-layer image of about 200 MB from a loopback
# registry with berth, and with `skopeo copy` + `umoci unpack`, in the same run.
# Prints both times (median of RUNS), their ratio and berth's peak memory.
#
#   bash bench/image-pull.sh            # RUNS=3 by default
#
# Needs (Debian): docker-registry skopeo umoci time, and a release build of berth.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
for tool in docker-registry skopeo umoci /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install docker-registry skopeo umoci time)" >&2; exit 3; }
done
cargo build --release -q --bin berth
BERTH=$PWD/target/release/berth

work=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
reg_pid=""
cleanup() { [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# A loopback registry with its own storage.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
log:
  level: error
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done

# Five layers of real files (libraries and shared data, so compression is realistic).
echo "building the test image..."
layout="$work/layout"
umoci init --layout "$layout"
umoci new --image "$layout:bench"
i=0
for src in /usr/bin /usr/lib/gcc /usr/share/locale /usr/lib/python3.11 /usr/share/doc /usr/libexec; do
  i=$((i + 1))
  bundle="$work/bundle$i"
  umoci unpack --image "$layout:bench" "$bundle" >/dev/null
  mkdir -p "$bundle/rootfs/layer$i"
  cp -a "$src" "$bundle/rootfs/layer$i/" 2>/dev/null || true
  umoci repack --image "$layout:bench" "$bundle" >/dev/null
  rm -rf "$bundle"
  size=$(du -sb "$layout" | cut -f1)
  [ "$size" -gt $((190 * 1000 * 1000)) ] && break
done
skopeo copy -q --dest-tls-verify=false "oci:$layout:bench" "docker://127.0.0.1:$port/bench/image:v1"
compressed=$(du -sb "$layout/blobs" | cut -f1)
layers=$(umoci stat --image "$layout:bench" --json | python3 -c 'import json,sys; print(len([h for h in json.load(sys.stdin)["history"] if not h.get("empty_layer")]))')
echo "image: $layers layers, $((compressed / 1000000)) MB compressed"

ref="127.0.0.1:$port/bench/image:v1"
printf '' > "$work/node.toml"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
berth_times=(); skopeo_times=(); rss=()
for run in $(seq "$RUNS"); do
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  state="$work/state$run"
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/rss" "$BERTH" --config "$work/node.toml" --state-dir "$state" image pull "$ref" >/dev/null
  end=$(date +%s.%N)
  berth_times+=("$(echo "$end - $start" | bc)")
  rss+=("$(cat "$work/rss")")
  rm -rf "$state"

  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  out="$work/skopeo$run"; mkdir -p "$out"
  start=$(date +%s.%N)
  skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$out/layout:bench"
  umoci unpack --image "$out/layout:bench" "$out/bundle" >/dev/null
  sync
  end=$(date +%s.%N)
  skopeo_times+=("$(echo "$end - $start" | bc)")
  rm -rf "$out"
done
b=$(printf '%s\n' "${berth_times[@]}" | median)
s=$(printf '%s\n' "${skopeo_times[@]}" | median)
m=$(printf '%s\n' "${rss[@]}" | median)
echo "berth image pull (download, verify, unpack to snapshots): median ${b}s  runs: ${berth_times[*]}"
echo "skopeo copy + umoci unpack:                              median ${s}s  runs: ${skopeo_times[*]}"
echo "ratio berth / (skopeo + umoci): $(echo "scale=2; $b / $s" | bc)"
echo "berth peak RSS: $((m / 1024)) MiB (max resident set, median of runs)"
