#!/usr/bin/env python3
"""make bench, part two: first and second bundles, and pull + unpack end to end.

On the shared corpus (see pull.py for the registry), for each image, alternating the
tools run by run, page cache dropped before each cold run, fresh directories, median
of N:

  first bundle   bundlegen IMAGE DIR (a fresh layer cache each run)
  umoci unpack   umoci unpack --image STORE:IMAGE DIR (same OCI layout; gzip only:
                 Debian's umoci 0.4.7 cannot read zstd layers)
  floor          each layer in order: gzip -dc BLOB | tar -x (zstd -dc for zstd)
  second bundle  bundlegen again with the layers cached (page cache warm)

and, cold, from the registry: imgpull + bundlegen, skopeo copy + umoci unpack, and
containerd's `ctr image pull` (pulls and unpacks into its overlayfs snapshotter).
Prints markdown tables with same-run ratios. Needs root.
"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull  # registry start-up and corpus building

BIN = pull.BIN


timed = pull.timed

# Seconds to let the filesystem settle after trees are deleted: for about a minute,
# extracting into it is several times slower (measured on these machines).
SETTLE = 60


def remove_tree(path):
    """Unmounts what is mounted under path (bundles are overlay mounts), then deletes it."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            if mp == path or mp.startswith(path + "/"):
                mounts.append(mp)
    for mp in sorted(mounts, reverse=True):
        subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)
    shutil.rmtree(path, ignore_errors=True)


def make_room(work, needed):
    """Trees of finished runs stay until the timings are done, unless the next run
    would not fit: then they go, and the filesystem gets SETTLE seconds."""
    if shutil.disk_usage(work).free >= needed:
        return
    runs = [os.path.join(work, e) for e in os.listdir(work) if e.startswith("run-")]
    for r in runs:
        remove_tree(r)
    subprocess.run(["sync"], check=True)
    print(f"bench: deleted the trees of {len(runs)} earlier runs to make room; "
          f"waiting {SETTLE} s for the filesystem to settle", file=sys.stderr)
    time.sleep(SETTLE)


class Containerd:
    """A containerd of its own (root, state, socket) for one run."""

    def __init__(self, work):
        self.dir = os.path.join(work, "containerd")
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "c.sock")
        cfg = os.path.join(self.dir, "config.toml")
        with open(cfg, "w") as f:
            f.write(f'version = 2\nroot = "{self.dir}/root"\nstate = "{self.dir}/state"\n'
                    f'[grpc]\n  address = "{self.sock}"\n'
                    '[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n')
        self.proc = subprocess.Popen(["containerd", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(self.sock):
                return
            time.sleep(0.05)
        pull.die("containerd did not start")

    def pull(self, ref):
        return timed(["ctr", "--address", self.sock, "image", "pull", "--plain-http", ref])

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        subprocess.run(["umount", "-R", self.dir], stderr=subprocess.DEVNULL)


def main():
    args = pull.corpus_args(__doc__, "debian-python,debian-python-zstd,bigfile",
                            ["docker-registry", "skopeo", "umoci", "containerd", "ctr", "zstd"])
    work = tempfile.mkdtemp(prefix="crikit-bench-", dir="/var/tmp")
    proc, addr = pull.start_registry(work)
    try:
        pull.ensure_corpus(addr)
        store_root = os.path.join(work, "store")
        images = args.images.split(",")
        timed([os.path.join(BIN, "imgpull"), "--root", store_root, "--insecure-registry", addr, "-q",
            "--registries-conf", "/dev/null"] + [f"{addr}/{i}:latest" for i in images])
        first_rows, e2e_rows = [], []
        n = 0
        for image in images:
            ref = f"{addr}/{image}:latest"
            zstd = image.endswith("-zstd")
            listed = pull.manifest_blobs(addr, image)
            blobs = [d for d, _ in listed[1:]]
            # A run keeps about a dozen times the compressed image: the trees of each
            # tool, three stores and a layer cache.
            guess = 12 * sum(s for _, s in listed)
            t = {k: [] for k in ["first", "umoci", "floor", "second", "pull+bundle", "skopeo+umoci", "ctr"]}
            used = 0
            for i in range(args.runs):
                # Room for a run like the last, with a margin.
                make_room(work, max(guess, 2 * used))
                free_before = shutil.disk_usage(work).free
                n += 1
                run_dir = os.path.join(work, f"run-{n}")
                os.makedirs(run_dir)
                root = os.path.join(run_dir, "root")
                os.makedirs(root)
                os.symlink(os.path.join(store_root, "images"), os.path.join(root, "images"))

                def first():
                    return timed([os.path.join(BIN, "bundlegen"), "--root", root, ref, os.path.join(run_dir, "b1"), "--", "/bin/true"])

                def umoci():
                    return timed(["umoci", "unpack", "--image", f"{store_root}/images:{ref}", os.path.join(run_dir, "u")])

                def floor():
                    d = os.path.join(run_dir, "floor")
                    os.makedirs(d)
                    tool = "zstd -dc" if zstd else "gzip -dc"
                    script = " && ".join(f"{tool} {store_root}/images/blobs/sha256/{b[7:]} | tar -x -C {d}" for b in blobs)
                    return timed(["bash", "-c", script])

                def pull_bundle():
                    r2 = os.path.join(run_dir, "e2e")
                    return timed(["bash", "-c",
                                  f"{BIN}/imgpull --root {r2} -q --registries-conf /dev/null --insecure-registry {addr} {ref} "
                                  f"| {BIN}/bundlegen --root {r2} - {run_dir}/e2e-bundle -- /bin/true"])

                def skopeo_umoci():
                    lay = os.path.join(run_dir, "sk")
                    return timed(["bash", "-c", f"skopeo copy -q --src-tls-verify=false docker://{ref} oci:{lay}:x "
                                                f"&& umoci unpack --image {lay}:x {run_dir}/sk-bundle"])

                ctrd = Containerd(run_dir)

                def ctr():
                    return ctrd.pull(ref)

                tools = {"first": first, "floor": floor, "pull+bundle": pull_bundle, "ctr": ctr}
                if not zstd:
                    tools["umoci"] = umoci
                    tools["skopeo+umoci"] = skopeo_umoci
                order = list(tools)
                try:
                    for name in (order if i % 2 == 0 else order[::-1]):
                        pull.drop_caches()
                        t[name].append(tools[name]())
                finally:
                    ctrd.stop()
                # The second bundle: layers cached, nothing dropped.
                t["second"].append(timed([os.path.join(BIN, "bundlegen"), "--root", root, ref, os.path.join(run_dir, "b2"), "--", "/bin/true"]))
                used = max(used, free_before - shutil.disk_usage(work).free)
                print(f"{image} run {i + 1}/{args.runs}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in t.items() if v), file=sys.stderr)
            med = {k: statistics.median(v) if v else None for k, v in t.items()}
            first_rows.append((image, med))
            e2e_rows.append((image, med))
        fmt = lambda v: "n/a" if v is None else f"{v:.3f} s" if v < 0.1 else f"{v:.2f} s"
        ratio = lambda a, b: "n/a" if a is None or b is None else f"{a / b:.2f}"
        print(f"\nFirst and second bundle, median of {args.runs} (`make bench`, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)\n")
        print("| image | floor: gzip/zstd -dc \\| tar -x | umoci unpack | bundlegen first | first / umoci | first / floor | bundlegen second |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for image, m in first_rows:
            print(f"| {image} | {fmt(m['floor'])} | {fmt(m['umoci'])} | {fmt(m['first'])} | {ratio(m['first'], m['umoci'])} "
                  f"| {ratio(m['first'], m['floor'])} | {fmt(m['second'])} |")
        print(f"\nPull and unpack from the registry, cold, median of {args.runs}\n")
        print("| image | imgpull + bundlegen | skopeo copy + umoci unpack | ctr image pull | ours / skopeo+umoci | ours / containerd |")
        print("|---|---:|---:|---:|---:|---:|")
        for image, m in e2e_rows:
            print(f"| {image} | {fmt(m['pull+bundle'])} | {fmt(m['skopeo+umoci'])} | {fmt(m['ctr'])} "
                  f"| {ratio(m['pull+bundle'], m['skopeo+umoci'])} | {ratio(m['pull+bundle'], m['ctr'])} |")
    finally:
        proc.kill()
        proc.wait()
        remove_tree(work)


if __name__ == "__main__":
    main()
