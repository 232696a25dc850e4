#!/usr/bin/env bash
# Benchmark: `berth validate`, `berth audit` and `berth plan` on hostile spec trees
# (issue 9): a 40,000-deep depends_on chain, a 60,000-long cycle, one container with
# 200,000 env keys on one line, 60,000 containers publishing ports, a 6 MB file, and the
# largest trees the limits allow (10,000 containers: a chain, a cycle, one shared port,
# and a valid tree). Prints the wall time and exit code of each run; the target is
# under 2 s each, with exit 0 or 1 (a located error), never a crash.
#
#   bash bench/hostile-trees.sh                 # builds and times target/release/berth
#   BERTH=target/debug/berth bash bench/hostile-trees.sh
#
# Needs python3 (to write the trees). No root: plan runs against an empty state dir.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BERTH:-}" ]; then
  cargo build --release -q --bin berth
  BERTH=$PWD/target/release/berth
fi
LIMIT=${LIMIT:-120}

work=$(mktemp -d /var/tmp/berth-hostile.XXXXXX)
trap 'rm -rf "$work"' EXIT
printf '[node]\nname = "edge-1"\n' > "$work/node.toml"

python3 - "$work" <<'PY'
import os, sys
work = sys.argv[1]
IMG = "registry.example.com/app@sha256:" + "0123456789abcdef" * 4

def containers(name, n, body, per_file=1000):
    d = os.path.join(work, name); os.makedirs(d)
    for f in range(0, n, per_file):
        with open(os.path.join(d, "f%03d.toml" % (f // per_file)), "w") as out:
            for i in range(f, min(n, f + per_file)):
                out.write('[container.c%d]\nimage = "%s"\n%s' % (i, IMG, body(i)))

chain = lambda i: 'depends_on = ["c%d"]\n' % (i - 1) if i else ""
containers("chain-40000", 40000, chain)
containers("cycle-60000", 60000, lambda i: 'depends_on = ["c%d"]\n' % ((i + 1) % 60000))
containers("ports-60000", 60000, lambda i: 'ports = ["%d:80"]\n' % (1 + i))
containers("chain-10000", 10000, chain)
containers("cycle-10000", 10000, lambda i: 'depends_on = ["c%d"]\n' % ((i + 1) % 10000))
containers("ports-10000-one-port", 10000, lambda i: 'ports = ["8080:80"]\n')
containers("valid-10000", 10000, lambda i: 'user = "10001:10001"\nports = ["127.0.0.1:%d:80"]\n' % (1 + i))
containers("one-file-6MB", 60000, lambda i: "", per_file=60000)
d = os.path.join(work, "env-200000"); os.makedirs(d)
with open(os.path.join(d, "env.toml"), "w") as out:
    out.write('[container.big]\nimage = "%s"\nenv = { %s }\n'
              % (IMG, ", ".join('K%d = "v"' % i for i in range(200000))))
PY

run() {
  local tree=$1; shift
  local start end code
  start=$(date +%s.%N)
  set +e
  timeout "$LIMIT" "$BERTH" --config "$work/node.toml" --state-dir "$work/state" \
    --run-dir "$work/run" "$@" "$work/$tree" >"$work/out" 2>"$work/err"
  code=$?
  set -e
  end=$(date +%s.%N)
  printf '%-22s %-9s %6.2fs  exit %-3s %s\n' "$tree" "$1" "$(echo "$end - $start" | bc)" \
    "$code" "$(grep -m1 -o 'error: .*' "$work/out" | cut -c1-90 || true)"
}

echo "berth: $BERTH"
for tree in chain-40000 cycle-60000 env-200000 ports-60000 one-file-6MB \
            chain-10000 cycle-10000 ports-10000-one-port valid-10000; do
  du -sh "$work/$tree" | awk '{printf "%s (%s)\n", $2, $1}' | sed "s|$work/||"
  run "$tree" validate
  run "$tree" audit
  run "$tree" plan --offline   # the images name registry.example.com: never asked
done
