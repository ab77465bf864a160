//! The layer cache as pulls fill it and removals empty it: `imgpull --unpack` lays
//! every layer down while it downloads, bundlegen then unpacks nothing, a bad or
//! cut-off layer leaves nothing behind, and removing images gives the disk back
//! down to the layers another image or a bundle still uses, even after SIGKILLs.

use e2e::{
    bin, check_store, disk_usage, layer_cache, run, Compression, Entry, Fault, Image, Layer, Proxy,
    Registry, Run, Runc, TempRoot,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

fn imgpull(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin("imgpull"));
    c.arg("--root").arg(root).args(args);
    c.env("CONTAINERS_REGISTRIES_CONF", "/dev/null")
        .env("HOME", root)
        .env_remove("CRIKIT_ROOT");
    c
}

fn cmd(root: &Path, args: &[&str]) -> Run {
    run(imgpull(root, args), T)
}

fn bundlegen(root: &Path, args: &[&str]) -> Run {
    let mut c = Command::new(bin("bundlegen"));
    c.arg("--root").arg(root).args(args);
    run(c, T)
}

/// The layers in place in the cache (chain ids), sorted.
fn layers(root: &Path) -> Vec<String> {
    layer_cache(root).0
}

/// What killed or failed unpacks and removals left in the cache.
fn debris(root: &Path) -> Vec<String> {
    layer_cache(root).1
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn progress_events(stderr: &str, kind: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains(&format!(r#""event":"{kind}""#)))
        .count()
}

/// busybox, a layer with whiteouts and an opaque directory (zstd), a plain layer
/// with a hardlink to a file of the layer below, and a large gzip layer.
fn layered_image() -> Image {
    Image::new(vec![
        Layer::busybox(Compression::Gzip),
        Layer::new(
            &[
                Entry::File("etc/motd".into(), b"lower\n".to_vec(), 0o644),
                Entry::File("etc/app/one".into(), b"1".to_vec(), 0o644),
                Entry::Dir("keep".into(), 0o750),
                Entry::File("keep/hard-src".into(), b"source\n".to_vec(), 0o640),
            ],
            Compression::Zstd,
        ),
        Layer::new(
            &[
                Entry::File("etc/.wh.motd".into(), Vec::new(), 0o644),
                Entry::File("etc/app/.wh..wh..opq".into(), Vec::new(), 0o644),
                Entry::File("etc/app/three".into(), b"3".to_vec(), 0o644),
                Entry::Raw {
                    name: "keep/hard-link".into(),
                    kind: tar::EntryType::Link,
                    data: Vec::new(),
                    link: Some("keep/hard-src".into()),
                    mode: 0o640,
                },
            ],
            Compression::None,
        ),
        Layer::large("data/big.bin", 8, Compression::Gzip),
    ])
}

#[test]
fn a_pull_with_unpack_leaves_every_layer_ready_and_the_first_bundle_unpacks_nothing() {
    let reg = Registry::start();
    let p = reg.push("unpack/layered", &layered_image());
    let tmp = TempRoot::new();
    let root = tmp.path().join("state");
    // A pull with --unpack; how many layers it unpacked.
    let unpacking_pull = |reference: &str| {
        let r = cmd(
            &root,
            &[
                "--insecure-registry",
                &reg.addr,
                "--unpack",
                "--progress=json",
                reference,
            ],
        )
        .ok();
        let n = progress_events(&r.stderr, "layer-unpacked");
        (r, n)
    };
    let (r, unpacked) = unpacking_pull(&p.reference);
    assert_eq!(unpacked, 4, "{}", r.describe());
    assert_eq!(layers(&root).len(), 4, "{:?}", layers(&root));
    assert!(debris(&root).is_empty(), "{:?}", debris(&root));
    let line = r.stdout.trim().to_string();

    let b = tmp.path().join("b1");
    let r = bundlegen(
        &root,
        &[
            "--json",
            &line,
            b.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            "ls /etc/motd 2>&1; ls /etc/app; cat /keep/hard-link; \
             stat -c %h /keep/hard-src; wc -c < /data/big.bin",
        ],
    )
    .ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["data"]["layers_unpacked"], 0, "{}", r.describe());
    let r = Runc::new(tmp.path()).run(&b);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let out: Vec<&str> = r.stdout.lines().collect();
    assert!(out[0].contains("No such file"), "{}", r.describe());
    assert_eq!(
        &out[1..],
        ["three", "source", "2", "8388608"],
        "{}",
        r.describe()
    );
    bundlegen(&root, &["--remove", b.to_str().unwrap()]).ok();

    // A second pull of the same image, and of one sharing its first layer, unpacks
    // only what is new.
    let (again, unpacked) = unpacking_pull(&p.reference);
    assert_eq!(unpacked, 0, "{}", again.describe());
    let other = reg.push("unpack/other", &Image::busybox());
    let (r, unpacked) = unpacking_pull(&other.reference);
    assert_eq!(unpacked, 0, "{}", r.describe());
    assert_eq!(layers(&root).len(), 4);

    // Unprivileged users cannot keep overlay-form layers.
    let mut c = imgpull(&root, &["--unpack", &p.reference]);
    as_user(&mut c, 65534);
    let r = run(c, T).expect_code(2);
    assert!(r.stderr.contains("--unpack needs root"), "{}", r.describe());
}

/// Runs the command as another user.
fn as_user(c: &mut Command, uid: u32) {
    use std::os::unix::process::CommandExt;
    c.uid(uid).gid(uid);
}

#[test]
fn a_corrupt_cut_off_or_hostile_layer_leaves_no_layer_behind() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let p = reg.push("unpack/bad", &Image::large("big.bin", 4, Compression::Gzip));
    let reference = p.reference.replace(&reg.addr, &proxy.addr);
    let tmp = TempRoot::new();
    let root = tmp.path().join("state");
    let pull = |extra: &[&str]| {
        let mut args = vec!["--insecure-registry", &proxy.addr, "--unpack", "-q"];
        args.extend_from_slice(extra);
        args.push(&reference);
        cmd(&root, &args)
    };

    // A flipped byte: the blob's digest is wrong, and so is the layer.
    proxy.fault(&p.layers[0], Fault::Corrupt, None);
    let r = pull(&["--retries", "0"]).expect_code(4);
    assert!(r.stderr.contains("has digest"), "{}", r.describe());
    assert!(layers(&root).is_empty() && debris(&root).is_empty());
    assert!(check_store(&root.join("images")).is_empty());

    // Cut off halfway every time: nothing is committed.
    proxy.clear();
    proxy.fault(&p.layers[0], Fault::Truncate(0.5), None);
    pull(&["--retries", "1", "--retry-delay", "20"]).expect_code(4);
    assert!(layers(&root).is_empty() && debris(&root).is_empty());

    // Cut off once: the download resumes with a range request, and the layer,
    // fed the rest of the bytes, is whole.
    proxy.clear();
    proxy.fault(&p.layers[0], Fault::Truncate(0.5), Some(1));
    pull(&["--retry-delay", "20"]).ok();
    assert_eq!(layers(&root).len(), 1);
    let big = root
        .join("layers")
        .join(&layers(&root)[0])
        .join("diff/big.bin");
    assert_eq!(std::fs::metadata(&big).expect("big.bin").len(), 4 << 20);
    assert!(debris(&root).is_empty());

    // Other bytes of the same size and content (the gzip header's OS byte
    // changed): they decompress to the right tar, so only the blob's digest
    // tells. The layer, unpacked and with its diff_id right, is not kept: the
    // blob failed.
    proxy.clear();
    let layer = Layer::large("big.bin", 4, Compression::Gzip);
    let mut other = layer.blob();
    other[9] ^= 0xff;
    let same = reg.push("unpack/same", &Image::new(vec![layer]));
    let same_ref = same.reference.replace(&reg.addr, &proxy.addr);
    proxy.fault(&same.layers[0], Fault::Body(other), None);
    let fresh = tmp.path().join("fresh");
    let r = cmd(
        &fresh,
        &[
            "--insecure-registry",
            &proxy.addr,
            "--unpack",
            "-q",
            "--retries",
            "0",
            &same_ref,
        ],
    )
    .expect_code(4);
    assert!(r.stderr.contains("has digest"), "{}", r.describe());
    assert!(layers(&fresh).is_empty(), "{:?}", layers(&fresh));
    assert!(debris(&fresh).is_empty(), "{:?}", debris(&fresh));
    proxy.clear();

    // An entry that climbs out of the root: the pull fails naming it (a registry
    // failure, exit 4), and no layer of the image is left.
    let evil = Layer::new(
        &[Entry::Raw {
            name: "../../../escaped".into(),
            kind: tar::EntryType::Regular,
            data: b"x".to_vec(),
            link: None,
            mode: 0o644,
        }],
        Compression::Gzip,
    );
    let e = reg.push(
        "unpack/evil",
        &Image::new(vec![
            Layer::new(
                &[Entry::File("ok".into(), b"ok".to_vec(), 0o644)],
                Compression::Gzip,
            ),
            evil,
        ]),
    );
    let before = layers(&root);
    let r = cmd(
        &root,
        &[
            "--insecure-registry",
            &reg.addr,
            "--unpack",
            "-q",
            &e.reference,
        ],
    )
    .expect_code(4);
    assert!(
        r.stderr.contains("unpacking layer") && r.stderr.contains("escapes the rootfs"),
        "{}",
        r.describe()
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.describe());
    assert!(!check_store(&root.join("images")).contains(&e.reference));
    assert!(debris(&root).is_empty(), "{:?}", debris(&root));
    // Its good first layer may stay (a later pull reuses it); the bad one never.
    assert!(layers(&root).len() <= before.len() + 1);
    assert!(!tmp.path().join("escaped").exists() && !Path::new("/escaped").exists());
}

#[test]
fn removing_images_gives_the_disk_back_except_what_others_use() {
    let reg = Registry::start();
    let base = Layer::busybox(Compression::Gzip);
    let a = reg.push(
        "gc/a",
        &Image::new(vec![
            base.clone(),
            Layer::large("a.bin", 6, Compression::Gzip),
        ]),
    );
    let b = reg.push(
        "gc/b",
        &Image::new(vec![base, Layer::large("b.bin", 3, Compression::Zstd)]),
    );
    let tmp = TempRoot::new();
    let root = tmp.path().join("state");
    // The store exists, empty, before anything is pulled.
    cmd(&root, &["--list"]).ok();
    let empty = disk_usage(&[&root]);
    cmd(
        &root,
        &[
            "--insecure-registry",
            &reg.addr,
            "--unpack",
            "-q",
            &a.reference,
            &b.reference,
        ],
    )
    .ok();
    // The base layer is one layer for both images.
    assert_eq!(layers(&root).len(), 3, "{:?}", layers(&root));
    let full = disk_usage(&[&root]);
    assert!(full > empty + (9 << 20), "{empty} → {full}");

    // A bundle of b keeps b's layers after b is removed.
    let bundle = tmp.path().join("b-bundle");
    bundlegen(&root, &[&b.reference, bundle.to_str().unwrap()]).ok();
    let r = cmd(&root, &["--remove", &a.reference]).ok();
    assert_eq!(r.stdout.trim(), a.reference);
    assert_eq!(
        layers(&root).len(),
        2,
        "a's own layer went, the shared one stayed"
    );
    cmd(&root, &["--remove", &b.reference]).ok();
    assert_eq!(layers(&root).len(), 2, "the bundle still uses b's layers");
    let r = Runc::new(tmp.path()).run(&bundle);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    bundlegen(&root, &["--remove", bundle.to_str().unwrap()]).ok();
    let r = cmd(&root, &["--prune"]).ok();
    assert!(r.stdout.contains(", 2 layers and"), "{}", r.describe());
    assert!(layers(&root).is_empty());
    assert!(check_store(&root.join("images")).is_empty());
    let after = disk_usage(&[&root]);
    // Every byte of the images comes back; what remains is the empty store's
    // files, the cache's lock and directory entries.
    assert!(after <= empty + (64 << 10), "{empty} → {full} → {after}");
}

#[test]
fn sigkill_during_unpacking_pulls_and_removals_leaves_a_consistent_cache() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let p = reg.push(
        "kill/layers",
        &Image::new(vec![
            Layer::busybox(Compression::Gzip),
            Layer::large("big.bin", 16, Compression::Gzip),
            Layer::large("more.bin", 8, Compression::None),
        ]),
    );
    proxy.fault("/blobs/", Fault::Throttle(32 << 20), None);
    let reference = p.reference.replace(&reg.addr, &proxy.addr);
    let tmp = TempRoot::new();
    let root = tmp.path().join("state");
    let pull_args = [
        "--insecure-registry",
        &proxy.addr,
        "--unpack",
        "-q",
        &reference,
    ];
    for delay_ms in [10u64, 80, 200, 350, 500, 700] {
        let mut child = imgpull(&root, &pull_args)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever is in place under a chain id is whole: each is one of the
        // image's layers, and the ones that are there hold their files.
        assert_complete(&root);
    }
    proxy.clear();
    cmd(&root, &pull_args).ok();
    assert_eq!(layers(&root).len(), 3);
    // Removals killed midway: the layers are renamed out of sight first.
    for delay_ms in [1u64, 5, 20] {
        let mut child = imgpull(&root, &["--remove", &reference])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        assert_complete(&root);
        if check_store(&root.join("images")).is_empty() {
            break;
        }
    }
    // The next pull, and the next prune, set everything right.
    cmd(&root, &pull_args).ok();
    assert_eq!(layers(&root).len(), 3);
    assert_complete(&root);
    cmd(&root, &["--remove", &reference]).ok();
    cmd(&root, &["--prune"]).ok();
    assert!(layers(&root).is_empty(), "{:?}", layers(&root));
    assert!(debris(&root).is_empty(), "{:?}", debris(&root));
}

/// Every layer in place holds what its image's layer holds.
fn assert_complete(root: &Path) {
    for l in layers(root) {
        let diff: PathBuf = root.join("layers").join(&l).join("diff");
        let names = entries(&diff);
        let whole = if names.contains(&"big.bin".to_string()) {
            std::fs::metadata(diff.join("big.bin")).is_ok_and(|m| m.len() == 16 << 20)
        } else if names.contains(&"more.bin".to_string()) {
            std::fs::metadata(diff.join("more.bin")).is_ok_and(|m| m.len() == 8 << 20)
        } else {
            diff.join("bin/busybox").is_file()
        };
        assert!(whole, "layer {l} is in place but not whole: {names:?}");
    }
}
