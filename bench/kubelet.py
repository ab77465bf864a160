#!/usr/bin/env python3
"""make bench, part nine: one kubelet driving crid and containerd's CRI plugin.

The same kubelet binary (standalone, static pods, `kubelet` on PATH or KUBELET) runs
against crid and against containerd with the same configuration, CNI network
(bridge, host-local, portmap, loopback) and busybox image, pre-pulled, after an
untimed run of 2 pods on each. A run drops N pod manifests at once; each pod has
an init container that writes into an emptyDir and an app container whose exec
readiness probe (every second) reads what it wrote, and which ends on SIGTERM as a
service does (a bare `sleep` as PID 1 ignores it, and every stop would be the 2 s
grace period). Runs alternate between the runtimes; with --pleg evented crid also runs
under kubelet's EventedPLEG feature gate (containerd 1.6 has no
GetContainerEvents, so kubelet would fall back to relisting).

  ready    seconds from the manifests landing until every pod is Ready; each pod's
           own p50 and p90
  stopped  seconds from the manifests going until every sandbox is stopped
  RSS      the daemon, and its per-pod processes (ctrmon; containerd's shims and
           pause processes) per pod, with every pod Ready
  CPU      the daemon's CPU seconds over the run, and kubelet's
  where    kubelet's own account of the time it spent in each runtime call
           (kubelet_runtime_operations_duration_seconds); of that, the time crid's
           handler took (crid_operations_latency_seconds), the rest being the socket,
           gRPC and waiting for a CPU; crid's time in CNI; kubelet's in PLEG relists

Prints markdown tables with same-run ratios (crid / containerd). Needs root. When
kubelet is not found it says so and exits 0.
"""
import argparse, fcntl, json, os, re, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crid as cridbench  # start_runtimes, cri, rss_kib, children_rss, pause_rss, cleanup, pct
import pull  # start_registry, BIN, die, free_port

# What kubelet sets on the host at start, put back when it stops, and the directories
# it makes at fixed paths, removed if it made them.
SYSCTLS = ["vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"]
HOST_DIRS = ["/var/lib/kubelet", "/var/log/containers", "/var/log/pods"]
# The kubelet tests take the same lock: one kubelet at a time on a machine.
LOCK = "/run/crikit-kubelet-tests.lock"


def manifest(name, image):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "uid": f"{name}-uid"},
        "spec": {
            "volumes": [{"name": "data", "emptyDir": {}}],
            # Pre-pulled; with `:latest` kubelet would pull each time, as its default
            # policy for that tag is Always.
            "initContainers": [{"name": "init", "image": image, "imagePullPolicy": "IfNotPresent",
                                "command": ["/bin/sh", "-c", "echo ok > /data/ready"],
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                            # Ends on SIGTERM, as a service does, rather than
                            # wait out the grace period as a bare PID 1 would.
                            "command": ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                            "readinessProbe": {"exec": {"command": ["/bin/cat", "/data/ready"]},
                                               "periodSeconds": 1}}],
            "terminationGracePeriodSeconds": 2,
        },
    }


class Kubelet:
    """A standalone kubelet on `sock`, everything under `d`."""

    def __init__(self, binary, d, sock, gates):
        self.dir = d
        for sub in ["manifests", "root", "logs", "plugins"]:
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        self.port = pull.free_port()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": "127.0.0.1", "port": pull.free_port(), "readOnlyPort": self.port, "healthzPort": 0,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False, "enforceNodeAllocatable": [],
            "failSwapOn": False, "staticPodPath": os.path.join(d, "manifests"), "fileCheckFrequency": "1s",
            "podLogsDir": os.path.join(d, "logs"), "volumePluginDir": os.path.join(d, "plugins"),
            "containerRuntimeEndpoint": f"unix://{sock}", "imageServiceEndpoint": f"unix://{sock}",
            "imageGCHighThresholdPercent": 100, "evictionHard": {}, "resolvConf": "",
            "makeIPTablesUtilChains": False, "serializeImagePulls": False, "featureGates": gates,
        }
        with open(os.path.join(d, "config.yaml"), "w") as f:
            json.dump(config, f)
        self.node = f"bench{self.port}"
        self.proc = subprocess.Popen(
            [binary, f"--config={d}/config.yaml", f"--root-dir={d}/root", f"--hostname-override={self.node}", "--v=1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "kubelet.log"), "w"))
        for _ in range(600):
            if self.get("/healthz") is not None:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        pull.die(f"kubelet did not serve its read-only port; its log: {d}/kubelet.log")

    def get(self, path):
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30).read()
        except Exception:
            return None

    def pods(self):
        body = self.get("/pods")
        return (json.loads(body).get("items") or []) if body else []

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        # kubelet binds its root dir onto itself, and mounts pods' volumes below it.
        root = os.path.join(self.dir, "root")
        mounts = [l.split()[4] for l in open("/proc/self/mountinfo")]
        for m in sorted((m for m in mounts if m == root or m.startswith(root + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)


def error_kinds(log):
    """{kind: count} of kubelet's error lines, a kind being the message klog quotes
    first (`"ExecSync cmd from runtime service failed"`), without ids or names."""
    kinds = {}
    for line in open(log, errors="replace"):
        if line.startswith("E"):
            m = re.search(r'\] "((?:[^"\\]|\\.)*)"', line)
            kind = m.group(1) if m else line.split("]", 1)[-1].strip()[:80]
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def is_ready(pod):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def cpu_s(pid):
    """User + system CPU seconds of `pid`."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return 0.0


def prom(text, name):
    """{labels: value} of the samples of metric `name` in Prometheus text."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def label(labels, key):
    m = re.search(rf'{key}="([^"]*)"', labels)
    return m.group(1) if m else ""


def helpers_rss(rt):
    if rt.name == "crid":
        return cridbench.children_rss(rt.root, ["ctrmon"])
    return cridbench.children_rss(rt.root, ["containerd-shim", "containerd-shim-runc-v2"]) + \
        cridbench.pause_rss("2147483647")


def crid_by_operation(addr, family):
    """{operation label: value} of one of crid's metric families (none without `addr`)."""
    if not addr:
        return {}
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()
    return {label(l, "operation"): v for l, v in prom(text, family).items()}


def cni_seconds(addr, what="sum"):
    """{operation: seconds} crid has spent in CNI so far, or with what="count" how
    many operations it ran (none without `addr`)."""
    return crid_by_operation(addr, f"crid_cni_operations_latency_seconds_{what}")


def crid_call_seconds(addr):
    """{CRI method: seconds} crid's handlers have spent in calls so far (none without
    `addr`): what kubelet waited for beyond that was transport and queueing."""
    return crid_by_operation(addr, "crid_operations_latency_seconds_sum")


def method(operation_type):
    """kubelet's operation_type as the CRI method it stands for: exec_sync → ExecSync."""
    return "".join("PodSandbox" if w == "podsandbox" else w.capitalize() for w in operation_type.split("_"))


def sandboxes(rt):
    return json.loads(cridbench.cri(rt.sock, "pods") or "[]")


def run(binary, rt, n, gates, work, tag, image, crid_metrics):
    """One run: N pods up through kubelet, then down. Returns its figures."""
    k = Kubelet(binary, os.path.join(work, f"kubelet-{tag}"), rt.sock, gates)
    r = {}
    try:
        names = [f"p{i:03d}" for i in range(n)]
        staged = os.path.join(k.dir, "staged")
        os.makedirs(staged)
        for name in names:
            with open(os.path.join(staged, f"{name}.json"), "w") as f:
                json.dump(manifest(name, image), f)
        cni0 = cni_seconds(crid_metrics)
        calls0 = crid_call_seconds(crid_metrics)
        dels0 = cni_seconds(crid_metrics, "count").get("DEL", 0)
        cpu0, kcpu0 = cpu_s(rt.proc.pid), cpu_s(k.proc.pid)
        t0 = time.monotonic()
        for name in names:
            os.rename(os.path.join(staged, f"{name}.json"), os.path.join(k.dir, "manifests", f"{name}.json"))
        ready = {}
        while len(ready) < n:
            if time.monotonic() - t0 > 600:
                pull.die(f"{rt.name}: {len(ready)} of {n} pods Ready after 600 s; kubelet's log: {k.dir}/kubelet.log")
            now = time.monotonic() - t0
            for p in k.pods():
                name = p["metadata"]["name"]
                if name not in ready and is_ready(p):
                    ready[name] = now
            time.sleep(0.2)
        r["ready"] = max(ready.values())
        r["each"] = list(ready.values())
        time.sleep(1)
        r["daemon_kib"] = cridbench.rss_kib(rt.proc.pid)
        r["helpers_kib"] = helpers_rss(rt)

        t1 = time.monotonic()
        for name in names:
            os.remove(os.path.join(k.dir, "manifests", f"{name}.json"))
        while any(s.get("state", 0) == 0 for s in sandboxes(rt)):
            if time.monotonic() - t1 > 600:
                pull.die(f"{rt.name}: pods still running 600 s after their manifests went")
            time.sleep(0.2)
        r["stopped"] = time.monotonic() - t1
        # A pod is NOTREADY before its network is gone: the time spent in calls
        # counts every StopPodSandbox, and crid's CNI time every DEL, once they
        # have returned (30 s at most).
        def stops():
            text = (k.get("/metrics") or b"").decode()
            return prom(text, "kubelet_runtime_operations_total").get('{operation_type="stop_podsandbox"}', 0)
        while (stops() < n or crid_metrics and cni_seconds(crid_metrics, "count").get("DEL", 0) - dels0 < n) \
                and time.monotonic() - t1 < 30:
            time.sleep(0.1)
        r["cni"] = {op: v - cni0.get(op, 0) for op, v in cni_seconds(crid_metrics).items()}
        r["in_crid"] = {m: v - calls0.get(m, 0) for m, v in crid_call_seconds(crid_metrics).items()}
        metrics = (k.get("/metrics") or b"").decode()
        r["ops"] = {label(l, "operation_type"): v for l, v in
                    prom(metrics, "kubelet_runtime_operations_duration_seconds_sum").items()}
        r["relist"] = sum(prom(metrics, "kubelet_pleg_relist_duration_seconds_sum").values())
        r["cpu"] = cpu_s(rt.proc.pid) - cpu0
        r["kubelet_cpu"] = cpu_s(k.proc.pid) - kcpu0
        r["errors"] = error_kinds(os.path.join(k.dir, "kubelet.log"))
    finally:
        k.stop()
        cridbench.cri(rt.sock, "down")
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", default="20,110", help="pod counts, comma-separated (default 20,110)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each runtime per pod count (default 2)")
    ap.add_argument("--logs", metavar="DIR", help="keep each run's kubelet log and the runtimes' logs in DIR")
    ap.add_argument("--pleg", default="generic,evented",
                    help="kubelet PLEG modes: generic, evented or both (default both; evented runs crid only)")
    a = ap.parse_args()
    binary = os.environ.get("KUBELET") or shutil.which("kubelet")
    if not binary:
        print("bench/kubelet.py: skipped: no kubelet on PATH (or KUBELET)")
        return
    cridbench.require(cridbench.RUNTIME_TOOLS)
    if not os.access(cridbench.CRI, os.X_OK):
        pull.die(f"{cridbench.CRI} is missing: cargo build --release --example cri")
    counts = [int(x) for x in a.pods.split(",")]
    plegs = a.pleg.split(",")

    lock = open(LOCK, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    sysctls = {}
    for k in SYSCTLS:
        try:
            sysctls[k] = open(f"/proc/sys/{k}").read().strip()
        except OSError:
            pass
    made = [d for d in HOST_DIRS if not os.path.exists(d)]
    work = tempfile.mkdtemp(prefix="crikit-bench-kubelet-", dir="/var/tmp")
    reg_proc = None
    bridge = "ckbenchk0"
    runtimes = []
    metrics_addr = f"127.0.0.1:{pull.free_port()}"
    results = {}
    try:
        reg_proc, reg = pull.start_registry(work)
        _, runtimes = cridbench.start_runtimes(work, reg, bridge, "10.252.0.0/16",
                                               ["--metrics-address", metrics_addr])
        image = f"{reg}/busybox:latest"
        for rt in runtimes:
            cridbench.cri(rt.sock, "pull", image)
            # Untimed: containerd unpacks an image when it pulls it, crid at its
            # first container; and kubelet's first start on a machine does more.
            run(binary, rt, 2, {}, work, f"warm-{rt.name}", image, None)
        plan = []
        for n in counts:
            for i in range(a.rounds):
                order = runtimes if i % 2 == 0 else runtimes[::-1]
                for rt in order:
                    if "generic" in plegs:
                        plan.append((rt, n, "generic"))
                    if "evented" in plegs and rt.name == "crid":
                        plan.append((rt, n, "evented"))
        for j, (rt, n, pleg) in enumerate(plan):
            gates = {"EventedPLEG": True} if pleg == "evented" else {}
            r = run(binary, rt, n, gates, work, f"{j}", image, metrics_addr if rt.name == "crid" else None)
            results.setdefault((rt.name, n, pleg), []).append(r)
            if a.logs:
                os.makedirs(a.logs, exist_ok=True)
                shutil.copy(os.path.join(work, f"kubelet-{j}", "kubelet.log"),
                            os.path.join(a.logs, f"{j}-{rt.name}-{n}-{pleg}-kubelet.log"))
            print(f"run {j + 1}/{len(plan)}: {rt.name} {pleg} {n} pods: Ready {r['ready']:.1f} s, "
                  f"stopped {r['stopped']:.1f} s", file=sys.stderr)
    finally:
        for rt in runtimes:
            try:
                cridbench.cri(rt.sock, "down")
            except SystemExit:
                pass
            if a.logs:
                for f in os.listdir(rt.root):
                    if f.endswith(".log"):
                        shutil.copy(os.path.join(rt.root, f), os.path.join(a.logs, f))
        cridbench.cleanup(runtimes, reg_proc, bridge, work)
        for k, v in sysctls.items():
            try:
                with open(f"/proc/sys/{k}", "w") as f:
                    f.write(v)
            except OSError:
                pass
        for d in made:
            shutil.rmtree(d, ignore_errors=True)
    report(results, counts, plegs, a.rounds)


def med(rs, key):
    return statistics.median(r[key] for r in rs)


def report(results, counts, plegs, rounds):
    version = cridbench.containerd_version()
    print(f"\n### kubelet driving crid and containerd {version}: pods with an init container and an exec "
          f"readiness probe, dropped at once; medians of {rounds} runs\n")
    print("| pods | PLEG | all Ready: crid | containerd | ratio | pod p50 / p90: crid | containerd | "
          "all stopped: crid | containerd | ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in counts:
        k = results.get(("containerd", n, "generic"))
        for pleg in plegs:
            c = results.get(("crid", n, pleg))
            if not c:
                continue
            each_c = [x for r in c for x in r["each"]]
            row = f"| {n} | {pleg} | {med(c, 'ready'):.1f} s "
            if k:
                each_k = [x for r in k for x in r["each"]]
                row += (f"| {med(k, 'ready'):.1f} s | {med(c, 'ready') / med(k, 'ready'):.2f} "
                        f"| {cridbench.pct(each_c, .5):.1f} / {cridbench.pct(each_c, .9):.1f} s "
                        f"| {cridbench.pct(each_k, .5):.1f} / {cridbench.pct(each_k, .9):.1f} s "
                        f"| {med(c, 'stopped'):.1f} s | {med(k, 'stopped'):.1f} s "
                        f"| {med(c, 'stopped') / med(k, 'stopped'):.2f} |")
            else:
                row += (f"| | | {cridbench.pct(each_c, .5):.1f} / {cridbench.pct(each_c, .9):.1f} s | "
                        f"| {med(c, 'stopped'):.1f} s | | |")
            print(row)

    print("\nMemory with every pod Ready (RSS, MiB) and CPU seconds over a run (generic PLEG):\n")
    print("| pods | | crid | containerd | ratio |\n|---:|---|---:|---:|---:|")
    for n in counts:
        c, k = results.get(("crid", n, "generic")), results.get(("containerd", n, "generic"))
        if not c or not k:
            continue
        rows = [
            ("daemon", med(c, "daemon_kib") / 1024, med(k, "daemon_kib") / 1024),
            ("per-pod processes, per pod", med(c, "helpers_kib") / 1024 / n, med(k, "helpers_kib") / 1024 / n),
            ("daemon + per-pod processes", (med(c, "daemon_kib") + med(c, "helpers_kib")) / 1024,
             (med(k, "daemon_kib") + med(k, "helpers_kib")) / 1024),
            ("daemon CPU s", med(c, "cpu"), med(k, "cpu")),
            ("kubelet CPU s", med(c, "kubelet_cpu"), med(k, "kubelet_cpu")),
            ("kubelet error lines", statistics.median(sum(r["errors"].values()) for r in c),
             statistics.median(sum(r["errors"].values()) for r in k)),
        ]
        for what, x, y in rows:
            ratio = f"{x / y:.2f}" if y else ""
            print(f"| {n} | {what} | {x:.2f} | {y:.2f} | {ratio} |")

    crid_kinds = {}
    for (name, n, pleg), rs in results.items():
        if name == "crid" and pleg == "generic":
            for r in rs:
                for kind, count in r["errors"].items():
                    crid_kinds[kind] = crid_kinds.get(kind, 0) + count
    theirs = {kind for (name, _, _), rs in results.items() if name == "containerd" for r in rs for kind in r["errors"]}
    only = {kind: count for kind, count in crid_kinds.items() if kind not in theirs}
    print("\nkubelet errors (generic PLEG) seen with crid and never with containerd: "
          + (", ".join(f"{kind!r} ({count})" for kind, count in sorted(only.items())) or "none"))

    print("\nWhere the time goes: seconds kubelet spent in each runtime call over a run, summed over "
          "its calls (kubelet_runtime_operations_duration_seconds); of that, the time crid's handler "
          "took (crid_operations_latency_seconds; the rest is the socket, gRPC and waiting for a CPU); "
          "crid's CNI time; kubelet's time in PLEG relists:\n")
    for n in counts:
        c, k = results.get(("crid", n, "generic")), results.get(("containerd", n, "generic"))
        if not c or not k:
            continue
        ops = sorted(set(c[0]["ops"]) | set(k[0]["ops"]),
                     key=lambda o: -(statistics.median(r["ops"].get(o, 0) for r in k)))
        print(f"| {n} pods | crid | of which in crid's handler | containerd |\n|---|---:|---:|---:|")
        for o in ops:
            x = statistics.median(r["ops"].get(o, 0) for r in c)
            y = statistics.median(r["ops"].get(o, 0) for r in k)
            h = statistics.median(r.get("in_crid", {}).get(method(o), 0) for r in c)
            if x >= 0.05 or y >= 0.05:
                print(f"| {o} | {x:.2f} | {h:.2f} | {y:.2f} |")
        for op in sorted(c[0].get("cni", {})):
            print(f"| crid: CNI {op} | {statistics.median(r['cni'].get(op, 0) for r in c):.2f} | | |")
        print(f"| kubelet: PLEG relists | {statistics.median(r.get('relist', 0) for r in c):.2f} | "
              f"| {statistics.median(r.get('relist', 0) for r in k):.2f} |")
        print()


if __name__ == "__main__":
    main()
