//! imgpull against a real registry on loopback, directly and through the fault proxy.

use e2e::image::{push, push_index};
use e2e::{
    bin, check_store, run, Compression, Fault, Image, Layer, ManifestFormat, Proxy, Registry, Run,
    TempRoot,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

/// imgpull with a store under `root` and plain HTTP for loopback registries.
fn imgpull(root: &Path, hosts: &[&str]) -> Command {
    let mut c = Command::new(bin("imgpull"));
    c.arg("--root").arg(root);
    for h in hosts {
        c.arg("--insecure-registry").arg(h);
    }
    // No system registries.conf or user auth files leak into tests.
    c.env("CONTAINERS_REGISTRIES_CONF", "/dev/null")
        .env("HOME", root)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DOCKER_CONFIG")
        .env_remove("CRIKIT_ROOT");
    c
}

fn pull(root: &Path, host: &str, args: &[&str]) -> Run {
    let mut c = imgpull(root, &[host]);
    c.args(["--retry-delay", "20"]).args(args);
    run(c, T)
}

fn layout(root: &Path) -> std::path::PathBuf {
    root.join("images")
}

fn blob(root: &Path, digest: &str) -> std::path::PathBuf {
    layout(root)
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn ingest_is_empty(root: &Path) -> bool {
    std::fs::read_dir(layout(root).join(".ingest"))
        .map(|d| d.count() == 0)
        .unwrap_or(true)
}

/// Asserts that a failed pull left nothing: not the layer's blob, no image, no
/// download in progress.
fn assert_nothing_stored(root: &Path, layer: &str) {
    assert!(!blob(root, layer).exists());
    assert!(check_store(&layout(root)).is_empty());
    assert!(ingest_is_empty(root));
}

/// busybox pushed as `repo:1` to a registry with a fault-injecting proxy in front;
/// the reference names the proxy.
fn busybox_behind_proxy(repo: &str) -> (Registry, Proxy, e2e::image::Pushed, String) {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let p = reg.push(repo, &Image::busybox());
    let reference = p.reference.replace(&reg.addr, &proxy.addr);
    (reg, proxy, p, reference)
}

#[test]
fn pull_prints_pinned_reference_and_other_tools_read_the_store() {
    let reg = Registry::start();
    let p = push(&reg.addr, "tools/busybox", "1.36", &Image::busybox());
    let root = TempRoot::new();
    let r = pull(root.path(), &reg.addr, &["--quiet", &p.reference]).ok();
    assert_eq!(r.stdout, format!("{}@{}\n", p.reference, p.digest));
    assert_eq!(r.stderr, "", "--quiet leaves stderr empty");
    assert_eq!(check_store(&layout(root.path())), [p.reference.as_str()]);
    for d in p.layers.iter().chain([&p.config]) {
        assert!(blob(root.path(), d).is_file(), "{d} stored");
    }

    let oci = format!("oci:{}:{}", layout(root.path()).display(), p.reference);
    let out = Command::new("skopeo")
        .args(["inspect", &oci])
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("skopeo json");
    assert_eq!(v["Digest"], p.digest);

    let bundle = root.path().join("bundle");
    let mut c = Command::new("umoci");
    c.args(["unpack", "--image"])
        .arg(format!("{}:{}", layout(root.path()).display(), p.reference))
        .arg(&bundle);
    run(c, T).ok();
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(bundle.join("rootfs/bin/sh")).expect("symlink"),
        Path::new("busybox")
    );
}

#[test]
fn short_names_normalise_and_registries_conf_rewrites_to_the_local_registry() {
    let reg = Registry::start();
    let p = push(&reg.addr, "library/busybox", "latest", &Image::busybox());
    let root = TempRoot::new();
    let conf = root.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"docker.io\"\nlocation = \"{}\"\ninsecure = true\n",
            reg.addr
        ),
    )
    .expect("write conf");
    let mut c = imgpull(root.path(), &[]);
    c.arg("--registries-conf")
        .arg(&conf)
        .args(["-q", "busybox"]);
    let r = run(c, T).ok();
    assert_eq!(
        r.stdout,
        format!("docker.io/library/busybox:latest@{}\n", p.digest)
    );
    assert_eq!(
        check_store(&layout(root.path())),
        ["docker.io/library/busybox:latest"]
    );
}

#[test]
fn mirrors_are_tried_first_and_a_dead_mirror_falls_back() {
    let reg = Registry::start();
    let p = push(&reg.addr, "library/busybox", "latest", &Image::busybox());
    let mirror = Proxy::start(&reg.addr);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let root = TempRoot::new();
    let conf = root.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"docker.io\"\nlocation = \"{dead}\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"{dead}\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            mirror.addr
        ),
    )
    .expect("write conf");
    let mut c = imgpull(root.path(), &[]);
    c.arg("--registries-conf")
        .arg(&conf)
        .args(["-q", "--retries", "0", "busybox:latest"]);
    let r = run(c, T).ok();
    assert_eq!(
        r.stdout,
        format!("docker.io/library/busybox:latest@{}\n", p.digest)
    );
    assert!(mirror
        .seen()
        .iter()
        .any(|s| s.path.contains("/library/busybox/manifests/latest")));
}

#[test]
fn multi_layer_zstd_and_plain_layers_and_pull_by_digest() {
    let reg = Registry::start();
    let img = Image::new(vec![
        Layer::busybox(Compression::Gzip),
        Layer::new(
            &[e2e::Entry::File(
                "etc/zstd-layer".into(),
                b"z".repeat(5000),
                0o644,
            )],
            Compression::Zstd,
        ),
        Layer::new(
            &[e2e::Entry::File(
                "etc/plain-layer".into(),
                b"p".to_vec(),
                0o644,
            )],
            Compression::None,
        ),
    ]);
    let p = push(&reg.addr, "multi/layers", "v1", &img);
    let root = TempRoot::new();
    let by_digest = format!("{}/multi/layers@{}", reg.addr, p.digest);
    let r = pull(root.path(), &reg.addr, &["-q", &by_digest]).ok();
    assert_eq!(r.stdout, format!("{by_digest}\n"));
    for d in &p.layers {
        assert!(blob(root.path(), d).is_file());
    }
    assert_eq!(check_store(&layout(root.path())), [by_digest.as_str()]);
    let r = pull(root.path(), &reg.addr, &["-q", &p.reference]).ok();
    assert_eq!(r.stdout, format!("{}@{}\n", p.reference, p.digest));
}

#[test]
fn index_platform_selection() {
    let reg = Registry::start();
    let mut amd = Image::busybox();
    amd.arch = "amd64".into();
    let mut arm = Image::new(vec![Layer::new(
        &[e2e::Entry::File("arm".into(), b"arm64".to_vec(), 0o644)],
        Compression::Gzip,
    )]);
    arm.arch = "arm64".into();
    arm.variant = Some("v8".into());
    let p = push_index(&reg.addr, "multi/arch", "latest", &[amd, arm]);

    let root = TempRoot::new();
    let r = pull(
        root.path(),
        &reg.addr,
        &["-q", "--platform", "linux/amd64", &p.reference],
    )
    .ok();
    // The printed digest is the index's, as `docker pull` reports it.
    assert_eq!(r.stdout, format!("{}@{}\n", p.reference, p.digest));
    let index = std::fs::read_to_string(layout(root.path()).join("index.json")).expect("index");
    assert!(
        index.contains(&p.children[0]),
        "amd64 manifest stored: {index}"
    );

    let root2 = TempRoot::new();
    let r = pull(
        root2.path(),
        &reg.addr,
        &["--json", "-q", "--platform", "linux/arm64", &p.reference],
    )
    .ok();
    let line: serde_json::Value =
        serde_json::from_str(r.stdout.lines().next().expect("line")).expect("json");
    assert_eq!(line["data"]["manifest_digest"], p.children[1]);
    assert_eq!(line["data"]["repo_digest"], p.digest);

    // A Docker manifest list of Docker schema 2 manifests, and an arm variant.
    let mut docker_amd = Image::busybox();
    docker_amd.format = ManifestFormat::Docker;
    docker_amd.arch = "amd64".into();
    let mut docker_arm = docker_amd.clone();
    docker_arm.arch = "arm".into();
    docker_arm.variant = Some("v7".into());
    docker_arm.cmd = vec!["/bin/arm".into()];
    let list = push_index(
        &reg.addr,
        "multi/docker",
        "latest",
        &[docker_amd, docker_arm],
    );
    let root3 = TempRoot::new();
    let r = pull(
        root3.path(),
        &reg.addr,
        &["-q", "--platform", "linux/arm/v7", &list.reference],
    )
    .ok();
    assert_eq!(r.stdout, format!("{}@{}\n", list.reference, list.digest));
    let mut c = imgpull(root3.path(), &[]);
    c.args(["--inspect", &list.reference]);
    let v: serde_json::Value = serde_json::from_str(&run(c, T).ok().stdout).expect("inspect json");
    assert_eq!(v["config"]["config"]["Cmd"][0], "/bin/arm");
    assert_eq!(
        v["manifest"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    pull(
        root3.path(),
        &reg.addr,
        &["-q", "--platform", "linux/arm/v6", &list.reference],
    )
    .expect_code(3);

    let r = pull(
        root2.path(),
        &reg.addr,
        &["-q", "--platform", "linux/s390x", &p.reference],
    )
    .expect_code(3);
    assert!(
        r.stderr.contains("no manifest for platform linux/s390x"),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("linux/amd64") && r.stderr.contains("linux/arm64/v8"),
        "{}",
        r.describe()
    );
}

#[test]
fn docker_schema2_is_stored_as_oci_and_unpacks_with_umoci() {
    let reg = Registry::start();
    let mut img = Image::busybox();
    img.format = ManifestFormat::Docker;
    let p = push(&reg.addr, "docker/busybox", "v2", &img);
    let root = TempRoot::new();
    let r = pull(root.path(), &reg.addr, &["-q", &p.reference]).ok();
    assert_eq!(r.stdout, format!("{}@{}\n", p.reference, p.digest));
    let idx: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout(root.path()).join("index.json")).expect("index"),
    )
    .expect("json");
    let entry = &idx["manifests"][0];
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        entry["annotations"]["io.crikit.image.repo-digest"],
        p.digest
    );
    let bundle = root.path().join("b");
    let mut c = Command::new("umoci");
    c.args(["unpack", "--image"])
        .arg(format!("{}:{}", layout(root.path()).display(), p.reference))
        .arg(&bundle);
    run(c, T).ok();
    assert!(bundle.join("rootfs/bin/busybox").is_file());
}

#[test]
fn second_pull_fetches_no_blob_and_json_progress_says_so() {
    let (_reg, proxy, _, reference) = busybox_behind_proxy("again/busybox");
    let root = TempRoot::new();
    pull(root.path(), &proxy.addr, &["--progress=json", &reference]).ok();
    let blob_gets = |proxy: &Proxy| {
        proxy
            .seen()
            .iter()
            .filter(|s| s.method == "GET" && s.path.contains("/blobs/"))
            .count()
    };
    assert_eq!(blob_gets(&proxy), 2, "config and layer fetched once");
    let r = pull(root.path(), &proxy.addr, &["--progress=json", &reference]).ok();
    assert_eq!(blob_gets(&proxy), 2, "no blob fetched again");
    let events: Vec<serde_json::Value> = r
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect("progress line is JSON"))
        .collect();
    let exists = events
        .iter()
        .filter(|e| e["event"] == "blob-exists")
        .count();
    assert_eq!(exists, 2, "{}", r.stderr);
    assert!(events.iter().any(|e| e["event"] == "done"));
}

#[test]
fn concurrent_pulls_into_one_store_all_succeed() {
    let reg = Registry::start();
    let shared = Layer::large("data/shared.bin", 8, Compression::Gzip);
    let a = reg.push(
        "conc/a",
        &Image::new(vec![shared.clone(), Layer::busybox(Compression::Gzip)]),
    );
    let b = reg.push(
        "conc/b",
        &Image::new(vec![shared, Layer::busybox(Compression::Zstd)]),
    );
    let root = TempRoot::new();
    let mut children = Vec::new();
    for i in 0..6 {
        let r = if i % 2 == 0 {
            &a.reference
        } else {
            &b.reference
        };
        let mut c = imgpull(root.path(), &[&reg.addr]);
        c.args(["-q", r])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        children.push(c.spawn().expect("spawn imgpull"));
    }
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut names = check_store(&layout(root.path()));
    names.sort();
    assert_eq!(names, [a.reference.clone(), b.reference.clone()]);
    assert!(ingest_is_empty(root.path()));
}

#[test]
fn sigkill_at_any_moment_leaves_a_consistent_store_and_the_next_pull_completes() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let p = reg.push(
        "kill/big",
        &Image::new(vec![
            Layer::busybox(Compression::Gzip),
            Layer::large("big.bin", 16, Compression::None),
        ]),
    );
    let small = reg.push("kill/small", &Image::busybox());
    // ~16 MiB at 32 MiB/s: each pull lasts about half a second.
    proxy.fault("/blobs/", Fault::Throttle(32 << 20), None);
    let reference = p.reference.replace(&reg.addr, &proxy.addr);
    let root = TempRoot::new();
    pull(root.path(), &reg.addr, &["-q", &small.reference]).ok();
    for delay_ms in [5u64, 40, 120, 250, 400, 600] {
        let mut c = imgpull(root.path(), &[&proxy.addr]);
        c.args(["-q", &reference]);
        let mut child = c.spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let names = check_store(&layout(root.path()));
        assert!(
            names.contains(&small.reference),
            "earlier image intact after kill at {delay_ms} ms"
        );
    }
    proxy.clear();
    pull(root.path(), &proxy.addr, &["-q", &reference]).ok();
    let mut names = check_store(&layout(root.path()));
    names.sort();
    let mut want = [reference.clone(), small.reference.clone()];
    want.sort();
    assert_eq!(names, want);
    // Debris of the killed pulls is cleaned by prune.
    let mut c = imgpull(root.path(), &[]);
    c.arg("--prune");
    run(c, T).ok();
    assert!(ingest_is_empty(root.path()));
    assert_eq!(check_store(&layout(root.path())).len(), 2);
}

#[test]
fn a_download_cut_off_midway_resumes_with_a_range_request() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let p = reg.push("resume/big", &Image::large("big.bin", 8, Compression::None));
    let layer = p.layers[0].clone();
    proxy.fault(&layer, Fault::Truncate(0.5), Some(1));
    let reference = p.reference.replace(&reg.addr, &proxy.addr);
    let root = TempRoot::new();
    let r = pull(root.path(), &proxy.addr, &["--progress=json", &reference]).ok();
    assert!(r.stderr.contains(r#""event":"retry""#), "{}", r.stderr);
    let gets: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path.contains(&layer))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    let range = gets[1]
        .range
        .clone()
        .expect("second request has a Range header");
    let offset: u64 = range
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .expect("bytes=N-");
    assert!(offset > 0, "resumed from {offset}");
    assert_eq!(check_store(&layout(root.path())), [reference]);
}

#[test]
fn transient_5xx_and_stalls_are_retried() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let p = reg.push("retry/busybox", &Image::busybox());
    proxy.fault("/manifests/", Fault::Status(503), Some(2));
    proxy.fault(&p.layers[0], Fault::Status(500), Some(1));
    proxy.fault(&p.config, Fault::Stall(Duration::from_secs(3)), Some(1));
    let reference = p.reference.replace(&reg.addr, &proxy.addr);
    let root = TempRoot::new();
    let r = pull(
        root.path(),
        &proxy.addr,
        &["--progress=json", "--stall-timeout", "1", &reference],
    )
    .ok();
    let retries = r
        .stderr
        .lines()
        .filter(|l| l.contains(r#""event":"retry""#))
        .count();
    assert_eq!(retries, 4, "{}", r.stderr);
    assert_eq!(check_store(&layout(root.path())), [reference]);
}

#[test]
fn registry_down_fails_after_retries_with_exit_4() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let root = TempRoot::new();
    let r = pull(
        root.path(),
        &dead,
        &[
            "--progress=json",
            "--retries",
            "2",
            &format!("{dead}/x/y:1"),
        ],
    )
    .expect_code(4);
    assert!(
        r.stderr
            .contains(&format!("imgpull: pulling {dead}/x/y:1: ")),
        "{}",
        r.describe()
    );
    assert!(r.stderr.contains("cannot reach"), "{}", r.describe());
    let error_line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("imgpull:"))
        .unwrap_or_default();
    assert_eq!(
        error_line.matches("pulling").count(),
        1,
        "no repeated context: {error_line}"
    );
    assert_eq!(
        r.stderr
            .lines()
            .filter(|l| l.contains(r#""event":"retry""#))
            .count(),
        2
    );
    assert_eq!(
        r.stderr
            .lines()
            .filter(|l| l.starts_with("imgpull:"))
            .count(),
        1,
        "one error line"
    );
}

#[test]
fn unknown_repository_and_tag_exit_3_with_the_registry_status() {
    let reg = Registry::start();
    let p = reg.push("known/repo", &Image::busybox());
    let root = TempRoot::new();
    let r = pull(
        root.path(),
        &reg.addr,
        &["-q", &format!("{}/no/such:1", reg.addr)],
    )
    .expect_code(3);
    // distribution answers MANIFEST_UNKNOWN or NAME_UNKNOWN depending on its version.
    assert!(
        r.stderr.contains(&format!("{} answered ", reg.addr)),
        "{}",
        r.describe()
    );
    assert!(r.stderr.contains("_UNKNOWN"), "{}", r.describe());
    let r = pull(
        root.path(),
        &reg.addr,
        &["-q", &format!("{}/known/repo:nope", reg.addr)],
    )
    .expect_code(3);
    assert!(r.stderr.contains("MANIFEST_UNKNOWN"), "{}", r.describe());
    assert_eq!(r.stdout, "");
    assert!(check_store(&layout(root.path())).is_empty());
    drop(p);
}

#[test]
fn corrupt_blob_is_refused_and_nothing_is_stored() {
    let (_reg, proxy, p, reference) = busybox_behind_proxy("bad/digest");
    proxy.fault(&p.layers[0], Fault::Corrupt, None);
    let root = TempRoot::new();
    let r = pull(root.path(), &proxy.addr, &["-q", &reference]).expect_code(4);
    assert!(
        r.stderr.contains("has digest") && r.stderr.contains(&p.layers[0]),
        "{}",
        r.describe()
    );
    assert_nothing_stored(root.path(), &p.layers[0]);
}

#[test]
fn truncated_body_fails_after_retries_and_nothing_is_stored() {
    let (_reg, proxy, p, reference) = busybox_behind_proxy("bad/truncated");
    proxy.fault(&p.layers[0], Fault::Truncate(0.3), None);
    let root = TempRoot::new();
    let r = pull(
        root.path(),
        &proxy.addr,
        &["-q", "--retries", "2", &reference],
    )
    .expect_code(4);
    assert!(r.stderr.contains(&p.layers[0]), "{}", r.describe());
    assert_nothing_stored(root.path(), &p.layers[0]);
}

#[test]
fn malformed_and_oversized_manifests_are_refused() {
    let (_reg, proxy, _, reference) = busybox_behind_proxy("bad/manifest");
    let root = TempRoot::new();

    proxy.fault(
        "/manifests/",
        Fault::Body(b"{\"schemaVersion\": 2, \"config\": ".to_vec()),
        None,
    );
    let r = pull(root.path(), &proxy.addr, &["-q", &reference]).expect_code(4);
    assert!(r.stderr.contains("malformed manifest"), "{}", r.describe());

    proxy.clear();
    let mut huge = br#"{"schemaVersion":2,"annotations":{"pad":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 5 << 20));
    huge.extend(br#""}}"#);
    proxy.fault("/manifests/", Fault::Body(huge), None);
    let r = pull(root.path(), &proxy.addr, &["-q", &reference]).expect_code(4);
    assert!(
        r.stderr.contains("over the 4194304-byte limit"),
        "{}",
        r.describe()
    );
    assert!(check_store(&layout(root.path())).is_empty());
}

#[test]
fn full_disk_fails_cleanly_and_keeps_what_was_stored() {
    let reg = Registry::start();
    let small = reg.push("disk/small", &Image::busybox());
    let big = reg.push("disk/big", &Image::large("big.bin", 12, Compression::None));
    let root = TempRoot::new();
    let store_root = root.mount_tmpfs("store", "6m");
    pull(&store_root, &reg.addr, &["-q", &small.reference]).ok();
    let before = std::fs::read(layout(&store_root).join("index.json")).expect("index");
    let r = pull(&store_root, &reg.addr, &["-q", &big.reference]).expect_code(1);
    assert!(
        r.stderr.contains("No space left on device"),
        "{}",
        r.describe()
    );
    assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
    assert_eq!(
        std::fs::read(layout(&store_root).join("index.json")).expect("index"),
        before
    );
    assert_eq!(
        check_store(&layout(&store_root)),
        [small.reference.as_str()]
    );
    assert!(ingest_is_empty(&store_root));
}

#[test]
fn token_auth_with_creds_and_auth_files() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr).with_token_auth("alice", "s3cret");
    let p = reg.push("private/app", &Image::busybox());
    let reference = p.reference.replace(&reg.addr, &proxy.addr);

    let root = TempRoot::new();
    let r = pull(root.path(), &proxy.addr, &["-q", &reference]).expect_code(4);
    assert!(r.stderr.contains("401"), "{}", r.describe());

    let r = pull(
        root.path(),
        &proxy.addr,
        &["-q", "--creds", "alice:wrong", &reference],
    )
    .expect_code(4);
    assert!(r.stderr.contains("401"), "{}", r.describe());

    pull(
        root.path(),
        &proxy.addr,
        &["-q", "--creds", "alice:s3cret", &reference],
    )
    .ok();

    // containers auth.json through REGISTRY_AUTH_FILE, keyed by host/namespace.
    let root2 = TempRoot::new();
    let auth = root2.path().join("auth.json");
    let b64 = "YWxpY2U6czNjcmV0"; // alice:s3cret
    std::fs::write(
        &auth,
        format!(
            r#"{{"auths":{{"{}/private":{{"auth":"{b64}"}}}}}}"#,
            proxy.addr
        ),
    )
    .expect("auth");
    let mut c = imgpull(root2.path(), &[&proxy.addr]);
    c.env("REGISTRY_AUTH_FILE", &auth).args(["-q", &reference]);
    run(c, T).ok();

    // docker's ~/.docker/config.json.
    let root3 = TempRoot::new();
    std::fs::create_dir_all(root3.path().join(".docker")).expect("mkdir");
    std::fs::write(
        root3.path().join(".docker/config.json"),
        format!(
            r#"{{"auths":{{"http://{}":{{"auth":"{b64}"}}}}}}"#,
            proxy.addr
        ),
    )
    .expect("config");
    let mut c = imgpull(root3.path(), &[&proxy.addr]);
    c.args(["-q", &reference]);
    run(c, T).ok();
}

#[test]
fn a_registry_that_requires_client_certificates_gets_the_certs_d_pair() {
    let reg = Registry::start();
    let files = TempRoot::new();
    let clients = e2e::tls::Certs::make(&files.path().join("clients"), "crikit clients CA");
    let strangers = e2e::tls::Certs::make(&files.path().join("strangers"), "crikit other CA");
    let mtls = reg.mtls_twin(Path::new(&clients.path("ca.crt")));
    let p = reg.push("mtls/busybox", &Image::busybox());
    let reference = p.reference.replace(&reg.addr, &mtls.addr);
    let certs = TempRoot::new();
    let dir = certs.path().join(&mtls.addr);
    std::fs::create_dir_all(&dir).expect("certs.d host dir");
    std::fs::copy(mtls.ca.as_ref().expect("CA"), dir.join("ca.crt")).expect("ca.crt");
    let install = |cert: &e2e::tls::Certs, key: &e2e::tls::Certs| {
        std::fs::copy(cert.path("client.crt"), dir.join("client.cert")).expect("client.cert");
        std::fs::copy(key.path("client.key"), dir.join("client.key")).expect("client.key");
    };
    let pull = |root: &Path| {
        let mut c = imgpull(root, &[]);
        c.arg("--certs-dir")
            .arg(certs.path())
            .args(["-q", "--retry-delay", "30000", &reference]);
        run(c, T)
    };
    let refused_at_once = |what: &str| {
        let root = TempRoot::new();
        let started = std::time::Instant::now();
        let r = pull(root.path()).expect_code(4);
        assert!(
            r.stderr.contains(&format!("TLS with {} failed", mtls.addr))
                && r.stderr.contains("wants a client certificate"),
            "{what}: {}",
            r.describe()
        );
        assert_eq!(r.stderr.lines().count(), 1, "{what}: {}", r.describe());
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what}: retried: {}",
            r.describe()
        );
        assert!(!blob(root.path(), &p.digest).exists(), "{what}");
    };

    // Without a client certificate, the registry ends the handshake.
    refused_at_once("no client certificate");
    // One the registry's CA did not sign: the same.
    install(&strangers, &strangers);
    refused_at_once("a stranger's certificate");

    // The pair signed by the CA the registry requires: pulled.
    install(&clients, &clients);
    let root = TempRoot::new();
    let r = pull(root.path()).ok();
    assert_eq!(r.stdout, format!("{reference}@{}\n", p.digest));
    assert_eq!(check_store(&layout(root.path())), [reference.as_str()]);

    // A key that is not the certificate's: a usage error naming both files.
    install(&clients, &strangers);
    let root = TempRoot::new();
    let r = pull(root.path()).expect_code(2);
    let (cert, key) = (dir.join("client.cert"), dir.join("client.key"));
    assert!(
        r.stderr.contains(&format!(
            "client certificate {} with key {}: the key is not the certificate's",
            cert.display(),
            key.display()
        )),
        "{}",
        r.describe()
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.describe());
    // A certificate without its key: the same, naming what is missing.
    std::fs::remove_file(&key).expect("rm key");
    let r = pull(root.path()).expect_code(2);
    assert!(
        r.stderr.contains(&format!(
            "{}: no {} next to it",
            cert.display(),
            key.display()
        )),
        "{}",
        r.describe()
    );
    assert!(!blob(root.path(), &p.digest).exists());
}

#[test]
fn tls_registries_are_verified_per_registry_and_a_failed_handshake_is_not_retried() {
    let reg = Registry::start();
    let tls = reg.tls_twin();
    let stranger = reg.tls_twin();
    let p = reg.push("secure/busybox", &Image::busybox());
    let reference = p.reference.replace(&reg.addr, &tls.addr);
    let trust = |c: &mut Command, r: &Registry| {
        c.env(
            "SSL_CERT_FILE",
            r.ca.as_ref().expect("a TLS registry has a CA"),
        )
        .env_remove("SSL_CERT_DIR");
    };

    // Trusting its CA: pulled over TLS (no --insecure-registry).
    let root = TempRoot::new();
    let mut c = imgpull(root.path(), &[]);
    trust(&mut c, &tls);
    c.args(["-q", &reference]);
    let r = run(c, T).ok();
    assert_eq!(r.stdout, format!("{reference}@{}\n", p.digest));
    assert_eq!(check_store(&layout(root.path())), [reference.as_str()]);

    // Trusting another CA: refused at once, not retried, nothing stored.
    let root = TempRoot::new();
    let mut c = imgpull(root.path(), &[]);
    trust(&mut c, &stranger);
    c.args(["-q", "--retry-delay", "30000", &reference]);
    let started = std::time::Instant::now();
    let r = run(c, T).expect_code(4);
    assert!(
        r.stderr.contains(&format!("TLS with {} failed", tls.addr))
            && r.stderr.contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        r.describe()
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.describe());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "retried: {}",
        r.describe()
    );
    assert!(!blob(root.path(), &p.digest).exists());

    // A certs.d directory trusts its CAs for that registry, besides the system's
    // (here the stranger's CA, through SSL_CERT_FILE).
    let certs = TempRoot::new();
    let file_ca = |host: &str| {
        let dir = certs.path().join(host);
        std::fs::create_dir_all(&dir).expect("certs.d host dir");
        std::fs::copy(tls.ca.as_ref().expect("CA"), dir.join("ca.crt")).expect("ca.crt");
        dir
    };
    let pull_with_certs = |reference: &str| {
        let root = TempRoot::new();
        let mut c = imgpull(root.path(), &[]);
        trust(&mut c, &stranger);
        c.arg("--certs-dir")
            .arg(certs.path())
            .args(["-q", reference]);
        run(c, T)
    };
    let via_stranger = p.reference.replace(&reg.addr, &stranger.addr);
    // Filed under the stranger's name, tls's CA does nothing for tls, and the
    // stranger is still trusted through the system's CAs.
    let wrong_dir = file_ca(&stranger.addr);
    let r = pull_with_certs(&reference).expect_code(4);
    assert!(r.stderr.contains("UnknownIssuer"), "{}", r.describe());
    pull_with_certs(&via_stranger).ok();
    std::fs::remove_dir_all(wrong_dir).expect("rm");
    // Filed under tls's name, it is trusted for tls.
    let host_dir = file_ca(&tls.addr);
    let r = pull_with_certs(&reference).ok();
    assert_eq!(r.stdout, format!("{reference}@{}\n", p.digest));
    // A .crt that holds no certificate is a usage error naming the file.
    std::fs::write(host_dir.join("bad.crt"), "not a certificate").expect("bad.crt");
    let r = pull_with_certs(&reference).expect_code(2);
    assert!(
        r.stderr.contains("bad.crt: no PEM certificate"),
        "{}",
        r.describe()
    );

    // No CA certificate at all: the client cannot be set up, and says what to do.
    let mut c = imgpull(root.path(), &[&reg.addr]);
    c.env("SSL_CERT_FILE", root.path().join("no-such-bundle.pem"))
        .env_remove("SSL_CERT_DIR")
        .args(["-q", &p.reference]);
    let r = run(c, T).expect_code(1);
    assert!(
        r.stderr.contains("No CA certificates") && r.stderr.contains("SSL_CERT_FILE"),
        "{}",
        r.describe()
    );

    // TLS to a registry that speaks plain HTTP: refused with the way out.
    let plain = p.reference.clone();
    let mut c = imgpull(root.path(), &[]);
    trust(&mut c, &tls);
    c.args(["-q", &plain]);
    let r = run(c, T).expect_code(4);
    assert!(
        r.stderr.contains(&format!("TLS with {} failed", reg.addr))
            && r.stderr.contains("must be named insecure"),
        "{}",
        r.describe()
    );
}

#[test]
fn list_inspect_remove_prune() {
    let reg = Registry::start();
    let a = reg.push("store/a", &Image::busybox());
    let b = reg.push("store/b", &Image::large("b.bin", 1, Compression::Gzip));
    let root = TempRoot::new();
    pull(root.path(), &reg.addr, &["-q", &a.reference, &b.reference]).ok();
    let cmd = |args: &[&str]| {
        let mut c = imgpull(root.path(), &[]);
        c.args(args);
        run(c, T)
    };

    let r = cmd(&["--list", "--json"]).ok();
    let lines: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["type"], "image");
    assert_eq!(lines[0]["data"]["name"], a.reference);
    assert_eq!(lines[0]["data"]["repo_digest"], a.digest);
    assert!(lines[0]["data"]["size"].as_u64().expect("size") > 500_000);
    assert_eq!(lines[2]["type"], "summary");
    assert_eq!(lines[2]["version"], 1);

    let r = cmd(&["--list"]).ok();
    assert!(r.stdout.starts_with("NAME"));
    assert!(r.stdout.contains(&b.reference));

    // A NAME@DIGEST line as imgpull prints it is accepted.
    let r = cmd(&["--inspect", &format!("{}@{}", a.reference, a.digest)]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("inspect json");
    assert_eq!(v["name"], a.reference);
    assert_eq!(v["config"]["config"]["Cmd"][0], "/bin/sh");
    assert_eq!(v["manifest"]["layers"][0]["digest"], a.layers[0]);

    let r = cmd(&["--remove", &a.reference]).ok();
    assert_eq!(r.stdout.trim(), a.reference);
    assert!(
        !blob(root.path(), &a.layers[0]).exists(),
        "the removed image's blobs go with it"
    );
    assert!(blob(root.path(), &b.layers[0]).exists());
    assert_eq!(check_store(&layout(root.path())), [b.reference.as_str()]);
    // Blobs no image names (a pull killed before it named its image) go at --prune.
    let stray = layout(root.path())
        .join("blobs/sha256")
        .join("0".repeat(64));
    std::fs::write(&stray, b"stray").unwrap();
    let r = cmd(&["--prune"]).ok();
    assert!(r.stdout.starts_with("removed 1 blobs"), "{}", r.describe());
    assert!(!stray.exists());
    assert_eq!(check_store(&layout(root.path())), [b.reference.as_str()]);

    let r = cmd(&["--remove", &a.reference]).expect_code(3);
    assert!(r.stderr.contains("no image named"), "{}", r.describe());
    cmd(&["--inspect", "nothing:here"]).expect_code(3);
}

#[test]
fn usage_errors_exit_2() {
    let root = TempRoot::new();
    let cmd = |args: &[&str]| {
        let mut c = imgpull(root.path(), &[]);
        c.args(args);
        run(c, T)
    };
    let r = cmd(&["Not/Valid:ref"]).expect_code(2);
    assert!(
        r.stderr.contains("invalid image reference"),
        "{}",
        r.describe()
    );
    cmd(&[]).expect_code(2);
    cmd(&["--no-such-flag", "x"]).expect_code(2);
    cmd(&["--list", "--prune"]).expect_code(2);
    cmd(&["--inspect"]).expect_code(2);
    let r = cmd(&["--platform", "linux", "busybox"]).expect_code(2);
    assert!(r.stderr.contains("invalid platform"), "{}", r.describe());
}

#[test]
fn an_unprivileged_user_pulls_into_their_own_store() {
    let reg = Registry::start();
    let p = reg.push("rootless/busybox", &Image::busybox());
    let root = TempRoot::new();
    let home = root.path().join("home");
    std::fs::create_dir(&home).expect("mkdir home");
    let chown = Command::new("chown")
        .args(["65534:65534"])
        .arg(&home)
        .status()
        .expect("chown");
    assert!(chown.success());
    let chmod = Command::new("chmod")
        .arg("755")
        .arg(root.path())
        .status()
        .expect("chmod");
    assert!(chmod.success());
    // A copy the user can reach wherever the build tree lives.
    let exe = root.path().join("imgpull");
    std::fs::copy(bin("imgpull"), &exe).expect("copy imgpull");
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .args(["--insecure-registry", &reg.addr, "-q", &p.reference])
        .env("HOME", &home)
        .env("CONTAINERS_REGISTRIES_CONF", "/dev/null")
        .env_remove("CRIKIT_ROOT")
        .env_remove("XDG_DATA_HOME")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("REGISTRY_AUTH_FILE");
    let r = run(c, T).ok();
    assert_eq!(r.stdout, format!("{}@{}\n", p.reference, p.digest));
    // The default root of a non-root user is $XDG_DATA_HOME/crikit (~/.local/share).
    let store = home.join(".local/share/crikit/images");
    assert_eq!(check_store(&store), [p.reference.as_str()]);
}
