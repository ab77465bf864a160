#!/bin/bash
# make demo: the crikit pipeline on a fresh machine, with no internet.
# Starts a throwaway docker-registry on loopback, pushes a small image made from
# Debian's static busybox, pulls it with imgpull and shows what landed in the store,
# then bundles and runs it, runs a pod through crid, and serves the store to a
# second node with imgserve.
set -euo pipefail
BIN=${CRIKIT_BIN_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
for t in docker-registry umoci skopeo busybox runc jq ip; do
  command -v "$t" >/dev/null || { echo "demo: $t is missing: run 'make deps' first" >&2; exit 1; }
done
W=$(mktemp -d /tmp/crikit-demo.XXXXXX)
REG_PID=
CRID_PID=
SERVE_PID=
cleanup() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null; wait "$REG_PID" 2>/dev/null || true; fi
  if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null; wait "$SERVE_PID" 2>/dev/null || true; fi
  if [ -n "$CRID_PID" ]; then kill "$CRID_PID" 2>/dev/null; wait "$CRID_PID" 2>/dev/null || true; fi
  for c in $(ls "$W/run/runc" 2>/dev/null); do runc --root "$W/run/runc" delete -f "$c" >/dev/null 2>&1 || true; done
  ip link del ckdemo0 >/dev/null 2>&1 || true
  rmdir /sys/fs/cgroup/*/crikit 2>/dev/null || true
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

step "crid: a pod and a container through the CRI"
# A bridge network of the demo's own, from the example conflist in scripts/cni.
mkdir -p "$W/cni"
jq --arg ipam "$W/ipam" '.name = "crikit-demo" | .plugins[0].bridge = "ckdemo0" | .plugins[0].ipMasq = false
    | .plugins[0].ipam.ranges = [[{subnet: "10.254.254.0/24"}]] | .plugins[0].ipam.dataDir = $ipam' \
  "$(dirname "$0")/cni/10-crikit-bridge.conflist" > "$W/cni/10-demo.conflist"
SOCK=$W/crid.sock
echo "\$ crid --root \$ROOT --listen unix://\$W/crid.sock --cni-conf-dir \$W/cni --insecure-registry $REG &"
"$BIN/crid" --root "$ROOT" --run-dir "$W/run" --listen "unix://$SOCK" --cni-conf-dir "$W/cni" \
  --cni-bin-dir /usr/lib/cni --insecure-registry "$REG" --registries-conf /dev/null 2>"$W/crid.log" &
CRID_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
CRI="$BIN/examples/cri $SOCK"
echo "\$ cri version   (bins/crid/examples/cri.rs: a small CRI client)"; $CRI version | jq -c .
cat > "$W/pod.json" <<JSON
{"name": "demo", "uid": "demo-uid", "hostname": "demo-pod", "log_directory": "$W/logs/demo"}
JSON
cat > "$W/ctr.json" <<JSON
{"name": "hello", "image": "$REG/demo/hello:1.0", "log_path": "hello.log",
 "command": ["/bin/sh", "-c", "echo hello from a crid pod; hostname; ip -4 -o addr show eth0"]}
JSON
echo "\$ cri pull $REG/demo/hello:1.0"; $CRI pull "$REG/demo/hello:1.0"
echo "\$ cri runp pod.json"; POD=$($CRI runp "$W/pod.json"); echo "$POD"
echo "\$ cri inspectp \$POD"; $CRI inspectp "$POD" | jq -c '{state, ip: .network.ip, labels}'
echo "\$ cri create \$POD ctr.json pod.json; cri start \$CTR"
CTR=$($CRI create "$POD" "$W/ctr.json" "$W/pod.json"); $CRI start "$CTR"
for _ in $(seq 100); do
  [ "$($CRI inspect "$CTR" | jq -r .state)" = 2 ] && break; sleep 0.05
done
echo "\$ cri inspect \$CTR"; $CRI inspect "$CTR" | jq -c '{state, exit_code, reason, log_path}'
echo "\$ cat \$W/logs/demo/hello.log"; cat "$W/logs/demo/hello.log"
echo "\$ cri stopp \$POD; cri rmp \$POD"; $CRI stopp "$POD"; $CRI rmp "$POD"
kill "$CRID_PID"; wait "$CRID_PID" 2>/dev/null || true; CRID_PID=

step "imgserve: this node's store as a registry for its peers"
echo "\$ imgserve --root \$ROOT --listen 127.0.0.1:0 &   (prints ADDR:PORT)"
mkfifo "$W/serve.addr"
"$BIN/imgserve" --root "$ROOT" --listen 127.0.0.1:0 >"$W/serve.addr" 2>"$W/imgserve.log" &
SERVE_PID=$!
read -r PEER <"$W/serve.addr"
echo "$PEER"
echo "\$ curl -s http://$PEER/v2/_catalog"; curl -fsS "http://$PEER/v2/_catalog"; echo
cat > "$W/registries.conf" <<CONF
[[registry]]
location = "$REG"
insecure = true
[[registry.mirror]]
location = "$PEER"
insecure = true
CONF
echo "a second node lists the peer as a mirror of $REG, which goes away:"
kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; REG_PID=
echo "\$ imgpull --root \$NODE2 --registries-conf registries.conf $REG/demo/hello:1.0"
"$BIN/imgpull" --root "$W/node2" --registries-conf "$W/registries.conf" -q "$REG/demo/hello:1.0"
echo "(the same digest as from the registry: $REF)"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=
echo
echo "demo done"
