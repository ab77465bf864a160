//! Registry credentials stored for each registry: the containers auth files
//! (`REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`), then docker's `~/.docker/config.json`.
//!
//! Entries are matched the way containers-auth.json(5) says: the most specific key
//! first (`host/ns/repo`, then `host/ns`, then `host`), and docker's legacy keys
//! (`https://index.docker.io/v1/`) are understood. Credential helpers (`credsStore`,
//! `credHelpers`) are not run.

use base64::Engine as _;
use std::path::{Path, PathBuf};

/// Errors from reading credentials.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// An auth file that exists but cannot be read or parsed.
    #[error("auth file {}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--creds` was not `USER[:PASSWORD]`.
    #[error("credentials {0:?} are not USER[:PASSWORD]")]
    BadCreds(String),
}

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// Parses `USER:PASSWORD` (as `--creds` takes it).
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credentials {
                username: u.into(),
                password: p.into(),
            }),
            _ => Err(AuthError::BadCreds(
                s.chars().take_while(|c| *c != ':').collect(),
            )),
        }
    }
}

/// Where the credentials stored for each registry come from. A pull's own
/// credentials (`--creds`, a CRI request's) are not kept here: they go with
/// the pull, to the registry they were given for (`Puller::pull_as`).
#[derive(Debug, Clone, Default)]
pub struct CredentialStore {
    /// Auth files, in the order they are searched.
    pub files: Vec<PathBuf>,
}

impl CredentialStore {
    /// The standard search path from the environment. `authfile` (`--authfile`)
    /// replaces `REGISTRY_AUTH_FILE`.
    pub fn from_env(authfile: Option<&Path>) -> Self {
        let mut files = Vec::new();
        if let Some(f) = authfile {
            files.push(f.to_path_buf());
        } else if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
            files.push(PathBuf::from(f));
        }
        if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            files.push(PathBuf::from(d).join("containers/auth.json"));
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        if let Some(c) = crate::paths::config_home() {
            files.push(c.join("containers/auth.json"));
        }
        if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
            files.push(PathBuf::from(d).join("config.json"));
        } else if let Some(h) = home {
            files.push(h.join(".docker/config.json"));
        }
        CredentialStore { files }
    }

    /// Credentials for `registry` (host[:port]) and `repository`, if any.
    pub fn lookup(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<Option<Credentials>, AuthError> {
        for path in &self.files {
            let data = match std::fs::read(path) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(AuthError::BadFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })
                }
            };
            if let Some(c) =
                lookup_in(&data, registry, repository).map_err(|reason| AuthError::BadFile {
                    path: path.clone(),
                    reason,
                })?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

/// Normalises an auth-file key: drops a scheme and docker's `/v1/`-style suffixes
/// on bare hosts, and maps docker hub's aliases to `docker.io`.
fn normalise_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = match k.split_once('/') {
        // `host/v1/`, `host/v2/`: a legacy docker key naming the whole host.
        Some((host, rest))
            if rest.trim_end_matches('/').starts_with('v')
                && rest.trim_end_matches('/').len() <= 3 =>
        {
            host
        }
        _ => k.trim_end_matches('/'),
    };
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        h => h,
    };
    if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{path}")
    }
}

fn lookup_in(data: &[u8], registry: &str, repository: &str) -> Result<Option<Credentials>, String> {
    let v: serde_json::Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let registry = normalise_key(registry);
    // Most specific first: host/ns/repo, host/ns, host.
    let mut wanted = vec![format!("{registry}/{repository}")];
    let mut parts: Vec<&str> = repository.split('/').collect();
    while parts.len() > 1 {
        parts.pop();
        wanted.push(format!("{registry}/{}", parts.join("/")));
    }
    wanted.push(registry);
    for want in &wanted {
        for (key, entry) in auths {
            if normalise_key(key) != *want {
                continue;
            }
            return decode_entry(entry).map_err(|e| format!("entry {key:?}: {e}"));
        }
    }
    Ok(None)
}

fn decode_entry(entry: &serde_json::Value) -> Result<Option<Credentials>, String> {
    if let Some(auth) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auth is not base64: {e}"))?;
        let s = String::from_utf8(raw).map_err(|_| "auth is not UTF-8".to_string())?;
        let (u, p) = s
            .split_once(':')
            .ok_or_else(|| "auth is not base64(user:password)".to_string())?;
        return Ok(Some(Credentials {
            username: u.into(),
            password: p.into(),
        }));
    }
    let user = entry.get("username").and_then(|u| u.as_str());
    let pass = entry.get("password").and_then(|u| u.as_str());
    if let (Some(u), Some(p)) = (user, pass) {
        return Ok(Some(Credentials {
            username: u.into(),
            password: p.into(),
        }));
    }
    if let Some(t) = entry.get("identitytoken").and_then(|t| t.as_str()) {
        // Docker's convention for identity tokens: the user name is "<token>".
        return Ok(Some(Credentials {
            username: "<token>".into(),
            password: t.into(),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn most_specific_key_wins_and_docker_hub_aliases_match() {
        let file = serde_json::json!({"auths": {
            "registry.example.com": {"auth": b64("host:pw1")},
            "registry.example.com/team": {"auth": b64("team:pw2")},
            "https://index.docker.io/v1/": {"auth": b64("hub:pw3")},
        }})
        .to_string();
        let get = |reg, repo| {
            lookup_in(file.as_bytes(), reg, repo)
                .unwrap()
                .map(|c| c.username)
        };
        assert_eq!(get("registry.example.com", "team/app"), Some("team".into()));
        assert_eq!(
            get("registry.example.com", "other/app"),
            Some("host".into())
        );
        assert_eq!(get("docker.io", "library/busybox"), Some("hub".into()));
        assert_eq!(get("quay.io", "x"), None);
    }

    #[test]
    fn bad_entries_are_reported() {
        let file = r#"{"auths":{"h":{"auth":"%%%"}}}"#;
        assert!(lookup_in(file.as_bytes(), "h", "r")
            .unwrap_err()
            .contains("base64"));
        assert!(Credentials::parse("nocolon").is_err());
        assert_eq!(Credentials::parse("u:p:q").unwrap().password, "p:q");
    }
}
