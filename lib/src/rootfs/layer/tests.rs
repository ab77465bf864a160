//! Layer application on in-memory tars, hostile ones included. Run as root (as
//! `make test` does): ownership, device nodes and trusted xattrs need it.

use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A tar built entry by entry with raw names, so hostile names survive.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn raw(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: Option<&str>,
        mode: u32,
    ) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        {
            let n = &mut h.as_old_mut().name;
            n.fill(0);
            n[..name.len()].copy_from_slice(name.as_bytes());
        }
        if let Some(l) = link {
            let ln = &mut h.as_old_mut().linkname;
            ln.fill(0);
            ln[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).expect("append");
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(name, tar::EntryType::Regular, data, None, 0o644)
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Directory, b"", None, 0o755)
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Symlink, b"", Some(target), 0o777)
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Link, b"", Some(target), 0o644)
    }

    fn bytes(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        b.into_inner().expect("finish tar")
    }
}

fn opts(form: Form) -> ApplyOptions {
    ApplyOptions {
        form,
        privileged: is_root(),
        digest: None,
        diff_id: None,
        compression: None,
        lower: Vec::new(),
    }
}

/// A sandbox: `root` is the rootfs; `outside` is a sibling that must stay empty.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::create_dir(&outside).expect("mkdir");
        Sandbox {
            _dir: dir,
            root,
            outside,
        }
    }

    fn apply(&self, tar: &[u8], form: Form) -> Result<Report> {
        apply(&self.root, tar, "test-layer", &opts(form))
    }

    fn outside_untouched(&self) {
        let n = std::fs::read_dir(&self.outside)
            .expect("read outside")
            .count();
        assert_eq!(n, 0, "something was written outside the rootfs");
    }
}

#[test]
fn every_entry_type_with_metadata() {
    assert!(is_root(), "this test needs root");
    let sb = Sandbox::new();
    let long = format!("deep/{}/file", "d".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o4755);
    h.set_uid(1000);
    h.set_gid(1001);
    h.set_mtime(1_234_567_890);
    h.set_size(5);
    b.append_data(&mut h, "bin/suid", &b"hello"[..]).unwrap();
    // GNU long name.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(4);
    b.append_data(&mut h, &long, &b"long"[..]).unwrap();
    // PAX xattrs: a user xattr and a file capability (cap_net_bind_service+ep).
    let cap: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut pax = Vec::new();
    for (k, v) in [
        ("SCHILY.xattr.user.note", &b"hi"[..]),
        ("SCHILY.xattr.security.capability", &cap[..]),
    ] {
        let rec_len = |n: usize| {
            let body = format!(" {k}=").len() + v.len() + 1;
            let mut len = body + n.to_string().len();
            if len.to_string().len() != n.to_string().len() {
                len = body + len.to_string().len();
            }
            len
        };
        let len = rec_len(2);
        pax.extend_from_slice(format!("{len} {k}=").as_bytes());
        pax.extend_from_slice(v);
        pax.push(b'\n');
    }
    let mut ph = tar::Header::new_ustar();
    ph.set_entry_type(tar::EntryType::XHeader);
    ph.set_size(pax.len() as u64);
    ph.set_path("PaxHeaders/cap").unwrap();
    ph.set_cksum();
    b.append(&ph, pax.as_slice()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(3);
    b.append_data(&mut h, "bin/ping", &b"cap"[..]).unwrap();
    let mut tar = Tar(b);
    tar.dir("sticky/")
        .raw("sticky/", tar::EntryType::Directory, b"", None, 0o1777)
        .symlink("bin/sh", "busybox")
        .hardlink("bin/suid-link", "bin/suid")
        .raw("dev/null", tar::EntryType::Char, b"", None, 0o666)
        .raw("run/fifo", tar::EntryType::Fifo, b"", None, 0o600);
    let data = tar.bytes();
    let r = sb.apply(&data, Form::Copy).unwrap();
    assert_eq!(r.skipped_devices, 0);
    let root = &sb.root;
    let m = std::fs::metadata(root.join("bin/suid")).unwrap();
    assert_eq!(
        m.permissions().mode() & 0o7777,
        0o4755,
        "setuid kept after chown"
    );
    assert_eq!((m.uid(), m.gid()), (1000, 1001));
    assert_eq!(m.mtime(), 1_234_567_890);
    assert_eq!(m.nlink(), 2, "hardlink shares the inode");
    assert_eq!(std::fs::read(root.join(&long)).unwrap(), b"long");
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::metadata(root.join("sticky"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    let ft = std::fs::symlink_metadata(root.join("run/fifo"))
        .unwrap()
        .file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&ft));
    let ft = std::fs::symlink_metadata(root.join("dev/null"))
        .unwrap()
        .file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&ft));
    let fd = rustix::fs::open(root.join("bin/ping"), OFlags::RDONLY, Mode::empty()).unwrap();
    let mut buf = [0u8; 64];
    let n =
        rustix::fs::fgetxattr(&fd, "security.capability", &mut buf).expect("file capability kept");
    assert_eq!(&buf[..n], &cap);
    let n = rustix::fs::fgetxattr(&fd, "user.note", &mut buf).expect("user xattr");
    assert_eq!(&buf[..n], b"hi");
}

#[test]
fn whiteouts_in_copy_form_delete_and_hide() {
    let sb = Sandbox::new();
    let lower = Tar::new()
        .file("etc/motd", b"m")
        .file("etc/keep", b"k")
        .file("etc/apt/a", b"a")
        .file("etc/apt/b", b"b")
        .dir("gone/")
        .file("gone/x", b"x")
        .bytes();
    sb.apply(&lower, Form::Copy).unwrap();
    let upper = Tar::new()
        .file("etc/apt/c", b"c") // same layer, before the opaque marker
        .file("etc/apt/sub/d", b"d") // in a directory the layer made without an entry
        .file("etc/apt/.wh..wh..opq", b"")
        .file("etc/.wh.motd", b"")
        .file(".wh.gone", b"")
        .file(".wh.never-existed", b"")
        .bytes();
    let r = sb.apply(&upper, Form::Copy).unwrap();
    assert_eq!(r.whiteouts, 4);
    let root = &sb.root;
    assert!(!root.join("etc/motd").exists());
    assert!(root.join("etc/keep").exists());
    assert!(!root.join("gone").exists());
    let mut apt: Vec<_> = std::fs::read_dir(root.join("etc/apt"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    apt.sort();
    assert_eq!(apt, ["c", "sub"]);
    assert_eq!(std::fs::read(root.join("etc/apt/sub/d")).unwrap(), b"d");
    assert!(
        !root.join("etc/.wh.motd").exists(),
        "whiteout files are not laid down"
    );
}

#[test]
fn whiteouts_in_overlay_form_become_overlay_whiteouts() {
    assert!(is_root(), "this test needs root");
    let sb = Sandbox::new();
    let layer = Tar::new()
        .file("etc/.wh.motd", b"")
        .file("etc/apt/.wh..wh..opq", b"")
        .bytes();
    sb.apply(&layer, Form::Overlay).unwrap();
    let m = std::fs::symlink_metadata(sb.root.join("etc/motd")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &m.file_type()
    ));
    assert_eq!(m.rdev(), 0);
    let fd = rustix::fs::open(
        sb.root.join("etc/apt"),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    let mut buf = [0u8; 8];
    let n = rustix::fs::fgetxattr(&fd, "trusted.overlay.opaque", &mut buf).expect("opaque xattr");
    assert_eq!(&buf[..n], b"y");
}

#[test]
fn dotdot_entries_are_refused_with_layer_and_entry_named() {
    let sb = Sandbox::new();
    for name in [
        "../outside/evil",
        "a/../../outside/evil",
        "./../outside/evil",
    ] {
        let t = Tar::new().file(name, b"x").bytes();
        let e = sb.apply(&t, Form::Copy).unwrap_err().to_string();
        assert!(
            e.contains("layer test-layer") && e.contains(name) && e.contains("escapes the rootfs"),
            "{e}"
        );
    }
    sb.outside_untouched();
}

#[test]
fn absolute_paths_stay_inside() {
    let sb = Sandbox::new();
    let outside = sb.outside.join("abs");
    let t = Tar::new()
        .file(outside.to_str().unwrap(), b"x")
        .file("/etc/hostname", b"h")
        .bytes();
    sb.apply(&t, Form::Copy).unwrap();
    assert_eq!(std::fs::read(sb.root.join("etc/hostname")).unwrap(), b"h");
    assert!(sb.root.join(outside.strip_prefix("/").unwrap()).exists());
    sb.outside_untouched();
}

#[test]
fn writes_through_symlinks_stay_inside_in_one_layer_and_across_layers() {
    let sb = Sandbox::new();
    let out = sb.outside.to_str().unwrap().to_string();
    let inside = sb.root.join(out.trim_start_matches('/'));
    // Same layer: the outside path also exists inside the rootfs (as /etc would);
    // an absolute symlink and a relative one climbing out, then writes through them.
    let t = Tar::new()
        .dir(&format!("{}/", out.trim_start_matches('/')))
        .symlink("abs", &out)
        .symlink("rel", "../../../../../../../../..")
        .file("abs/evil1", b"1")
        .file(&format!("rel{out}/evil2"), b"2")
        .bytes();
    sb.apply(&t, Form::Copy).unwrap();
    sb.outside_untouched();
    // The writes landed where the container would see them: inside the rootfs.
    assert!(inside.join("evil1").exists() && inside.join("evil2").exists());
    // A dangling symlink to the outside is not written through at all.
    let t = Tar::new()
        .symlink("dang", &format!("{out}/nowhere"))
        .file("dang/x", b"x")
        .bytes();
    assert!(sb.apply(&t, Form::Copy).is_err());
    sb.outside_untouched();

    // Across layers: a symlinked directory from a lower layer.
    let sb = Sandbox::new();
    let out = sb.outside.to_str().unwrap().to_string();
    let inside = sb.root.join(out.trim_start_matches('/'));
    let lower = Tar::new()
        .dir(&format!("{}/", out.trim_start_matches('/')))
        .symlink("etc", &out)
        .bytes();
    sb.apply(&lower, Form::Copy).unwrap();
    sb.apply(&Tar::new().file("etc/passwd", b"evil").bytes(), Form::Copy)
        .unwrap();
    sb.outside_untouched();
    assert_eq!(std::fs::read(inside.join("passwd")).unwrap(), b"evil");
    // A symlink as the final component is replaced, never written through.
    let sb = Sandbox::new();
    let target = sb.outside.join("target");
    sb.apply(
        &Tar::new().symlink("f", target.to_str().unwrap()).bytes(),
        Form::Copy,
    )
    .unwrap();
    sb.apply(&Tar::new().file("f", b"data").bytes(), Form::Copy)
        .unwrap();
    sb.outside_untouched();
    assert_eq!(std::fs::read(sb.root.join("f")).unwrap(), b"data");
}

#[test]
fn hardlinks_outside_or_to_nothing_are_refused() {
    let sb = Sandbox::new();
    std::fs::write(sb.outside.join("secret"), b"s").unwrap();
    let e = sb
        .apply(
            &Tar::new().hardlink("x", "../outside/secret").bytes(),
            Form::Copy,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("entry \"x\"") && e.contains("escapes the rootfs"),
        "{e}"
    );
    // An absolute target names a path inside the rootfs, which does not exist here.
    let abs = sb.outside.join("secret");
    let e = sb
        .apply(
            &Tar::new().hardlink("y", abs.to_str().unwrap()).bytes(),
            Form::Copy,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    let e = sb
        .apply(&Tar::new().hardlink("z", "missing").bytes(), Form::Copy)
        .unwrap_err()
        .to_string();
    assert!(e.contains("hardlink target missing does not exist"), "{e}");
    // Through a symlink to the outside: resolved inside, so again missing.
    let t = Tar::new()
        .symlink("out", sb.outside.to_str().unwrap())
        .hardlink("w", "out/secret")
        .bytes();
    assert!(sb.apply(&t, Form::Copy).is_err());
    assert_eq!(
        std::fs::metadata(sb.outside.join("secret"))
            .unwrap()
            .nlink(),
        1
    );
}

#[test]
fn device_nodes_are_skipped_without_privilege() {
    let sb = Sandbox::new();
    let t = Tar::new()
        .raw("dev/sda", tar::EntryType::Block, b"", None, 0o660)
        .raw("dev/null", tar::EntryType::Char, b"", None, 0o666)
        .bytes();
    let mut o = opts(Form::Copy);
    o.privileged = false;
    let r = apply(&sb.root, t.as_slice(), "test-layer", &o).unwrap();
    assert_eq!(r.skipped_devices, 2);
    assert!(!sb.root.join("dev/sda").exists());
}

#[test]
fn duplicate_entries_the_last_one_wins() {
    let sb = Sandbox::new();
    let t = Tar::new()
        .file("a", b"first")
        .file("a", b"second")
        .dir("b/")
        .file("b/inner", b"i")
        .file("b", b"now a file")
        .file("c", b"file")
        .dir("c/")
        .symlink("d", "a")
        .file("d", b"not through the link")
        .bytes();
    sb.apply(&t, Form::Copy).unwrap();
    assert_eq!(std::fs::read(sb.root.join("a")).unwrap(), b"second");
    assert_eq!(std::fs::read(sb.root.join("b")).unwrap(), b"now a file");
    assert!(sb.root.join("c").is_dir());
    assert_eq!(
        std::fs::read(sb.root.join("d")).unwrap(),
        b"not through the link"
    );
    assert_eq!(std::fs::read(sb.root.join("a")).unwrap(), b"second");
}

#[test]
fn digest_and_diff_id_are_checked() {
    let sb = Sandbox::new();
    let t = Tar::new().file("a", b"x").bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&t).unwrap();
    let blob = gz.finish().unwrap();
    let mut o = opts(Form::Copy);
    o.digest = Some(Digest::of(&blob));
    o.diff_id = Some(Digest::of(&t));
    apply(&sb.root, blob.as_slice(), "good", &o).unwrap();
    o.diff_id = Some(Digest::of(b"other"));
    let e = apply(&sb.root, blob.as_slice(), "sha256:bad", &o).unwrap_err();
    assert!(
        matches!(
            e,
            LayerError::DigestMismatch {
                what: "diff_id",
                ..
            }
        ),
        "{e}"
    );
    o.diff_id = None;
    o.digest = Some(Digest::of(b"other"));
    let e = apply(&sb.root, blob.as_slice(), "sha256:bad", &o)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("layer sha256:bad: digest is"), "{e}");
}

#[test]
fn zstd_and_plain_layers() {
    let sb = Sandbox::new();
    let t = Tar::new().file("z", b"zstd").bytes();
    let z = zstd::encode_all(t.as_slice(), 3).unwrap();
    sb.apply(&z, Form::Copy).unwrap();
    sb.apply(&Tar::new().file("p", b"plain").bytes(), Form::Copy)
        .unwrap();
    assert_eq!(std::fs::read(sb.root.join("z")).unwrap(), b"zstd");
    assert_eq!(std::fs::read(sb.root.join("p")).unwrap(), b"plain");
}

#[test]
fn truncated_archives_are_errors() {
    let sb = Sandbox::new();
    let t = Tar::new().file("a", &[7u8; 5000]).bytes();
    let e = sb.apply(&t[..2000], Form::Copy).unwrap_err().to_string();
    assert!(e.starts_with("layer test-layer"), "{e}");
}

/// Layers stacked in overlay form in a temp dir, each in a directory of its own.
struct Stack {
    dir: tempfile::TempDir,
    layers: Vec<PathBuf>,
}

impl Stack {
    fn new() -> Self {
        Stack {
            dir: tempfile::tempdir().expect("tempdir"),
            layers: Vec::new(),
        }
    }

    /// Applies `tar` as the next layer, over the ones before it.
    fn push(&mut self, tar: &[u8]) -> Result<PathBuf> {
        let root = self.dir.path().join(self.layers.len().to_string());
        std::fs::create_dir(&root).unwrap();
        let mut o = opts(Form::Overlay);
        o.lower = self.layers.iter().rev().cloned().collect();
        let r = apply(&root, tar, "test-layer", &o);
        self.layers.push(root.clone());
        r.map(|_| root)
    }
}

#[test]
fn a_hardlink_to_a_lower_layers_file_copies_it_up_first() {
    let mut s = Stack::new();
    s.push(
        &Tar::new()
            .raw("keep", tar::EntryType::Directory, b"", None, 0o750)
            .raw(
                "keep/hard-src",
                tar::EntryType::Regular,
                b"source",
                None,
                0o640,
            )
            .symlink("keep/sym", "hard-src")
            .bytes(),
    )
    .unwrap();
    let top = s
        .push(
            &Tar::new()
                .hardlink("keep/hard-link", "keep/hard-src")
                .hardlink("sym-link", "keep/sym")
                .bytes(),
        )
        .unwrap();
    // The target and its directory are in the new layer, as the lower ones were.
    let dir = std::fs::metadata(top.join("keep")).unwrap();
    assert!(dir.is_dir());
    assert_eq!(dir.permissions().mode() & 0o7777, 0o750);
    let src = std::fs::metadata(top.join("keep/hard-src")).unwrap();
    let link = std::fs::metadata(top.join("keep/hard-link")).unwrap();
    assert_eq!(
        std::fs::read(top.join("keep/hard-link")).unwrap(),
        b"source"
    );
    assert_eq!(src.permissions().mode() & 0o7777, 0o640);
    assert_eq!((src.ino(), src.nlink()), (link.ino(), 2));
    assert_eq!(src.mtime(), 1_600_000_000);
    // A symlink is copied up as a symlink, and the link is to it.
    assert_eq!(
        std::fs::read_link(top.join("sym-link")).unwrap(),
        Path::new("hard-src")
    );
    // The lower layer is as it was.
    let below = std::fs::metadata(s.layers[0].join("keep/hard-src")).unwrap();
    assert_eq!(below.nlink(), 1);
}

#[test]
fn a_lower_file_a_whiteout_or_an_opaque_directory_hides_is_not_linked() {
    assert!(
        is_root(),
        "this test needs root (overlay whiteouts are device nodes)"
    );
    let mut s = Stack::new();
    s.push(
        &Tar::new()
            .dir("a")
            .file("a/gone", b"x")
            .dir("b")
            .file("b/hidden", b"y")
            .file("c", b"z")
            .bytes(),
    )
    .unwrap();
    s.push(
        &Tar::new()
            .file("a/.wh.gone", b"")
            .dir("b")
            .file("b/.wh..wh..opq", b"")
            .bytes(),
    )
    .unwrap();
    for (link, target) in [("l1", "a/gone"), ("l2", "b/hidden"), ("l3", "nowhere")] {
        let e = s
            .push(&Tar::new().hardlink(link, target).bytes())
            .unwrap_err();
        assert!(
            matches!(&e, LayerError::LinkTargetMissing { target: t, .. } if t == target),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!("layer test-layer: entry {link:?}: hardlink target {target} does not exist")
        );
    }
    // What nothing hides still links.
    let top = s.push(&Tar::new().hardlink("l4", "c").bytes()).unwrap();
    assert_eq!(std::fs::read(top.join("l4")).unwrap(), b"z");
}

#[test]
fn files_get_the_entrys_owner_and_mode_whether_or_not_creation_gave_them() {
    assert!(is_root(), "this test needs root");
    let sb = Sandbox::new();
    let mut b = tar::Builder::new(Vec::new());
    let mut entry = |path: &str, kind: tar::EntryType, mode: u32, uid: u64, gid: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_600_000_000);
        h.set_size(if kind == tar::EntryType::Regular {
            2
        } else {
            0
        });
        let data: &[u8] = if kind == tar::EntryType::Regular {
            b"hi"
        } else {
            b""
        };
        b.append_data(&mut h, path, data).unwrap();
    };
    use tar::EntryType::{Directory, Regular};
    // (path, mode, uid, gid): modes the umask takes bits from or not, special
    // bits, owners that are and are not the creator, in a plain directory, in a
    // setgid directory of another group, and at the root.
    let files = [
        ("plain/a", 0o644, 0, 0),
        ("plain/b", 0o600, 0, 0),
        ("plain/c", 0o777, 0, 0),
        ("plain/d", 0o4755, 0, 0),
        ("plain/e", 0o2755, 0, 50),
        ("plain/f", 0o640, 0, 50),
        ("plain/g", 0o755, 1000, 0),
        ("sgid/a", 0o644, 0, 0),
        ("sgid/b", 0o644, 0, 50),
        ("sgid/c", 0o666, 0, 50),
        ("top", 0o644, 0, 0),
        ("top2", 0o444, 7, 8),
    ];
    entry("plain/", Directory, 0o755, 0, 0);
    entry("sgid/", Directory, 0o2775, 0, 50);
    for (p, mode, uid, gid) in files {
        entry(p, Regular, mode, uid, gid);
    }
    // The same directory again, no longer setgid: its later files take the creator's group.
    entry("sgid/", Directory, 0o755, 0, 50);
    entry("sgid/z", Regular, 0o644, 0, 50);
    let data = b.into_inner().unwrap();
    sb.apply(&data, Form::Overlay).unwrap();
    for (p, mode, uid, gid) in files.into_iter().chain([("sgid/z", 0o644, 0, 50)]) {
        let m = std::fs::metadata(sb.root.join(p)).unwrap();
        assert_eq!(
            (
                m.permissions().mode() & 0o7777,
                u64::from(m.uid()),
                u64::from(m.gid())
            ),
            (mode, uid, gid),
            "{p}: mode, uid, gid"
        );
        assert_eq!(std::fs::read(sb.root.join(p)).unwrap(), b"hi", "{p}");
    }
}
