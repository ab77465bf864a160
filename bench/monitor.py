#!/usr/bin/env python3
"""make bench, part three: ctrmon against Debian's conmon, same bundle, same runc.

A busybox rootfs (Debian's static busybox) shared read-only by every container, one
bundle directory per container (conmon keeps its ctl and winsz fifos there), logs on
a tmpfs of their own so the disk does not set the pace. Both monitors are started the
way their callers start them: ctrmon returns once the container exists; conmon is
handed a sync pipe (_OCI_SYNCPIPE) and the caller reads the container pid from it.

  idle memory   10 containers running `sleep`: RSS and PSS of each monitor, median
  start         monitor up to the pid, then `runc start`, until the container's first
                line is in the log: median of --starts runs, tools alternated
  log           a container writing --log-mb MB of 100-byte lines: MB/s from
                `runc start` to the exit file, and the CPU time of the monitor
                (a cgroup of its own, the container's outside it; includes the
                `runc create` the monitor runs); median of
                --log-runs runs, tools alternated

Prints markdown tables with same-run ratios (ctrmon / conmon). Needs root.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull  # BIN, die

RUNC = shutil.which("runc") or "/usr/sbin/runc"
APPLETS = ["sh", "sleep", "yes", "head", "echo", "cat"]


class World:
    def __init__(self, work):
        self.work = work
        self.rootfs = os.path.join(work, "rootfs")
        os.makedirs(os.path.join(self.rootfs, "bin"))
        for d in ["proc", "dev", "sys", "tmp"]:
            os.makedirs(os.path.join(self.rootfs, d))
        shutil.copy("/bin/busybox", os.path.join(self.rootfs, "bin", "busybox"))
        for a in APPLETS:
            os.symlink("busybox", os.path.join(self.rootfs, "bin", a))
        subprocess.run([RUNC, "spec", "-b", work], check=True)
        with open(os.path.join(work, "config.json")) as f:
            self.spec = json.load(f)
        os.remove(os.path.join(work, "config.json"))
        self.spec["process"]["terminal"] = False
        self.spec["root"] = {"path": self.rootfs, "readonly": True}
        self.runc_root = os.path.join(work, "runc")
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6g", "bench-logs", self.logs], check=True)
        self.cg = cgroup_root()
        self.ids = []
        self.n = 0

    def bundle(self, script):
        self.n += 1
        b = os.path.join(self.work, f"b{self.n}")
        os.makedirs(b)
        spec = json.loads(json.dumps(self.spec))
        spec["process"]["args"] = ["/bin/sh", "-c", script]
        cid = f"bench-{os.getpid()}-{self.n}"
        # An absolute cgroup: runc would otherwise nest the container under its
        # caller's, the monitor's own, and bill the container's CPU to the monitor.
        spec.setdefault("linux", {})["cgroupsPath"] = f"/{cid}"
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(spec, f)
        return b, cid

    def runc(self, *args, check=True):
        r = subprocess.run([RUNC, "--root", self.runc_root, *args], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        if check and r.returncode != 0:
            pull.die(f"runc {' '.join(args)}: {r.stderr.decode(errors='replace').strip()}")

    def cgroup(self, cid):
        """A cgroup of its own for the monitor of `cid`: (dir, preexec_fn)."""
        d = os.path.join(self.cg, "crikit-bench", cid)
        os.makedirs(d)

        def join():
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write("0\n")
        return d, join

    def cleanup(self):
        for cid in self.ids:
            subprocess.run([RUNC, "--root", self.runc_root, "delete", "-f", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["umount", self.logs], stderr=subprocess.DEVNULL)
        base = os.path.join(self.cg, "crikit-bench")
        if os.path.isdir(base):
            for d in os.listdir(base):
                for _ in range(50):
                    try:
                        os.rmdir(os.path.join(base, d))
                        break
                    except OSError:
                        time.sleep(0.1)
            try:
                os.rmdir(base)
            except OSError:
                pass


def cgroup_root():
    for d in ["/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"]:
        if os.path.exists(os.path.join(d, "cpuacct.usage")) or os.path.exists(os.path.join(d, "cgroup.subtree_control")):
            return d
    pull.die("no cpuacct or cgroup2 hierarchy to account the monitors' CPU in")


def cpu_seconds(d):
    p = os.path.join(d, "cpuacct.usage")
    if os.path.exists(p):
        return int(open(p).read()) / 1e9
    for line in open(os.path.join(d, "cpu.stat")):
        if line.startswith("usage_usec "):
            return int(line.split()[1]) / 1e6
    return float("nan")


class Ctrmon:
    name = "ctrmon"

    def __init__(self, w):
        self.w = w
        self.run = os.path.join(w.work, "run")

    def create(self, bundle, cid, log, preexec=None):
        """Starts the monitor; returns once the caller knows the container pid."""
        exit_file = os.path.join(self.w.work, f"{cid}.exit")
        r = subprocess.run([os.path.join(pull.BIN, "ctrmon"), "--bundle", bundle, "--id", cid,
                            "--runtime", RUNC, "--runtime-root", self.w.runc_root, "--run-dir", self.run,
                            "--log-path", log, "--exit-file", exit_file],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec)
        if r.returncode != 0:
            pull.die(f"ctrmon: {r.stderr.decode(errors='replace').strip()}")
        pid = int(open(os.path.join(self.run, "ctrmon", cid, "ctrmon.pid")).read())
        return pid, exit_file


class Conmon:
    name = "conmon"

    def __init__(self, w):
        self.w = w
        self.exits = os.path.join(w.work, "conmon-exits")
        self.socks = os.path.join(w.work, "conmon-socks")
        os.makedirs(self.exits, exist_ok=True)
        os.makedirs(self.socks, exist_ok=True)

    def create(self, bundle, cid, log, preexec=None):
        r, wfd = os.pipe()
        env = dict(os.environ, _OCI_SYNCPIPE=str(wfd))
        p = subprocess.Popen(["conmon", "--api-version", "1", "-c", cid, "-u", cid, "-n", cid, "-r", RUNC,
                              "-b", bundle, "-p", os.path.join(bundle, "pid"),
                              "-P", os.path.join(bundle, "conmon.pid"), "-l", f"k8s-file:{log}",
                              "--exit-dir", self.exits, "--socket-dir-path", self.socks,
                              "--runtime-arg", f"--root={self.w.runc_root}", "--log-level", "error"],
                             env=env, pass_fds=(wfd,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             preexec_fn=preexec)
        os.close(wfd)
        data = b""
        with os.fdopen(r, "rb") as f:
            for line in f:
                data = line
                break
        p.wait()
        try:
            msg = json.loads(data)
        except ValueError:
            pull.die(f"conmon reported nothing: {p.stderr.read().decode(errors='replace')}")
        if msg.get("data", -1) < 0:
            pull.die(f"conmon: {msg}")
        pid = int(open(os.path.join(bundle, "conmon.pid")).read())
        return pid, os.path.join(self.exits, cid)


def wait_for(path, timeout=120, step=0.01):
    deadline = time.perf_counter() + timeout
    while not os.path.exists(path):
        if time.perf_counter() > deadline:
            pull.die(f"timed out waiting for {path}")
        time.sleep(step)


def memory(pid):
    rss = pss = 0
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def idle_memory(w, tool, n):
    ids, rss, pss = [], [], []
    for _ in range(n):
        b, cid = w.bundle("exec sleep 1000")
        w.ids.append(cid)
        pid, _ = tool.create(b, cid, os.path.join(w.logs, f"{cid}.log"))
        w.runc("start", cid)
        ids.append((cid, pid))
    time.sleep(0.5)
    for cid, pid in ids:
        r, p = memory(pid)
        rss.append(r)
        pss.append(p)
    for cid, _ in ids:
        w.runc("delete", "-f", cid, check=False)
    return statistics.median(rss), statistics.median(pss)


def start_time(w, tool):
    b, cid = w.bundle("echo ready; exec sleep 1000")
    w.ids.append(cid)
    log = os.path.join(w.logs, f"{cid}.log")
    t0 = time.perf_counter()
    tool.create(b, cid, log)
    created = time.perf_counter() - t0
    w.runc("start", cid)
    while True:
        try:
            if b"ready" in open(log, "rb").read():
                break
        except FileNotFoundError:
            pass
        time.sleep(0.0002)
    ready = time.perf_counter() - t0
    w.runc("delete", "-f", cid, check=False)
    return created, ready


def log_throughput(w, tool, mb):
    line = "x" * 99
    b, cid = w.bundle(f"yes {line} | head -c {mb * 1000 * 1000}")
    w.ids.append(cid)
    log = os.path.join(w.logs, f"{cid}.log")
    cg, join = w.cgroup(cid)
    _, exit_file = tool.create(b, cid, log, preexec=join)
    t0 = time.perf_counter()
    w.runc("start", cid)
    wait_for(exit_file, timeout=600, step=0.005)
    dt = time.perf_counter() - t0
    wait_for_empty(cg)
    cpu = cpu_seconds(cg)
    size = os.path.getsize(log)
    os.remove(log)
    w.runc("delete", "-f", cid, check=False)
    return mb / dt, cpu, size


def wait_for_empty(cg):
    """The monitor is gone (it exits right after the exit file)."""
    for _ in range(500):
        if not open(os.path.join(cg, "cgroup.procs")).read().strip():
            return
        time.sleep(0.01)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--containers", type=int, default=10)
    ap.add_argument("--starts", type=int, default=20)
    ap.add_argument("--log-mb", type=int, default=1000)
    ap.add_argument("--log-runs", type=int, default=3)
    a = ap.parse_args()
    if not shutil.which("conmon"):
        pull.die("conmon is not installed (make deps)")
    work = tempfile.mkdtemp(prefix="crikit-bench-monitor-", dir="/var/tmp")
    w = World(work)
    try:
        tools = [Ctrmon(w), Conmon(w)]
        mem = {t.name: idle_memory(w, t, a.containers) for t in tools}
        starts = {t.name: [] for t in tools}
        for i in range(a.starts):
            for t in tools if i % 2 == 0 else tools[::-1]:
                starts[t.name].append(start_time(w, t))
        logs = {t.name: [] for t in tools}
        for i in range(a.log_runs):
            for t in tools if i % 2 == 0 else tools[::-1]:
                logs[t.name].append(log_throughput(w, t, a.log_mb))
    finally:
        w.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    c, k = "ctrmon", "conmon"
    print(f"\n### Monitor: ctrmon vs conmon {conmon_version()} (runc {runc_version()})\n")
    print(f"Idle, {a.containers} containers, median per monitor:\n")
    print("| | ctrmon | conmon | ratio |\n|---|---|---|---|")
    for i, label in enumerate(["RSS (KiB)", "PSS (KiB)"]):
        print(f"| {label} | {mem[c][i]:.0f} | {mem[k][i]:.0f} | {mem[c][i] / mem[k][i]:.2f} |")
    print(f"\nStart, median of {a.starts} (ms):\n")
    print("| | ctrmon | conmon | difference |\n|---|---|---|---|")
    for i, label in enumerate(["monitor returns the pid", "first log line (after runc start)"]):
        x = statistics.median(s[i] for s in starts[c]) * 1000
        y = statistics.median(s[i] for s in starts[k]) * 1000
        print(f"| {label} | {x:.1f} | {y:.1f} | {x - y:+.1f} |")
    print(f"\nLog throughput, {a.log_mb} MB of 100-byte lines, median of {a.log_runs}:\n")
    print("| | ctrmon | conmon | ratio |\n|---|---|---|---|")
    for i, label, fmt in [(0, "MB/s", "{:.0f}"), (1, "monitor CPU (s)", "{:.2f}"), (2, "log size (MB)", "{:.0f}")]:
        x = statistics.median(r[i] for r in logs[c])
        y = statistics.median(r[i] for r in logs[k])
        if i == 2:
            x, y = x / 1e6, y / 1e6
        print(f"| {label} | {fmt.format(x)} | {fmt.format(y)} | {x / y:.2f} |")


def conmon_version():
    out = subprocess.run(["conmon", "--version"], capture_output=True, text=True).stdout
    return out.split()[2] if len(out.split()) > 2 else "?"


def runc_version():
    out = subprocess.run([RUNC, "--version"], capture_output=True, text=True).stdout
    return out.split()[2] if len(out.split()) > 2 else "?"


if __name__ == "__main__":
    main()
