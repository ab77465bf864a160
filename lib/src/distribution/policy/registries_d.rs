//! containers-registries.d(5): per-registry signature settings, YAML files in a
//! directory. Read here: `use-sigstore-attachments` (look for signatures attached
//! in the registry) and `lookaside` (where detached signatures are), for
//! `default-docker` and for `docker` scopes, the most specific scope first, as
//! the policy's scopes match.

use crate::distribution::reference::Reference;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The directories searched by default, the first that exists used: the user's
/// (not as root), then the system's.
pub fn default_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if !crate::paths::is_root() {
        if let Some(c) = crate::paths::config_home() {
            dirs.push(c.join("containers/registries.d"));
        }
    }
    dirs.push(PathBuf::from("/etc/containers/registries.d"));
    dirs
}

/// A registries.d that does not do.
#[derive(Debug, thiserror::Error)]
#[error("registries.d {}: {reason}", path.display())]
pub struct RegistriesDError {
    /// The directory or file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// One scope's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Where detached signatures are read (file://, http://, https://).
    #[serde(default, alias = "sigstore")]
    pub lookaside: Option<String>,
    /// Where detached signatures are written (not used here).
    #[serde(default, alias = "sigstore-staging")]
    pub lookaside_staging: Option<String>,
    /// Whether signatures attached in the registry are looked for.
    #[serde(default)]
    pub use_sigstore_attachments: Option<bool>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct File {
    #[serde(default)]
    default_docker: Option<Settings>,
    #[serde(default)]
    docker: BTreeMap<String, Settings>,
}

/// The settings of one registries.d directory.
#[derive(Debug, Clone, Default)]
pub struct RegistriesD {
    default_docker: Option<Settings>,
    docker: BTreeMap<String, Settings>,
}

impl RegistriesD {
    /// Reads every `*.yaml` file of the first of `dirs` that exists; none: empty
    /// settings. Two files setting the same scope, or `default-docker`, is an
    /// error, as containers/image has it.
    pub fn load(dirs: &[PathBuf]) -> Result<Self, RegistriesDError> {
        let Some(dir) = dirs.iter().find(|d| d.is_dir()) else {
            return Ok(RegistriesD::default());
        };
        let bad = |path: &Path, reason: String| RegistriesDError {
            path: path.to_path_buf(),
            reason,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| bad(dir, e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        let mut out = RegistriesD::default();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| bad(&f, e.to_string()))?;
            let parsed: File = if text.trim().is_empty() {
                File::default()
            } else {
                serde_yaml_ng::from_str(&text).map_err(|e| bad(&f, e.to_string()))?
            };
            if let Some(d) = parsed.default_docker {
                if out.default_docker.is_some() {
                    return Err(bad(&f, "default-docker is set in another file too".into()));
                }
                out.default_docker = Some(d);
            }
            for (scope, s) in parsed.docker {
                if out.docker.contains_key(&scope) {
                    return Err(bad(
                        &f,
                        format!("docker scope {scope:?} is set in another file too"),
                    ));
                }
                out.docker.insert(scope, s);
            }
        }
        Ok(out)
    }

    /// The settings for `image`: its most specific docker scope, else
    /// default-docker, else none.
    pub fn for_image(&self, image: &Reference) -> Settings {
        super::scopes(image)
            .iter()
            .find_map(|s| self.docker.get(s))
            .or(self.default_docker.as_ref())
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_files_and_clashes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("default.yaml"),
            "default-docker:\n  lookaside: file:///var/lib/sigs\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("example.yaml"),
            "docker:\n  example.com/ns:\n    use-sigstore-attachments: true\n  example.com:\n    sigstore: https://sigs.example.com\n",
        )
        .unwrap();
        let d = RegistriesD::load(&[dir.path().join("missing"), dir.path().to_path_buf()]).unwrap();
        let r = |s: &str| crate::distribution::reference::parse(s).unwrap();
        assert_eq!(
            d.for_image(&r("example.com/ns/app:1"))
                .use_sigstore_attachments,
            Some(true)
        );
        assert_eq!(
            d.for_image(&r("example.com/other/app:1"))
                .lookaside
                .as_deref(),
            Some("https://sigs.example.com")
        );
        assert_eq!(
            d.for_image(&r("busybox")).lookaside.as_deref(),
            Some("file:///var/lib/sigs")
        );
        std::fs::write(
            dir.path().join("z.yaml"),
            "default-docker:\n  lookaside: file:///x\n",
        )
        .unwrap();
        let e = RegistriesD::load(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("default-docker is set in another file too"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("z.yaml"),
            "docker:\n  a.b:\n    lookasid: x\n",
        )
        .unwrap();
        let e = RegistriesD::load(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(e.to_string().contains("z.yaml"), "{e}");
    }
}
