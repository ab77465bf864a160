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
use crate::record::ContainerRecord;
use crate::Crid;
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

/// What CRIU's `Error (file.c:N): what` lines say, as `what`, in order.
fn criu_errors(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter_map(|l| Some(l[l.find("Error (")?..].split_once("): ")?.1.trim()))
}

/// The first of CRIU's errors in `text`; the whole text when it has none.
fn first_error(text: &str) -> String {
    criu_errors(text).next().unwrap_or(text.trim()).to_string()
}

/// CRIU's errors in its log in `work`, to add to the runtime's "criu failed"
/// (which only names the log).
fn dump_log_errors(work: &Path) -> Option<String> {
    let text = std::fs::read_to_string(work.join("dump.log")).ok()?;
    let errors: Vec<&str> = criu_errors(&text).collect();
    (!errors.is_empty()).then(|| errors.join("; "))
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
            criu_ready().map_err(|why| {
                CridError::NotReady(format!(
                    "checkpointing container {}: CRIU cannot run here: {why}",
                    c.id
                ))
            })?;
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
                    let source = match (source, dump_log_errors(work.path())) {
                        (
                            crikit::runc::RuntimeError::Failed {
                                runtime,
                                verb,
                                message,
                            },
                            Some(e),
                        ) => crikit::runc::RuntimeError::Failed {
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

/// The answer to a CreateContainer whose image is a file at an absolute path, which
/// asks for a restore from that checkpoint archive: why not. Any other image is
/// `Ok`.
pub fn refuse_restore(image: &str) -> Result<()> {
    let path = Path::new(image);
    if !path.is_absolute() || !path.is_file() {
        return Ok(());
    }
    let found = archive_members(path).map_err(|e| {
        CridError::Invalid(format!("image {image}: a file, but not a tar archive: {e}"))
    })?;
    if let Some(missing) = REQUIRED.iter().find(|m| !found.iter().any(|f| f == *m)) {
        return Err(CridError::Invalid(format!(
            "image {image}: a file, but not a checkpoint archive (no {missing})"
        )));
    }
    criu_ready().map_err(|why| {
        CridError::NotReady(format!(
            "restoring a container from {image}: CRIU cannot run here: {why}"
        ))
    })?;
    Err(CridError::Unsupported(
        "restores of containers from checkpoint archives".into(),
    ))
}

/// The names of the top-level members of the tar archive at `path`.
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
        crikit::monitor::rfc3339_nanos(
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
        "checkpointedTime": rfc3339(crate::now_ns()),
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
        assert_eq!(dump_log_errors(d.path()).as_deref(), Some("vdso: Failed"));
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
