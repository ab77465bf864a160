#!/usr/bin/env python3
"""make bench, part five: streaming through crid and through containerd's CRI plugin,
with crictl as the client (CRICTL, else crictl on PATH; skipped without one).

Both runtimes start as in bench/crid.py (private state, the same CNI bridge config,
the corpus registry on loopback) and run one pod each whose container serves a
200 MB file with busybox httpd.

  exec       wall time of `crictl exec CTR true` (not -s: the streaming server,
             SPDY), p50 and p90 over --runs, alternating which runtime goes first;
             also through a crid pod of the crun handler (when crun is installed)
  floor      in the same loop, what no runtime can take off: `crictl version`
             against each socket (crictl's own start, one RPC) and the OCI
             runtime's own `exec CTR true` on crid's containers
  forward    `crictl port-forward POD LOCAL:8080`, then an HTTP GET of the 200 MB
             file through the forwarded port: time to first byte and MB/s,
             median of --forwards

Prints markdown tables with same-run ratios (crid / containerd). Needs root.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull  # registry, corpus, die
import crid as cridbench  # the two runtimes

SIZE_MB = 200


def crictl_bin():
    c = os.environ.get("CRICTL") or shutil.which("crictl")
    return c if c and os.access(c, os.X_OK) else None


def crictl(bin, sock, *args, check=True):
    r = subprocess.run([bin, "--config", "/dev/null", "--timeout", "60s", "-r", f"unix://{sock}",
                        "-i", f"unix://{sock}", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        pull.die(f"crictl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def serve_pod(bin, rt, work, image, handler=None):
    tag = f"{rt.name}-{handler or 'default'}"
    pod = os.path.join(work, f"{tag}-stream-pod.json")
    ctr = os.path.join(work, f"{tag}-stream-ctr.json")
    with open(pod, "w") as f:
        json.dump({"metadata": {"name": f"stream-{handler or 'default'}", "namespace": "bench",
                                "uid": f"{tag}-stream"},
                   "log_directory": os.path.join(work, "logs", rt.name),
                   "linux": {"security_context": {"namespace_options": {"pid": 1}}}}, f)
    with open(ctr, "w") as f:
        json.dump({"metadata": {"name": "web"}, "image": {"image": image},
                   "command": ["/bin/busybox", "sh", "-c",
                               f"mkdir -p /www && /bin/busybox dd if=/dev/zero of=/www/big bs=1M "
                               f"count={SIZE_MB} 2>/dev/null && touch /www/ready && "
                               "exec /bin/busybox httpd -f -p 8080 -h /www"],
                   "log_path": "web.log"}, f)
    p = crictl(bin, rt.sock, "runp", *(["--runtime", handler] if handler else []), pod)
    c = crictl(bin, rt.sock, "create", p, ctr, pod)
    crictl(bin, rt.sock, "start", c)
    for _ in range(600):
        ready = subprocess.run([bin, "--config", "/dev/null", "-r", f"unix://{rt.sock}", "exec", "-s", c,
                                "/bin/busybox", "test", "-f", "/www/ready"], capture_output=True)
        if ready.returncode == 0:
            return p, c
        time.sleep(0.1)
    pull.die(f"{rt.name}: the web container never got ready")


def timed(what, argv):
    """Wall time of argv in ms; it must succeed."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True)
    if r.returncode != 0:
        pull.die(f"{what}: {r.stderr.decode(errors='replace').strip()}")
    return (time.perf_counter() - t0) * 1000


def timed_exec(bin, rt, ctr):
    return timed(f"{rt.name}: crictl exec",
                 [bin, "--config", "/dev/null", "-r", f"unix://{rt.sock}", "exec", ctr, "/bin/true"])


def forward_once(bin, rt, pod):
    port = pull.free_port()
    pf = subprocess.Popen([bin, "--config", "/dev/null", "-r", f"unix://{rt.sock}", "port-forward", pod,
                           f"{port}:8080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except OSError:
                if time.time() > deadline:
                    pull.die(f"{rt.name}: port-forward never listened")
                time.sleep(0.05)
        t0 = time.perf_counter()
        s.sendall(b"GET /big HTTP/1.0\r\n\r\n")
        first = None
        total = 0
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            if first is None:
                first = time.perf_counter()
            total += len(b)
        t1 = time.perf_counter()
        s.close()
        if total < SIZE_MB << 20:
            pull.die(f"{rt.name}: only {total} bytes came through the forwarded port")
        return (first - t0) * 1000, total / (1 << 20) / (t1 - t0)
    finally:
        pf.terminate()
        pf.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--forwards", type=int, default=5)
    a = ap.parse_args()
    bin = crictl_bin()
    if not bin:
        print("bench/stream.py: no crictl (set CRICTL or PATH): skipped", file=sys.stderr)
        return
    cridbench.require(cridbench.RUNTIME_TOOLS)
    work = tempfile.mkdtemp(prefix="crikit-bench-stream-", dir="/var/tmp")
    reg_proc, reg = pull.start_registry(work)
    bridge = "ckbench1"
    runtimes = []
    try:
        pause, runtimes = cridbench.start_runtimes(work, reg, bridge, "10.252.0.0/16")
        image = f"{reg}/busybox:latest"
        served = {}
        crid = runtimes[0]
        for rt in runtimes:
            crictl(bin, rt.sock, "pull", image)
            # crid's default handler is crun when it is installed: runc, as containerd's.
            served[rt.name] = serve_pod(bin, rt, work, image, "runc" if rt is crid else None)
        crun = shutil.which("crun")
        if crun:
            served["crun"] = serve_pod(bin, crid, work, image, "crun")
        # Each sample of a round in turn, the order alternating round by round.
        samples = {
            "crid": lambda: timed_exec(bin, crid, served["crid"][1]),
            "containerd": lambda: timed_exec(bin, runtimes[1], served["containerd"][1]),
            "crid version": lambda: timed("crictl version", [bin, "--config", "/dev/null", "-r",
                                                             f"unix://{crid.sock}", "version"]),
            "containerd version": lambda: timed("crictl version", [
                bin, "--config", "/dev/null", "-r", f"unix://{runtimes[1].sock}", "version"]),
            "runc exec": lambda: timed("runc exec", ["runc", "--root", f"{crid.root}/run/runc", "exec",
                                                     served["crid"][1], "/bin/true"]),
        }
        if crun:
            samples["crid crun"] = lambda: timed_exec(bin, crid, served["crun"][1])
            samples["crun exec"] = lambda: timed("crun exec", [
                "crun", "--root", f"{crid.root}/run/runtimes/crun", "exec", served["crun"][1], "/bin/true"])
        execs = {n: [] for n in samples}
        order = list(samples)
        for i in range(a.runs):
            for n in order if i % 2 == 0 else order[::-1]:
                execs[n].append(samples[n]())
        fwd = {rt.name: [] for rt in runtimes}
        for i in range(a.forwards):
            for rt in runtimes if i % 2 == 0 else runtimes[::-1]:
                fwd[rt.name].append(forward_once(bin, rt, served[rt.name][0]))
            print(f"forward {i + 1}/{a.forwards}", file=sys.stderr)
    finally:
        for rt in runtimes:
            subprocess.run([bin, "--config", "/dev/null", "-r", f"unix://{rt.sock}", "rmp", "-fa"],
                           capture_output=True)
        cridbench.cleanup(runtimes, reg_proc, bridge, work)

    c, k = "crid", "containerd"
    pct = cridbench.pct
    print(f"\n### streaming: crid vs containerd {cridbench.containerd_version()}, crictl as the client\n")
    print("| | crid | containerd | ratio |\n|---|---:|---:|---:|")
    for p, label in [(0.5, "p50"), (0.9, "p90")]:
        x, y = pct(execs[c], p), pct(execs[k], p)
        print(f"| `crictl exec CTR true`, {label} of {a.runs} | {x:.0f} ms | {y:.0f} ms | {x / y:.2f} |")
    if "crid crun" in execs:
        for p, label in [(0.5, "p50"), (0.9, "p90")]:
            x, y = pct(execs["crid crun"], p), pct(execs[k], p)
            print(f"| the same, crid's pod of the crun handler (containerd: runc), {label} | {x:.0f} ms | "
                  f"{y:.0f} ms | {x / y:.2f} |")
    x, y = pct(execs["crid version"], 0.5), pct(execs["containerd version"], 0.5)
    print(f"| floor: `crictl version` (crictl's start and one RPC), p50 | {x:.0f} ms | {y:.0f} ms | {x / y:.2f} |")
    for n in ["runc exec", "crun exec"]:
        if n in execs:
            print(f"| floor: `{n} CTR true` alone on crid's container, p50 | {pct(execs[n], 0.5):.0f} ms | | |")
    ttfb = {n: statistics.median(v[0] for v in fwd[n]) for n in fwd}
    rate = {n: statistics.median(v[1] for v in fwd[n]) for n in fwd}
    print(f"| port-forward, time to first byte (median of {a.forwards}) | {ttfb[c]:.0f} ms | "
          f"{ttfb[k]:.0f} ms | {ttfb[c] / ttfb[k]:.2f} |")
    print(f"| port-forward, {SIZE_MB} MB through one connection (median of {a.forwards}) | "
          f"{rate[c]:.0f} MB/s | {rate[k]:.0f} MB/s | {rate[c] / rate[k]:.2f} |")


if __name__ == "__main__":
    main()
