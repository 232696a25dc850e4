#!/bin/sh
# Installs berth on a host without Debian's package tools, out of binaries that are
# already built (on Debian and its derivatives, use the package: build-deb.sh).
#
#   cargo build --release --bin berth --bin berth-agentd --bin berth-shim
#   sudo packaging/install.sh [--prefix DIR] [--bin-dir DIR]
#   sudo packaging/install.sh --uninstall [--prefix DIR]
#
# It installs, as the Debian package does (README.md, "Install on a node"):
#   PREFIX/libexec/berth/{berth,berth-agentd,berth-shim}, PREFIX/bin/berth -> it
#     (berth finds berth-agentd and berth-shim next to its own executable);
#   /etc/berth/berth.toml, only if there is none (no source: the agent idles until
#     one is set);
#   with systemd: /etc/systemd/system/berth.service (ExecStart under PREFIX),
#     /etc/tmpfiles.d/berth.conf and /etc/sysusers.d/berth.conf; the unit is neither
#     enabled nor started: set the source, then `systemctl enable --now berth`;
#   the group `berth` (the API socket's), /var/lib/berth (0700), /run/berth (0711);
#   PREFIX/share/doc/berth/README.md.
#
# --uninstall stops the agent (its containers keep running, each under its shim) and
# removes what it installed but the configuration /etc/berth, the state directory
# /var/lib/berth (images, records, volumes) and the group, which it names.
#
# Options: --prefix DIR (default /usr/local); --bin-dir DIR, where the built binaries
# are (default: target/release of this checkout).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=/usr/local
bin_dir=$here/../target/release
action=install

usage() {
	echo "usage: packaging/install.sh [--prefix DIR] [--bin-dir DIR] [--uninstall]" >&2
	exit 2
}
while [ $# -gt 0 ]; do
	case "$1" in
	--prefix)
		[ $# -ge 2 ] || usage
		prefix=$2
		shift
		;;
	--bin-dir)
		[ $# -ge 2 ] || usage
		bin_dir=$2
		shift
		;;
	--uninstall) action=uninstall ;;
	-h | --help)
		sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*) usage ;;
	esac
	shift
done
case "$prefix" in
/*) prefix=${prefix%/} ;;
*)
	echo "install.sh: error: --prefix must be an absolute path, not $prefix" >&2
	exit 2
	;;
esac

die() {
	echo "install.sh: error: $*" >&2
	exit 1
}
say() { echo "install.sh: $*"; }
[ "$(id -u)" = 0 ] || die "run as root: berth runs containers as root, and installs into $prefix and /etc"

libexec=$prefix/libexec/berth
unit=/etc/systemd/system/berth.service
tmpfiles=/etc/tmpfiles.d/berth.conf
sysusers=/etc/sysusers.d/berth.conf
systemd_running() { [ -d /run/systemd/system ]; }
has_systemd() { command -v systemctl >/dev/null 2>&1; }

if [ "$action" = uninstall ]; then
	if systemd_running && [ -f "$unit" ]; then
		systemctl disable --now berth.service || true
	fi
	rm -f "$prefix/bin/berth" "$libexec/berth" "$libexec/berth-agentd" "$libexec/berth-shim"
	rmdir "$libexec" 2>/dev/null || true
	rm -f "$unit" "$tmpfiles" "$sysusers" "$prefix/share/doc/berth/README.md"
	rmdir "$prefix/share/doc/berth" 2>/dev/null || true
	if systemd_running; then systemctl daemon-reload; fi
	say "removed berth from $prefix and its unit"
	say "kept /etc/berth (the configuration), /var/lib/berth (images, container records, volumes) and the group berth"
	say "containers berth started keep running under their shims (\`berth apply\` of an empty directory, before uninstalling, removes them)"
	exit 0
fi

for b in berth berth-agentd berth-shim; do
	[ -x "$bin_dir/$b" ] || die "$bin_dir/$b is not built (cargo build --release --bin berth --bin berth-agentd --bin berth-shim), or give --bin-dir"
done

umask 022
# Binaries: 0755 root in a 0755 root directory (berth runs berth-agentd only from a
# directory no one else can write to). Each is replaced by a rename, so a running
# agent or shim keeps its old file.
install -d -m 0755 "$prefix/bin" "$libexec"
for b in berth berth-agentd berth-shim; do
	install -m 0755 "$bin_dir/$b" "$libexec/.$b.new"
	mv -f "$libexec/.$b.new" "$libexec/$b"
done
ln -sfn ../libexec/berth/berth "$prefix/bin/berth"
say "installed $libexec/{berth,berth-agentd,berth-shim} and $prefix/bin/berth"

install -d -m 0755 /etc/berth
if [ -e /etc/berth/berth.toml ]; then
	say "kept /etc/berth/berth.toml (the shipped default is $here/berth.toml)"
else
	install -m 0644 "$here/berth.toml" /etc/berth/berth.toml
	say "installed /etc/berth/berth.toml (no source yet)"
fi

# The group of the API socket, and the state and run directories.
if ! getent group berth >/dev/null; then
	if command -v systemd-sysusers >/dev/null 2>&1; then
		install -d -m 0755 /etc/sysusers.d
		install -m 0644 "$here/berth.sysusers" "$sysusers"
		systemd-sysusers "$sysusers"
	elif command -v groupadd >/dev/null 2>&1; then
		groupadd --system berth
	elif command -v addgroup >/dev/null 2>&1; then
		addgroup --system berth
	else
		die "cannot create the group berth: no systemd-sysusers, groupadd or addgroup"
	fi
	say "created the group berth (members may use the API socket)"
fi
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	install -d -m 0755 /etc/tmpfiles.d
	install -m 0644 "$here/berth.tmpfiles" "$tmpfiles"
	systemd-tmpfiles --create "$tmpfiles"
else
	[ -d /var/lib/berth ] || install -d -m 0700 /var/lib/berth
	[ -d /run/berth ] || install -d -m 0711 /run/berth
fi

# The README, which the unit names as its documentation.
install -d -m 0755 "$prefix/share/doc/berth"
install -m 0644 "$here/../README.md" "$prefix/share/doc/berth/README.md"

if has_systemd; then
	install -d -m 0755 /etc/systemd/system
	sed "s|^ExecStart=/usr/bin/berth |ExecStart=$prefix/bin/berth |; s|^Documentation=.*|Documentation=file:$prefix/share/doc/berth/README.md|" \
		"$here/berth.service" > "$unit.new"
	chmod 0644 "$unit.new"
	mv -f "$unit.new" "$unit"
	if systemd_running; then systemctl daemon-reload; fi
	say "installed $unit (not enabled)"
	say "next: set [source] in /etc/berth/berth.toml, \`berth agent --check\`, then \`systemctl enable --now berth\`"
else
	say "no systemd: start \`$prefix/bin/berth agent --config /etc/berth/berth.toml\` with this host's service manager (it must not kill the shims: see $here/berth.service)"
fi
