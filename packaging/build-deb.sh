#!/usr/bin/env bash
# Builds the Debian package of berth out of binaries that are already built:
#
#   cargo build --release --bin berth --bin berth-agentd --bin berth-shim
#   packaging/build-deb.sh                  # -> target/debian/berth_<version>_<arch>.deb
#
#   packaging/build-deb.sh --debug          # target/debug's binaries instead (CI)
#   packaging/build-deb.sh --out DIR        # write the package into DIR
#
# --debug is for CI, which has the debug binaries already and should not spend a
# release build on a packaging test: their copies are stripped (the package gets no
# debug info; the binaries in target/debug keep theirs) and compressed with gzip -1
# (1.5 s) rather than xz (about 50 s over the ~55 MB of stripped debug code here).
# Such a package works but runs slowly, and is not one to ship.
#
# Prints the path of the package on stdout. Needs dpkg-deb, dpkg-shlibdeps (dpkg-dev,
# in build-essential), strip and gzip.
#
# Layout (docs/design.md): the three binaries in /usr/libexec/berth/, because berth
# finds berth-agentd and berth-shim next to its own executable; /usr/bin/berth is a
# symlink to it (the kernel resolves it, so "its own executable" is the real file).
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

profile=release
out=target/debian
usage() {
  echo "usage: packaging/build-deb.sh [--debug] [--out DIR]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    --out)
      [ $# -ge 2 ] || usage
      out=$2
      shift
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) usage ;;
  esac
  shift
done

die() {
  echo "build-deb: error: $*" >&2
  exit 1
}
for tool in dpkg-deb dpkg-shlibdeps dpkg strip gzip; do
  command -v "$tool" >/dev/null || die "$tool is needed (apt-get install dpkg-dev binutils gzip)"
done

BINARIES=(berth berth-agentd berth-shim)
for b in "${BINARIES[@]}"; do
  [ -x "target/$profile/$b" ] || die "target/$profile/$b is not built: cargo build $([ "$profile" = release ] && echo '--release ')--bin berth --bin berth-agentd --bin berth-shim"
done

# The version is the workspace's ([workspace.package] version in Cargo.toml).
version=$(awk '
  /^\[workspace\.package\]/ { inside = 1; next }
  /^\[/ { inside = 0 }
  inside && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' Cargo.toml)
[[ "$version" =~ ^[0-9][0-9A-Za-z.+~-]*$ ]] || die "no usable [workspace.package] version in Cargo.toml (found '$version')"
arch=$(dpkg --print-architecture)
# Timestamps (files, changelog) from the last commit, so that a rebuild of the same
# commit gives the same package.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

stage=$(mktemp -d "${TMPDIR:-/tmp}/berth-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
# dpkg-shlibdeps wants a source tree: debian/control, and the package in debian/berth.
mkdir -p "$stage/src/debian"
printf 'Source: berth\n\nPackage: berth\nArchitecture: any\n' > "$stage/src/debian/control"
root=$stage/src/debian/berth
install -d -m 0755 "$root" "$root/DEBIAN" "$root/usr/bin" "$root/usr/libexec/berth" \
  "$root/lib/systemd/system" "$root/etc/berth" "$root/usr/lib/tmpfiles.d" \
  "$root/usr/lib/sysusers.d" "$root/usr/share/doc/berth/examples"

for b in "${BINARIES[@]}"; do
  install -m 0755 "target/$profile/$b" "$root/usr/libexec/berth/$b"
done
# As dh_strip does: no symbols, no .comment or .note sections (a release build is
# stripped already; a debug build's copies lose their debug info here).
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
  "${BINARIES[@]/#/$root/usr/libexec/berth/}"
ln -s ../libexec/berth/berth "$root/usr/bin/berth"

install -m 0644 packaging/berth.service "$root/lib/systemd/system/berth.service"
install -m 0644 packaging/berth.toml "$root/etc/berth/berth.toml"
install -m 0644 packaging/berth.tmpfiles "$root/usr/lib/tmpfiles.d/berth.conf"
install -m 0644 packaging/berth.sysusers "$root/usr/lib/sysusers.d/berth.conf"

# Documentation, gzip -9n as Debian policy asks of anything over 4 KiB; the names the
# shipped berth.toml refers to.
doc=$root/usr/share/doc/berth
install -m 0644 packaging/debian/copyright "$doc/copyright"
for pair in README.md:README.md agent/API.md:API.md spec/README.md:spec-reference.md \
  policies/README.md:policies.md docs/layout.md:layout.md docs/design.md:design.md; do
  install -m 0644 "${pair%%:*}" "$doc/${pair#*:}"
done
install -m 0644 examples/node.toml "$doc/examples/node.toml"
changelog_date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
# The version has no Debian revision (the project packages itself: a native
# package), so the changelog is changelog.gz.
printf 'berth (%s) unstable; urgency=medium\n\n  * Built by packaging/build-deb.sh from the berth sources, commit %s.\n\n -- %s  %s\n' \
  "$version" "$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" \
  "$(sed -n 's/^Maintainer: //p' packaging/debian/control)" "$changelog_date" \
  > "$doc/changelog"
find "$doc" -type f ! -name copyright \( -size +4k -o -name changelog \) -exec gzip -9n {} +
install -d -m 0755 "$root/usr/share/lintian/overrides"
install -m 0644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/berth"

# Maintainer scripts and the control file.
for s in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$s" "$root/DEBIAN/$s"
done
echo /etc/berth/berth.toml > "$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/conffiles"
# Shared-library dependencies of the binaries as they are (libc6, libgcc-s1, libssl3,
# zlib1g with their minimum versions), as dpkg-shlibdeps computes them for any package.
shlibs=$(cd "$stage/src" && dpkg-shlibdeps -O "${BINARIES[@]/#/-e$root/usr/libexec/berth/}" 2>"$stage/shlibdeps.log") ||
  { cat "$stage/shlibdeps.log" >&2; die "dpkg-shlibdeps failed"; }
shlibs=${shlibs#shlibs:Depends=}
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no shared-library dependency"
installed_kib=$(du -s -k --apparent-size --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SHLIBS@/$shlibs/" \
  -e "s/@INSTALLED_SIZE@/$installed_kib/" packaging/debian/control > "$root/DEBIAN/control"
if grep -qE '@[A-Z_]+@' "$root/DEBIAN/control"; then
  die "packaging/debian/control has a placeholder left: $(grep -E '@[A-Z_]+@' "$root/DEBIAN/control")"
fi
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
  LC_ALL=C sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"
find "$root" -depth -newermt "@$SOURCE_DATE_EPOCH" -exec touch --no-dereference -d "@$SOURCE_DATE_EPOCH" {} +

compress=(-Zxz)
[ "$profile" = debug ] && compress=(-Zgzip -z1)
mkdir -p "$out"
deb=$out/berth_${version}_${arch}.deb
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
