#!/usr/bin/env python3
"""make bench: eight nodes pulling one image at the same moment, with peers.

A cluster on this machine: NODES network namespaces on a bridge (itself in a
namespace: the host's network is not touched), each node with its own store,
imgserve and imgpull, and the upstream, Debian's docker-registry serving the corpus
(bench/corpus.py), in a namespace of its own behind a link shaped with a token
bucket (tc tbf, --mbit, default 200 Mbit/s) towards the nodes, so that the upstream
is the bottleneck, as in a real cluster. The kernel here has no netem, so the link
adds no delay of its own.

Four ways, in alternating order each round, every one into fresh stores with the
page cache warm:

  alone     one node pulls the image from the upstream (no peers)
  peers     every node pulls at once with --peers (the list of the nodes' imgserve)
            and --self: each blob is fetched from the upstream by the node that
            ranks first for it, and sent to the others as it arrives
  upstream  every node pulls at once from the upstream, no peers
  mirrors   every node pulls at once with the other nodes' imgserve as
            registries.conf digest-only mirrors, as before peers: at a first pull
            no mirror has the image yet

The image is pulled by digest, as kubelet pulls a pinned image, so that the
digest-only mirrors are asked.

For each: the wall time until all are done (median of --runs), its ratio to one
node alone, the bytes the upstream sent (its access log: blob bodies) against the
image's size, and, for peers, the highest peak RSS of any imgserve. Targets: with
peers, upstream bytes at most 1.1x the image, and all nodes done within 1.3x the
time one node takes alone. Needs root.
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull

PREFIX = "10.252.0"
PORT = 7000


def ip(*args):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class Cluster:
    def __init__(self, n, data, mbit, work):
        self.tag = f"crikit-b{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.up = f"{self.tag}-up"
        self.nodes = [f"{self.tag}-n{i}" for i in range(n)]
        self.ips = [f"{PREFIX}.{10 + i}" for i in range(n)]
        self.upstream = f"{PREFIX}.2:5000"
        self.made = []
        self.registry = None
        self.log = os.path.join(work, "access.log")
        ip("netns", "add", self.switch)
        self.made.append(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        self.join(self.up, "vup", f"{PREFIX}.2")
        subprocess.run(["ip", "netns", "exec", self.up, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
                        "rate", f"{mbit}mbit", "burst", "64kb", "latency", "100ms"], check=True)
        for i, (ns, addr) in enumerate(zip(self.nodes, self.ips)):
            self.join(ns, f"vn{i}", addr)
        cfg = os.path.join(work, "upstream.yml")
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog: {{level: error}}\n"
                    f"storage: {{filesystem: {{rootdirectory: {data}}}}}\nhttp: {{addr: {self.upstream}}}\n")
        log = open(self.log, "w")
        self.registry = subprocess.Popen(["ip", "netns", "exec", self.up, "docker-registry", "serve", cfg],
                                         stdout=log, stderr=log)
        for _ in range(200):
            if self.exec(0, ["bash", "-c", f"exec 3<>/dev/tcp/{PREFIX}.2/5000"]).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start in its namespace")

    def join(self, ns, port, addr):
        ip("netns", "add", ns)
        self.made.append(ns)
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")

    def exec(self, i, cmd, **kw):
        return subprocess.run(["ip", "netns", "exec", self.nodes[i], *cmd], capture_output=True, **kw)

    def popen(self, i, cmd, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.nodes[i], *cmd], **kw)

    def served(self):
        """(GETs, body bytes) of blobs the upstream's access log shows, 2xx only."""
        gets, total = 0, 0
        with open(self.log, errors="replace") as f:
            for line in f:
                if '"GET ' not in line or "/blobs/" not in line:
                    continue
                rest = line.split('"GET ', 1)[1].split('"', 1)[1].split()
                if len(rest) >= 2 and rest[0].startswith("2") and rest[1].isdigit():
                    gets += 1
                    total += int(rest[1])
        return gets, total

    def close(self):
        if self.registry:
            self.registry.terminate()
            self.registry.wait()
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def manifest_digest(addr, image):
    import hashlib
    req = urllib.request.Request(f"http://{addr}/v2/{image}/manifests/latest", headers={"Accept": pull.ACCEPT})
    with urllib.request.urlopen(req) as r:
        return "sha256:" + hashlib.sha256(r.read()).hexdigest()


def imgpull(c, i, root, ref, extra):
    return c.popen(i, [os.path.join(pull.BIN, "imgpull"), "--root", root, "-q",
                       "--insecure-registry", c.upstream, *extra, ref],
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, HOME=root))


def serve(c, i, root, extra):
    p = c.popen(i, [os.path.join(pull.BIN, "imgserve"), "--root", root, "--listen", f"{c.ips[i]}:{PORT}", *extra],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if not p.stdout.readline().strip():
        raise RuntimeError(f"imgserve did not start on node {i}")
    return p


def peak_rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_way(c, way, ref, work, n):
    """One run of `way`: (wall seconds, upstream blob bytes, peak imgserve RSS KiB)."""
    base = tempfile.mkdtemp(prefix=f"{way}-", dir=work)
    roots = [os.path.join(base, f"node{i}") for i in range(n)]
    for r in roots:
        os.makedirs(r)
    servers = []
    peers = os.path.join(base, "peers")
    addrs = [f"{a}:{PORT}" for a in c.ips[:n]]
    with open(peers, "w") as f:
        f.write("\n".join(addrs) + "\n")
    auth = os.path.join(base, "auth.json")
    with open(auth, "w") as f:
        f.write('{"auths":{}}')
    extra = {i: ["--registries-conf", "/dev/null"] for i in range(n)}
    try:
        if way == "peers":
            for i in range(n):
                servers.append(serve(c, i, roots[i], ["--peers", peers, "--self", addrs[i], "--authfile", auth,
                                                      "--registries-conf", "/dev/null",
                                                      "--insecure-registry", c.upstream]))
                extra[i] += ["--peers", peers, "--self", addrs[i]]
        elif way == "mirrors":
            host = c.upstream
            for i in range(n):
                servers.append(serve(c, i, roots[i], []))
                conf = os.path.join(base, f"registries-{i}.conf")
                with open(conf, "w") as f:
                    f.write(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
                    for j in range(n):
                        if j != i:
                            f.write(f'[[registry.mirror]]\nlocation = "{addrs[j]}"\ninsecure = true\n'
                                    f'pull-from-mirror = "digest-only"\n')
                extra[i] = ["--registries-conf", conf]
        before = c.served()[1]
        t0 = time.perf_counter()
        procs = [imgpull(c, i, roots[i], ref, extra[i]) for i in range(n)]
        for i, p in enumerate(procs):
            _, err = p.communicate()
            if p.returncode != 0:
                pull.die(f"{way}: node {i}: imgpull failed: {err.decode(errors='replace').strip()}")
        wall = time.perf_counter() - t0
        time.sleep(0.2)  # the registry writes its access line after the body
        sent = c.served()[1] - before
        rss = max((peak_rss_kib(s.pid) for s in servers), default=0)
        return wall, sent, rss
    finally:
        for s in servers:
            s.terminate()
            s.wait()
        shutil.rmtree(base, ignore_errors=True)


def main():
    def extra(ap):
        ap.add_argument("--nodes", type=int, default=8)
        ap.add_argument("--mbit", type=int, default=200)
        ap.set_defaults(runs=2)
    args = pull.corpus_args(__doc__, "bigfile", ["docker-registry", "tc"], extra)
    work = tempfile.mkdtemp(prefix="crikit-bench-peers-")
    corpus_proc, corpus_addr = pull.start_registry(work)
    c = None
    try:
        pull.ensure_corpus(corpus_addr)
        images = {img: (sum(s for _, s in pull.manifest_blobs(corpus_addr, img)), manifest_digest(corpus_addr, img))
                  for img in args.images.split(",")}
        corpus_proc.terminate()
        corpus_proc.wait()
        corpus_proc = None
        c = Cluster(args.nodes, os.path.join(pull.CORPUS, "registry"), args.mbit, work)
        ways = ["alone", "peers", "upstream", "mirrors"]
        rows = []
        for image, (size, digest) in images.items():
            # By digest, as kubelet pulls a pinned image: the mirrors are asked too.
            ref = f"{c.upstream}/{image}@{digest}"
            res = {w: [] for w in ways}
            for run in range(args.runs):
                for way in (ways if run % 2 == 0 else list(reversed(ways))):
                    n = 1 if way == "alone" else args.nodes
                    res[way].append(run_way(c, way, ref, work, n))
                    print(f"  {image} {way} run {run + 1}: {res[way][-1][0]:.1f} s", file=sys.stderr)
            rows.append((image, size, res))
        print(f"\n{args.nodes} nodes pulling at once through a {args.mbit} Mbit/s upstream "
              f"(`make bench`, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, median of {args.runs})\n")
        print("| image | way | all done | x one node alone | upstream bytes | x image | imgserve peak RSS |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for image, size, res in rows:
            alone = statistics.median(r[0] for r in res["alone"])
            for way in ways:
                wall = statistics.median(r[0] for r in res[way])
                sent = statistics.median(r[1] for r in res[way])
                rss = max(r[2] for r in res[way])
                print(f"| {image} ({size / 1e6:.0f} MB) | {way} | {wall:.1f} s | {wall / alone:.2f} | "
                      f"{sent / 1e6:.0f} MB | {sent / size:.2f} | {f'{rss / 1024:.0f} MiB' if rss else '-'} |")
    finally:
        if c:
            c.close()
        if corpus_proc:
            corpus_proc.terminate()
            corpus_proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
