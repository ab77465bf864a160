#!/usr/bin/env python3
"""make bench, part four: crid against containerd's CRI plugin, through one client.

Both run side by side with private state, the same CNI bridge config (bridge,
host-local, portmap; a bridge and /16 of their own), the corpus registry on
loopback and a pause image this script builds from the corpus busybox (containerd
runs one per pod; crid needs none: pods that share a PID namespace, which these do
not, get its own infra process). The client is bins/crid/examples/cri.rs for both.

  start      RunPodSandbox + CreateContainer + StartContainer of a busybox `sleep`
             (seccomp Unconfined, as kubelet asks unless seccompDefault is on)
  teardown   StopPodSandbox + RemovePodSandbox
             p50 and p90 over --runs sequences, in rounds of 10 that alternate
             which runtime goes first
  RSS        the daemon idle (images pulled), then with --pods pods running, and
             the daemon plus its per-container processes (ctrmon; containerd's
             runc shims and pause processes)
  ExecSync   with those pods running, --execs ExecSync calls of `/bin/true` in a
             row into one container (what an exec probe costs): p50 latency, and
             the CPU the runtime spent per call, its daemon and everything it ran
             and reaped (crid: crun; containerd: its shims and runc), from
             /proc/PID/stat

Prints markdown tables with same-run ratios (crid / containerd). Needs root.
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull  # registry, corpus, BIN, die

CRI = os.path.join(pull.BIN, "examples", "cri")


def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pids_named(name):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open(f"/proc/{p}/comm").read().strip() == name:
                    out.append(int(p))
            except OSError:
                pass
    return out


def pids_with(names, mark=None):
    """Pids of processes called one of `names` whose command line mentions `mark`
    (any, for None)."""
    out = []
    for name in names:
        for pid in pids_named(name):
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if mark is None or mark in cmd:
                out.append(pid)
    return out


def children_rss(root_dir, names):
    """RSS of processes called one of `names` whose command line mentions root_dir."""
    return sum(rss_kib(p) for p in pids_with(names, root_dir))


def pause_pids(pause_cmd):
    """The pause processes (`/bin/sleep 2147483647`)."""
    out = []
    for pid in pids_named("sleep"):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if pause_cmd.encode() in cmd:
            out.append(pid)
    return out


def pause_rss(pause_cmd):
    """RSS of the pause processes."""
    return sum(rss_kib(p) for p in pause_pids(pause_cmd))


def cri(sock, *args):
    r = subprocess.run([CRI, sock, *args], capture_output=True, text=True)
    if r.returncode != 0:
        pull.die(f"cri {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def wait_socket(path, proc, what):
    for _ in range(400):
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            pull.die(f"{what} exited with {proc.returncode}")
        time.sleep(0.05)
    pull.die(f"{what} did not listen on {path}")


def build_pause(work, reg):
    """The corpus busybox with `sleep 2147483647` for a command."""
    oci = os.path.join(work, "pause-oci")
    subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{reg}/busybox:latest",
                    f"oci:{oci}:pause"], check=True)
    subprocess.run(["umoci", "config", "--image", f"{oci}:pause", "--config.entrypoint", "/bin/sleep",
                    "--config.cmd", "2147483647"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{oci}:pause",
                    f"docker://{reg}/bench/pause:1"], check=True)
    return f"{reg}/bench/pause:1"


class Runtime:
    def __init__(self, name, work, sock, proc, root):
        self.name, self.work, self.sock, self.proc, self.root = name, work, sock, proc, root

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_crid(work, reg, cni, extra=(), name="crid", bin_dir=None):
    """crid with its defaults: its own infra process for pods that share a PID
    namespace (containerd runs the pause image for them). `bin_dir` holds another
    build's crid and ctrmon (default: this tree's release build)."""
    bin_dir = bin_dir or pull.BIN
    d = os.path.join(work, name)
    os.makedirs(d)
    sock = os.path.join(d, "crid.sock")
    proc = subprocess.Popen([os.path.join(bin_dir, "crid"), "--root", f"{d}/root", "--run-dir", f"{d}/run",
                             "--listen", f"unix://{sock}", "--cni-conf-dir", cni, "--cni-bin-dir", "/usr/lib/cni",
                             "--insecure-registry", reg, "--registries-conf", "/dev/null",
                             "--ctrmon", os.path.join(bin_dir, "ctrmon"), *extra],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "crid.log"), "w"))
    wait_socket(sock, proc, name)
    return Runtime(name, work, sock, proc, d)


def start_containerd(work, reg, cni, pause, name="containerd"):
    d = os.path.join(work, name)
    os.makedirs(d)
    sock = os.path.join(d, "c.sock")
    cfg = os.path.join(d, "config.toml")
    with open(cfg, "w") as f:
        f.write(f'''version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  disable_tcp_service = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{reg}"]
    endpoint = ["http://{reg}"]
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
''')
    proc = subprocess.Popen(["containerd", "--config", cfg], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(d, "containerd.log"), "w"))
    wait_socket(sock, proc, name)
    return Runtime(name, work, sock, proc, d)


RUNTIME_TOOLS = ["containerd", "skopeo", "umoci", "runc"]


def require(tools):
    for tool in tools:
        if not shutil.which(tool):
            pull.die(f"{tool} is missing: run 'make deps'")


def start_runtimes(work, reg, bridge, subnet, crid_extra=()):
    """The corpus pushed, the pause image built, the CNI conf written; crid and
    containerd started on them. Returns the pause image and [crid, containerd]."""
    pull.ensure_corpus(reg)
    pause = build_pause(work, reg)
    cni = write_cni(work, bridge, subnet)
    return pause, [start_crid(work, reg, cni, crid_extra), start_containerd(work, reg, cni, pause)]


def write_cni(work, bridge, subnet):
    """A CNI conf dir under work, as a node has it: bridge (on `bridge`, addresses
    from `subnet`, masquerading, hairpin), host-local, portmap and loopback, for
    both runtimes."""
    cni = os.path.join(work, "cni")
    os.makedirs(cni)
    with open(os.path.join(cni, "10-bench.conflist"), "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "crikit-bench", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                      "dataDir": os.path.join(work, "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"}]}, f)
    return cni


def cleanup(runtimes, reg_proc, bridge, work):
    """Stops the runtimes (their pods already removed) and the registry; removes the
    bridge, what is mounted below the runtimes' roots, the work dir and the runtimes'
    default cgroup parents."""
    for rt in runtimes:
        rt.stop()
    if reg_proc is not None:
        reg_proc.kill()
        reg_proc.wait()
    subprocess.run(["ip", "link", "del", bridge], stderr=subprocess.DEVNULL)
    for rt in runtimes:
        subprocess.run(["sh", "-c", f"grep -o ' {rt.root}[^ ]*' /proc/self/mountinfo | sort -r | "
                                    "xargs -r -n1 umount -l"], stderr=subprocess.DEVNULL)
    shutil.rmtree(work, ignore_errors=True)
    drop_nat_rules("crikit-bench")
    # Empty once their pods are gone.
    subprocess.run(["sh", "-c", "rmdir /sys/fs/cgroup/*/crikit /sys/fs/cgroup/*/k8s.io 2>/dev/null"])


def drop_nat_rules(network):
    """Removes the nat rules that name the CNI network `network` in their comment,
    the chains they jump to, and empty chains nothing jumps to: what a DEL should
    have removed and did not (after containerd 1.6's, a pod's masquerade chain is
    left now and then)."""
    out = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
    mark = f'name: \\"{network}\\"'
    chains = set()
    for rule in out.splitlines():
        if not rule.startswith("-A ") or mark not in rule:
            continue
        chain = rule[3:].split(" ", 1)[0]
        target = rule.rsplit(" -j ", 1)[-1].split(" ", 1)[0]
        for c in (chain, target):
            if c.startswith("CNI-") and not c.startswith("CNI-HOSTPORT-"):
                chains.add(c)
        subprocess.run(["sh", "-c", f"iptables -t nat -D {rule[3:]}"], stderr=subprocess.DEVNULL)
    for c in chains:
        for op in ["-F", "-X"]:
            subprocess.run(["iptables", "-t", "nat", op, c], stderr=subprocess.DEVNULL)
    # Chains a DEL emptied and left: -X removes only empty ones nothing jumps to.
    for rule in out.splitlines():
        if re.fullmatch(r"-N CNI-[0-9a-f]{24}", rule):
            subprocess.run(["iptables", "-t", "nat", "-X", rule[3:]], stderr=subprocess.DEVNULL)


def cpu_ticks(pids):
    """Clock ticks the processes and their reaped children spent (utime, stime,
    cutime, cstime)."""
    total = 0
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])
    return total


def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--execs", type=int, default=200)
    a = ap.parse_args()
    require(RUNTIME_TOOLS)
    if not os.access(CRI, os.X_OK):
        pull.die(f"{CRI} is missing: cargo build --release --example cri")
    work = tempfile.mkdtemp(prefix="crikit-bench-crid-", dir="/var/tmp")
    reg_proc, reg = pull.start_registry(work)
    bridge = "ckbench0"
    runtimes = []
    try:
        pause, runtimes = start_runtimes(work, reg, bridge, "10.253.0.0/16")
        image = f"{reg}/busybox:latest"
        for rt in runtimes:
            cri(rt.sock, "pull", image)
            if rt.name == "crid":
                cri(rt.sock, "pull", pause)
        time.sleep(1)
        idle = {rt.name: rss_kib(rt.proc.pid) for rt in runtimes}

        def files(rt, tag):
            pod = os.path.join(work, f"{rt.name}-{tag}-pod.json")
            ctr = os.path.join(work, f"{rt.name}-{tag}-ctr.json")
            with open(pod, "w") as f:
                json.dump({"name": f"{tag}-{{n}}", "uid": f"{rt.name}-{tag}-{{n}}", "namespace": "bench",
                           "log_directory": os.path.join(work, "logs", rt.name, tag, "{n}"), "pid": "container"}, f)
            with open(ctr, "w") as f:
                # What kubelet sends unless seccompDefault is on.
                json.dump({"name": "c", "image": image, "command": ["/bin/sleep", "1000"], "log_path": "c.log",
                           "seccomp": "unconfined"}, f)
            return pod, ctr

        lat = {rt.name: {"start_ms": [], "teardown_ms": []} for rt in runtimes}
        rounds = max(1, a.runs // 10)
        for i in range(rounds):
            for rt in runtimes if i % 2 == 0 else runtimes[::-1]:
                pod, ctr = files(rt, f"r{i}")
                r = json.loads(cri(rt.sock, "bench", str(a.runs // rounds), pod, ctr))
                for k in lat[rt.name]:
                    lat[rt.name][k] += r[k]
            print(f"round {i + 1}/{rounds}", file=sys.stderr)

        loaded, execs = {}, {}
        for rt in runtimes:
            pod, ctr = files(rt, "up")
            cri(rt.sock, "up", str(a.pods), pod, ctr)
            time.sleep(2)
            daemon = rss_kib(rt.proc.pid)
            if rt.name == "crid":
                helpers = children_rss(rt.root, ["ctrmon"])
            else:
                helpers = children_rss(rt.root, ["containerd-shim", "containerd-shim-runc-v2"]) + \
                    pause_rss("2147483647")
            loaded[rt.name] = (daemon, helpers)
            ctr = json.loads(cri(rt.sock, "ps"))[0]["id"]
            procs = [rt.proc.pid] if rt.name == "crid" else \
                [rt.proc.pid] + pids_with(["containerd-shim", "containerd-shim-runc-v2"], rt.root)
            t0 = cpu_ticks(procs)
            r = json.loads(cri(rt.sock, "execs", str(a.execs), ctr, "/bin/true"))
            execs[rt.name] = (r["exec_ms"], (cpu_ticks(procs) - t0) / os.sysconf("SC_CLK_TCK") * 1000 / a.execs)
            cri(rt.sock, "down")
    finally:
        for rt in runtimes:
            try:
                cri(rt.sock, "down")
            except SystemExit:
                pass
        cleanup(runtimes, reg_proc, bridge, work)

    c, k = "crid", "containerd"
    n = len(lat[c]["start_ms"])
    print(f"\n### crid vs containerd {containerd_version()} CRI, same client, {n} sequences each\n")
    print("| | crid p50 | containerd p50 | ratio | crid p90 | containerd p90 | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key, label in [("start_ms", "RunPodSandbox + CreateContainer + StartContainer"),
                       ("teardown_ms", "StopPodSandbox + RemovePodSandbox")]:
        x50, y50 = pct(lat[c][key], 0.5), pct(lat[k][key], 0.5)
        x90, y90 = pct(lat[c][key], 0.9), pct(lat[k][key], 0.9)
        print(f"| {label} | {x50:.0f} ms | {y50:.0f} ms | {x50 / y50:.2f} | {x90:.0f} ms | {y90:.0f} ms | {x90 / y90:.2f} |")
    print(f"\nMemory (RSS, MiB):\n")
    print("| | crid | containerd | ratio |\n|---|---:|---:|---:|")
    print(f"| daemon, idle (images pulled) | {idle[c] / 1024:.1f} | {idle[k] / 1024:.1f} | {idle[c] / idle[k]:.2f} |")
    print(f"| daemon, {a.pods} pods running | {loaded[c][0] / 1024:.1f} | {loaded[k][0] / 1024:.1f} | "
          f"{loaded[c][0] / loaded[k][0]:.2f} |")
    tc, tk = sum(loaded[c]), sum(loaded[k])
    print(f"| daemon + per-pod processes (ctrmon; shims + pause), {a.pods} pods | {tc / 1024:.1f} | "
          f"{tk / 1024:.1f} | {tc / tk:.2f} |")
    (lc, cc), (lk, ck) = execs[c], execs[k]
    print(f"\nExecSync of /bin/true, {a.execs} in a row, {a.pods} pods running:\n")
    print("| | crid | containerd | ratio |\n|---|---:|---:|---:|")
    print(f"| latency p50 | {pct(lc, 0.5):.1f} ms | {pct(lk, 0.5):.1f} ms | {pct(lc, 0.5) / pct(lk, 0.5):.2f} |")
    print(f"| latency p90 | {pct(lc, 0.9):.1f} ms | {pct(lk, 0.9):.1f} ms | {pct(lc, 0.9) / pct(lk, 0.9):.2f} |")
    print(f"| CPU per call (daemon, and what it ran) | {cc:.1f} ms | {ck:.1f} ms | {cc / ck:.2f} |")


def containerd_version():
    out = subprocess.run(["containerd", "--version"], capture_output=True, text=True).stdout.split()
    return out[2] if len(out) > 2 else "?"


if __name__ == "__main__":
    main()
