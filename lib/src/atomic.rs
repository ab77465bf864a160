//! Replacing a file whole, so that a crash at any moment leaves either the old
//! content or the new one, never a mix: a temp file in the same directory, fsync,
//! rename over the target, fsync of the directory (without which the rename itself
//! may not survive a power loss).
//!
//! Every state file crikit writes goes through here: crid's pod and container
//! files, ctrmon's exit file, the store's `index.json`, bundle records.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A step of an atomic write failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} {}", path.display())]
pub struct WriteError {
    /// What was being done: `creating a temp file in`, `writing`, `renaming into`,
    /// `syncing`.
    pub step: &'static str,
    /// The file or directory it was done to.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

/// Writes `data` to `path` atomically and durably, with permission bits `mode`.
/// The directory must exist.
pub fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), WriteError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |step: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError { step, path, source }
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(fail("creating a temp file in", dir))?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .and_then(|_| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))
        })
        .map_err(fail("writing", path))?;
    tmp.persist(path)
        .map_err(|e| fail("renaming into", path)(e.error))?;
    sync_dir(dir)
}

/// Writes `value` as one line of JSON to `path` atomically (see [`write`]).
pub fn write_json(path: &Path, value: &impl serde::Serialize, mode: u32) -> Result<(), WriteError> {
    let mut data = serde_json::to_vec(value).map_err(|e| WriteError {
        step: "serialising",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })?;
    data.push(b'\n');
    write(path, &data, mode)
}

/// Flushes a directory's entries (a rename or a new file in it) to disk.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| WriteError {
            step: "syncing",
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_with_its_mode_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        std::fs::write(&p, b"old").unwrap();
        super::write_json(&p, &serde_json::json!({"version": 1}), 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"version\":1}\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_directory_is_named() {
        let d = tempfile::tempdir().unwrap();
        let e = super::write(&d.path().join("no/such/file"), b"x", 0o644).unwrap_err();
        assert_eq!(e.step, "creating a temp file in");
        assert!(e.to_string().ends_with("no/such"), "{e}");
    }
}
