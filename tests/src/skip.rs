//! Tests that need a tool from outside the project (crictl, critest, CRIU, crun,
//! kubelet) ask [`require`] first, so that a green run never hides a test that did
//! not run:
//! - when `CRIKIT_REQUIRE` names the tool (`crictl,criu`; `all` for every one), a
//!   missing tool fails the test with the reason;
//! - otherwise the test prints one `SKIPPED` line and returns, and the line is also
//!   appended to the file `CRIKIT_SKIPPED_LOG` names, which `make test` counts and
//!   prints at the end.

use std::io::Write as _;

/// The tools a test may need from outside the project, as `CRIKIT_REQUIRE` names them.
/// `cri-mirror` is a registry with critest's images (`CRI_MIRROR=HOST:PORT`), which
/// the critest run on the test node pulls through.
pub const TOOLS: &[&str] = &[
    "crictl",
    "critest",
    "cri-mirror",
    "criu",
    "crun",
    "kubelet",
    "qemu",
];

/// Whether `tool` is there (`present`); when it is not, either fails the test
/// (`CRIKIT_REQUIRE` names it) or reports the test as skipped because of `why`.
pub fn require(tool: &str, present: bool, why: &str) -> bool {
    debug_assert!(TOOLS.contains(&tool), "{tool} is not one of {TOOLS:?}");
    if present {
        return true;
    }
    if required(tool, std::env::var("CRIKIT_REQUIRE").ok().as_deref()) {
        panic!("{tool} is required (CRIKIT_REQUIRE) but {why}");
    }
    skipped(&format!("{tool}: {why}"));
    false
}

/// Reports the running test as skipped for `reason` (something that is no missing
/// tool, such as a runtime that has no checkpoint command): one `SKIPPED` line on
/// stderr and in `CRIKIT_SKIPPED_LOG`.
pub fn skipped(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let line = format!("SKIPPED {test} ({}): {reason}", crate::runc::runtime());
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("CRIKIT_SKIPPED_LOG") {
        // O_APPEND: lines from tests running at once do not mix.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            panic!("CRIKIT_SKIPPED_LOG {}: {e}", path.to_string_lossy());
        }
    }
}

/// Whether the `CRIKIT_REQUIRE` list `list` names `tool`.
fn required(tool: &str, list: Option<&str>) -> bool {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        // `all` is every tool a host can have: a mirror is named per run.
        .any(|t| t == tool || (t == "all" && tool != "cri-mirror"))
}

/// Whether `cmd ARGS` runs and succeeds.
pub fn runs(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The program `name` from the environment variable `var` when set, else from PATH.
pub fn find(var: &str, name: &str) -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    which(name)
}

/// The program `name` in a directory of PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_require_list_names_tools_or_all() {
        assert!(required("criu", Some("crictl,criu")));
        assert!(required("crun", Some(" crun ")));
        assert!(required("kubelet", Some("all")));
        assert!(!required("cri-mirror", Some("all")));
        assert!(required("cri-mirror", Some("qemu,cri-mirror")));
        assert!(!required("crun", Some("crictl,criu")));
        assert!(!required("crun", Some("")));
        assert!(!required("crun", None));
    }

    #[test]
    fn a_present_tool_is_never_skipped() {
        assert!(require("crun", true, "unused"));
    }
}
