//! Runtimes run from a sealed in-memory copy of their binary.
//!
//! runc and crun guard against a container overwriting their binary through
//! `/proc/self/exe` (CVE-2019-5736): unless they already run from a sealed memfd,
//! every invocation copies itself into one and executes itself again. For crun
//! that is a second exec and dynamic link on every `state`, `exec`, `kill` or
//! `delete`, about a quarter of a probe's cost. A daemon that runs the runtime all
//! day can make the copy once: [`exec_path`] gives the path of a memfd holding the
//! binary, sealed against writes, growth and shrinking, which the runtime
//! recognises and runs from as is (runc's `memfd-bind` makes the same trade).
//!
//! The copy is made again when the file at the path changes (its device, inode,
//! size or mtime), so an upgraded runtime is picked up by the next command. Copies
//! are never closed: a command built from an older one may not have run yet. The
//! descriptor is close-on-exec; a child execs it through `/proc/self/fd/N` before
//! the kernel closes it, and nothing else inherits it.

use rustix::fs::{MemfdFlags, SealFlags};
use std::collections::HashMap;
use std::io::{Read, Seek};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

struct Copy {
    stamp: Stamp,
    fd: OwnedFd,
}

/// The current copy of each binary, and the older ones, kept open for commands
/// that were built from them.
#[derive(Default)]
struct Copies {
    current: HashMap<PathBuf, Copy>,
    retired: Vec<OwnedFd>,
}

static COPIES: Mutex<Option<Copies>> = Mutex::new(None);

/// The path to execute for `binary` (a path, or a name looked up on PATH): its
/// sealed copy, `/proc/self/fd/N`, made at the first call and again whenever the
/// file has changed. `None` when no copy can be made (the binary is missing or
/// not an ELF executable, or memfds are not available): run it from its path.
pub fn exec_path(binary: &Path) -> Option<PathBuf> {
    let path = resolve(binary)?;
    let stamp = Stamp::of(&std::fs::metadata(&path).ok()?);
    let mut copies = crate::sync::lock(&COPIES);
    let copies = copies.get_or_insert_with(Copies::default);
    if let Some(c) = copies.current.get(&path) {
        if c.stamp == stamp {
            return Some(fd_path(&c.fd));
        }
    }
    let copy = match seal(&path) {
        Ok(Some(c)) => c,
        Ok(None) => return None,
        Err(e) => {
            tracing::debug!("no sealed copy of {}: {e}", path.display());
            return None;
        }
    };
    let p = fd_path(&copy.fd);
    if let Some(old) = copies.current.insert(path, copy) {
        copies.retired.push(old.fd);
    }
    Some(p)
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `binary` as an absolute path: itself when it holds a '/', else the first
/// executable of that name on PATH.
fn resolve(binary: &Path) -> Option<PathBuf> {
    if binary.as_os_str().as_encoded_bytes().contains(&b'/') {
        return Some(binary.to_path_buf());
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(binary))
        .find(|p| rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok())
}

/// A sealed memfd with the contents of the ELF file at `path`, stamped with what
/// the file was when it was read; `None` when the file is not ELF (a script would
/// be run by its interpreter through a path the exec has already closed).
fn seal(path: &Path) -> std::io::Result<Option<Copy>> {
    let mut file = std::fs::File::open(path)?;
    let stamp = Stamp::of(&file.metadata()?);
    let mut magic = [0u8; 4];
    if file.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
        return Ok(None);
    }
    let name = path
        .file_name()
        .map(|n| format!("crikit-sealed:{}", n.to_string_lossy()))
        .unwrap_or_else(|| "crikit-sealed".into());
    let fd = rustix::fs::memfd_create(
        name.as_str(),
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut memfd = std::fs::File::from(fd);
    file.seek(std::io::SeekFrom::Start(0))?;
    let copied = std::io::copy(&mut file, &mut memfd)?;
    if copied != stamp.size {
        return Err(std::io::Error::other(format!(
            "{} changed while it was copied",
            path.display()
        )));
    }
    rustix::fs::fcntl_add_seals(
        &memfd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )?;
    Ok(Some(Copy {
        stamp,
        fd: OwnedFd::from(memfd),
    }))
}

#[cfg(test)]
mod tests {
    use super::exec_path;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::Command;

    #[test]
    fn a_binary_runs_from_one_sealed_copy_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("true");
        std::fs::copy("/bin/true", &bin).unwrap();
        let first = exec_path(&bin).expect("a sealed copy");
        assert!(first.starts_with("/proc/self/fd"), "{}", first.display());
        assert_eq!(exec_path(&bin), Some(first.clone()), "made once");
        let status = Command::new(&first).status().unwrap();
        assert!(status.success());

        // The copy refuses writes, whoever holds it.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap();
        assert!(f.write_all(b"x").is_err(), "a sealed copy took a write");

        // A new binary at the path is copied again.
        std::fs::copy("/bin/false", dir.path().join("next")).unwrap();
        std::fs::rename(dir.path().join("next"), &bin).unwrap();
        let second = exec_path(&bin).expect("a sealed copy");
        assert_ne!(second, first);
        assert!(!Command::new(&second).status().unwrap().success());
    }

    #[test]
    fn scripts_and_missing_binaries_run_from_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("rt");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(exec_path(&script), None);
        assert_eq!(exec_path(&dir.path().join("none")), None);
        assert_eq!(exec_path(Path::new("no-such-runtime-on-path")), None);
        assert!(exec_path(Path::new("true")).is_some(), "found on PATH");
    }
}
