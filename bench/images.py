#!/usr/bin/env python3
"""make bench: kubelet's image path, crictl against crid and containerd's CRI plugin.

The same set-up as bench/crid.py (private state, the corpus registry on loopback,
one CNI conf, a pause image for containerd). One pod runs in each runtime. For each
corpus image, in runs that alternate which runtime goes first, with the page cache
dropped before each (so the registry's files and the runtime's are read from disk,
as on a node that has not seen the image):

  pull + create   crictl pull IMAGE, then crictl create of a container of it in the
                  pod: what kubelet waits for before it can start a new image's
                  container. crid unpacks while it pulls; containerd 1.6 unpacks
                  after its download, before PullImage returns.
  rmi             crictl rm of that container, then crictl rmi IMAGE: the time rmi
                  takes, and how much of what the pull and the create added to the
                  runtime's directory (du) is given back right after it, and 5 s
                  later (containerd collects its content and snapshots in a
                  garbage collection of its own).

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
    runtimes = []
    results = {}
    try:
        pause, runtimes = cridbench.start_runtimes(work, reg, bridge, "10.249.0.0/16")
        pods = {}
        pod_cfg = os.path.join(work, "pod.json")
        with open(pod_cfg, "w") as f:
            json.dump({"metadata": {"name": "images", "namespace": "bench", "uid": "images-1"},
                       "log_directory": os.path.join(work, "logs"),
                       "linux": {"security_context": {"namespace_options": {"pid": 1}}}}, f)
        for rt in runtimes:
            crictl(bin, rt, "pull", pause)
            pods[rt.name], _ = crictl(bin, rt, "runp", pod_cfg)
        images = args.images.split(",")
        for image in images:
            ref = f"{reg}/{image}:latest"
            ctr_cfg = os.path.join(work, f"ctr-{image}.json")
            with open(ctr_cfg, "w") as f:
                json.dump({"metadata": {"name": "c"}, "image": {"image": ref},
                           "command": ["/bin/sh", "-c", "sleep 3600"], "log_path": f"{image}.log"}, f)
            for i in range(args.runs):
                order = runtimes if i % 2 == 0 else runtimes[::-1]
                for rt in order:
                    crictl_quiet(bin, rt, "rmi", ref)
                    before = du(rt.root)
                    pull.drop_caches()
                    _, t_pull = crictl(bin, rt, "pull", ref)
                    ctr, t_create = crictl(bin, rt, "create", pods[rt.name], ctr_cfg, pod_cfg)
                    grown = du(rt.root) - before
                    crictl(bin, rt, "rm", ctr)
                    _, t_rmi = crictl(bin, rt, "rmi", ref)
                    back_now = du(rt.root)
                    time.sleep(5)
                    back_later = du(rt.root)
                    r = results.setdefault((image, rt.name), {k: [] for k in
                                                              ["pull", "create", "total", "rmi", "grown",
                                                               "back", "back5"]})
                    r["pull"].append(t_pull)
                    r["create"].append(t_create)
                    r["total"].append(t_pull + t_create)
                    r["rmi"].append(t_rmi)
                    r["grown"].append(grown)
                    r["back"].append(before + grown - back_now)
                    r["back5"].append(before + grown - back_later)
                print(f"{image} run {i + 1}/{args.runs}: " + ", ".join(
                    f"{rt.name} {results[(image, rt.name)]['total'][-1]:.2f}s" for rt in runtimes),
                    file=sys.stderr)
    finally:
        for rt in runtimes:
            crictl_quiet(bin, rt, "rmp", "-fa")
        cridbench.cleanup(runtimes, reg_proc, bridge, work)

    med = lambda image, rt, k: statistics.median(results[(image, rt)][k])
    mib = lambda b: f"{b / 2**20:.0f} MiB"
    print(f"\nkubelet's image path, cold (page cache dropped), median of {args.runs} "
          f"(`make bench`, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"{cridbench.containerd_version()})\n")
    print("| image | pull + first create: crid | containerd | ratio | of which pull: crid | containerd "
          "| rmi: crid | containerd | added by pull + create: crid | containerd "
          "| given back by rmi (5 s later): crid | containerd |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for image in images:
        c = lambda k: med(image, "crid", k)
        d = lambda k: med(image, "containerd", k)
        share = lambda rt: (f"{100 * med(image, rt, 'back') / max(med(image, rt, 'grown'), 1):.0f}% "
                            f"({100 * med(image, rt, 'back5') / max(med(image, rt, 'grown'), 1):.0f}%)")
        print(f"| {image} | {c('total'):.2f} s | {d('total'):.2f} s | {c('total') / d('total'):.2f} "
              f"| {c('pull'):.2f} s | {d('pull'):.2f} s | {c('rmi'):.3f} s | {d('rmi'):.3f} s "
              f"| {mib(c('grown'))} | {mib(d('grown'))} | {share('crid')} | {share('containerd')} |")


if __name__ == "__main__":
    main()
