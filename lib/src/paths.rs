//! Default locations: `/var/lib/crikit` and `/run/crikit` for root,
//! `$XDG_DATA_HOME/crikit` and `$XDG_RUNTIME_DIR/crikit` for other users.
//! `--root` / `CRIKIT_ROOT` and `--run-dir` override them at the binaries.

use std::path::PathBuf;

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    euid() == 0
}

/// `$XDG_CONFIG_HOME`, or `~/.config`: where the containers tools keep a user's
/// configuration (auth.json, certs.d).
pub(crate) fn config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The default state root.
pub fn default_root() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/crikit");
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("crikit");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/share/crikit")
}

/// The default runtime directory.
pub fn default_run_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/crikit");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("crikit"),
        None => std::env::temp_dir().join(format!("crikit-{}", euid())),
    }
}

/// The image layout under a state root.
pub fn images_dir(root: &std::path::Path) -> PathBuf {
    root.join("images")
}
