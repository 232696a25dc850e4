#!/bin/bash
# Generates the renewal/uid-revocation/revocation-certificate/text-mode/signature-expiry/
# unsupported-curve fixtures of testdata/pgp (see README.md) with gpg 2.2 and git.
set -euo pipefail
out=$1
work=$(mktemp -d)
export GNUPGHOME=$work/gnupg
mkdir -m 700 "$GNUPGHOME"
g() { gpg --batch --pinentry-mode loopback --passphrase '' "$@"; }
at() { local t=$1; shift; g --faked-system-time "$t" "$@"; }
fpr() { gpg --with-colons --list-keys "$1" | awk -F: '/^fpr/ {print $10; exit}'; }
subfpr() { gpg --with-colons --list-keys "$1" | awk -F: '/^fpr/ {n++; if (n==2) {print $10; exit}}'; }
repo=$work/repo
git init -q "$repo"
# commit NAME KEY SIGNTIME COMMITTERDATE [EXTRA GPG ARGS]: a signed commit's raw object.
commit() {
  local name=$1 key=$2 t=$3 date=$4; shift 4
  cat > "$work/gpg-wrap" <<W
#!/bin/sh
exec gpg --faked-system-time $t $* "\$@"
W
  chmod +x "$work/gpg-wrap"
  ( cd "$repo" &&
    GIT_AUTHOR_DATE="$date" GIT_COMMITTER_DATE="$date" \
    git -c user.name=Test -c user.email=t@x -c gpg.format=openpgp \
      -c gpg.program="$work/gpg-wrap" -c user.signingkey="$key" \
      commit -q --allow-empty -S -m "$name" &&
    git cat-file commit HEAD > "$out/$name.commit" )
}

# R: ed25519, signs, created 2026-01-01, expires 2027-01-01; renewed on 2026-12-01
# (gpg --quick-set-expire, which replaces the self-signature) to expire 2028-12-01.
at 20260101T000000 --quick-gen-key 'Rita <rita@x>' ed25519 sign 2027-01-01
R=$(fpr rita@x)
commit r-before-renewal "$R!" 20260601T000000 '2026-06-01T00:00:00Z'
g --armor --export "$R" > "$out/R.asc"
at 20261201T000000 --quick-set-expire "$R" 2028-12-01
g --armor --export "$R" > "$out/R-renewed.asc"
commit r-after-renewed-expiry "$R!" 20261202T000000 '2029-06-01T00:00:00Z'

# S: certify-only primary, signing subkey expiring 2027-01-01, renewed on 2026-12-01.
at 20260101T000000 --quick-gen-key 'Sam <sam@x>' ed25519 cert never
S=$(fpr sam@x)
at 20260101T000000 --quick-add-key "$S" ed25519 sign 2027-01-01
SS=$(subfpr sam@x)
commit s-before-renewal "$SS!" 20260601T000000 '2026-06-01T00:00:00Z'
at 20261201T000000 --quick-set-expire "$S" 2028-12-01 "$SS"
g --armor --export "$S" > "$out/S-renewed.asc"

# U: signs, expires 2027-01-01, two user ids; the second revoked on 2026-02-01.
at 20260101T000000 --quick-gen-key 'Ursula <ursula@x>' ed25519 sign 2027-01-01
U=$(fpr ursula@x)
at 20260101T000100 --quick-add-uid "$U" 'Old Ursula <old@x>'
at 20260201T000000 --quick-revoke-uid "$U" 'Old Ursula <old@x>'
g --armor --export "$U" > "$out/U-uid-revoked.asc"
commit u-committed-2030 "$U!" 20260301T000000 '2030-01-01T00:00:00Z'

# G: signs, no expiry; its revocation certificate as gpg made it at key creation
# (openpgp-revocs.d, the armor line's leading ':' removed); a binary export.
at 20260101T000000 --quick-gen-key 'Gus <gus@x>' ed25519 sign never
G=$(fpr gus@x)
g --armor --export "$G" > "$out/G.asc"
g --export "$G" > "$out/G.gpg"
sed 's/^:-----BEGIN/-----BEGIN/' "$GNUPGHOME/openpgp-revocs.d/$G.rev" > "$out/G-revocation.asc"
commit g-good "$G!" 20260601T000000 '2026-06-01T00:00:00Z'
# A text-mode (0x01) signature; signatures that expire (one day after 2026-06-01, and
# in 2076).
commit g-textmode "$G!" 20260601T000000 '2026-06-01T00:00:00Z' --textmode
commit g-sig-expired "$G!" 20260601T000000 '2026-06-01T00:00:00Z' --default-sig-expire 1d
commit g-sig-expires-2076 "$G!" 20260601T000000 '2026-06-01T00:00:00Z' --default-sig-expire 2076-01-01

# BP: brainpoolP256r1; K: secp256k1.
at 20260101T000000 --quick-gen-key 'Bea <bea@x>' brainpoolP256r1 sign never
g --armor --export bea@x > "$out/BP.asc"
at 20260101T000000 --quick-gen-key 'Kai <kai@x>' secp256k1 sign never
K=$(fpr kai@x)
g --armor --export "$K" > "$out/K.asc"
commit k-secp256k1 "$K!" 20260601T000000 '2026-06-01T00:00:00Z'
gpgconf --kill gpg-agent
rm -rf "$work"
