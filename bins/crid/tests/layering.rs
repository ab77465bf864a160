//! The shape of crid's source, as lib.rs describes it: each file stands on a
//! floor, and imports only from floors below its own or from its own folder on
//! the same floor; only the CRI adapters (`cri/`) name tonic.

use std::path::{Path, PathBuf};

/// The floors, from the top down; the first prefix that a file's path (relative to
/// src/) starts with gives its floor.
const FLOORS: &[(&str, u32)] = &[
    ("main.rs", 9),
    ("cli.rs", 9),
    ("cri/", 8),
    ("pod/", 7),
    ("stream/", 7),
    ("container/", 6),
    ("lib.rs", 5),
    ("image.rs", 4),
    ("events.rs", 4),
    ("host/", 3),
    ("state/", 2),
    ("validate.rs", 2),
    ("metrics.rs", 1),
    ("error.rs", 1),
    ("config.rs", 0),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn floor(rel: &str) -> u32 {
    FLOORS
        .iter()
        .find(|(p, _)| rel.starts_with(p))
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("{rel} stands on no floor: add it to FLOORS and lib.rs's doc"))
}

/// The folder a file belongs to ("" for the files at src/'s top).
fn folder(rel: &str) -> &str {
    rel.split_once('/').map_or("", |(d, _)| d)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file: comments and the unit tests' module left out.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The file a `crate::a::b::c` path leads to: the longest of its prefixes that is
/// a module file; lib.rs for what the crate's root defines.
fn target(path: &[&str]) -> String {
    let root = src();
    for n in (1..=path.len()).rev() {
        let p = path[..n].join("/");
        for cand in [format!("{p}.rs"), format!("{p}/mod.rs")] {
            if root.join(&cand).is_file() {
                return cand;
            }
        }
    }
    "lib.rs".into()
}

/// Every `crate::` path in `code`, as its segments.
fn crate_paths(code: &str) -> Vec<Vec<&str>> {
    let mut out = vec![];
    for (i, _) in code.match_indices("crate::") {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let segs: Vec<&str> = rest[..end]
            .split("::")
            .filter(|s| !s.is_empty() && s.starts_with(|c: char| c.is_ascii_lowercase()))
            .collect();
        assert!(
            !rest[end..].starts_with('{') || !segs.is_empty(),
            "`use crate::{{…}}` names several modules at once: write one `use` per module"
        );
        out.push(segs);
    }
    out
}

#[test]
fn every_import_runs_down_and_only_the_cri_adapters_know_tonic() {
    let root = src();
    let mut all = vec![];
    files(&root, &mut all);
    let mut wrong = vec![];
    for f in &all {
        let rel = f.strip_prefix(&root).unwrap().to_string_lossy().to_string();
        let code = code(&std::fs::read_to_string(f).unwrap());
        let mine = floor(&rel);
        for path in crate_paths(&code) {
            let to = target(&path);
            if to == rel {
                continue;
            }
            let theirs = floor(&to);
            let same_folder = folder(&to) == folder(&rel) && !folder(&rel).is_empty();
            if theirs > mine || (theirs == mine && !same_folder) {
                wrong.push(format!(
                    "{rel} (floor {mine}) imports crate::{} from {to} (floor {theirs})",
                    path.join("::")
                ));
            }
        }
        if !rel.starts_with("cri/") && code.contains("tonic") {
            wrong.push(format!("{rel} names tonic: only cri/ may"));
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    // A path into a folder's module resolves to its file, the root to lib.rs.
    assert_eq!(target(&["state", "store", "Store"]), "state/store.rs");
    assert_eq!(target(&["host", "net"]), "host/net/mod.rs");
    assert_eq!(target(&[]), "lib.rs");
    let code = "use crate::Crid;\nlet x = crate::state::store::pod_name_key(a);\n";
    assert_eq!(
        crate_paths(code),
        vec![vec![], vec!["state", "store", "pod_name_key"]]
    );
    assert!(floor("state/store.rs") < floor("lib.rs"));
    assert!(floor("state/record.rs") < floor("host/netns.rs"));
    assert!(floor("error.rs") < floor("state/store.rs"));
}
