#!/bin/bash
# make demo: the crikit pipeline on a fresh machine, with no internet.
# Starts a throwaway docker-registry on loopback, pushes a small image made from
# Debian's static busybox, pulls it with imgpull and shows what landed in the store.
set -euo pipefail
BIN=${CRIKIT_BIN_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
for t in docker-registry umoci skopeo busybox runc; do
  command -v "$t" >/dev/null || { echo "demo: $t is missing: run 'make deps' first" >&2; exit 1; }
done
W=$(mktemp -d /tmp/crikit-demo.XXXXXX)
REG_PID=
cleanup() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null; wait "$REG_PID" 2>/dev/null || true; fi
  runc --root "$W/runc" delete -f crikit-demo >/dev/null 2>&1 || true
  "$BIN/bundlegen" --root "$W/crikit" --remove "$W/hello-bundle" 2>/dev/null || true
  grep -o " $W[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a registry on loopback"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
cat > "$W/registry.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/registry}}
http: {addr: $REG}
YML
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
echo "docker-registry listening on $REG"

step "an image made from Debian's static busybox"
R=$W/rootfs; mkdir -p "$R/bin" "$R/etc" "$R/tmp"; chmod 1777 "$R/tmp"
cp "$(command -v busybox)" "$R/bin/busybox"
for a in sh echo cat ls id; do ln -s busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"; echo 'root:x:0:' > "$R/etc/group"
tar --numeric-owner --owner=0 --group=0 -C "$R" -cf "$W/layer.tar" .
umoci init --layout "$W/oci" >/dev/null
umoci new --image "$W/oci:hello"
umoci config --image "$W/oci:hello" --config.cmd /bin/echo --config.cmd "hello from crikit"
umoci raw add-layer --image "$W/oci:hello" "$W/layer.tar"
skopeo copy -q --dest-tls-verify=false "oci:$W/oci:hello" "docker://$REG/demo/hello:1.0"
echo "pushed $REG/demo/hello:1.0"

ROOT=$W/crikit
step "imgpull $REG/demo/hello:1.0"
echo "\$ imgpull --root \$ROOT --insecure-registry $REG $REG/demo/hello:1.0"
REF=$("$BIN/imgpull" --root "$ROOT" --insecure-registry "$REG" --progress=plain "$REG/demo/hello:1.0")
echo "$REF"

step "a second pull fetches nothing"
"$BIN/imgpull" --root "$ROOT" --insecure-registry "$REG" --progress=plain "$REG/demo/hello:1.0"

step "what landed in the store"
echo "\$ imgpull --root \$ROOT --list"
"$BIN/imgpull" --root "$ROOT" --list
echo "\$ imgpull --root \$ROOT --inspect $REF   (abridged)"
"$BIN/imgpull" --root "$ROOT" --inspect "$REF" | jq '{name, repo_digest, size, cmd: .config.config.Cmd, layers: [.manifest.layers[] | {mediaType, size}]}'
echo "\$ ls \$ROOT/images"; ls "$ROOT/images"
echo "\$ jq . \$ROOT/images/index.json"; jq . "$ROOT/images/index.json"

step "other OCI tools read the same store"
echo "\$ skopeo inspect oci:\$ROOT/images:$REG/demo/hello:1.0 | jq .Layers"
skopeo inspect "oci:$ROOT/images:$REG/demo/hello:1.0" | jq -c .Layers
umoci unpack --image "$ROOT/images:$REG/demo/hello:1.0" "$W/bundle" >/dev/null
echo "\$ umoci unpack …; ls bundle/rootfs/bin"; ls "$W/bundle/rootfs/bin"
step "a bundle, run by runc"
echo "\$ imgpull … | bundlegen --root \$ROOT - \$W/hello-bundle"
echo "$REF" | "$BIN/bundlegen" --root "$ROOT" - "$W/hello-bundle"
echo "\$ jq .process.args \$W/hello-bundle/config.json"; jq -c .process.args "$W/hello-bundle/config.json"
echo "\$ runc run -b \$W/hello-bundle crikit-demo"
runc --root "$W/runc" run -b "$W/hello-bundle" crikit-demo
runc --root "$W/runc" delete -f crikit-demo >/dev/null 2>&1 || true

step "the same bundle under ctrmon: CRI log and exit file"
echo "\$ ctrmon --bundle \$W/hello-bundle --id crikit-demo --start   (prints the container pid)"
"$BIN/ctrmon" --bundle "$W/hello-bundle" --id crikit-demo --start --cleanup \
  --run-dir "$W/run" --runtime-root "$W/runc"
for _ in $(seq 100); do [ -s "$W/run/ctrmon/crikit-demo/exit" ] && break; sleep 0.05; done
echo "\$ cat \$RUN/ctrmon/crikit-demo/ctr.log"; cat "$W/run/ctrmon/crikit-demo/ctr.log"
echo "\$ cat \$RUN/ctrmon/crikit-demo/exit"; cat "$W/run/ctrmon/crikit-demo/exit"
echo "\$ bundlegen --remove \$W/hello-bundle"
"$BIN/bundlegen" --root "$ROOT" --remove "$W/hello-bundle"
echo
echo "demo done"
