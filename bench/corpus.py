#!/usr/bin/env python3
"""The image corpus `make bench` measures with, built offline and pushed to a registry.

usage: corpus.py REGISTRY        (loopback, plain HTTP, e.g. 127.0.0.1:5000)

Work dir: CORPUS_DIR (default /var/tmp/crikit-bench-corpus). Needs root, debootstrap,
umoci and skopeo (`make deps`), and Debian's package mirror (debootstrap's default, or
MIRROR). Every image has OCI manifests and gzip layers; the data is seeded, so a rebuild
gives the same bytes where the Debian packages are the same.

  debian-minbase   1 layer:  debootstrap --variant=minbase bookworm, without the
                             contents of /dev, /proc and /sys or apt's caches
  debian-python    3 layers: debian-minbase, python3 installed with apt in a chroot
                             (umoci's diff of it), and an application layer of 20,000
                             small text files with a whiteout (/etc/motd) and an opaque
                             directory (/etc/apt/apt.conf.d)
  bigfile          1 layer:  /data/big.bin, 1 GiB that gzip takes to about 0.6
  busybox          1 layer:  Debian's busybox-static and its applet links
  debian-python-zstd, bigfile-zstd: the same, layers re-compressed to zstd by skopeo
"""
import os, random, shutil, subprocess, sys

WORK = os.environ.get("CORPUS_DIR", "/var/tmp/crikit-bench-corpus")
IMAGES = ["debian-minbase", "debian-python", "bigfile", "busybox"]
ZSTD = ["debian-python", "bigfile"]


def sh(*argv, **kw):
    # The tools' chatter goes to stderr: stdout is the benchmarks' tables.
    kw.setdefault("stdout", sys.stderr)
    subprocess.run(list(argv), check=True, **kw)


def tar_dir(src, out, excludes=(), as_root=True):
    """A tar of `src`'s contents, names sorted (GNU tar), owned by root, or with
    `as_root=False` by the owners the tree has (a debootstrap root)."""
    owners = ["--owner=0", "--group=0"] if as_root else []
    sh("tar", "--numeric-owner", "--sort=name", *owners, *[f"--exclude={e}" for e in excludes],
       "-C", src, "-cf", out, ".")


def minbase(work):
    root = os.path.join(work, "minbase")
    done = root + ".done"
    if not os.path.exists(done):
        shutil.rmtree(root, ignore_errors=True)
        mirror = os.environ.get("MIRROR")
        sh("debootstrap", "--variant=minbase", "bookworm", root, *([mirror] if mirror else []))
        open(done, "w").close()
    drop_apt_caches(root)
    return root


def drop_apt_caches(root):
    """What Docker's Debian images leave out: downloaded .debs, package lists, pkgcache."""
    for d in ["var/cache/apt/archives", "var/lib/apt/lists"]:
        p = os.path.join(root, d)
        for name in os.listdir(p) if os.path.isdir(p) else []:
            f = os.path.join(p, name)
            if os.path.isfile(f) and name not in ("lock",):
                os.unlink(f)
    cache = os.path.join(root, "var/cache/apt")
    for name in os.listdir(cache) if os.path.isdir(cache) else []:
        if name.endswith(".bin"):
            os.unlink(os.path.join(cache, name))


def install_python(rootfs):
    """python3 from Debian's mirror, installed in a chroot of `rootfs`."""
    resolv = os.path.join(rootfs, "etc/resolv.conf")
    saved = open(resolv, "rb").read() if os.path.isfile(resolv) else None
    if os.path.lexists(resolv):
        os.unlink(resolv)
    shutil.copy("/etc/resolv.conf", resolv)
    mounts = []
    try:
        for what, where, args in [("/dev", "dev", ["--bind"]), ("proc", "proc", ["-t", "proc"])]:
            target = os.path.join(rootfs, where)
            sh("mount", *args, what, target)
            mounts.append(target)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh("chroot", rootfs, "apt-get", "update", env=env)
        sh("chroot", rootfs, "apt-get", "install", "-y", "--no-install-recommends", "python3", env=env)
        sh("chroot", rootfs, "apt-get", "clean", env=env)
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", m])
    drop_apt_caches(rootfs)
    os.unlink(resolv)
    if saved is not None:
        open(resolv, "wb").write(saved)


def app_files(top, n=20000):
    """`n` source-like files, 100 per directory, sizes log-normal around 1.5 KiB."""
    rnd = random.Random(20261202)
    vocabulary = ("import from def return class self value result config handler request "
                  "response index items path name error debug open close read write if else "
                  "for while try except None True False len range print log").split()
    for i in range(n):
        d = os.path.join(top, "app", f"pkg{i // 100:03d}")
        os.makedirs(d, exist_ok=True)
        size = min(64 << 10, int(rnd.lognormvariate(7.3, 1.0)))
        lines, total = [], 0
        while total < size:
            line = "    " * rnd.randint(0, 3) + " ".join(rnd.choices(vocabulary, k=rnd.randint(2, 10))) + "\n"
            lines.append(line)
            total += len(line)
        with open(os.path.join(d, f"mod{i:05d}.py"), "w") as f:
            f.write("".join(lines)[:size])


def big_file(path, mib=1024):
    """`mib` MiB, each MiB three parts: random (incompressible), a skewed alphabet
    (about 4 bits a byte) and repeated log records (long matches)."""
    rnd = random.Random(1024)
    skewed = bytes((b"eeeeetttaaoinshrdlcumwfgypbvk \n{}();:,.-0123456789" * 6)[i] for i in range(256))
    records = [f"ts=%d level={lvl} path=/api/v1/{obj} status={st} took_ms=".encode()
               for lvl in ("info", "warn", "debug", "error") for obj in ("pods", "nodes", "events", "leases")
               for st in (200, 404, 500, 201)]
    with open(path, "wb") as f:
        for mb in range(mib):
            f.write(rnd.randbytes(384 << 10))
            f.write(rnd.randbytes(320 << 10).translate(skewed))
            chunk, k = bytearray(), 0
            while len(chunk) < 320 << 10:
                rec = records[rnd.randrange(len(records))]
                chunk += (rec.replace(b"%d", str(mb * 10**6 + k).encode()) + str(rnd.randrange(999)).encode()
                          + b"\n")
                k += 1
            f.write(bytes(chunk[:320 << 10]))


def busybox_root(top):
    for d in ["bin", "etc", "root", "tmp"]:
        os.makedirs(os.path.join(top, d), exist_ok=True)
    os.chmod(os.path.join(top, "tmp"), 0o1777)
    bb = os.path.join(top, "bin/busybox")
    shutil.copy2("/bin/busybox", bb)
    applets = subprocess.run([bb, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        link = os.path.join(top, "bin", a)
        if a != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(top, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(top, "etc/group"), "w") as f:
        f.write("root:x:0:\n")


def build(reg, work=WORK):
    os.makedirs(work, exist_ok=True)
    layout = os.path.join(work, "layout")
    shutil.rmtree(layout, ignore_errors=True)
    umoci = lambda *a: sh("umoci", *a)
    img = lambda name: f"{layout}:{name}"
    umoci("init", "--layout", layout)

    root = minbase(work)
    base_tar = os.path.join(work, "minbase.tar")
    tar_dir(root, base_tar, ["./dev/*", "./proc/*", "./sys/*"], as_root=False)
    umoci("new", "--image", img("debian-minbase"))
    umoci("config", "--image", img("debian-minbase"), "--config.cmd", "/bin/bash")
    umoci("raw", "add-layer", "--image", img("debian-minbase"), base_tar)

    bundle = os.path.join(work, "python-bundle")
    shutil.rmtree(bundle, ignore_errors=True)
    umoci("unpack", "--image", img("debian-minbase"), bundle)
    install_python(os.path.join(bundle, "rootfs"))
    umoci("repack", "--image", img("debian-python"), bundle)
    umoci("config", "--image", img("debian-python"), "--config.cmd", "/usr/bin/python3")
    app = os.path.join(work, "app")
    shutil.rmtree(app, ignore_errors=True)
    app_files(app)
    os.makedirs(os.path.join(app, "etc/apt/apt.conf.d"))
    open(os.path.join(app, "etc/.wh.motd"), "w").close()                    # deletes /etc/motd
    open(os.path.join(app, "etc/apt/apt.conf.d/.wh..wh..opq"), "w").close()  # hides what is below
    with open(os.path.join(app, "etc/apt/apt.conf.d/99app"), "w") as f:
        f.write('APT::Install-Recommends "false";\n')
    app_tar = os.path.join(work, "app.tar")
    tar_dir(app, app_tar)
    umoci("raw", "add-layer", "--image", img("debian-python"), app_tar)

    big = os.path.join(work, "big", "data")
    os.makedirs(big, exist_ok=True)
    data = os.path.join(big, "big.bin")
    if not os.path.exists(data) or os.path.getsize(data) != 1 << 30:
        big_file(data)
    big_tar = os.path.join(work, "big.tar")
    tar_dir(os.path.dirname(big), big_tar)
    umoci("new", "--image", img("bigfile"))
    umoci("raw", "add-layer", "--image", img("bigfile"), big_tar)

    bb = os.path.join(work, "busybox")
    shutil.rmtree(bb, ignore_errors=True)
    busybox_root(bb)
    bb_tar = os.path.join(work, "busybox.tar")
    tar_dir(bb, bb_tar)
    umoci("new", "--image", img("busybox"))
    umoci("config", "--image", img("busybox"), "--config.cmd", "/bin/sh")
    umoci("raw", "add-layer", "--image", img("busybox"), bb_tar)
    umoci("gc", "--layout", layout)

    for name in IMAGES:
        sh("skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:{name}", f"docker://{reg}/{name}:latest")
    # Re-compressed into a layout of its own first: skopeo copying a registry's image
    # to the same registry would reuse the gzip blobs.
    zstd = os.path.join(work, "zstd")
    shutil.rmtree(zstd, ignore_errors=True)
    for name in ZSTD:
        sh("skopeo", "copy", "--dest-compress-format", "zstd", f"oci:{layout}:{name}", f"oci:{zstd}:{name}")
        sh("skopeo", "copy", "--dest-tls-verify=false", f"oci:{zstd}:{name}", f"docker://{reg}/{name}-zstd:latest")
    for t in [base_tar, app_tar, big_tar, bb_tar]:
        os.unlink(t)
    shutil.rmtree(bundle, ignore_errors=True)
    print(f"corpus built and pushed to {reg}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build(sys.argv[1])
