#!/usr/bin/env python3
"""make bench, part six: container events and the cost of a node's worth of pods,
crid against containerd's CRI plugin, in the same run.

The set-up of bench/crid.py (private state, one CNI bridge conf, the corpus
busybox); crid runs with --metrics-address (its Prometheus endpoint on), containerd
as configured there (its metrics endpoint off). crictl comes from $CRICTL or PATH.

1. 50 pods on each runtime, kubelet's kind (a PID namespace per container), each with
   one busybox `sleep 3600`, made with crictl runp, create, start.
2. One event subscriber on each: `crictl events -o json` on crid
   (GetContainerEvents), `ctr events` on containerd (1.6's CRI plugin has no
   GetContainerEvents; its own event stream carries the same exits as /tasks/exit).
3. RSS and CPU over a 10 s idle window with the 50 pods and the subscriber: the
   daemon alone, and the daemon with its per-container processes (crid: ctrmon;
   containerd: containerd-shim-runc-v2 and the pause processes).
4. Exit to event: the bench SIGKILLs a container's process from the host and times
   until the subscriber has read the STOPPED (or /tasks/exit) event for it; the 50
   containers of each runtime, alternating runtimes. p50 and p90.

Needs root.
"""
import argparse, json, os, signal, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull
import crid as cridbench
import stream


class Subscriber:
    """A process whose stdout carries events; the arrival time of each container
    id's first exit event."""

    def __init__(self, argv, parse):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.parse, self.seen, self.cv = parse, {}, threading.Condition()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        buf = b""
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            now = time.perf_counter()
            buf += chunk
            ids, buf = self.parse(buf)
            with self.cv:
                for i in ids:
                    self.seen.setdefault(i, now)
                self.cv.notify_all()

    def wait(self, cid, timeout=10):
        with self.cv:
            self.cv.wait_for(lambda: cid in self.seen, timeout)
            return self.seen.get(cid)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def crictl_events(buf):
    """STOPPED events' container ids from `crictl events -o json` (a stream of
    indented JSON objects); the rest of the buffer."""
    dec, ids, text = json.JSONDecoder(), [], buf.decode(errors="replace")
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        try:
            obj, end = dec.raw_decode(text, pos)
        except ValueError:
            break
        pos = end
        if obj.get("containerEventType") == "CONTAINER_STOPPED_EVENT":
            ids.append(obj.get("containerId"))
    return ids, text[pos:].encode()


def ctr_events(buf):
    """/tasks/exit events' container ids from `ctr events` lines."""
    *lines, rest = buf.split(b"\n")
    ids = []
    for line in lines:
        if b"/tasks/exit" in line:
            try:
                ids.append(json.loads(line[line.index(b"{"):])["container_id"])
            except (ValueError, KeyError):
                pass
    return ids, rest


def measure(daemon, extra, seconds=10):
    """RSS (KiB) of the daemon and of daemon + extra, and CPU (% of one core) of
    each over `seconds` idle."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [daemon] + extra
    c0 = {p: pull.proc_stat(p) for p in pids}
    time.sleep(seconds)
    c1 = {p: pull.proc_stat(p) for p in pids}
    cpu = {p: (c1[p] - c0[p]) / tick / seconds * 100 for p in pids}
    rss = {p: cridbench.rss_kib(p) for p in pids}
    return (rss[daemon], sum(rss.values()), cpu[daemon], sum(cpu.values()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=50)
    a = ap.parse_args()
    bin = stream.crictl_bin()
    if not bin:
        print("bench/events.py: no crictl (set CRICTL or PATH): skipped", file=sys.stderr)
        return
    cridbench.require(cridbench.RUNTIME_TOOLS + ["ctr"])
    work = tempfile.mkdtemp(prefix="crikit-bench-events-", dir="/var/tmp")
    reg_proc, reg = pull.start_registry(work)
    bridge = "ckbench4"
    runtimes, subs = [], []
    metrics_port = pull.free_port()
    try:
        pause, runtimes = cridbench.start_runtimes(
            work, reg, bridge, "10.250.0.0/16",
            crid_extra=["--metrics-address", f"127.0.0.1:{metrics_port}"])
        image = f"{reg}/busybox:latest"
        for rt in runtimes:
            stream.crictl(bin, rt.sock, "pull", image)
            stream.crictl(bin, rt.sock, "pull", pause)
        ctrs = {rt.name: [] for rt in runtimes}
        for n in range(a.pods):
            for rt in runtimes:
                pod_json, ctr_json = write_configs(work, rt.name, image, n)
                pod = stream.crictl(bin, rt.sock, "runp", pod_json)
                ctr = stream.crictl(bin, rt.sock, "create", pod, ctr_json, pod_json)
                stream.crictl(bin, rt.sock, "start", ctr)
                ctrs[rt.name].append(ctr)
        print(f"{a.pods} pods on each", file=sys.stderr)
        crid_rt, cd_rt = runtimes
        subs = [Subscriber([bin, "--config", "/dev/null", "-r", f"unix://{crid_rt.sock}", "events", "-o", "json"],
                           crictl_events),
                Subscriber(["ctr", "-a", cd_rt.sock, "events"], ctr_events)]
        time.sleep(1)
        usage = {
            "crid": measure(crid_rt.proc.pid, cridbench.pids_with(["ctrmon"], crid_rt.root)),
            "containerd": measure(cd_rt.proc.pid, cridbench.pids_with(["containerd-shim"]) +
                                  cridbench.pause_pids("2147483647")),
        }
        scraped = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{metrics_port}/metrics"],
                                 capture_output=True, text=True).stdout
        lat = {rt.name: [] for rt in runtimes}
        for n in range(a.pods):
            for rt, sub in ([(crid_rt, subs[0]), (cd_rt, subs[1])] if n % 2 == 0
                            else [(cd_rt, subs[1]), (crid_rt, subs[0])]):
                cid = ctrs[rt.name][n]
                info = json.loads(stream.crictl(bin, rt.sock, "inspect", "-o", "json", cid))
                pid = info["info"]["pid"]
                t0 = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                got = sub.wait(cid)
                if got is None:
                    pull.die(f"{rt.name}: no exit event for {cid} within 10 s")
                lat[rt.name].append((got - t0) * 1000)
    finally:
        for s in subs:
            s.stop()
        for rt in runtimes:
            stream.crictl(bin, rt.sock, "rmp", "-fa", check=False)
        cridbench.cleanup(runtimes, reg_proc, bridge, work)

    pct = cridbench.pct
    print(f"\n### events and footprint: crid vs containerd {cridbench.containerd_version()}, "
          f"{a.pods} pods each\n")
    print("Exit to event (SIGKILL of the container's process from the host until the "
          "subscriber has read the event), ms:\n")
    print("| runtime | subscriber | p50 | p90 |")
    print("|---|---|---:|---:|")
    for name, how in [("crid", "crictl events (GetContainerEvents)"), ("containerd", "ctr events (/tasks/exit)")]:
        print(f"| {name} | {how} | {pct(lat[name], 0.5):.2f} | {pct(lat[name], 0.9):.2f} |")
    c, d = lat["crid"], lat["containerd"]
    print(f"\ncrid/containerd: p50 {pct(c, 0.5) / pct(d, 0.5):.2f}, p90 {pct(c, 0.9) / pct(d, 0.9):.2f}\n")
    print(f"With {a.pods} pods and one subscriber, 10 s idle (crid's metrics endpoint on, "
          f"{len(scraped)} bytes a scrape):\n")
    print("| runtime | daemon RSS MiB | with its per-container processes MiB | daemon CPU % | with them % |")
    print("|---|---:|---:|---:|---:|")
    for name in ["crid", "containerd"]:
        r, rall, cpu, cpuall = usage[name]
        print(f"| {name} | {r / 1024:.1f} | {rall / 1024:.1f} | {cpu:.2f} | {cpuall:.2f} |")
    (r1, a1, _, _), (r2, a2, _, _) = usage["crid"], usage["containerd"]
    print(f"\ncrid/containerd RSS: daemon {r1 / r2:.2f}, with per-container processes {a1 / a2:.2f}")


def write_configs(work, name, image, n):
    sc = {"namespace_options": {"pid": 1}, "seccomp": {"profile_type": 1}}
    pod = {"metadata": {"name": f"ev-{n}", "namespace": "bench", "uid": f"{name}-ev-{n}"},
           "log_directory": os.path.join(work, "logs", name, str(n)), "linux": {"security_context": sc}}
    ctr = {"metadata": {"name": "c"}, "image": {"image": image}, "command": ["/bin/sleep", "3600"],
           "log_path": "c.log", "linux": {"security_context": sc}}
    paths = []
    for what, v in [("pod", pod), ("ctr", ctr)]:
        p = os.path.join(work, f"{name}-ev-{n}-{what}.json")
        with open(p, "w") as f:
            json.dump(v, f)
        paths.append(p)
    return paths


if __name__ == "__main__":
    main()
