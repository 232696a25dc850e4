#!/usr/bin/env bash
# The Debian package, end to end, on this machine (as root; scripts/test.sh runs it
# after the cargo tests):
#   1. packaging/build-deb.sh --debug builds it from target/debug's binaries;
#   2. `dpkg-deb -c` lists every file expected, and lintian reports no error;
#   3. `dpkg -i` installs it: the group, the directories, the unit enabled but not
#      started; the installed `berth agent --check` passes on the installed config,
#      `systemd-analyze verify` is clean for the installed unit, and the installed
#      berth finds its shim and runtime (an apply of an empty tree);
#   4. `dpkg --purge` removes it: nothing it installed remains but the group `berth`.
# A guard purges the package whenever the script exits, also when a step fails; the
# group is removed too when this test made it, so the machine is left as it was.
# It refuses to run where berth is installed or /etc/berth exists: it would replace
# that node's configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

fail() {
  printf 'package-test: FAILED: %s\n' "$*" >&2
  exit 1
}
step() { printf '\n== package-test: %s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }

[ "$(id -u)" = 0 ] || fail "run as root: the test installs and purges the package"
for tool in dpkg dpkg-deb lintian systemd-analyze; do
  command -v "$tool" >/dev/null || fail "$tool is missing (scripts/test.sh installs it)"
done
if dpkg-query -W -f '${db:Status-Abbrev}' berth 2>/dev/null | grep -q '^.[^n]'; then
  fail "the package berth is installed on this machine; the test installs and purges its own"
fi
[ ! -e /etc/berth ] || fail "/etc/berth exists: this machine has a berth configuration the test would replace"

# What existed before, so that the purge is judged on what the package made.
had() { [ -e "$1" ] && echo yes || echo no; }
had_state=$(had /var/lib/berth)
had_run=$(had /run/berth)
run_mode=$(stat -c %a /run/berth 2>/dev/null || true)
had_group=$(getent group berth >/dev/null && echo yes || echo no)

work=$(mktemp -d /var/tmp/berth-package-test.XXXXXX)
installed=no
touched=no
guard() {
  local rc=$?
  set +e
  if [ "$installed" = yes ] && dpkg-query -W berth >/dev/null 2>&1; then
    echo "package-test: purging berth (guard)" >&2
    dpkg --purge berth >"$work/guard-purge.log" 2>&1 || cat "$work/guard-purge.log" >&2
  fi
  if [ "$touched" = yes ] && [ "$had_group" = no ] && getent group berth >/dev/null; then
    groupdel berth
  fi
  # The package's tmpfiles.d entry opens a run directory that was there to 0711.
  if [ "$touched" = yes ] && [ -n "$run_mode" ] && [ -d /run/berth ]; then
    chmod "$run_mode" /run/berth
  fi
  rm -rf "$work"
  if [ "$rc" = 0 ]; then
    printf '\npackage-test: passed in %s s\n' "$(($(date +%s) - started))"
  else
    printf '\npackage-test: FAILED (exit %s) after %s s\n' "$rc" "$(($(date +%s) - started))" >&2
  fi
  exit "$rc"
}
trap guard EXIT
trap 'exit 130' INT TERM

# dpkg takes a lock that another apt or dpkg on the machine may hold for a while.
dpkg_run() {
  local i
  for i in $(seq 60); do
    if dpkg "$@" >"$work/dpkg.log" 2>&1; then
      cat "$work/dpkg.log"
      return 0
    fi
    grep -q "lock" "$work/dpkg.log" || break
    [ "$i" = 1 ] && echo "package-test: dpkg is locked by another process; waiting" >&2
    sleep 2
  done
  cat "$work/dpkg.log" >&2
  return 1
}

step "build the package from the debug binaries"
t0=$(date +%s)
deb=$(packaging/build-deb.sh --debug --out "$work")
[ -f "$deb" ] || fail "build-deb.sh printed '$deb', which is not a file"
version=$(dpkg-deb -f "$deb" Version)
arch=$(dpkg --print-architecture)
[ "$(basename "$deb")" = "berth_${version}_${arch}.deb" ] || fail "the package is named $(basename "$deb"), not berth_${version}_${arch}.deb"
ok "$(basename "$deb"), $(du -h "$deb" | cut -f1), built in $(($(date +%s) - t0)) s"

step "dpkg-deb -c lists what is expected"
dpkg-deb -c "$deb" | awk '{ print $1, $2, $6, $7, $8 }' | sed 's/ *$//' > "$work/contents"
cat "$work/contents"
expect() {
  local mode=$1 path=$2
  grep -qx -- "$mode root/root ./${path#/}" "$work/contents" ||
    grep -qx -- "$mode root/root ./${path#/} -> ${3:-}" "$work/contents" ||
    fail "dpkg-deb -c does not list $path ($mode root/root${3:+ -> $3})"
}
FILES=(
  /usr/libexec/berth/berth /usr/libexec/berth/berth-agentd /usr/libexec/berth/berth-shim
  /lib/systemd/system/berth.service /etc/berth/berth.toml
  /usr/lib/tmpfiles.d/berth.conf /usr/lib/sysusers.d/berth.conf
  /usr/share/doc/berth/copyright /usr/share/doc/berth/changelog.gz
  /usr/share/doc/berth/README.md.gz /usr/share/doc/berth/examples/node.toml
  /usr/share/lintian/overrides/berth
)
for f in /usr/libexec/berth/berth /usr/libexec/berth/berth-agentd /usr/libexec/berth/berth-shim; do
  expect -rwxr-xr-x "$f"
done
for f in "${FILES[@]:3}"; do
  expect -rw-r--r-- "$f"
done
expect lrwxrwxrwx /usr/bin/berth ../libexec/berth/berth
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = /etc/berth/berth.toml ] ||
  fail "the conffiles are not exactly /etc/berth/berth.toml"
depends=$(dpkg-deb -f "$deb" Depends)
for d in "libc6 (>=" "libssl3 (>=" "runc | crun" containernetworking-plugins iptables; do
  [[ "$depends" == *"$d"* ]] || fail "Depends has no '$d': $depends"
done
ok "the binaries, the unit, the config (a conffile), tmpfiles, sysusers and the docs; Depends: $depends"

step "lintian reports no error"
t0=$(date +%s)
rc=0
lintian --fail-on error "$deb" >"$work/lintian.txt" 2>&1 || rc=$?
grep -v '^running with root privileges' "$work/lintian.txt" || true
[ "$rc" = 0 ] || fail "lintian exited $rc: it reports errors (E: above), or could not run"
ok "no lintian error (warnings above, if any), in $(($(date +%s) - t0)) s"

step "dpkg -i"
installed=yes
touched=yes
dpkg_run -i "$deb"
[ "$(dpkg-query -W -f '${db:Status-Abbrev}' berth)" = "ii " ] || fail "berth is not installed and configured: $(dpkg-query -W -f '${db:Status-Abbrev}' berth)"
getent group berth >/dev/null || fail "the postinst made no group berth"
[ "$(stat -c '%a %U' /var/lib/berth)" = "700 root" ] || fail "/var/lib/berth is $(stat -c '%a %U' /var/lib/berth), not 700 root"
[ -d /run/berth ] || fail "the postinst made no /run/berth"
[ "$(readlink /etc/systemd/system/multi-user.target.wants/berth.service)" = /lib/systemd/system/berth.service ] ||
  fail "the unit is not enabled (no multi-user.target.wants/berth.service)"
if pgrep -f '^/usr/(bin|libexec/berth)/berth' >/dev/null; then
  fail "an installed berth runs: the package must not start an unconfigured agent"
fi
ok "group berth, /var/lib/berth 0700, the unit enabled and not started"

step "the installed berth agent --check on the installed config"
out=$(berth agent --check --config /etc/berth/berth.toml 2>&1) || fail "berth agent --check exited $?: $out"
echo "$out"
[[ "$out" == "ok: "*"no source configured"* ]] || fail "berth agent --check did not say the config is valid with no source: $out"
[ "$(command -v berth)" = /usr/bin/berth ] || fail "berth on PATH is $(command -v berth), not /usr/bin/berth"

step "systemd-analyze verify on the installed unit"
verify=$(systemd-analyze verify /lib/systemd/system/berth.service 2>&1) || fail "systemd-analyze verify exited $?: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify is not clean: $verify"
ok "clean"

step "the installed berth finds its shim and a runtime (apply of an empty tree)"
mkdir -p "$work/empty"
berth --config /etc/berth/berth.toml --state-dir "$work/state" --run-dir "$work/run" apply "$work/empty" ||
  fail "berth apply of an empty tree with the installed binaries exited $?"

step "the installed berth agent execs the installed berth-agentd (a local repository, its own directories)"
git init -q -b main "$work/repo"
git -C "$work/repo" -c user.name=test -c user.email=test@berth.invalid commit -q --allow-empty -m empty
sed 's/^# \[source\]$/[source]/' /etc/berth/berth.toml > "$work/node.toml"
sed -i "/^\[source\]$/a url = \"$work/repo\"" "$work/node.toml"
berth --config "$work/node.toml" --state-dir "$work/state" --run-dir "$work/run" agent > "$work/agent.log" 2>&1 &
agent_pid=$!
exe=""
for _ in $(seq 100); do
  exe=$(readlink "/proc/$agent_pid/exe" 2>/dev/null || true)
  [ "$exe" = /usr/libexec/berth/berth-agentd ] && break
  kill -0 "$agent_pid" 2>/dev/null || break
  sleep 0.1
done
kill -TERM "$agent_pid" 2>/dev/null || true
wait "$agent_pid" || true
if [ "$exe" != /usr/libexec/berth/berth-agentd ] || grep -q "is not next to this berth\|runs in this process" "$work/agent.log"; then
  cat "$work/agent.log" >&2
  fail "the agent (pid $agent_pid) runs $exe, not /usr/libexec/berth/berth-agentd"
fi
ok "berth agent became /usr/libexec/berth/berth-agentd (pid $agent_pid) and stopped on SIGTERM"

step "dpkg --purge"
dpkg_run --purge berth
installed=no
if dpkg-query -W -f '${db:Status-Abbrev}' berth 2>/dev/null | grep -q '^.[^n]'; then
  fail "berth is still known to dpkg after the purge"
fi
left=()
for f in "${FILES[@]}" /usr/bin/berth /usr/libexec/berth /usr/share/doc/berth /etc/berth \
  /etc/systemd/system/multi-user.target.wants/berth.service \
  /var/lib/systemd/deb-systemd-helper-enabled/berth.service.dsh-also \
  /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/berth.service \
  /var/lib/systemd/deb-systemd-helper-masked/berth.service; do
  if [ -e "$f" ] || [ -L "$f" ]; then left+=("$f"); fi
done
if [ "$had_state" = no ] && [ -e /var/lib/berth ]; then left+=(/var/lib/berth); fi
if [ "$had_run" = no ] && [ -e /run/berth ]; then left+=(/run/berth); fi
[ ${#left[@]} = 0 ] || fail "the purge left: ${left[*]}"
getent group berth >/dev/null || fail "the purge removed the group berth (Debian practice keeps it)"
ok "nothing the package installed remains but the group berth (kept, as Debian practice has it)"
if [ "$had_group" = no ]; then
  groupdel berth
  echo "(the group berth was made by this test: removed)"
fi
