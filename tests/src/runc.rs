//! Running bundles with the OCI runtime under test (`CRIKIT_TEST_RUNTIME`: `runc`, the
//! default, or `crun`), each test with its own state root; every container started is
//! force-deleted on drop.

use crate::cmd::{run, Run};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The runtime under test with a private `--root`.
pub struct Runc {
    state: PathBuf,
    ids: RefCell<Vec<String>>,
}

/// The runtime the suites run under: `CRIKIT_TEST_RUNTIME`, else `runc`. It is also the
/// name of crid's handler for it (`--default-runtime`).
pub fn runtime() -> String {
    std::env::var("CRIKIT_TEST_RUNTIME")
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "runc".into())
}

fn runc_bin() -> String {
    let exe = runtime();
    let found = Command::new(&exe)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{exe} is missing: install Debian's {exe} (make deps) or set CRIKIT_TEST_RUNTIME"
    );
    exe
}

impl Runc {
    /// A runc whose state lives under `dir`.
    pub fn new(dir: &Path) -> Runc {
        let state = dir.join("runc-state");
        std::fs::create_dir_all(&state).expect("runc state dir");
        Runc {
            state,
            ids: RefCell::new(Vec::new()),
        }
    }

    /// `runc run` of `bundle` in the foreground; returns its outcome.
    pub fn run(&self, bundle: &Path) -> Run {
        let id = format!(
            "crikit-test-{}-{}",
            std::process::id(),
            bundle
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        );
        self.ids.borrow_mut().push(id.clone());
        let mut c = Command::new(runc_bin());
        c.arg("--root")
            .arg(&self.state)
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(&id);
        let r = run(c, Duration::from_secs(60));
        let _ = Command::new(runc_bin())
            .arg("--root")
            .arg(&self.state)
            .args(["delete", "-f", &id])
            .output();
        r
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        if !self.state.is_dir() {
            return; // runc would create it again
        }
        for id in self.ids.borrow().iter() {
            let _ = Command::new(runc_bin())
                .arg("--root")
                .arg(&self.state)
                .args(["delete", "-f", id])
                .output();
        }
    }
}
