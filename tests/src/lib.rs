//! The shared test harness: a real registry (Debian's `docker-registry`) on loopback,
//! an image builder that makes and pushes test images, a fault-injecting HTTP proxy,
//! and helpers to run the crikit binaries with a timeout.
//!
//! Everything a test starts is stopped by `Drop`, so a failing test still cleans up.

pub mod cluster;
pub mod cmd;
pub mod crid;
pub mod image;
pub mod imgserve;
pub mod kubelet;
pub mod net;
pub mod pods;
pub mod proxy;
pub mod registry;
pub mod runc;
pub mod skip;
pub mod stream;
pub mod tls;
pub mod vm;

pub use cmd::{bin, run, run_input, Run};
pub use image::{Compression, Entry, Image, Layer, ManifestFormat, Pushed};
pub use proxy::{Fault, Proxy};
pub use registry::Registry;
pub use runc::Runc;

/// Pulls `reference` from the loopback registry `registry` into the store under
/// `root` with imgpull; returns the `NAME@DIGEST` line it printed.
pub fn pull_into(root: &std::path::Path, registry: &str, reference: &str) -> String {
    let mut c = std::process::Command::new(bin("imgpull"));
    c.arg("--root")
        .arg(root)
        .args(["--insecure-registry", registry, "-q", reference]);
    c.env("CONTAINERS_REGISTRIES_CONF", "/dev/null");
    run(c, std::time::Duration::from_secs(120))
        .ok()
        .stdout
        .trim()
        .to_string()
}

/// Whether a process of this command line (its NUL-terminated arguments) runs, as
/// the host sees it.
pub fn process_runs(cmdline: &[u8]) -> bool {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == cmdline))
        })
        .unwrap_or(false)
}

/// Waits up to 20 s for `f` to hold, failing the test with `what` otherwise.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Bytes the trees under `paths` take on disk together, as `du` counts them.
pub fn disk_usage(paths: &[&std::path::Path]) -> u64 {
    let out = std::process::Command::new("du")
        .args(["-s", "-B1", "-c"])
        .args(paths)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("du's total")
}

/// The layer cache under the state root `root`: the layers in place (their chain
/// ids), and the debris of unpacks and removals (`.tmp-*`, `.rm-*`), each sorted.
pub fn layer_cache(root: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let mut names: Vec<String> = std::fs::read_dir(root.join("layers"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    names.sort();
    names.into_iter().partition(|n| !n.starts_with('.'))
}

/// sha256 digest string of `data`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(data);
    let mut s = String::from("sha256:");
    for b in h.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Checks an OCI layout the way a crash-safety test needs: every blob hashes to its
/// name, and every index entry's manifest, config and layers are present.
/// Returns the image names.
pub fn check_store(layout: &std::path::Path) -> Vec<String> {
    let blobs = layout.join("blobs/sha256");
    for e in std::fs::read_dir(&blobs).expect("blobs dir") {
        let e = e.expect("dir entry");
        let data = std::fs::read(e.path()).expect("read blob");
        let name = e.file_name().into_string().expect("utf-8 blob name");
        assert_eq!(
            sha256(&data),
            format!("sha256:{name}"),
            "blob {name} is corrupt"
        );
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("index.json parses");
    let mut names = Vec::new();
    for m in index["manifests"].as_array().expect("manifests") {
        let blob = |d: &serde_json::Value| {
            let d = d.as_str().expect("digest");
            let p = blobs.join(d.trim_start_matches("sha256:"));
            assert!(p.is_file(), "index entry references missing blob {d}");
            std::fs::read(p).expect("read")
        };
        let manifest: serde_json::Value =
            serde_json::from_slice(&blob(&m["digest"])).expect("manifest json");
        blob(&manifest["config"]["digest"]);
        for l in manifest["layers"].as_array().expect("layers") {
            blob(&l["digest"]);
        }
        names.push(
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .expect("ref name")
                .to_string(),
        );
    }
    names
}

/// A temp directory for one test, removed (with anything mounted in it unmounted
/// first) when dropped.
pub struct TempRoot {
    dir: tempfile::TempDir,
    mounts: std::sync::Mutex<Vec<std::path::PathBuf>>,
}

impl TempRoot {
    /// A fresh directory under the system temp dir.
    pub fn new() -> Self {
        TempRoot {
            dir: tempfile::Builder::new()
                .prefix("crikit-test-")
                .tempdir()
                .expect("tempdir"),
            mounts: Default::default(),
        }
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Mounts a tmpfs of `size` at `sub` (root only); unmounted on drop.
    pub fn mount_tmpfs(&self, sub: &str, size: &str) -> std::path::PathBuf {
        let p = self.path().join(sub);
        std::fs::create_dir_all(&p).expect("mkdir");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&p)
            .output()
            .expect("running mount (needs root and util-linux)");
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        crikit::sync::lock(&self.mounts).push(p.clone());
        p
    }
}

impl Default for TempRoot {
    fn default() -> Self {
        Self::new()
    }
}

/// The mount points of this process's mount namespace at or below `dir`.
pub fn mounts_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|mp| std::path::PathBuf::from(mp.replace("\\040", " ")))
        .filter(|mp| mp.starts_with(dir))
        .collect()
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        // Everything mounted below the root, ours or a bundle's, deepest first.
        let mut mounts: Vec<std::path::PathBuf> = crikit::sync::lock(&self.mounts).clone();
        for mp in mounts_under(self.path()) {
            if !mounts.contains(&mp) {
                mounts.push(mp);
            }
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&m)
                .status();
        }
    }
}

/// Removes a test's cgroup tree (an absolute cgroup path) in every hierarchy on drop,
/// moving out whatever is left in it.
pub struct CgroupGuard(pub String);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for h in crikit::runtime::monitor::cgroup::hierarchies(&info) {
            let top = h.mount.join(self.0.trim_start_matches('/'));
            let mut dirs: Vec<std::path::PathBuf> = walk(&top);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines() {
                    let _ = std::fs::write(h.mount.join("cgroup.procs"), pid);
                }
                let _ = std::fs::remove_dir(&d);
            }
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&e.path()));
            }
        }
        out.push(dir.to_path_buf());
    }
    out
}
