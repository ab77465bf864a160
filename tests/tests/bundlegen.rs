//! bundlegen end to end: images pushed to a loopback registry, pulled with imgpull,
//! made into bundles and run with real runc.

use e2e::image::push;
use e2e::{
    bin, pull_into, run, run_input, Compression, Entry, Image, Layer, Registry, Run, Runc, TempRoot,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

/// One test's world: a registry, a store root, a runc.
struct World {
    reg: Registry,
    tmp: TempRoot,
    runc: Runc,
}

impl World {
    fn new() -> World {
        let tmp = TempRoot::new();
        let runc = Runc::new(tmp.path());
        World {
            reg: Registry::start(),
            tmp,
            runc,
        }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// Pushes and pulls an image; returns the line imgpull printed.
    fn image(&self, repo: &str, img: &Image) -> String {
        let p = push(&self.reg.addr, repo, "1", img);
        pull_into(&self.root(), &self.reg.addr, &p.reference)
    }

    fn bundlegen(&self, args: &[&str]) -> Run {
        let mut c = Command::new(bin("bundlegen"));
        c.arg("--root").arg(self.root()).args(args);
        run(c, T)
    }

    fn bundle(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Makes a bundle and runs it.
    fn run(&self, image: &str, name: &str, args: &[&str]) -> Run {
        let b = self.bundle(name);
        let mut a = vec![image, b.to_str().expect("utf-8")];
        a.extend_from_slice(args);
        self.bundlegen(&a).ok();
        self.runc.run(&b)
    }
}

fn sh(script: &str) -> Vec<&str> {
    vec!["--", "/bin/sh", "-c", script]
}

fn with(args: &[&str], script: &str) -> Vec<String> {
    args.iter()
        .map(|s| s.to_string())
        .chain(sh(script).into_iter().map(String::from))
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn cap_eff(status: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .expect("CapEff line");
    u64::from_str_radix(line.split_whitespace().nth(1).expect("value"), 16).expect("hex")
}

#[test]
fn pipeline_runs_under_runc_and_the_second_bundle_unpacks_nothing() {
    let w = World::new();
    let line = w.image("demo/hello", &Image::busybox());
    // `imgpull … | bundlegen - DIR` with the printed REF@DIGEST line on stdin.
    let b = w.bundle("b1");
    let mut c = Command::new(bin("bundlegen"));
    c.arg("--root")
        .arg(w.root())
        .args(["--json", "-"])
        .arg(&b)
        .args(sh("echo hello from crikit; exit 3"));
    let r = run_input(c, Some(format!("{line}\n").as_bytes()), T).ok();
    let info: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(info["version"], 1);
    assert_eq!(info["data"]["layers_unpacked"], 1);
    let r = w.runc.run(&b);
    assert_eq!(r.code, Some(3), "{}", r.describe());
    assert_eq!(r.stdout, "hello from crikit\n");

    let r = w
        .bundlegen(&["--json", &line, w.bundle("b2").to_str().unwrap()])
        .ok();
    let info: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(info["data"]["mode"], "overlay");
    assert_eq!(
        info["data"]["layers_unpacked"], 0,
        "second bundle reuses the cached layer"
    );
    // Bundles are independent: a write in one is not seen in the other.
    let r = w.run(&line, "b3", &sh("echo x > /root/mark && cat /root/mark"));
    assert_eq!(r.stdout, "x\n", "{}", r.describe());
    let r = w.run(&line, "b4", &sh("ls /root/mark 2>&1; true"));
    assert!(r.stdout.contains("No such file"), "{}", r.describe());

    // Removal unmounts and deletes; existing destinations are refused.
    let r = w.bundlegen(&[&line, b.to_str().unwrap()]).expect_code(1);
    assert!(r.stderr.contains("already exists"), "{}", r.describe());
    w.bundlegen(&[
        "--remove",
        b.to_str().unwrap(),
        w.bundle("b2").to_str().unwrap(),
    ])
    .ok();
    assert!(!b.exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(b.to_str().unwrap()));
}

#[test]
fn user_groups_env_cwd_and_hostname() {
    let w = World::new();
    let mut img = Image::new(vec![
        Layer::busybox(Compression::Gzip),
        Layer::new(
            &[
                Entry::File(
                    "etc/passwd".into(),
                    b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
                        .to_vec(),
                    0o644,
                ),
                Entry::File(
                    "etc/group".into(),
                    b"root:x:0:\napp:x:1000:\nwheel:x:10:app\naudio:x:29:app\n".to_vec(),
                    0o644,
                ),
                Entry::Dir("home/app".into(), 0o755),
            ],
            Compression::Zstd,
        ),
    ]);
    img.env.push("FROM_IMAGE=yes".into());
    let line = w.image("users/app", &img);
    let args = with(
        &[
            "--user",
            "app",
            "--env",
            "EXTRA=1",
            "--cwd",
            "/tmp",
            "--hostname",
            "box",
        ],
        "id; echo $FROM_IMAGE $EXTRA $HOME; pwd; hostname",
    );
    let r = w.run(&line, "u1", &strs(&args)).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "uid=1000(app) gid=1000(app) groups=10(wheel),29(audio),1000(app)",
        "{}",
        r.describe()
    );
    assert_eq!(lines[1], "yes 1 /home/app");
    assert_eq!(lines[2], "/tmp");
    assert_eq!(lines[3], "box");
    let args = with(&["--user", "1000:29"], "id");
    let r = w.run(&line, "u2", &strs(&args)).ok();
    assert_eq!(
        r.stdout.trim(),
        "uid=1000(app) gid=29(audio) groups=29(audio)"
    );
    let r = w
        .bundlegen(&["--user", "nobody", &line, w.bundle("u3").to_str().unwrap()])
        .expect_code(2);
    assert!(r.stderr.contains("no user \"nobody\""), "{}", r.describe());
    assert!(!w.bundle("u3").exists());
}

#[test]
fn mounts_read_only_rootfs_and_capabilities() {
    let w = World::new();
    let line = w.image("sec/box", &Image::busybox());
    let host = w.tmp.path().join("hostdir");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("f"), "from the host\n").unwrap();
    let m = format!("{}:/data:ro", host.display());
    let args = with(&["--mount", &m, "--read-only", "--tmpfs", "/scratch"], "cat /data/f; touch /data/x 2>/dev/null || echo data-ro; touch /x 2>/dev/null || echo root-ro; touch /scratch/y && echo tmpfs-rw");
    let r = w.run(&line, "m1", &strs(&args)).ok();
    assert_eq!(
        r.stdout,
        "from the host\ndata-ro\nroot-ro\ntmpfs-rw\n",
        "{}",
        r.describe()
    );

    // The default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    let r = w.run(&line, "c1", &sh("cat /proc/self/status")).ok();
    assert_eq!(cap_eff(&r.stdout), 0xa80425fb, "{}", r.describe());
    let args = with(
        &["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"],
        "cat /proc/self/status",
    );
    let r = w.run(&line, "c2", &strs(&args)).ok();
    assert_eq!(cap_eff(&r.stdout), 1 << 12);
    // Seccomp: unshare is refused without CAP_SYS_ADMIN.
    let r = w
        .run(
            &line,
            "c3",
            &sh("unshare -n true 2>/dev/null && echo allowed || echo refused"),
        )
        .ok();
    assert_eq!(r.stdout.trim(), "refused", "{}", r.describe());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.bundle("c3").join("config.json")).unwrap())
            .unwrap();
    assert!(config["linux"]["maskedPaths"]
        .as_array()
        .unwrap()
        .contains(&"/proc/kcore".into()));
}

fn whiteout_image() -> Image {
    Image::new(vec![
        Layer::busybox(Compression::Gzip),
        Layer::new(
            &[
                Entry::File("etc/motd".into(), b"lower\n".to_vec(), 0o644),
                Entry::File("etc/app/one".into(), b"1".to_vec(), 0o644),
                Entry::File("etc/app/two".into(), b"2".to_vec(), 0o644),
            ],
            Compression::Gzip,
        ),
        Layer::new(
            &[
                Entry::File("etc/.wh.motd".into(), Vec::new(), 0o644),
                Entry::File("etc/app/.wh..wh..opq".into(), Vec::new(), 0o644),
                Entry::File("etc/app/three".into(), b"3".to_vec(), 0o644),
                Entry::FileXattrs(
                    "bin/ping".into(),
                    b"#!/bin/sh\n".to_vec(),
                    0o755,
                    // cap_net_raw+ep (VFS_CAP_REVISION_2)
                    vec![(
                        "security.capability".into(),
                        vec![
                            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                        ],
                    )],
                ),
            ],
            Compression::None,
        ),
    ])
}

fn check_whiteouts_and_file_caps(w: &World, line: &str, mode: &str, name: &str) {
    let r = w
        .run(
            line,
            name,
            &[
                "--rootfs-mode",
                mode,
                "--",
                "/bin/sh",
                "-c",
                "ls /etc/motd 2>&1; ls /etc/app",
            ],
        )
        .ok();
    assert!(
        r.stdout.contains("No such file"),
        "{mode}: {}",
        r.describe()
    );
    assert!(
        r.stdout.ends_with("three\n") && !r.stdout.contains("one"),
        "{mode}: {}",
        r.describe()
    );
    let ping = w.bundle(name).join("rootfs/bin/ping");
    let out = Command::new("python3")
        .args([
            "-c",
            "import os,sys; print(os.getxattr(sys.argv[1], 'security.capability').hex())",
        ])
        .arg(&ping)
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0100000200200000000000000000000000000000",
        "{mode}"
    );
}

#[test]
fn whiteouts_and_file_capabilities_in_both_rootfs_modes() {
    let w = World::new();
    let line = w.image("layers/wh", &whiteout_image());
    check_whiteouts_and_file_caps(&w, &line, "overlay", "w-overlay");
    check_whiteouts_and_file_caps(&w, &line, "copy", "w-copy");
}

#[test]
fn hostile_layer_fails_naming_layer_and_entry_and_leaves_nothing() {
    let w = World::new();
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
    let line = w.image(
        "evil/dotdot",
        &Image::new(vec![Layer::busybox(Compression::Gzip), evil]),
    );
    for mode in ["overlay", "copy"] {
        let b = w.bundle(&format!("evil-{mode}"));
        let r = w
            .bundlegen(&["--rootfs-mode", mode, &line, b.to_str().unwrap()])
            .expect_code(1);
        assert!(
            r.stderr
                .contains("entry \"../../../escaped\": escapes the rootfs"),
            "{}",
            r.describe()
        );
        assert!(r.stderr.contains("layer sha256:"), "{}", r.describe());
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.describe());
        assert!(!b.exists());
        let leftovers: Vec<_> = std::fs::read_dir(w.tmp.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temp dirs left: {leftovers:?}");
    }
    assert!(!Path::new("/escaped").exists() && !w.tmp.path().join("escaped").exists());
}

#[test]
fn a_layer_changed_in_the_store_is_refused() {
    let w = World::new();
    let extra = Layer::new(
        &[Entry::File("etc/data".into(), vec![b'd'; 4096], 0o644)],
        Compression::None,
    );
    let p = push(
        &w.reg.addr,
        "tamper/img",
        "1",
        &Image::new(vec![Layer::busybox(Compression::Gzip), extra]),
    );
    pull_into(&w.root(), &w.reg.addr, &p.reference);
    // Flip a byte of the plain layer's file content on disk, behind the store's back.
    let blob = w
        .root()
        .join("images/blobs/sha256")
        .join(p.layers[1].trim_start_matches("sha256:"));
    let mut data = std::fs::read(&blob).unwrap();
    data[512 + 100] ^= 1;
    std::fs::write(&blob, data).unwrap();
    for mode in ["overlay", "copy"] {
        let b = w.bundle(&format!("t-{mode}"));
        let r = w
            .bundlegen(&["--rootfs-mode", mode, &p.reference, b.to_str().unwrap()])
            .expect_code(1);
        assert!(
            r.stderr
                .contains(&format!("layer {}: diff_id is", p.layers[1])),
            "{}",
            r.describe()
        );
        assert!(!b.exists());
    }
}

#[test]
fn copy_mode_unprivileged_maps_the_user_namespace() {
    let w = World::new();
    let line = w.image("rootless/bb", &Image::busybox());
    // The store is root's; an unprivileged CI job gets a copy it can read.
    let user_root = w.tmp.path().join("user");
    std::fs::create_dir(&user_root).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(w.root())
        .arg(user_root.join("state"))
        .status()
        .unwrap();
    assert!(cp.success());
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&user_root)
        .status()
        .unwrap();
    assert!(chown.success());
    let chmod = Command::new("chmod")
        .arg("755")
        .arg(w.tmp.path())
        .status()
        .unwrap();
    assert!(chmod.success());
    let exe = w.tmp.path().join("bundlegen");
    std::fs::copy(bin("bundlegen"), &exe).unwrap();
    let b = user_root.join("bundle");
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .arg("--root")
        .arg(user_root.join("state"))
        .args(["--json", &line])
        .arg(&b)
        .env("HOME", &user_root);
    let r = run(c, T).ok();
    let info: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(info["data"]["mode"], "copy");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["linux"]["uidMappings"][0]["hostID"], 65534);
    assert!(config["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!({"type": "user"})));
    assert!(b.join("rootfs/bin/busybox").is_file());
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(b.join("rootfs/bin/busybox")).unwrap(),
    );
    assert_eq!(owner, 65534, "files belong to the user who made the bundle");
    // And the same user runs it with rootless runc, as root of its user namespace.
    let patch = user_root.join("patch.json");
    std::fs::write(
        &patch,
        r#"{"process": {"args": ["/bin/sh", "-c", "id -u; echo rootless"]}}"#,
    )
    .unwrap();
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&exe)
        .arg("--root")
        .arg(user_root.join("state"))
        .arg("--patch")
        .arg(&patch)
        .arg(&line)
        .arg(user_root.join("b2"))
        .env("HOME", &user_root);
    run(c, T).ok();
    let runc = e2e::runc::runtime();
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        &runc,
        "--root",
    ])
    .arg(user_root.join("runc"))
    .args(["run", "--bundle"])
    .arg(user_root.join("b2"))
    .arg(format!("crikit-rootless-{}", std::process::id()))
    .env("HOME", &user_root)
    .env("XDG_RUNTIME_DIR", user_root.join("run"));
    let r = run(c, T).ok();
    assert_eq!(r.stdout, "0\nrootless\n", "{}", r.describe());
}

#[test]
fn env_file_patch_from_stdin_and_host_network() {
    let w = World::new();
    let line = w.image("cfg/box", &Image::busybox());
    let env_file = w.tmp.path().join("env");
    std::fs::write(&env_file, "# a comment\n\nFROM_FILE=1\nSHARED=file\n").unwrap();
    let b = w.bundle("p1");
    let mut c = Command::new(bin("bundlegen"));
    c.arg("--root")
        .arg(w.root())
        .arg("--env-file")
        .arg(&env_file);
    c.args([
        "--env",
        "SHARED=flag",
        "--net",
        "host",
        "--patch",
        "-",
        &line,
    ])
    .arg(&b);
    c.args(sh(
        "echo $FROM_FILE $SHARED $PATCHED; cat /proc/net/dev | grep -c :",
    ));
    let patch =
        br#"{"process": {"env": ["PATH=/bin", "FROM_FILE=1", "SHARED=flag", "PATCHED=yes"]}}"#;
    run_input(c, Some(patch), T).ok();
    let r = w.runc.run(&b).ok();
    let mut lines = r.stdout.lines();
    assert_eq!(lines.next(), Some("1 flag yes"), "{}", r.describe());
    // The host's interfaces, not just a fresh namespace's loopback.
    let host_ifaces = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .filter(|l| l.contains(':'))
        .count();
    assert_eq!(
        lines.next(),
        Some(host_ifaces.to_string().as_str()),
        "{}",
        r.describe()
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert!(!config["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "network"));
    // A patch that breaks the spec is refused, and nothing is left.
    let bad = w.tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"process": {"user": {"uid": -1}}}"#).unwrap();
    let r = w
        .bundlegen(&[
            "--patch",
            bad.to_str().unwrap(),
            &line,
            w.bundle("p2").to_str().unwrap(),
        ])
        .expect_code(2);
    assert!(
        r.stderr.contains("not a valid runtime spec"),
        "{}",
        r.describe()
    );
    assert!(!w.bundle("p2").exists());
}

/// Temp dirs and mounts under `dir`: what a failed bundlegen must not leave.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_str().unwrap();
    left.extend(
        mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(dir))
            .map(|m| format!("mount {m}")),
    );
    left
}

#[test]
fn a_failure_after_the_overlay_is_mounted_undoes_the_mount_the_dir_and_the_record() {
    let w = World::new();
    let line = w.image("undo/box", &Image::busybox());
    // A patch that fails validation, checked after the overlay is mounted.
    let bad = w.tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"process": {"cwd": "relative"}}"#).unwrap();
    let b = w.bundle("u1");
    let args = ["--rootfs-mode", "overlay", "--patch", bad.to_str().unwrap()];
    let r = w
        .bundlegen(&[&args[..], &[&line, b.to_str().unwrap()]].concat())
        .expect_code(2);
    assert!(r.stderr.contains("is not absolute"), "{}", r.describe());
    assert!(!b.exists());
    assert_eq!(leftovers(w.tmp.path()), Vec::<String>::new());
    // The record cannot be written: the overlay is mounted and the config written.
    let records = w.root().join("bundles");
    std::fs::create_dir_all(w.root()).unwrap();
    std::fs::write(&records, "not a directory").unwrap();
    let r = w
        .bundlegen(&["--rootfs-mode", "overlay", &line, b.to_str().unwrap()])
        .expect_code(1);
    assert!(r.stderr.contains("bundles"), "{}", r.describe());
    assert!(!b.exists());
    assert_eq!(leftovers(w.tmp.path()), Vec::<String>::new());
    // With the way clear, the same bundle is made and runs.
    std::fs::remove_file(&records).unwrap();
    w.bundlegen(&["--rootfs-mode", "overlay", &line, b.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read_dir(&records).unwrap().count(), 1);
    let r = w.runc.run(&b);
    assert_eq!(r.code, Some(0), "{}", r.describe());
}

#[test]
fn prune_keeps_layers_in_use_and_drops_the_rest() {
    let w = World::new();
    let a = w.image("prune/a", &Image::busybox());
    let b = w.image(
        "prune/b",
        &Image::new(vec![Layer::new(
            &[Entry::File("bin/x".into(), b"x".to_vec(), 0o755)],
            Compression::Gzip,
        )]),
    );
    let layers = w.root().join("layers");
    let count = || {
        std::fs::read_dir(&layers)
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    };
    w.bundlegen(&[&a, w.bundle("a1").to_str().unwrap()]).ok();
    w.bundlegen(&[&b, w.bundle("b1").to_str().unwrap(), "--", "/bin/x"])
        .ok();
    assert_eq!(count(), 2);
    // Both images still in the store: nothing to prune.
    let r = w.bundlegen(&["--prune"]).ok();
    assert!(r.stdout.starts_with("removed 0 layers"), "{}", r.describe());
    // Image b leaves the store but its bundle still uses the layer.
    let mut c = Command::new(bin("imgpull"));
    let b_name = b.split('@').next().unwrap();
    c.arg("--root").arg(w.root()).args(["--remove", b_name]);
    run(c, T).ok();
    w.bundlegen(&["--prune"]).ok();
    assert_eq!(count(), 2);
    // Without the bundle, it goes.
    w.bundlegen(&["--remove", w.bundle("b1").to_str().unwrap()])
        .ok();
    let r = w.bundlegen(&["--prune", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["layers"], 1);
    assert_eq!(count(), 1);
    // The remaining bundle still runs.
    let r = w.runc.run(&w.bundle("a1"));
    assert_eq!(r.code, Some(0), "{}", r.describe());
}

#[test]
fn a_hardlink_to_an_earlier_layers_file_works_in_both_rootfs_modes() {
    let w = World::new();
    let image = Image::new(vec![
        Layer::busybox(Compression::Gzip),
        Layer::new(
            &[
                Entry::Dir("keep".into(), 0o750),
                Entry::File("keep/hard-src".into(), b"source\n".to_vec(), 0o640),
            ],
            Compression::Gzip,
        ),
        Layer::new(
            &[Entry::Raw {
                name: "keep/hard-link".into(),
                kind: tar::EntryType::Link,
                data: Vec::new(),
                link: Some("keep/hard-src".into()),
                mode: 0o640,
            }],
            Compression::Gzip,
        ),
    ]);
    let line = w.image("layers/hardlink", &image);
    for mode in ["overlay", "copy"] {
        let r = w
            .run(
                &line,
                &format!("hl-{mode}"),
                &[
                    "--rootfs-mode",
                    mode,
                    "--",
                    "/bin/sh",
                    "-c",
                    "cat /keep/hard-link; stat -c '%i %h %a' /keep/hard-src /keep/hard-link; \
                     stat -c %a /keep",
                ],
            )
            .ok();
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines.len(), 4, "{mode}: {}", r.describe());
        assert_eq!(lines[0], "source", "{mode}: {}", r.describe());
        // One file under two names, its mode and its directory's as the image has them.
        assert_eq!(lines[1], lines[2], "{mode}: {}", r.describe());
        assert!(lines[1].ends_with(" 2 640"), "{mode}: {}", r.describe());
        assert_eq!(lines[3], "750", "{mode}: {}", r.describe());
    }
}
