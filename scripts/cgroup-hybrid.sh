#!/bin/sh
# make deps: on a hybrid cgroup host (v1 controllers under /sys/fs/cgroup, cgroup2 at
# /sys/fs/cgroup/unified) with a controller still on cgroup2, mount that controller as a
# v1 hierarchy of its own, as systemd does at boot on such hosts. crun refuses to run a
# container while cgroup2 holds any controller there ("cgroups in hybrid mode not
# supported, drop all controllers from cgroupv2"); runc does not mind. Does nothing on a
# v1-only or a unified (cgroup2-only) host, or when cgroup2 already uses the controller.
set -eu
U=/sys/fs/cgroup/unified
[ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] || exit 0
[ -r "$U/cgroup.controllers" ] || exit 0
controllers=$(cat "$U/cgroup.controllers")
[ -n "$controllers" ] || exit 0
if [ -n "$(cat "$U/cgroup.subtree_control")" ]; then
  echo "cgroup-hybrid: cgroup2 at $U uses $(cat "$U/cgroup.subtree_control"); leaving it (crun will refuse this host)" >&2
  exit 0
fi
for c in $controllers; do
  mkdir -p "/sys/fs/cgroup/$c"
  mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
  echo "cgroup-hybrid: mounted the $c controller as cgroup v1 at /sys/fs/cgroup/$c"
done
