#!/bin/sh
# make deps: a CRIU that can run on this kernel, for CheckpointContainer and restores.
# Nothing happens when `criu check` passes. Otherwise (Debian bookworm's CRIU 3.17 fails
# on recent kernels, Linux 6.18 among them: "vdso: Unexpected rt vDSO area bounds", as it
# cannot parse their vDSO) CRIU is built from Debian's own source of a newer
# release (trixie's), checked against the digest below, and installed as
# $PREFIX/sbin/criu, ahead of /usr/sbin/criu on PATH. Needs root and Debian's archive.
set -eu
PREFIX=${CRIU_PREFIX:-/usr/local}
VERSION=4.1.1
SHA256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
URL=${CRIU_SOURCE_URL:-http://deb.debian.org/debian/pool/main/c/criu/criu_$VERSION.orig.tar.xz}
BUILD_DEPS="gcc make pkgconf libbsd-dev libcap-dev libgnutls28-dev libnet1-dev libnftables-dev
libnl-3-dev libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler protobuf-compiler uuid-dev
python3-protobuf xz-utils curl"

why=$(criu check 2>&1) && exit 0
why=$(printf '%s\n' "$why" | grep -m1 'Error' || printf '%s\n' "$why" | head -n1)
echo "criu: the installed CRIU cannot run here ($why); building CRIU $VERSION into $PREFIX/sbin" >&2

# shellcheck disable=SC2086
missing=$(for p in $BUILD_DEPS; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -fsS --retry 3 -o "$work/criu.tar.xz" "$URL"
echo "$SHA256  $work/criu.tar.xz" | sha256sum -c --quiet - || {
  echo "criu: $URL does not have the expected digest" >&2
  exit 1
}
tar -xJf "$work/criu.tar.xz" -C "$work"
make -s -C "$work/criu-$VERSION" -j"$(nproc)" criu >"$work/build.log" 2>&1 || {
  tail -n 20 "$work/build.log" >&2
  echo "criu: building CRIU $VERSION failed (the log's end is above)" >&2
  exit 1
}
install -D -m 0755 "$work/criu-$VERSION/criu/criu" "$PREFIX/sbin/criu"
hash -r 2>/dev/null || true
if ! out=$("$PREFIX/sbin/criu" check 2>&1); then
  echo "criu: CRIU $VERSION built, but criu check fails too: $(printf '%s\n' "$out" | grep -m1 Error)" >&2
  exit 1
fi
echo "criu: CRIU $VERSION installed as $PREFIX/sbin/criu"
