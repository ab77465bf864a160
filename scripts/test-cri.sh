#!/bin/bash
# make test-cri: cri-tools' critest against a crid of its own (temp root, run dir, socket
# and a CNI bridge on a free /24), summarised as passed/failed/skipped with the failed
# specs; exits 1 on a failure that tests/cri/known-failures.txt does not name.
#
# env: CRITEST, CRICTL   the binaries (default: critest and crictl on PATH)
#      CRI_MIRROR        HOST:PORT serving critest's images (registry.k8s.io, k8s.gcr.io
#                        and gcr.io are sent there over plain HTTP), for machines offline
#      CRI_PAUSE_IMAGE   the pause image (default: crid's own default)
#      CRI_RUNTIME_HANDLER  the runtime handler critest asks for (critest -runtime-handler;
#                        default: crid's default, runc)
#      CRID_ARGS         more flags for crid
#      CRITEST_ARGS      more flags for critest (-ginkgo.focus=REGEX runs some specs only)
#      CRI_WEBSOCKET     set: critest streams over WebSocket (-websocket-exec, -attach,
#                        -portforward) instead of SPDY
#      CRIKIT_BIN_DIR    crid and ctrmon (default: target/release)
#      CRI_KEEP          set: keep the work directory (logs, report) afterwards
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CRIKIT_BIN_DIR:-$TOP/target/release}
CRITEST=${CRITEST:-critest}
CRICTL=${CRICTL:-crictl}
for t in "$CRITEST" "$CRICTL" jq ip; do
  command -v "$t" >/dev/null || { echo "test-cri: $t is missing (set CRITEST/CRICTL or PATH)" >&2; exit 2; }
done
W=$(mktemp -d /tmp/crikit-cri.XXXXXX)
chmod 711 "$W" # user namespaces' roots reach their rootfs below it
SOCK=$W/crid.sock
BRIDGE=ckcri$(printf '%04x' $((RANDOM % 65536)))
CRID_PID=
cleanup() {
  "$CRICTL" -r "unix://$SOCK" rmp -fa >/dev/null 2>&1 || true
  if [ -n "$CRID_PID" ]; then kill "$CRID_PID" 2>/dev/null; wait "$CRID_PID" 2>/dev/null || true; fi
  for root in "$W/run/runc" "$W"/run/runtimes/*; do
    [ -d "$root" ] || continue
    rt=$(basename "$root")
    for c in $(ls "$root"); do "$rt" --root "$root" delete -f "$c" >/dev/null 2>&1 || true; done
  done
  ip link del "$BRIDGE" >/dev/null 2>&1 || true
  grep -o " $W[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  if [ -n "${CRI_KEEP:-}" ]; then echo "test-cri: kept $W (crid.log, critest.log, report.json)" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# A /24 of 10.0.0.0/8 that no address or route of this host touches.
SUBNET=$(python3 - <<'PY'
import random, subprocess
used = set()
for args in (["-4", "-o", "addr"], ["-4", "route"]):
    for w in subprocess.run(["ip", *args], capture_output=True, text=True).stdout.split():
        p = w.split("/")[0].split(".")
        if len(p) == 4 and p[0] == "10":
            used.add((p[1], p[2]))
while True:
    a, b = str(random.randint(16, 215)), str(random.randint(0, 255))
    if (a, b) not in used:
        print(f"10.{a}.{b}")
        break
PY
)
mkdir -p "$W/cni"
cat > "$W/cni/10-cri.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "crikit-cri", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$SUBNET.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$W/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
  {"type": "loopback"}]}
JSON
REGCONF=/dev/null
if [ -n "${CRI_MIRROR:-}" ]; then
  REGCONF=$W/registries.conf
  for p in registry.k8s.io k8s.gcr.io gcr.io; do
    printf '[[registry]]\nprefix = "%s"\nlocation = "%s"\ninsecure = true\n' "$p" "$CRI_MIRROR"
  done > "$REGCONF"
fi
args=(--root "$W/root" --run-dir "$W/run" --listen "unix://$SOCK" --cni-conf-dir "$W/cni"
      --cni-bin-dir /opt/cni/bin:/usr/lib/cni --registries-conf "$REGCONF" --ctrmon "$BIN/ctrmon")
[ -n "${CRI_PAUSE_IMAGE:-}" ] && args+=(--pause-image "$CRI_PAUSE_IMAGE")
# shellcheck disable=SC2086
"$BIN/crid" "${args[@]}" ${CRID_ARGS:-} 2>"$W/crid.log" &
CRID_PID=$!
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { echo "test-cri: crid did not start: $(tail -3 "$W/crid.log")" >&2; exit 1; }

HANDLER=()
[ -n "${CRI_RUNTIME_HANDLER:-}" ] && HANDLER=(-runtime-handler "$CRI_RUNTIME_HANDLER")
[ -n "${CRI_WEBSOCKET:-}" ] && HANDLER+=(-websocket-exec -websocket-attach -websocket-portforward)
echo "critest $("$CRITEST" --version 2>/dev/null | awk '/version/ {print $NF; exit}') against crid on $SOCK${CRI_RUNTIME_HANDLER:+, runtime handler $CRI_RUNTIME_HANDLER}${CRI_WEBSOCKET:+, streaming over WebSocket}" >&2
printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n' "$SOCK" "$SOCK" > "$W/crictl.yaml"
set +e
(cd "$W" && "$CRITEST" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" -config "$W/crictl.yaml" "${HANDLER[@]}" \
   --ginkgo.no-color --ginkgo.json-report="$W/report.json" ${CRITEST_ARGS:-}) > "$W/critest.log" 2>&1
set -e
[ -s "$W/report.json" ] || { echo "test-cri: critest wrote no report:"; tail -20 "$W/critest.log"; exit 1; } >&2

specs() { jq -r --arg s "$1" '.[].SpecReports[] | select(.LeafNodeType == "It") | select(
    if $s == "failed" then (.State != "passed" and .State != "skipped" and .State != "pending") else .State == $s end)
  | ([.ContainerHierarchyTexts[]?, .LeafNodeText] | join(" "))' "$W/report.json"; }
passed=$(specs passed | wc -l); skipped=$(specs skipped | wc -l)
specs failed > "$W/failed.txt"
failed=$(wc -l < "$W/failed.txt")
echo "critest: $passed passed, $failed failed, $skipped skipped"
grep -v -e '^#' -e '^$' "$TOP/tests/cri/known-failures.txt" > "$W/known.txt"
unknown=0
while IFS= read -r spec; do
  if grep -qF -f "$W/known.txt" <<<"$spec"; then
    echo "  known failure: $spec"
  else
    echo "  FAILED: $spec"; unknown=$((unknown + 1))
    jq -r --arg s "$spec" '.[].SpecReports[] | select(([.ContainerHierarchyTexts[]?, .LeafNodeText] | join(" ")) == $s)
      | "    \(.Failure.Location.FileName):\(.Failure.Location.LineNumber): \(.Failure.Message)"' "$W/report.json" | head -c 2000
  fi
done < "$W/failed.txt"
if [ "$unknown" -gt 0 ]; then
  echo "test-cri: $unknown failure(s) not in tests/cri/known-failures.txt; crid's log:" >&2
  tail -5 "$W/crid.log" >&2
  exit 1
fi
