#!/usr/bin/env bash
# Benchmark: what `berth agent` costs while it idles, converged on N containers
# (default 20) from a `file://` repository and a loopback registry. It samples the
# agent's memory (VmRSS and VmHWM from /proc/PID/status, PSS from smaps_rollup, its
# threads) and its CPU (utime + stime from /proc/PID/stat; with its passes' processes,
# cutime + cstime, too) over SECS seconds (default 60), with the node config's default
# delays (source.interval 30s, runtime.resync 60s: two fetches and a pass fall in the
# window).
#
#   bash bench/agent-idle.sh          # N=20 SECS=60; run as root
#   BERTH_BIN=/path/to/berth bash bench/agent-idle.sh    # measure that binary as it is
#
# Target (issue #13): RSS <= 8 MiB and under 0.5 % of one core.
# Reference idle figures, for comparison:
#   Ankaios agent           5.6 MiB RSS (its project's figure, quoted in issue #13)
#   containerd 1.7         ~39 MB RSS with a few containers (idem)
#   conmon                 ~2.0 MB RSS, one per container (bench/apply.sh's note)
#   containerd-shim-runc-v2 ~13 MB RSS, one per container (idem)
#
# Needs (Debian): runc containernetworking-plugins docker-registry umoci skopeo
# busybox-static git iproute2 iptables.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20}
SECS=${SECS:-60}
INTERVAL=${INTERVAL:-30s}
RESYNC=${RESYNC:-60s}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 3; }
# BERTH_BIN measures another build of berth (another profile, say) as it is.
if [ -z "${BERTH_BIN:-}" ]; then cargo build --release -q --bin berth --bin berth-agentd --bin berth-shim; fi
BERTH=${BERTH_BIN:-$PWD/target/release/berth}
export BERTH_SHIM_BIN=${BERTH_SHIM_BIN:-$PWD/target/release/berth-shim}

work=$(mktemp -d /var/tmp/berth-bench-idle.XXXXXX)
reg_pid=""
agent_pid=""
cleanup() {
  set +e
  if [ -n "$agent_pid" ]; then
    kill -TERM "$agent_pid" 2>/dev/null
    for _ in $(seq 300); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$agent_pid" 2>/dev/null
  fi
  [ -f "$work/node.toml" ] && mkdir -p "$work/empty" && "$BERTH" --config "$work/node.toml" apply "$work/empty" >/dev/null 2>&1
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# The busybox image in a loopback registry, and a repository of N web servers on one
# bridge network.
. bench/lib.sh
bench_image
git init -q --bare -b main "$work/repo.git"
git init -q -b main "$work/clone"
bench_spec "$work/clone/fleet" "$N"
git -C "$work/clone" add -A
git -C "$work/clone" -c user.name=bench -c user.email=bench@berth.example commit -q -m "$N idle web servers"
git -C "$work/clone" push -q "$work/repo.git" HEAD:refs/heads/main

cat > "$work/node.toml" <<TOML
[node]
name = "bench"
[policy]
mode = "audit"
[runtime]
oci_runtime = "runc"
state_dir = "$work/state"
run_dir = "$work/run"
resync = "$RESYNC"
shim_path = "$BERTH_SHIM_BIN"
[registries."127.0.0.1:$port"]
insecure = true
[source]
url = "file://$work/repo.git"
branch = "main"
path = "fleet"
interval = "$INTERVAL"
TOML

"$BERTH" --config "$work/node.toml" agent > "$work/agent.log" 2>&1 &
agent_pid=$!
t0=$(date +%s.%N)
converged() {
  python3 - "$work/state/state/agent.json" <<'PY'
import json, sys
try:
    s = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(1)
sys.exit(0 if (s.get("last_pass") or {}).get("result") == "converged" else 1)
PY
}
for _ in $(seq 1200); do
  converged && break
  kill -0 "$agent_pid" 2>/dev/null || { echo "the agent ended:" >&2; cat "$work/agent.log" >&2; exit 3; }
  sleep 0.1
done
converged || { echo "not converged after 120 s:" >&2; tail -50 "$work/agent.log" >&2; exit 3; }
t1=$(date +%s.%N)
running=$("$BERTH" --config "$work/node.toml" ps --format json | python3 -c 'import json,sys; print(sum(c["state"] == "running" for c in json.load(sys.stdin)))')
echo "== berth agent (source.interval $INTERVAL, runtime.resync $RESYNC): $N containers converged in $(echo "scale=1; ($t1 - $t0) / 1" | bc) s ($running running)"

field() { awk -v k="$1:" '$1 == k {print $2}' "$2"; }
sample() { # sample LABEL: one memory line
  local rss hwm pss threads
  rss=$(field VmRSS "/proc/$agent_pid/status")
  hwm=$(field VmHWM "/proc/$agent_pid/status")
  pss=$(field Pss "/proc/$agent_pid/smaps_rollup")
  threads=$(field Threads "/proc/$agent_pid/status")
  printf '%-22s RSS %s KiB (%.1f MiB), peak %s KiB, PSS %s KiB (%.1f MiB), %s threads\n' \
    "$1" "$rss" "$(echo "$rss / 1024" | bc -l)" "$hwm" "$pss" "$(echo "$pss / 1024" | bc -l)" "$threads"
}
ticks() { awk '{print $14 + $15}' "/proc/$agent_pid/stat"; }
# With the passes' own processes (reaped children: cutime + cstime), which run each
# fetch and pass: the agent's whole cost.
ticks_all() { awk '{print $14 + $15 + $16 + $17}' "/proc/$agent_pid/stat"; }

# Let the first pass's work settle, then measure.
sleep 5
sample "idle, start:"
c0=$(ticks); a0=$(ticks_all); s0=$(date +%s.%N)
sleep "$SECS"
c1=$(ticks); a1=$(ticks_all); s1=$(date +%s.%N)
sample "idle, after ${SECS}s:"
hz=$(getconf CLK_TCK)
wall=$(echo "$s1 - $s0" | bc -l)
cpu=$(echo "scale=3; ($c1 - $c0) * 100 / $hz / $wall" | bc -l)
printf 'CPU                    %.3f %% of one core over %.0f s (%s ticks of 1/%s s), the agent alone\n' "$cpu" "$wall" "$((c1 - c0))" "$hz"
cpu_all=$(echo "scale=3; ($a1 - $a0) * 100 / $hz / $wall" | bc -l)
printf 'CPU with its passes    %.3f %% of one core (%s ticks: the fetches and passes run as its children)\n' "$cpu_all" "$((a1 - a0))"
# Where the resident memory is: anonymous (heap, stacks) or file-backed (the binary's
# and libraries' pages), and the largest mappings.
echo "resident:              anonymous $(field RssAnon "/proc/$agent_pid/status") KiB, file-backed $(field RssFile "/proc/$agent_pid/status") KiB"
awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? "[anonymous]" : $6)} /^Rss:/ {rss[name] += $2}
     END {for (n in rss) if (rss[n] >= 256) printf "  %6d KiB  %s\n", rss[n], n}' "/proc/$agent_pid/smaps" | sort -rn | head -8
echo "threads:               $(cat /proc/"$agent_pid"/task/*/comm | sort | uniq -c | awk '{printf "%s x%s, ", $2, $1}' | sed 's/, $//')"
echo "events recorded:       $(grep -c '"reason"' "$work/state/state/events.jsonl" || true)"
echo "targets: RSS <= 8 MiB, CPU < 0.5 % (containerd ~39 MB, Ankaios agent 5.6 MiB, conmon ~2 MB per container)"
