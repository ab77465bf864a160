//! The committed man pages and completions are what the code generates
//! (`make docs` regenerates them).

use e2e::{bin, run};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn generated(name: &str, kind: &str) -> String {
    let mut c = Command::new(bin(name));
    c.arg(format!("--generate={kind}"));
    run(c, Duration::from_secs(30)).ok().stdout
}

#[test]
fn man_pages_and_completions_are_current() {
    let top = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stale = Vec::new();
    for (name, section) in [
        ("imgpull", "1"),
        ("bundlegen", "1"),
        ("ctrmon", "8"),
        ("crid", "8"),
        ("imgserve", "1"),
    ] {
        for (kind, file) in [
            ("man", format!("man/{name}.{section}")),
            ("bash", format!("completions/{name}.bash")),
            ("zsh", format!("completions/_{name}")),
            ("fish", format!("completions/{name}.fish")),
        ] {
            let committed = std::fs::read_to_string(top.join(&file)).unwrap_or_default();
            if committed != generated(name, kind) {
                stale.push(file);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files (run `make docs`): {stale:?}"
    );
}

#[test]
fn man_pages_carry_the_exit_status_table() {
    let page = generated("imgpull", "man");
    for needle in [
        ".SH \"EXIT STATUS\"",
        "Not found",
        "Registry or network failure",
        ".SH \"JSON OUTPUT\"",
    ] {
        assert!(page.contains(needle), "imgpull.1 lacks {needle:?}");
    }
}
