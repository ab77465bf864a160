//! Bytes and inodes a directory tree uses, as ImageFsInfo and the stats report them.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes allocated (st_blocks) and inodes used under `dir`, each hard-linked inode
/// once; `(0, 0)` for a tree that is not there. Entries that vanish while walking
/// are skipped.
pub fn usage(dir: &Path) -> (u64, u64) {
    let mut seen = HashSet::new();
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !seen.insert((m.dev(), m.ino())) {
            continue;
        }
        bytes += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    (bytes, seen.len() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_files_dirs_and_hard_links_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(d.path().join("sub/a"), d.path().join("b")).unwrap();
        let (bytes, inodes) = super::usage(d.path());
        assert_eq!(inodes, 3, "the dir, sub, and one file");
        assert!(bytes >= 10_000, "{bytes}");
        assert_eq!(super::usage(&d.path().join("nope")), (0, 0));
    }
}
