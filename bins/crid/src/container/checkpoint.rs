//! CheckpointContainer as kubelet's checkpoint API (forensic container
//! checkpointing) uses it: CRIU dumps a running container through the runtime's
//! `checkpoint --leave-running`, and crid writes one tar archive at the path asked,
//! laid out as CRI-O lays it out (so checkpointctl reads it):
//!
//! - `checkpoint/`: CRIU's images;
//! - `rootfs-diff.tar`: what the container changed in its root file system (the
//!   overlay's upper directory, whiteouts left out);
//! - `deleted.files`: a JSON list of the image's paths the container removed;
//! - `config.dump`: the container's id, name, image and times, as JSON;
//! - `spec.dump`: its OCI config.json;
//! - `dump.log`: CRIU's log.
//!
//! A CreateContainer whose image is such an archive asks for a restore.

use crate::error::{CridError, Result};
use crate::state::record::ContainerRecord;
use crate::Crid;
use crikit::rootfs::layer::Compression;
use k8s_cri::v1 as cri;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long a checkpoint may take when the request names no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The archive's members that make it a checkpoint.
const REQUIRED: [&str; 2] = ["config.dump", "spec.dump"];

/// Set once `criu check` has passed.
static CRIU_READY: OnceLock<()> = OnceLock::new();

/// Whether CRIU can run here: Ok once `criu check` has passed, else why not (its
/// first error). A failure is asked again next time: criu may be installed or
/// fixed meanwhile.
pub fn criu_ready() -> std::result::Result<(), String> {
    if CRIU_READY.get().is_some() {
        return Ok(());
    }
    let out = match std::process::Command::new("criu")
        .arg("check")
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err("criu is not installed (not found on PATH)".into())
        }
        Err(e) => return Err(format!("running criu check: {e}")),
    };
    if out.status.success() {
        let _ = CRIU_READY.set(());
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    Err(format!("criu check: {}", first_error(&text)))
}

/// The first of CRIU's errors in `text`; the whole text when it has none.
fn first_error(text: &str) -> String {
    crikit::runtime::runc::criu_errors(text)
        .next()
        .unwrap_or(text.trim())
        .to_string()
}

/// Whether checkpoints and restores can be made here with `runtime`: CRIU runs,
/// and the runtime has `verb` (`checkpoint` or `restore`). `what` begins the error.
pub fn ready_for(
    runtime: &crikit::runtime::runc::Runtime,
    verb: &str,
    what: &str,
) -> std::result::Result<(), CridError> {
    criu_ready()
        .map_err(|why| CridError::NotReady(format!("{what}: CRIU cannot run here: {why}")))?;
    if !runtime.has_command(verb) {
        return Err(CridError::NotReady(format!(
            "{what}: the runtime {} has no {verb} command (built without CRIU)",
            runtime.path.display()
        )));
    }
    Ok(())
}

/// The checkpoint's destination: an absolute file path in an existing directory.
fn destination(location: &str) -> Result<PathBuf> {
    let dest = PathBuf::from(location);
    let bad = |why: &str| CridError::Invalid(format!("checkpoint location {location:?}: {why}"));
    if !dest.is_absolute() {
        return Err(bad("not an absolute path"));
    }
    if dest.is_dir() {
        return Err(bad("a directory; name the archive's file"));
    }
    match dest.parent() {
        Some(dir) if dir.is_dir() => Ok(dest),
        _ => Err(bad("its directory does not exist")),
    }
}

impl Crid {
    /// CheckpointContainer: the running container `id` dumped by CRIU, left
    /// running, and its archive written at `location` (replaced whole or not at
    /// all).
    pub async fn checkpoint_container(
        self: &Arc<Self>,
        req: cri::CheckpointContainerRequest,
    ) -> Result<()> {
        let dest = destination(&req.location)?;
        let c = self.running(&req.container_id).await?;
        let upper = c.bundle.join("upper");
        if !upper.is_dir() {
            return Err(CridError::NotReady(format!(
                "container {} has no overlay upper directory (a copied rootfs): its changes \
                 cannot be told from the image's",
                c.id
            )));
        }
        let runtime = self.runtime(&c.runtime_handler)?;
        let timeout = u64::try_from(req.timeout)
            .ok()
            .filter(|t| *t > 0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let dir = self.store.container_dir(&c.id);
        tokio::task::spawn_blocking(move || {
            ready_for(
                &runtime,
                "checkpoint",
                &format!("checkpointing container {}", c.id),
            )?;
            let work = tempfile::Builder::new()
                .prefix(".checkpoint.tmp-")
                .tempdir_in(&dir)
                .map_err(CridError::io(format!(
                    "a work directory in {}",
                    dir.display()
                )))?;
            let images = work.path().join("checkpoint");
            runtime
                .checkpoint(&c.id, &images, work.path(), timeout)
                .map_err(|source| {
                    let source = match (
                        source,
                        crikit::runtime::runc::criu_log_errors(&work.path().join("dump.log")),
                    ) {
                        (
                            crikit::runtime::runc::RuntimeError::Failed {
                                runtime,
                                verb,
                                message,
                            },
                            Some(e),
                        ) => crikit::runtime::runc::RuntimeError::Failed {
                            runtime,
                            verb,
                            message: format!("{message}: {e}"),
                        },
                        (s, _) => s,
                    };
                    CridError::Runtime {
                        action: "checkpointing",
                        id: c.id.clone(),
                        source,
                    }
                })?;
            write_archive(work.path(), &c, &upper, &dest).map_err(CridError::io(format!(
                "writing the checkpoint {}",
                dest.display()
            )))
        })
        .await?
    }
}

/// Most a checkpoint's `config.dump` or `spec.dump` may hold.
const DUMP_MAX: u64 = 16 << 20;

/// A checkpoint archive a CreateContainer restores a container from, as read.
#[derive(Debug, Clone)]
pub struct Dump {
    /// The archive: a file given as the image, or a checkpoint image's layer.
    pub archive: PathBuf,
    /// How the archive is compressed (a layer may be).
    pub compression: Compression,
    /// The image the checkpointed container ran (its id, else its name).
    pub image: String,
    /// The checkpointed container's process (args, env, cwd).
    pub process: Option<crikit::oci_spec::runtime::Process>,
}

/// The manifest annotations that make an image a checkpoint image (checkpointctl's,
/// and CRI-O's older one), each naming the checkpointed container.
const IMAGE_ANNOTATIONS: [&str; 2] = [
    "org.criu.checkpoint.container.name",
    "io.kubernetes.cri-o.annotations.checkpoint.name",
];

/// For a CreateContainer whose image is `image`: when that is a file at an absolute
/// path, which asks for a restore from that checkpoint archive, the archive read and
/// checked (CRIU must be able to run, and `runtime` to restore); any other image
/// is `None`.
pub fn open_restore(image: &str, runtime: &crikit::runtime::runc::Runtime) -> Result<Option<Dump>> {
    let path = Path::new(image);
    if !path.is_absolute() || !path.is_file() {
        return Ok(None);
    }
    read_dump(path, &format!("image {image}"), runtime).map(Some)
}

/// For the stored image `name`: when its manifest has a checkpoint annotation (an
/// image made from a checkpoint archive, as `checkpointctl build` and buildah make
/// them for kubelet's restores), the archive that is its one layer, read and checked
/// as [`open_restore`] does; any other image is `None`.
pub fn open_image_restore(
    store: &crikit::distribution::layout::Store,
    name: &str,
    runtime: &crikit::runtime::runc::Runtime,
) -> Result<Option<Dump>> {
    let bad = |why: String| CridError::Invalid(format!("checkpoint image {name}: {why}"));
    let desc = store.resolve(name)?;
    let manifest = store.manifest(&parse_digest(desc.digest().as_ref()).map_err(bad)?)?;
    let marked = manifest
        .annotations()
        .as_ref()
        .is_some_and(|a| IMAGE_ANNOTATIONS.iter().any(|k| a.contains_key(*k)));
    if !marked {
        return Ok(None);
    }
    let layer = match manifest.layers().as_slice() {
        [layer] => layer,
        more => return Err(bad(format!("{} layers; the archive is one", more.len()))),
    };
    let path = store.blob_path(&parse_digest(layer.digest().as_ref()).map_err(bad)?);
    read_dump(&path, &format!("checkpoint image {name}"), runtime).map(Some)
}

fn parse_digest(d: &str) -> std::result::Result<crikit::distribution::digest::Digest, String> {
    crikit::distribution::digest::Digest::parse(d).map_err(|e| e.to_string())
}

/// Reads the checkpoint archive at `path` (`what` in errors): its config and spec
/// dumps, and that it holds CRIU's images; checks that `runtime` can restore.
fn read_dump(path: &Path, what: &str, runtime: &crikit::runtime::runc::Runtime) -> Result<Dump> {
    let bad = |why: String| CridError::Invalid(format!("{what}: {why}"));
    let not_tar = |e: io::Error| bad(format!("a file, but not a tar archive: {e}"));
    let mut file = std::fs::File::open(path).map_err(CridError::io(format!("opening {what}")))?;
    let mut head = [0u8; 4];
    let n = io::Read::read(&mut file, &mut head).map_err(not_tar)?;
    io::Seek::rewind(&mut file).map_err(not_tar)?;
    let compression = Compression::sniff(&head[..n]);
    let (found, names) = if compression == Compression::None {
        // Seeking past CRIU's memory pages rather than reading them.
        let mut a = tar::Archive::new(file);
        scan(a.entries_with_seek().map_err(not_tar)?, &bad)?
    } else {
        let mut a = tar::Archive::new(
            compression
                .decoder(io::BufReader::new(file))
                .map_err(not_tar)?,
        );
        scan(a.entries().map_err(not_tar)?, &bad)?
    };
    if let Some(missing) = REQUIRED.iter().find(|m| !found.contains_key(**m)) {
        return Err(bad(format!(
            "a file, but not a checkpoint archive (no {missing})"
        )));
    }
    if !names.iter().any(|n| n.starts_with("checkpoint/")) {
        return Err(bad(
            "a checkpoint archive without CRIU's images (checkpoint/)".into(),
        ));
    }
    let config: serde_json::Value = serde_json::from_slice(&found["config.dump"])
        .map_err(|e| bad(format!("its config.dump is not JSON: {e}")))?;
    let image_of = |key: &str| config[key].as_str().filter(|s| !s.is_empty());
    let dumped_image = image_of("rootfsImageRef")
        .or_else(|| image_of("rootfsImageName"))
        .ok_or_else(|| bad("its config.dump names no image".into()))?
        .to_string();
    let spec: crikit::oci_spec::runtime::Spec = serde_json::from_slice(&found["spec.dump"])
        .map_err(|e| bad(format!("its spec.dump is not an OCI runtime spec: {e}")))?;
    ready_for(
        runtime,
        "restore",
        &format!("restoring a container from {what}"),
    )?;
    Ok(Dump {
        archive: path.to_path_buf(),
        compression,
        image: dumped_image,
        process: spec.process().clone(),
    })
}

/// The bodies of an archive's [`REQUIRED`] members, by name.
type Members = std::collections::HashMap<String, Vec<u8>>;

/// The archive's member names, and the bodies of the [`REQUIRED`] ones.
fn scan<R: io::Read>(
    entries: tar::Entries<'_, R>,
    bad: &dyn Fn(String) -> CridError,
) -> Result<(Members, Vec<String>)> {
    let not_tar = |e: io::Error| bad(format!("a file, but not a tar archive: {e}"));
    let mut found = Members::new();
    let mut names = vec![];
    for e in entries {
        let mut e = e.map_err(not_tar)?;
        let p = e.path().map_err(not_tar)?.into_owned();
        let p = p.strip_prefix(".").unwrap_or(&p).display().to_string();
        let p = p.trim_end_matches('/').to_string();
        if REQUIRED.contains(&p.as_str()) {
            if e.size() > DUMP_MAX {
                return Err(bad(format!("its {p} is larger than {DUMP_MAX} bytes")));
            }
            let mut body = vec![];
            io::Read::read_to_end(&mut e, &mut body).map_err(not_tar)?;
            found.insert(p.clone(), body);
        }
        names.push(p);
    }
    Ok((found, names))
}

/// Unpacks `dump`'s CRIU images into `dir/checkpoint` and applies its root file
/// system changes to `rootfs` (the new container's): `rootfs-diff.tar` as a layer,
/// `deleted.files` as its whiteouts, so both are held to the rootfs as an image's
/// layers are. Returns the images' directory.
pub fn unpack_restore(dump: &Dump, dir: &Path, rootfs: &Path) -> Result<PathBuf> {
    let what = dump.archive.display().to_string();
    let bad = |why: String| CridError::Invalid(format!("checkpoint {what}: {why}"));
    let io_err = |e: io::Error| bad(format!("unreadable: {e}"));
    let images = dir.join("checkpoint");
    std::fs::create_dir_all(&images)
        .map_err(CridError::io(format!("creating {}", images.display())))?;
    let diff = dir.join("rootfs-diff.tar");
    let mut deleted: Vec<String> = vec![];
    let file = std::fs::File::open(&dump.archive).map_err(io_err)?;
    let mut a = tar::Archive::new(
        dump.compression
            .decoder(io::BufReader::new(file))
            .map_err(io_err)?,
    );
    for e in a.entries().map_err(io_err)? {
        let mut e = e.map_err(io_err)?;
        let p = e.path().map_err(io_err)?.into_owned();
        let p = p.strip_prefix(".").unwrap_or(&p).to_path_buf();
        let normal = p
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        let kind = e.header().entry_type();
        let target = match p.strip_prefix("checkpoint") {
            Ok(rest) if normal => images.join(rest),
            _ if p == Path::new("rootfs-diff.tar") => diff.clone(),
            _ if p == Path::new("deleted.files") => {
                let mut body = vec![];
                io::Read::read_to_end(&mut io::Read::take(&mut e, DUMP_MAX), &mut body)
                    .map_err(io_err)?;
                deleted = serde_json::from_slice(&body)
                    .map_err(|e| bad(format!("deleted.files is not a JSON list of paths: {e}")))?;
                continue;
            }
            _ => continue,
        };
        if kind.is_dir() {
            std::fs::create_dir_all(&target)
        } else if kind.is_file() {
            std::fs::File::create(&target).and_then(|mut f| io::copy(&mut e, &mut f).map(drop))
        } else {
            return Err(bad(format!(
                "{} is neither a file nor a directory",
                p.display()
            )));
        }
        .map_err(CridError::io(format!("unpacking {}", target.display())))?;
    }
    let opts = crikit::rootfs::layer::ApplyOptions {
        form: crikit::rootfs::layer::Form::Copy,
        privileged: true,
        digest: None,
        diff_id: None,
        compression: Some(crikit::rootfs::layer::Compression::None),
        lower: vec![],
    };
    let layer_err = |source| CridError::Bundle {
        name: what.clone(),
        source: crikit::rootfs::bundle::BundleError::Layer(source),
    };
    if diff.exists() {
        let f = std::fs::File::open(&diff).map_err(io_err)?;
        crikit::rootfs::layer::apply(rootfs, f, "rootfs-diff.tar", &opts).map_err(layer_err)?;
        let _ = std::fs::remove_file(&diff);
    }
    if !deleted.is_empty() {
        let whiteouts = whiteouts(&deleted).map_err(|e| bad(format!("deleted.files: {e}")))?;
        crikit::rootfs::layer::apply(rootfs, &whiteouts[..], "deleted.files", &opts)
            .map_err(layer_err)?;
    }
    Ok(images)
}

/// A tar stream of the whiteouts that delete `paths` (absolute, in the rootfs).
fn whiteouts(paths: &[String]) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(vec![]);
    for p in paths {
        let rel = Path::new(p.trim_start_matches('/'));
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(io::Error::other(format!("{p:?} is not a file's path")));
        };
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        let mut wh = std::ffi::OsString::from(".wh.");
        wh.push(name);
        b.append_data(&mut h, parent.join(wh), io::empty())?;
    }
    b.into_inner()
}

/// The names of the top-level members of the tar archive at `path`.
#[cfg(test)]
fn archive_members(path: &Path) -> io::Result<Vec<String>> {
    let mut a = tar::Archive::new(std::fs::File::open(path)?);
    let mut names = vec![];
    for e in a.entries()? {
        let e = e?;
        let p = e.path()?.into_owned();
        let p = p.strip_prefix(".").unwrap_or(&p);
        if p.components().count() == 1 {
            names.push(p.display().to_string().trim_end_matches('/').to_string());
        }
    }
    Ok(names)
}

/// The container's metadata as `config.dump` holds it (checkpointctl's
/// ContainerConfig).
fn config_dump(c: &ContainerRecord) -> serde_json::Value {
    let rfc3339 = |ns: i64| {
        crikit::runtime::monitor::rfc3339_nanos(
            std::time::UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64),
        )
    };
    serde_json::json!({
        "id": c.id,
        "name": c.name,
        "rootfsImage": c.image_name,
        "rootfsImageRef": c.image_id,
        "rootfsImageName": c.image_name,
        "runtime": c.runtime_handler,
        "createdTime": rfc3339(c.created_at),
        "checkpointedTime": rfc3339(crate::state::now_ns()),
    })
}

/// Writes `rootfs-diff.tar` and `deleted.files` from `upper` into `work`: every
/// entry but the overlay's whiteouts (character devices 0:0), which are listed as
/// deleted instead.
fn rootfs_diff(upper: &Path, work: &Path) -> io::Result<()> {
    let mut tar = tar::Builder::new(std::fs::File::create(work.join("rootfs-diff.tar"))?);
    tar.follow_symlinks(false);
    let mut deleted = vec![];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> =
            std::fs::read_dir(upper.join(&rel))?.collect::<io::Result<Vec<_>>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = rel.join(e.file_name());
            let m = e.path().symlink_metadata()?;
            if m.file_type().is_char_device() && m.rdev() == 0 {
                deleted.push(format!("/{}", name.display()));
                continue;
            }
            tar.append_path_with_name(e.path(), &name)?;
            if m.is_dir() {
                stack.push(name);
            }
        }
    }
    tar.into_inner()?.sync_all()?;
    std::fs::write(work.join("deleted.files"), serde_json::to_vec(&deleted)?)?;
    Ok(())
}

/// Assembles the archive from `work` (where CRIU left `checkpoint/` and
/// `dump.log`) at `dest`, through a temporary file renamed over it.
fn write_archive(work: &Path, c: &ContainerRecord, upper: &Path, dest: &Path) -> io::Result<()> {
    rootfs_diff(upper, work)?;
    std::fs::write(
        work.join("config.dump"),
        serde_json::to_vec_pretty(&config_dump(c))?,
    )?;
    std::fs::copy(c.bundle.join("config.json"), work.join("spec.dump"))?;
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let mut tmp = tempfile::Builder::new()
        .prefix(".checkpoint-")
        .tempfile_in(dir)?;
    {
        let mut tar = tar::Builder::new(tmp.as_file_mut());
        tar.follow_symlinks(false);
        let mut top: Vec<_> = std::fs::read_dir(work)?.collect::<io::Result<Vec<_>>>()?;
        top.sort_by_key(|e| e.file_name());
        for e in top {
            if e.file_type()?.is_dir() {
                tar.append_dir_all(e.file_name(), e.path())?;
            } else {
                tar.append_path_with_name(e.path(), e.file_name())?;
            }
        }
        tar.finish()?;
    }
    tmp.as_file_mut().flush()?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_errors_by_their_text() {
        let out = "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n\
                   Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed\n";
        assert_eq!(first_error(out), "vdso: Unexpected rt vDSO area bounds");
        assert_eq!(first_error("  something else\n"), "something else");
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("dump.log"),
            "(00.01) Warn: x\n(00.02) Error (criu/vdso.c:613): vdso: Failed\n",
        )
        .unwrap();
        assert_eq!(
            crikit::runtime::runc::criu_log_errors(&d.path().join("dump.log")).as_deref(),
            Some("vdso: Failed")
        );
    }

    /// A checkpoint archive at `path`: `files` (name, body), and a symlink when
    /// `link` names one (name, target).
    fn archive(path: &Path, files: &[(&str, &[u8])], link: Option<(&str, &str)>) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        for (name, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *body).unwrap();
        }
        if let Some((name, target)) = link {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, name, target).unwrap();
        }
        b.finish().unwrap();
    }

    #[test]
    fn a_restore_unpacks_the_images_and_applies_the_changes_within_the_rootfs() {
        let d = tempfile::tempdir().unwrap();
        let rootfs = d.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(rootfs.join("etc/gone"), "image's").unwrap();
        std::fs::write(d.path().join("outside"), "host's").unwrap();
        let mut diff = tar::Builder::new(vec![]);
        let mut h = tar::Header::new_gnu();
        h.set_size(8);
        h.set_mode(0o644);
        diff.append_data(&mut h, "etc/app/conf", &b"changed\n"[..])
            .unwrap();
        let diff = diff.into_inner().unwrap();
        let dump = |archive: PathBuf| Dump {
            archive,
            compression: Compression::None,
            image: "sha256:1".into(),
            process: None,
        };
        let good = d.path().join("good.tar");
        archive(
            &good,
            &[
                ("checkpoint/pages-1.img", b"pages"),
                ("rootfs-diff.tar", &diff),
                ("deleted.files", br#"["/etc/gone"]"#),
                ("config.dump", b"{}"),
                ("spec.dump", b"{}"),
            ],
            None,
        );
        let images = unpack_restore(&dump(good), &d.path().join("r1"), &rootfs).unwrap();
        assert_eq!(std::fs::read(images.join("pages-1.img")).unwrap(), b"pages");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/app/conf")).unwrap(),
            "changed\n"
        );
        assert!(!rootfs.join("etc/gone").exists());
        assert!(!d.path().join("r1/rootfs-diff.tar").exists());

        // Hostile archives: a symlink among the images, a deletion outside.
        let linked = d.path().join("linked.tar");
        archive(
            &linked,
            &[("checkpoint/a.img", b"a")],
            Some(("checkpoint/b.img", "/etc/shadow")),
        );
        let e = unpack_restore(&dump(linked), &d.path().join("r2"), &rootfs).unwrap_err();
        assert!(
            matches!(&e, CridError::Invalid(m) if m.contains("neither a file nor a directory")),
            "{e:?}"
        );
        for bad in [r#"["/../outside"]"#, r#"["/"]"#, r#"{"x": 1}"#] {
            let a = d.path().join("deleting.tar");
            archive(
                &a,
                &[
                    ("checkpoint/a.img", b"a"),
                    ("deleted.files", bad.as_bytes()),
                ],
                None,
            );
            let e = unpack_restore(&dump(a), &d.path().join("r3"), &rootfs).unwrap_err();
            assert!(matches!(e, CridError::Invalid(_)), "{bad}: {e:?}");
        }
        assert_eq!(
            std::fs::read_to_string(d.path().join("outside")).unwrap(),
            "host's"
        );
    }

    #[test]
    fn locations_must_be_absolute_files_in_existing_directories() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["", "relative.tar", "/no/such/dir/x.tar"] {
            assert!(
                matches!(destination(bad), Err(CridError::Invalid(_))),
                "{bad}"
            );
        }
        let dir = d.path().display().to_string();
        assert!(matches!(destination(&dir), Err(CridError::Invalid(_))));
        let ok = d.path().join("c.tar");
        assert_eq!(destination(&ok.display().to_string()).unwrap(), ok);
    }

    #[test]
    fn the_archive_holds_the_changes_the_deletions_and_the_container() {
        let d = tempfile::tempdir().unwrap();
        let (upper, work, bundle) = (
            d.path().join("upper"),
            d.path().join("work"),
            d.path().join("b"),
        );
        for p in [&upper, &work, &bundle] {
            std::fs::create_dir_all(p).unwrap();
        }
        std::fs::create_dir_all(upper.join("etc/app")).unwrap();
        std::fs::write(upper.join("etc/app/conf"), "changed\n").unwrap();
        std::os::unix::fs::symlink("conf", upper.join("etc/app/link")).unwrap();
        // A whiteout: the container removed /etc/gone (needs root, as crid runs).
        let whiteout = nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .is_ok();
        std::fs::create_dir_all(work.join("checkpoint")).unwrap();
        std::fs::write(work.join("checkpoint/pages-1.img"), "pages").unwrap();
        std::fs::write(work.join("dump.log"), "log").unwrap();
        std::fs::write(bundle.join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
        let c: ContainerRecord = serde_json::from_value(serde_json::json!({
            "version": 1, "id": "abc", "pod_id": "p", "name": "web", "image_id": "sha256:1",
            "image_name": "busybox:1", "image_ref": "", "bundle": bundle, "log_path": "",
            "created_at": 1, "started_at": 2, "pid": 3, "stop_signal": "TERM",
        }))
        .unwrap();
        let dest = d.path().join("out.tar");
        std::fs::write(&dest, "an older archive").unwrap();
        write_archive(&work, &c, &upper, &dest).unwrap();

        let mut names = archive_members(&dest).unwrap();
        names.sort();
        let want = [
            "checkpoint",
            "config.dump",
            "deleted.files",
            "dump.log",
            "rootfs-diff.tar",
            "spec.dump",
        ];
        assert_eq!(names, want);
        let mut a = tar::Archive::new(std::fs::File::open(&dest).unwrap());
        let mut seen = std::collections::HashMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut body = String::new();
            let p = e.path().unwrap().display().to_string();
            let _ = io::Read::read_to_string(&mut e, &mut body);
            seen.insert(p, body);
        }
        assert_eq!(seen["checkpoint/pages-1.img"], "pages");
        assert_eq!(seen["spec.dump"], r#"{"ociVersion":"1.0.2"}"#);
        let config: serde_json::Value = serde_json::from_str(&seen["config.dump"]).unwrap();
        assert_eq!(
            (config["id"].as_str(), config["name"].as_str()),
            (Some("abc"), Some("web"))
        );
        assert_eq!(config["rootfsImageName"], "busybox:1");
        let deleted: Vec<String> = serde_json::from_str(&seen["deleted.files"]).unwrap();
        assert_eq!(
            deleted,
            if whiteout {
                vec!["/etc/gone".to_string()]
            } else {
                vec![]
            }
        );

        let mut diff =
            tar::Archive::new(std::fs::File::open(work.join("rootfs-diff.tar")).unwrap());
        let mut entries = vec![];
        for e in diff.entries().unwrap() {
            let e = e.unwrap();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            entries.push((e.path().unwrap().display().to_string(), link));
        }
        entries.sort();
        assert_eq!(
            entries,
            [
                ("etc".to_string(), None),
                ("etc/app".to_string(), None),
                ("etc/app/conf".to_string(), None),
                ("etc/app/link".to_string(), Some("conf".to_string())),
            ]
        );
        // No temporary file is left beside the archive.
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 4, "{left:?}");
    }
}
