#!/usr/bin/env python3
"""make bench: kubelet's image path, crictl against crid and containerd's CRI plugin.

The same set-up as bench/crid.py (the corpus registry on loopback, one CNI conf, a
pause image for containerd). For each corpus image, each run starts both runtimes
afresh on roots of their own (debian-python and its zstd twin share their layers:
neither may find the other's) and runs one pod in each; then, with the page cache
dropped before each (so the registry's files are read from disk, as on a node that
has not seen the image) and the runtimes alternated:

  pull + create   crictl pull IMAGE, then crictl create of a container of it in the
                  pod: what kubelet waits for before it can start a new image's
                  container. crid unpacks while it pulls; containerd 1.6 unpacks
                  after its download, before PullImage returns.

No image is deleted between timed pulls: on this machine's journal-less ext4, a
tree extracted within a minute of a deletion is several times slower to write. After
the last run, for each image:

  rmi             crictl rm of the container, then crictl rmi IMAGE: the time rmi
                  takes, and how much of what the pull and the create added to the
                  runtime's directory (du -x) is given back right after it, and 5 s
                  later (containerd collects its content and snapshots in a garbage
                  collection of its own; crid deletes the layers on a thread).

Prints a markdown table of medians with same-run ratios (crid / containerd).
crictl comes from $CRICTL or PATH. Needs root.
"""
import json, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull
import crid as cridbench
import stream


def du(path):
    # -x: not into the containers' rootfs mounts (crid mounts them at create,
    # containerd at start).
    out = subprocess.run(["du", "-sx", "-B1", path], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out.split() else 0


def crictl(bin, rt, *args):
    """(stdout, seconds) of a crictl call that must succeed."""
    t0 = time.perf_counter()
    r = subprocess.run([bin, "--config", "/dev/null", "--timeout", "600s", "-r", f"unix://{rt.sock}",
                        "-i", f"unix://{rt.sock}", *args], capture_output=True, text=True)
    s = time.perf_counter() - t0
    if r.returncode != 0:
        pull.die(f"{rt.name}: crictl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip(), s


def crictl_quiet(bin, rt, *args):
    subprocess.run([bin, "--config", "/dev/null", "-r", f"unix://{rt.sock}", "-i", f"unix://{rt.sock}",
                    *args], capture_output=True)


def main():
    args = pull.corpus_args(__doc__, "debian-minbase,debian-python,debian-python-zstd",
                            cridbench.RUNTIME_TOOLS)
    bin = stream.crictl_bin()
    if not bin:
        print("bench/images.py: no crictl (set CRICTL or PATH): skipped", file=sys.stderr)
        return
    work = tempfile.mkdtemp(prefix="crikit-bench-images-", dir="/var/tmp")
    reg_proc, reg = pull.start_registry(work)
    bridge = "ckbench4"
    images = args.images.split(",")
    refs = {image: f"{reg}/{image}:latest" for image in images}
    runtimes = []
    timed = {}
    removal = {}
    try:
        pull.ensure_corpus(reg)
        pause = cridbench.build_pause(work, reg)
        cni = cridbench.write_cni(work, bridge, "10.249.0.0/16")
        pod_cfg = os.path.join(work, "pod.json")
        with open(pod_cfg, "w") as f:
            json.dump({"metadata": {"name": "images", "namespace": "bench", "uid": "images-1"},
                       "log_directory": os.path.join(work, "logs"),
                       "linux": {"security_context": {"namespace_options": {"pid": 1}}}}, f)
        ctr_cfg = {}
        for image in images:
            ctr_cfg[image] = os.path.join(work, f"ctr-{image}.json")
            with open(ctr_cfg[image], "w") as f:
                json.dump({"metadata": {"name": image}, "image": {"image": refs[image]},
                           "command": ["/bin/sh", "-c", "sleep 3600"], "log_path": f"{image}.log"}, f)
        last = {}
        for i in range(args.runs):
            for n, image in enumerate(images):
                # Fresh runtimes for each image: python and python-zstd share their
                # layers, and a layer already there is not unpacked again.
                pair = [("crid", cridbench.start_crid(work, reg, cni, name=f"crid-{i}-{n}")),
                        ("containerd", cridbench.start_containerd(work, reg, cni, pause,
                                                                  name=f"containerd-{i}-{n}"))]
                runtimes += [rt for _, rt in pair]
                pods = {}
                for label, rt in pair:
                    crictl(bin, rt, "pull", pause)
                    pods[label], _ = crictl(bin, rt, "runp", pod_cfg)
                order = pair if (i + n) % 2 == 0 else pair[::-1]
                for label, rt in order:
                    before = du(rt.root)
                    pull.drop_caches()
                    _, t_pull = crictl(bin, rt, "pull", refs[image])
                    ctr, t_create = crictl(bin, rt, "create", pods[label], ctr_cfg[image], pod_cfg)
                    r = timed.setdefault((image, label), {"pull": [], "create": [], "total": []})
                    r["pull"].append(t_pull)
                    r["create"].append(t_create)
                    r["total"].append(t_pull + t_create)
                    if i == args.runs - 1:
                        removal[(image, label)] = {"grown": du(rt.root) - before}
                        last[(image, label)] = (rt, ctr)
                print(f"run {i + 1}/{args.runs} {image}: " + ", ".join(
                    f"{label} {timed[(image, label)]['total'][-1]:.2f}s" for label, _ in pair),
                    file=sys.stderr)
                if i < args.runs - 1:
                    for _, rt in pair:
                        crictl_quiet(bin, rt, "rmp", "-fa")
                        rt.stop()
        # The removals, after every timed pull, on the last run's runtimes.
        for image in images:
            for label in ["crid", "containerd"]:
                rt, ctr = last[(image, label)]
                r = removal[(image, label)]
                crictl(bin, rt, "rm", ctr)
                before = du(rt.root)
                _, r["rmi"] = crictl(bin, rt, "rmi", refs[image])
                r["back"] = before - du(rt.root)
                time.sleep(5)
                r["back5"] = before - du(rt.root)
    finally:
        for rt in runtimes:
            crictl_quiet(bin, rt, "rmp", "-fa")
        cridbench.cleanup(runtimes, reg_proc, bridge, work)

    med = lambda image, label, k: statistics.median(timed[(image, label)][k])
    mib = lambda b: f"{b / 2**20:.0f} MiB"
    print(f"\nkubelet's image path, cold (page cache dropped), median of {args.runs} runs on fresh runtimes "
          f"(`make bench`, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"containerd {cridbench.containerd_version()})\n")
    print("| image | pull + first create: crid | containerd | ratio | of which pull: crid | containerd "
          "| rmi: crid | containerd | added by pull + create: crid | containerd "
          "| given back by rmi at once (5 s later): crid | containerd |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for image in images:
        c = lambda k: med(image, "crid", k)
        d = lambda k: med(image, "containerd", k)
        rc, rd = removal[(image, "crid")], removal[(image, "containerd")]
        share = lambda r: (f"{100 * r['back'] / max(r['grown'], 1):.0f}% "
                           f"({100 * r['back5'] / max(r['grown'], 1):.0f}%)")
        print(f"| {image} | {c('total'):.2f} s | {d('total'):.2f} s | {c('total') / d('total'):.2f} "
              f"| {c('pull'):.2f} s | {d('pull'):.2f} s | {rc['rmi']:.3f} s | {rd['rmi']:.3f} s "
              f"| {mib(rc['grown'])} | {mib(rd['grown'])} | {share(rc)} | {share(rd)} |")


if __name__ == "__main__":
    main()
