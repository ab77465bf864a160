#!/usr/bin/env python3
"""make bench: what a signature policy costs a pull.

The corpus images are copied into a registry of this run (Debian's docker-registry on
loopback, its own storage) and signed there twice: with a cosign-format signature
(ECDSA P-256 over the simple-signing payload, made with openssl, attached at the
sha256-HEX.sig tag) and with a GPG signature that skopeo copy --sign-by writes to a
file:// lookaside (registries.d). Then imgpull pulls each image into fresh stores,
with the page cache warm and the runs alternating, under three policies:

  accept     insecureAcceptAnything
  sigstore   sigstoreSigned with the public key (use-sigstore-attachments)
  gpg        signedBy with the GPG key (lookaside)

Two timings each: a pull into a fresh store (median of --runs), and a pull of the
image already stored (median of 8 x --runs): the manifest and the policy, with the
GPG signatures read from the lookaside and the sigstore ones kept in the store by
the first pull, nothing else, which shows what the policy adds without the noise of
writing 100 MB. A first pull under sigstoreSigned asks the registry for the .sig
tag and its payload while the blobs download, and commits them once the verdict is
in. Prints the medians and the extra milliseconds the signed policies
cost over accept (target: under 5 ms per image). Needs root.
"""
import base64, json, os, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pull


def sh(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, **kw)
    if r.returncode != 0:
        pull.die(f"{' '.join(map(str, cmd))}: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout


def http(method, url, body=b"", headers=None):
    req = urllib.request.Request(url, data=body if method != "GET" else None, method=method,
                                 headers=headers or {})
    with urllib.request.urlopen(req) as r:
        return r.status, dict(r.headers), r.read()


def push_blob(addr, repo, data):
    import hashlib
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _, h, _ = http("POST", f"http://{addr}/v2/{repo}/blobs/uploads/")
    loc = h["Location"]
    if loc.startswith("/"):
        loc = f"http://{addr}{loc}"
    sep = "&" if "?" in loc else "?"
    http("PUT", f"{loc}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"})
    return digest


def manifest_digest(addr, repo):
    import hashlib
    req = urllib.request.Request(f"http://{addr}/v2/{repo}/manifests/latest", headers={"Accept": pull.ACCEPT})
    with urllib.request.urlopen(req) as r:
        return "sha256:" + hashlib.sha256(r.read()).hexdigest()


def cosign_attach(addr, repo, digest, key):
    payload = json.dumps({"critical": {"identity": {"docker-reference": f"{addr}/{repo}:latest"},
                                       "image": {"docker-manifest-digest": digest},
                                       "type": "cosign container image signature"},
                          "optional": None}).encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=payload,
                         capture_output=True, check=True).stdout
    config = b'{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}'
    cd = push_blob(addr, repo, config)
    pd = push_blob(addr, repo, payload)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": pd,
                    "size": len(payload),
                    "annotations": {"dev.cosignproject.cosign/signature": base64.b64encode(sig).decode()}}],
    }).encode()
    tag = digest.replace(":", "-", 1) + ".sig"
    http("PUT", f"http://{addr}/v2/{repo}/manifests/{tag}", manifest,
         {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})


def main():
    args = pull.corpus_args(__doc__, "debian-minbase,debian-python", ["docker-registry", "skopeo", "gpg", "openssl"])
    images = args.images.split(",")
    work = tempfile.mkdtemp(prefix="crikit-bench-policy-")
    corpus_proc, corpus_addr = pull.start_registry(work)
    pull.ensure_corpus(corpus_addr)
    # A registry of this run's own, to sign in.
    store = os.path.join(work, "registry")
    cfg = os.path.join(work, "own.yml")
    addr = f"127.0.0.1:{pull.free_port()}"
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nstorage: {{filesystem: {{rootdirectory: {store}}}}}\nhttp: {{addr: {addr}}}\n")
    own = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://{addr}/v2/")
                break
            except OSError:
                time.sleep(0.05)
        gnupg = os.path.join(work, "gnupg")
        os.makedirs(gnupg, mode=0o700)
        env = dict(os.environ, GNUPGHOME=gnupg)
        params = os.path.join(work, "key.params")
        with open(params, "w") as f:
            f.write("%no-protection\nKey-Type: RSA\nKey-Length: 2048\nName-Real: bench\n"
                    "Name-Email: bench@crikit.invalid\nExpire-Date: 0\n%commit\n")
        sh("gpg", "--batch", "--gen-key", params, env=env)
        fpr = next(l.split(":")[9] for l in sh("gpg", "--with-colons", "--list-keys", env=env).decode().splitlines()
                   if l.startswith("fpr:"))
        gpgkey = os.path.join(work, "key.gpg")
        sh("gpg", "--batch", "--export", "--output", gpgkey, fpr, env=env)
        eckey, ecpub = os.path.join(work, "ec.pem"), os.path.join(work, "ec.pub")
        sh("openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", eckey)
        sh("openssl", "ec", "-in", eckey, "-pubout", "-out", ecpub)
        sigs = os.path.join(work, "sigs")
        rd = os.path.join(work, "registries.d")
        os.makedirs(rd)
        with open(os.path.join(rd, "bench.yaml"), "w") as f:
            f.write(f"docker:\n  {addr}:\n    lookaside: file://{sigs}\n    lookaside-staging: file://{sigs}\n"
                    f"    use-sigstore-attachments: true\n")
        policies = {}
        for name, req in [("accept", {"type": "insecureAcceptAnything"}),
                          ("sigstore", {"type": "sigstoreSigned", "keyPath": ecpub}),
                          ("gpg", {"type": "signedBy", "keyType": "GPGKeys", "keyPath": gpgkey})]:
            p = os.path.join(work, f"{name}.json")
            with open(p, "w") as f:
                json.dump({"default": [req]}, f)
            policies[name] = p
        for image in images:
            sh("skopeo", "--policy", policies["accept"], "--registries.d", rd, "copy", "-q",
               "--src-tls-verify=false", "--dest-tls-verify=false", "--sign-by", fpr,
               f"docker://{corpus_addr}/{image}:latest", f"docker://{addr}/{image}:latest", env=env)
            cosign_attach(addr, image, manifest_digest(addr, image), eckey)

        def pull_cmd(name, image, root):
            return [os.path.join(pull.BIN, "imgpull"), "--root", root, "--insecure-registry", addr, "-q",
                    "--registries-conf", "/dev/null", "--policy", policies[name], "--registries.d", rd,
                    f"{addr}/{image}:latest"]

        fresh = {i: {p: [] for p in policies} for i in images}
        again = {i: {p: [] for p in policies} for i in images}
        n = 0
        for run in range(args.runs):
            for image in images:
                order = list(policies) if run % 2 == 0 else list(reversed(policies))
                for name in order:
                    n += 1
                    fresh[image][name].append(pull.timed(pull_cmd(name, image, os.path.join(work, f"r{n}"))))
        for image in images:
            stores = {}
            for name in policies:
                stores[name] = os.path.join(work, f"again-{image}-{name}")
                pull.timed(pull_cmd(name, image, stores[name]))
            for run in range(8 * args.runs):
                order = list(policies) if run % 2 == 0 else list(reversed(policies))
                for name in order:
                    again[image][name].append(pull.timed(pull_cmd(name, image, stores[name])))
        print(f"\nwhat a signature policy costs imgpull, warm cache (`make bench`, "
              f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)\n")
        print("| image | pull | accept | sigstoreSigned | extra | signedBy (GPG) | extra |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for image in images:
            for what, res, runs in [("into a fresh store", fresh, args.runs), ("image already stored", again, 8 * args.runs)]:
                m = {p: statistics.median(v) for p, v in res[image].items()}
                print(f"| {image} | {what}, median of {runs} | {m['accept'] * 1000:.1f} ms | "
                      f"{m['sigstore'] * 1000:.1f} ms | {(m['sigstore'] - m['accept']) * 1000:+.1f} ms | "
                      f"{m['gpg'] * 1000:.1f} ms | {(m['gpg'] - m['accept']) * 1000:+.1f} ms |")
    finally:
        own.terminate()
        own.wait()
        corpus_proc.terminate()
        corpus_proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
