#!/usr/bin/env python3
"""make bench: imgserve against Debian's docker-registry, serving the same blobs.

docker-registry serves the corpus (bench/corpus.py) from its own storage; the images
are pulled once with imgpull into a store of this run, and imgserve serves that. For
every image, with the page cache dropped before each run (cold) and with both
servers' files cached (warm), median of RUNS, servers and clients alternating:

  imgpull   imgpull --root FRESH SERVER/IMAGE
  skopeo    skopeo copy docker://SERVER/IMAGE oci:FRESH:IMAGE
  curl      every blob of the manifest fetched at once by one curl --parallel, to
            /dev/null: what the server alone can deliver

Then twenty clients at once against each server, its resident memory sampled every
10 ms (the peak is reported): twenty imgpull of debian-python into fresh stores, and
twenty curl of bigfile's layer to /dev/null, with the server's CPU time and bytes
served per CPU second. Ratios are imgserve over docker-registry: time (lower is
better), throughput (higher), memory and CPU (lower). Needs root.
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull  # BIN, die, start_registry, ensure_corpus, drop_caches, timed, ACCEPT


class Imgserve:
    """imgserve over STORE on a free loopback port."""

    def __init__(self, root):
        self.proc = subprocess.Popen([os.path.join(pull.BIN, "imgserve"), "--root", root,
                                      "--listen", "127.0.0.1:0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.addr = self.proc.stdout.readline().strip()
        if not self.addr:
            pull.die("imgserve did not start")
        self.pid = self.proc.pid

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def manifest(addr, image):
    req = urllib.request.Request(f"http://{addr}/v2/{image}/manifests/latest", headers={"Accept": pull.ACCEPT})
    with urllib.request.urlopen(req) as r:
        return json.load(r), r.headers.get("Docker-Content-Digest")


def blob_urls(addr, image):
    m, _ = manifest(addr, image)
    return [f"http://{addr}/v2/{image}/blobs/{b['digest']}" for b in [m["config"]] + m["layers"]]


def run_curl(addr, image, out):
    argv = ["curl", "-sf", "--parallel", "--parallel-max", "16"]
    for u in blob_urls(addr, image):
        argv += ["-o", "/dev/null", u]
    return pull.timed(argv)


def run_imgpull(addr, image, out):
    return pull.run_imgpull(addr, image, out)


def run_skopeo(addr, image, out):
    return pull.run_skopeo(addr, image, out)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_rss_during(pid, work):
    """Runs work() while sampling pid's RSS; (seconds, peak RSS in kB, RSS before,
    CPU seconds pid used)."""
    before = rss_kb(pid)
    cpu0 = pull.proc_stat(pid)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.01)

    t = threading.Thread(target=sample)
    t.start()
    t0 = time.perf_counter()
    try:
        work()
    finally:
        dt = time.perf_counter() - t0
        done.set()
        t.join()
    return dt, peak[0], before, (pull.proc_stat(pid) - cpu0) / os.sysconf("SC_CLK_TCK")


def concurrently(argvs):
    procs = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for a in argvs]
    for p, a in zip(procs, argvs):
        _, err = p.communicate()
        if p.returncode != 0:
            pull.die(f"{' '.join(a)} failed: {err.decode(errors='replace').strip()}")


def main():
    args = pull.corpus_args(__doc__, "debian-python,bigfile", ["docker-registry", "skopeo", "curl"],
                            lambda ap: ap.add_argument("--clients", type=int, default=20))
    for b in ["imgpull", "imgserve"]:
        if not os.access(os.path.join(pull.BIN, b), os.X_OK):
            pull.die(f"{pull.BIN}/{b} is missing: run 'make release'")
    work = tempfile.mkdtemp(prefix="crikit-bench-serve-", dir="/var/tmp")
    reg_proc, reg = pull.start_registry(work)
    srv = None
    try:
        pull.ensure_corpus(reg)
        store = os.path.join(work, "store")
        images = args.images.split(",")
        for image in images:
            pull.run_imgpull(reg, image, store)
        srv = Imgserve(store)
        servers = {"imgserve": srv.addr, "registry": reg}
        pids = {"imgserve": srv.pid, "registry": reg_proc.pid}
        for image in images:
            _, da = manifest(srv.addr, image)
            _, db = manifest(reg, image)
            if da != db:
                pull.die(f"{image}: imgserve answers {da}, docker-registry {db}")
        clients = {"imgpull": run_imgpull, "skopeo": run_skopeo, "curl": run_curl}
        combos = [(s, c) for c in clients for s in servers]
        rows = []
        for image in images:
            m, _ = manifest(reg, image)
            size = m["config"]["size"] + sum(l["size"] for l in m["layers"])
            for cache in ["cold", "warm"]:
                times = {k: [] for k in combos}
                if cache == "warm":
                    for s in servers:
                        run_curl(servers[s], image, None)
                for i in range(args.runs):
                    for (s, c) in (combos if i % 2 == 0 else combos[::-1]):
                        out = os.path.join(work, f"out-{image}-{s}-{c}-{cache}-{i}")
                        if cache == "cold":
                            pull.drop_caches()
                        times[(s, c)].append(clients[c](servers[s], image, out))
                    print(f"{image} {cache} run {i + 1}/{args.runs}: " +
                          ", ".join(f"{s}/{c} {times[(s, c)][-1]:.2f}s" for s, c in combos), file=sys.stderr)
                rows.append((image, size, cache, {k: statistics.median(v) for k, v in times.items()}))
                for e in os.listdir(work):
                    if e.startswith("out-"):
                        shutil.rmtree(os.path.join(work, e), ignore_errors=True)

        # Twenty at once.
        load = []
        big = blob_urls(reg, "bigfile")[-1].split("/v2/", 1)[1] if "bigfile" in images else None
        big_size = manifest(reg, "bigfile")[0]["layers"][-1]["size"] if big else 0
        sizes = {image: size for image, size, _, _ in rows}
        if "debian-python" not in sizes:
            m, _ = manifest(reg, "debian-python")
            sizes["debian-python"] = m["config"]["size"] + sum(l["size"] for l in m["layers"])
        for s in ["imgserve", "registry", "imgserve", "registry"]:
            addr = servers[s]
            roots = [os.path.join(work, f"many-{s}-{n}") for n in range(args.clients)]
            pulls = [[os.path.join(pull.BIN, "imgpull"), "--root", r, "--insecure-registry", addr, "-q",
                      "--registries-conf", "/dev/null", f"{addr}/debian-python:latest"] for r in roots]
            dt, peak, idle, cpu = peak_rss_during(pids[s], lambda: concurrently(pulls))
            load.append((s, "imgpull debian-python", dt, peak, idle, cpu, args.clients * sizes["debian-python"]))
            for r in roots:
                shutil.rmtree(r, ignore_errors=True)
            if big:
                curls = [["curl", "-sf", "-o", "/dev/null", f"http://{addr}/v2/{big}"]] * args.clients
                dt, peak, idle, cpu = peak_rss_during(pids[s], lambda: concurrently(curls))
                load.append((s, "curl bigfile layer", dt, peak, idle, cpu, args.clients * big_size))

        # The same downloads with each server held to CPU 0 and the clients to CPU 1:
        # a server that saturates its core is the bottleneck, one that does not is
        # waiting on its clients.
        pinned = []
        if big and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
            for s in servers:
                subprocess.run(["taskset", "-a", "-p", "-c", "0", str(pids[s])], stdout=subprocess.DEVNULL, check=True)
            for s in ["imgserve", "registry"] * 3:
                curls = [["taskset", "-c", "1", "curl", "-sf", "-o", "/dev/null",
                          f"http://{servers[s]}/v2/{big}"]] * args.clients
                dt, _, _, cpu = peak_rss_during(pids[s], lambda: concurrently(curls))
                pinned.append((s, dt, cpu))

        print(f"\nPulls from imgserve and docker-registry, median of {args.runs} "
              f"(`make bench`, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores); "
              "throughput is the image's compressed bytes over the pull time\n")
        print("| image | cache | client | docker-registry | imgserve | MB/s registry | MB/s imgserve "
              "| imgserve throughput / registry |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        for image, size, cache, med in rows:
            for c in clients:
                r, i = med[("registry", c)], med[("imgserve", c)]
                print(f"| {image} ({size / 1e6:.0f} MB) | {cache} | {c} | {r:.2f} s | {i:.2f} s "
                      f"| {size / r / 1e6:.0f} | {size / i / 1e6:.0f} | {r / i:.2f} |")
        print(f"\n{args.clients} clients at once, peak resident memory of the server (sampled every 10 ms), "
              "two rounds each\n")
        print("| load | server | time | idle RSS | peak RSS | server CPU | MB per server CPU second |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for s, what, dt, peak, idle, cpu, nbytes in load:
            print(f"| {args.clients} × {what} | {s} | {dt:.2f} s | {idle / 1024:.1f} MiB "
                  f"| {peak / 1024:.1f} MiB | {cpu:.2f} s | {nbytes / max(cpu, 0.01) / 1e6:.0f} |")
        for what in sorted({row[1] for row in load}):
            rows_of = {s: [r for r in load if r[0] == s and r[1] == what] for s in servers}
            pk = {s: max(r[3] for r in rows_of[s]) for s in servers}
            tm = {s: statistics.median(r[2] for r in rows_of[s]) for s in servers}
            cp = {s: statistics.median(r[5] for r in rows_of[s]) for s in servers}
            print(f"\n{what}: imgserve / registry: peak RSS {pk['imgserve'] / pk['registry']:.2f}, "
                  f"time {tm['imgserve'] / tm['registry']:.2f}, server CPU {cp['imgserve'] / max(cp['registry'], 0.01):.2f} "
                  f"(bytes per server CPU second {cp['registry'] / max(cp['imgserve'], 0.01):.2f}x)")
        if pinned:
            print(f"\n{args.clients} × curl bigfile layer, the server on CPU 0 and the clients on CPU 1, "
                  "median of 3\n")
            print("| server | time | MB/s | server CPU busy |")
            print("|---|---:|---:|---:|")
            for s in servers:
                dts = statistics.median(d for s2, d, _ in pinned if s2 == s)
                busy = statistics.median(c / d for s2, d, c in pinned if s2 == s)
                print(f"| {s} | {dts:.2f} s | {args.clients * big_size / dts / 1e6:.0f} | {busy * 100:.0f} % |")
        print("\nOn loopback the clients share the machine's cores with the server, so wall-clock "
              "throughput is bounded by the clients' receive work as much as by the server; the "
              "server's CPU per byte is what a node serving its peers over a real network spends.")
    finally:
        if srv:
            srv.stop()
        reg_proc.kill()
        reg_proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
