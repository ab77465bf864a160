#!/usr/bin/env python3
"""make bench, part five: the pod lifecycle as kubelet's stand-in sees it, crictl
against crid (its default handler, crun where installed, and its runc handler) and
containerd's CRI plugin.

The same set-up as bench/crid.py (private state, one CNI bridge conf for both:
bridge + host-local + portmap + loopback with masquerading and hairpin, the corpus
busybox, a pause image of the corpus busybox for containerd; crid's pods get its
own infra process). crictl comes from $CRICTL or PATH.
For each pod kind, in cycles that rotate which runtime goes first, crictl runs

  runp, create, start, stop -t 10, stopp, rmp

of a busybox `sh -c "trap 'exit 0' TERM; sleep 3600 & wait"` (a shell that ends on
SIGTERM and leaves a child behind), each timed as a whole process. Pod kinds:

  bare      crictl's bare `{}` linux section: one PID namespace for the pod (crid
            starts an infra process), no seccomp field
  kubelet   what kubelet sends by default: a PID namespace per container, seccomp
            Unconfined

Prints p50 and p90 per call, of runp + create + start and of stopp + rmp, as
measured and less crictl's own start-up (the p50 of `crictl version` against the
same runtime, once per call), with same-run ratios to containerd. With
`--baseline DIR` (another build's crid and ctrmon, e.g. a worktree of an earlier
commit after `make release`) that crid runs too, as crid-base, and the ratios of
crid to it show whether a change moved the lifecycle beyond the noise. Needs root.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull
import crid as cridbench
import stream

CALLS = ["runp", "create", "start", "stop", "stopp", "rmp"]
SCRIPT = "trap 'exit 0' TERM; sleep 3600 & wait"


def base(bin, rt):
    return [bin, "--config", "/dev/null", "--timeout", "60s", "-r", f"unix://{rt.sock}", "-i", f"unix://{rt.sock}"]


def run(bin, rt, *args):
    """(output, ms) of one crictl call, which must succeed."""
    t0 = time.perf_counter()
    r = subprocess.run(base(bin, rt) + list(args), capture_output=True, text=True)
    ms = (time.perf_counter() - t0) * 1000
    if r.returncode != 0:
        pull.die(f"{rt.name}: crictl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip(), ms


def configs(work, name, kind, image, n):
    pod = {"metadata": {"name": f"{kind}-{n}", "namespace": "bench", "uid": f"{name}-{kind}-{n}"},
           "log_directory": os.path.join(work, "logs", name, kind, str(n))}
    ctr = {"metadata": {"name": "c"}, "image": {"image": image}, "command": ["/bin/sh", "-c", SCRIPT],
           "log_path": "c.log"}
    if kind == "bare":
        pod["linux"] = {}
    else:
        sc = {"namespace_options": {"pid": 1}, "seccomp": {"profile_type": 1}}
        pod["linux"] = {"security_context": sc}
        ctr["linux"] = {"security_context": sc}
    paths = []
    for what, v in [("pod", pod), ("ctr", ctr)]:
        p = os.path.join(work, f"{name}-{kind}-{n}-{what}.json")
        with open(p, "w") as f:
            json.dump(v, f)
        paths.append(p)
    return paths


def cycle(bin, rt, handler, work, kind, image, n):
    pod_json, ctr_json = configs(work, rt.label, kind, image, n)
    t = {}
    pod, t["runp"] = run(bin, rt, "runp", *(["--runtime", handler] if handler else []), pod_json)
    ctr, t["create"] = run(bin, rt, "create", pod, ctr_json, pod_json)
    _, t["start"] = run(bin, rt, "start", ctr)
    time.sleep(0.2)  # the shell has set its trap
    _, t["stop"] = run(bin, rt, "stop", "-t", "10", ctr)
    _, t["stopp"] = run(bin, rt, "stopp", pod)
    _, t["rmp"] = run(bin, rt, "rmp", pod)
    return t


class Target:
    """A runtime as this bench drives it: a daemon, maybe a handler."""
    def __init__(self, rt, label, handler=None):
        self.rt, self.label, self.handler = rt, label, handler
        self.sock, self.name = rt.sock, rt.name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--baseline", metavar="DIR",
                    help="another build's crid and ctrmon, run as crid-base beside this one")
    a = ap.parse_args()
    if a.baseline and not os.access(os.path.join(a.baseline, "crid"), os.X_OK):
        pull.die(f"--baseline {a.baseline}: no crid there")
    bin = stream.crictl_bin()
    if not bin:
        print("bench/lifecycle.py: no crictl (set CRICTL or PATH): skipped", file=sys.stderr)
        return
    cridbench.require(cridbench.RUNTIME_TOOLS)
    work = tempfile.mkdtemp(prefix="crikit-bench-lifecycle-", dir="/var/tmp")
    reg_proc, reg = pull.start_registry(work)
    bridge = "ckbench2"
    runtimes = []
    try:
        pause, runtimes = cridbench.start_runtimes(work, reg, bridge, "10.251.0.0/16")
        image = f"{reg}/busybox:latest"
        # crid's default handler (crun where installed), then its runc handler.
        targets = [Target(runtimes[0], "crid"), Target(runtimes[1], "containerd")]
        if shutil.which("crun"):
            targets.insert(1, Target(runtimes[0], "crid-runc", "runc"))
        if a.baseline:
            cni = os.path.join(work, "cni")
            runtimes.append(cridbench.start_crid(work, reg, cni, name="crid-base", bin_dir=a.baseline))
            targets.insert(1, Target(runtimes[-1], "crid-base"))
        for rt in runtimes:
            run(bin, Target(rt, rt.name), "pull", image)
            run(bin, Target(rt, rt.name), "pull", pause)
        floor = {t.label: [] for t in targets}
        lat = {(k, t.label): {c: [] for c in CALLS} for k in ["bare", "kubelet"] for t in targets}
        for kind in ["bare", "kubelet"]:
            for n in range(a.cycles):
                order = targets[n % len(targets):] + targets[:n % len(targets)]
                for t in order:
                    for c, ms in cycle(bin, t, t.handler, work, kind, image, n).items():
                        lat[(kind, t.label)][c].append(ms)
                    floor[t.label].append(run(bin, t, "version")[1])
            print(f"{kind}: {a.cycles} cycles done", file=sys.stderr)
    finally:
        for rt in runtimes:
            subprocess.run(base(bin, rt) + ["rmp", "-fa"], capture_output=True)
        cridbench.cleanup(runtimes, reg_proc, bridge, work)

    pct = cridbench.pct
    f50 = {t: pct(v, 0.5) for t, v in floor.items()}
    labels = [t.label for t in targets]
    print(f"\n### pod lifecycle through crictl: crid vs containerd {cridbench.containerd_version()}, "
          f"{a.cycles} cycles per pod kind\n")
    print("crictl's own start-up (p50 of `crictl version`): " +
          ", ".join(f"{t} {f50[t]:.1f} ms" for t in labels) + "\n")
    sums = {"runp + create + start": ["runp", "create", "start"], "stopp + rmp": ["stopp", "rmp"]}
    for kind in ["bare", "kubelet"]:
        for net in [False, True]:
            what = "less crictl's start-up" if net else "as measured"
            print(f"\n{kind} pod, {what}, ms:\n")
            head = " | ".join(f"{t} p50 | {t} p90" for t in labels)
            ratios = " | ".join(f"{t}/containerd p50" for t in labels if t != "containerd")
            if a.baseline:
                ratios += " | crid/crid-base p50"
            print(f"| call | {head} | {ratios} |")
            print("|---" * (1 + 2 * len(labels) + len(labels) - 1 + bool(a.baseline)) + "|")
            rows = [(c, [c]) for c in CALLS] + list(sums.items())
            for label, calls in rows:
                vals = {}
                for t in labels:
                    per = [sum(x) for x in zip(*(lat[(kind, t)][c] for c in calls))]
                    off = f50[t] * len(calls) if net else 0
                    vals[t] = (pct(per, 0.5) - off, pct(per, 0.9) - off)
                cells = " | ".join(f"{vals[t][0]:.1f} | {vals[t][1]:.1f}" for t in labels)
                rs = " | ".join(f"{vals[t][0] / vals['containerd'][0]:.2f}" for t in labels if t != "containerd")
                if a.baseline:
                    rs += f" | {vals['crid'][0] / vals['crid-base'][0]:.2f}"
                print(f"| {label} | {cells} | {rs} |")


if __name__ == "__main__":
    main()
