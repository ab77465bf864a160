//! Where an image is pulled from: containers-registries.conf(5) version 2 (`prefix`
//! → `location` rewrites, `[[registry.mirror]]` entries tried before the registry,
//! `insecure` for plain HTTP, `blocked`), plus hosts named insecure on the command
//! line. crid and imgpull both resolve endpoints here.

use crate::distribution::reference::Reference;
use std::path::{Path, PathBuf};

/// The system-wide file, read when it exists and no other is named.
pub const SYSTEM_REGISTRIES_CONF: &str = "/etc/containers/registries.conf";

/// Errors from reading registries.conf or applying it.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    /// The file cannot be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid registries.conf v2.
    #[error("{} is not valid registries.conf: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The configuration blocks pulls from this registry.
    #[error("pulling {0} is blocked by registries.conf")]
    Blocked(String),
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileV2 {
    #[serde(default)]
    registry: Vec<Entry>,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Entry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<Mirror>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Mirror {
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: Option<String>,
}

/// One place to try pulling an image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The reference rewritten for this endpoint (its registry is where to connect).
    pub reference: Reference,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// Whether this is a mirror (failures fall through to the next endpoint).
    pub mirror: bool,
}

/// The registry configuration in force.
#[derive(Debug, Clone, Default)]
pub struct Registries {
    entries: Vec<Entry>,
    insecure_hosts: Vec<String>,
}

impl Registries {
    /// Reads `path`, or the system file when `path` is `None` and that exists.
    pub fn load(path: Option<&Path>) -> Result<Self, RegistriesError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let p = PathBuf::from(SYSTEM_REGISTRIES_CONF);
                if !p.exists() {
                    return Ok(Registries::default());
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| RegistriesError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|reason| RegistriesError::Parse { path, reason })
    }

    /// Parses registries.conf text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: FileV2 = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let mut entries = file.registry;
        for e in &mut entries {
            if e.prefix.is_empty() {
                e.prefix = e.location.clone();
            }
            if e.prefix.is_empty() {
                return Err("a [[registry]] has neither prefix nor location".into());
            }
            if e.prefix.starts_with("*.") && !e.location.is_empty() {
                return Err(format!(
                    "wildcard prefix {:?} cannot have a location",
                    e.prefix
                ));
            }
        }
        Ok(Registries {
            entries,
            insecure_hosts: Vec::new(),
        })
    }

    /// Adds hosts (`HOST[:PORT]`) reached over plain HTTP.
    pub fn add_insecure(&mut self, hosts: impl IntoIterator<Item = String>) {
        self.insecure_hosts.extend(hosts);
    }

    fn best_match(&self, name: &str) -> Option<&Entry> {
        let host = name.split('/').next().unwrap_or(name);
        self.entries
            .iter()
            .filter(|e| {
                if let Some(suffix) = e.prefix.strip_prefix('*') {
                    host.ends_with(suffix)
                } else {
                    name == e.prefix
                        || name
                            .strip_prefix(e.prefix.as_str())
                            .is_some_and(|rest| rest.starts_with('/'))
                }
            })
            .max_by_key(|e| e.prefix.len())
    }

    fn is_insecure_host(&self, host: &str) -> bool {
        self.insecure_hosts.iter().any(|h| h == host)
            || self
                .entries
                .iter()
                .any(|e| e.insecure && e.location.split('/').next() == Some(host))
    }

    /// The endpoints to try for `r`, mirrors first.
    pub fn endpoints(&self, r: &Reference) -> Result<Vec<Endpoint>, RegistriesError> {
        let name = format!("{}/{}", r.registry(), r.repository());
        let Some(entry) = self.best_match(&name) else {
            let host = r.registry().to_string();
            return Ok(vec![Endpoint {
                reference: r.clone(),
                insecure: self.is_insecure_host(&host),
                mirror: false,
            }]);
        };
        if entry.blocked {
            return Err(RegistriesError::Blocked(name));
        }
        let rest = if entry.prefix.starts_with('*') {
            ""
        } else {
            &name[entry.prefix.len()..]
        };
        let by_digest = r.digest().is_some();
        let mut out = Vec::new();
        for m in &entry.mirror {
            let policy = m
                .pull_from_mirror
                .as_deref()
                .unwrap_or(if entry.mirror_by_digest_only {
                    "digest-only"
                } else {
                    "all"
                });
            let allowed = match policy {
                "digest-only" => by_digest,
                "tag-only" => !by_digest,
                _ => true,
            };
            if allowed {
                out.push(Endpoint {
                    reference: rewrite(r, &format!("{}{}", m.location, rest)),
                    insecure: m.insecure
                        || self.is_insecure_host(m.location.split('/').next().unwrap_or("")),
                    mirror: true,
                });
            }
        }
        let primary = if entry.location.is_empty() {
            r.clone()
        } else {
            rewrite(r, &format!("{}{}", entry.location, rest))
        };
        let host = primary.registry().to_string();
        out.push(Endpoint {
            insecure: entry.insecure || self.is_insecure_host(&host),
            reference: primary,
            mirror: false,
        });
        Ok(out)
    }

    /// Every host reached over plain HTTP, for the HTTP client's scheme choice.
    pub fn insecure_hosts(&self) -> Vec<String> {
        let mut out = self.insecure_hosts.clone();
        for e in &self.entries {
            if e.insecure {
                out.push(e.location.split('/').next().unwrap_or("").to_string());
            }
            for m in &e.mirror {
                if m.insecure {
                    out.push(m.location.split('/').next().unwrap_or("").to_string());
                }
            }
        }
        out.retain(|h| !h.is_empty());
        out.sort();
        out.dedup();
        out
    }
}

fn rewrite(r: &Reference, new_name: &str) -> Reference {
    let (host, repo) = new_name.split_once('/').unwrap_or((new_name, ""));
    let repo = if repo.is_empty() {
        r.repository()
    } else {
        repo
    };
    match (r.tag(), r.digest()) {
        (Some(t), Some(d)) => {
            Reference::with_tag_and_digest(host.into(), repo.into(), t.into(), d.into())
        }
        (None, Some(d)) => Reference::with_digest(host.into(), repo.into(), d.into()),
        (Some(t), None) => Reference::with_tag(host.into(), repo.into(), t.into()),
        (None, None) => Reference::with_tag(host.into(), repo.into(), "latest".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distribution::reference::parse;

    const CONF: &str = r#"
unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "example.com/foo"
location = "internal.example.com/bar"

[[registry]]
location = "insecure.local:5000"
insecure = true

[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.local:5001"
insecure = true
[[registry.mirror]]
location = "digests.local"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "*.blocked.example"
blocked = true
"#;

    #[test]
    fn prefix_rewrites_mirrors_and_blocks() {
        let r = Registries::parse(CONF).unwrap();
        let eps = r
            .endpoints(&parse("example.com/foo/app:1").unwrap())
            .unwrap();
        assert_eq!(eps.len(), 1);
        assert_eq!(
            eps[0].reference.to_string(),
            "internal.example.com/bar/app:1"
        );
        assert!(!eps[0].insecure);

        // A prefix matches whole path components only.
        let eps = r
            .endpoints(&parse("example.com/foobar/app").unwrap())
            .unwrap();
        assert_eq!(
            eps[0].reference.to_string(),
            "example.com/foobar/app:latest"
        );

        let eps = r
            .endpoints(&parse("insecure.local:5000/x").unwrap())
            .unwrap();
        assert!(eps[0].insecure);

        let eps = r.endpoints(&parse("busybox").unwrap()).unwrap();
        let names: Vec<_> = eps.iter().map(|e| e.reference.to_string()).collect();
        assert_eq!(
            names,
            [
                "mirror.local:5001/library/busybox:latest",
                "docker.io/library/busybox:latest"
            ]
        );
        assert!(eps[0].insecure && eps[0].mirror && !eps[1].mirror);

        let d = format!("sha256:{}", "c".repeat(64));
        let eps = r
            .endpoints(&parse(&format!("busybox@{d}")).unwrap())
            .unwrap();
        assert_eq!(eps.len(), 3);

        assert!(matches!(
            r.endpoints(&parse("x.blocked.example/a").unwrap()),
            Err(RegistriesError::Blocked(_))
        ));
        assert_eq!(
            r.insecure_hosts(),
            ["insecure.local:5000", "mirror.local:5001"]
        );
    }

    #[test]
    fn bad_files_are_reported() {
        assert!(Registries::parse("[[registry]]\ninsecure = true\n").is_err());
        assert!(Registries::parse("registry = 3").is_err());
    }
}
