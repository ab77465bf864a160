#!/usr/bin/env python3
"""make bench: cold pulls, imgpull against skopeo, on the shared image corpus.

Starts Debian's docker-registry on loopback over the corpus storage
($CORPUS_DIR/registry, default /var/tmp/crikit-bench-corpus), building and pushing
the corpus with bench/corpus.py the first time. For every image it
times, alternating the order run by run, with the page cache dropped before each:

  imgpull   imgpull --root FRESH REG/IMAGE
  skopeo    skopeo copy docker://REG/IMAGE oci:FRESH:IMAGE
  floor     the manifest fetched by tag, then every blob it names streamed at once
            (a thread each) from the registry in 1 MiB reads, hashed with SHA-256
            (OpenSSL's, through hashlib) and written to a file: the work any
            correct pull must do, with no bookkeeping, timed inside the Python
            process (no start-up counted)
  process   the same as a program of its own (lib/examples/floor: std and
            crikit's hasher), timed like the tools: start-up counted
  durable   the in-process floor plus an fsync of every blob, as a pull that
            survives a crash must do

and prints a markdown table of medians and same-run ratios, then SHA-256 throughput of
the hasher every blob goes through against coreutils' sha256sum. Needs root.
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
BIN = os.environ.get("CRIKIT_BIN_DIR", os.path.join(TOP, "target", "release"))
CORPUS = os.environ.get("CORPUS_DIR", "/var/tmp/crikit-bench-corpus")
ACCEPT = "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"


def die(msg):
    print(f"bench: {msg}", file=sys.stderr)
    sys.exit(1)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_registry(work):
    os.makedirs(os.path.join(CORPUS, "registry"), exist_ok=True)
    addr = f"127.0.0.1:{free_port()}"
    cfg = os.path.join(work, "registry.yml")
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\n"
                f"storage: {{filesystem: {{rootdirectory: {CORPUS}/registry}}}}\nhttp: {{addr: {addr}}}\n")
    proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://{addr}/v2/", timeout=1)
            return proc, addr
        except Exception:
            time.sleep(0.05)
    proc.kill()
    die("docker-registry did not start")


def ensure_corpus(addr):
    """Builds and pushes the corpus with bench/corpus.py, once."""
    if os.path.exists(os.path.join(CORPUS, "pushed.done")):
        return
    import corpus
    print(f"building the corpus into {CORPUS} (a few minutes, once)", file=sys.stderr)
    corpus.build(addr, CORPUS)
    open(os.path.join(CORPUS, "pushed.done"), "w").close()


def manifest_blobs(addr, image):
    req = urllib.request.Request(f"http://{addr}/v2/{image}/manifests/latest", headers={"Accept": ACCEPT})
    m = json.load(urllib.request.urlopen(req))
    blobs = [m["config"]] + m["layers"]
    return [(b["digest"], b["size"]) for b in blobs]


def proc_stat(pid):
    """(utime + stime in clock ticks) of a process, 0 when gone."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]) + int(f[12])
    except (OSError, IndexError, ValueError):
        return 0


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(cmd, **kw):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        die(f"{' '.join(cmd)} failed: {r.stderr.decode(errors='replace').strip()}")
    return dt


def run_imgpull(addr, image, out):
    return timed([os.path.join(BIN, "imgpull"), "--root", out, "--insecure-registry", addr, "-q",
                  "--registries-conf", "/dev/null", f"{addr}/{image}:latest"])


def run_skopeo(addr, image, out):
    return timed(["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{addr}/{image}:latest", f"oci:{out}:{image}"])


def floor_fetch(url, path, durable=False, keep=False, accept=None):
    """Streams url through SHA-256 into path; returns (digest, body if keep)."""
    import hashlib
    h = hashlib.sha256()
    kept = []
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req) as r, open(path, "wb") as f:
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            f.write(chunk)
            if keep:
                kept.append(chunk)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    return "sha256:" + h.hexdigest(), b"".join(kept)


def floor_blob(addr, image, digest, path, durable=False):
    got, _ = floor_fetch(f"http://{addr}/v2/{image}/blobs/{digest}", path, durable)
    if got != digest:
        die(f"floor: {digest} arrived with digest {got}")


def run_process_floor(addr, image, out, blobs):
    exe = os.path.join(TOP, "target", "release", "examples", "floor")
    return timed([exe, addr, image, "latest", out])


def run_floor(addr, image, out, blobs, durable=False):
    import threading
    os.makedirs(out)
    t0 = time.perf_counter()
    # The manifest first, as a pull must: it names the blobs.
    _, raw = floor_fetch(f"http://{addr}/v2/{image}/manifests/latest", os.path.join(out, "manifest"),
                         durable, keep=True, accept=ACCEPT)
    m = json.loads(raw)
    named = [m["config"]["digest"]] + [l["digest"] for l in m["layers"]]
    if sorted(named) != sorted(d for d, _ in blobs):
        die(f"floor: the manifest of {image} changed during the run")
    threads = [threading.Thread(target=floor_blob, args=(addr, image, d, os.path.join(out, d[7:]), durable)) for d in named]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def hash_speed(work):
    data = os.path.join(work, "hash.bin")
    with open(data, "wb") as f:
        f.write(os.urandom(256 << 20))
    example = os.path.join(TOP, "target", "release", "examples", "hashspeed")
    out = subprocess.run([example, data], capture_output=True, text=True, check=True).stdout.split()
    best = min(timed(["sha256sum", data]) for _ in range(3))
    print(f"\nSHA-256 on 256 MiB in memory: crikit {float(out[0]):.0f} MB/s, "
          f"sha256sum {(256 << 20) / best / 1e6:.0f} MB/s (best of 3, file cached)")


def corpus_args(doc, images, tools, extra=lambda ap: None):
    """The command line of a bench over the corpus (--runs, --images and what `extra`
    adds), once root and `tools` are checked: it drops the page cache."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--images", default=images)
    extra(ap)
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("needs root (drops the page cache)")
    for tool in tools:
        if not shutil.which(tool):
            die(f"{tool} is missing: run 'make deps'")
    return args


def main():
    args = corpus_args(__doc__, "debian-python,debian-python-zstd,bigfile", ["docker-registry", "skopeo"])
    if not os.access(os.path.join(BIN, "imgpull"), os.X_OK):
        die(f"{BIN}/imgpull is missing: run 'make release'")
    work = tempfile.mkdtemp(prefix="crikit-bench-", dir="/var/tmp")
    proc, addr = start_registry(work)
    try:
        ensure_corpus(addr)
        rows = []
        for image in args.images.split(","):
            blobs = manifest_blobs(addr, image)
            size = sum(s for _, s in blobs)
            times = {"imgpull": [], "skopeo": [], "floor": [], "process": [], "durable": []}
            tools = {
                "imgpull": lambda out: run_imgpull(addr, image, out),
                "skopeo": lambda out: run_skopeo(addr, image, out),
                "floor": lambda out: run_floor(addr, image, out, blobs),
                "process": lambda out: run_process_floor(addr, image, out, blobs),
                "durable": lambda out: run_floor(addr, image, out, blobs, durable=True),
            }
            order = list(tools)
            for i in range(args.runs):
                for name in (order if i % 2 == 0 else order[::-1]):
                    out = os.path.join(work, f"{image}-{name}-{i}")
                    drop_caches()
                    times[name].append(tools[name](out))
                print(f"{image} run {i + 1}/{args.runs}: " +
                      ", ".join(f"{n} {times[n][-1]:.2f}s" for n in order), file=sys.stderr)
            med = {n: statistics.median(t) for n, t in times.items()}
            rows.append((image, size, med))
            # Trees of this image go only after its timed runs.
            for e in os.listdir(work):
                if e.startswith(image + "-"):
                    shutil.rmtree(os.path.join(work, e), ignore_errors=True)
        print(f"\nCold pulls, median of {args.runs}, page cache dropped before each run "
              f"(`make bench`, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)\n")
        print("| image | compressed | floor | floor as a process | floor + fsync | imgpull | skopeo copy "
              "| imgpull / skopeo | imgpull / floor | imgpull / floor + fsync | skopeo / floor |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for image, size, m in rows:
            print(f"| {image} | {size / 1e6:.0f} MB | {m['floor']:.2f} s | {m['process']:.2f} s | {m['durable']:.2f} s "
                  f"| {m['imgpull']:.2f} s | {m['skopeo']:.2f} s | {m['imgpull'] / m['skopeo']:.2f} "
                  f"| {m['imgpull'] / m['floor']:.2f} | {m['imgpull'] / m['durable']:.2f} | {m['skopeo'] / m['floor']:.2f} |")
        hash_speed(work)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
