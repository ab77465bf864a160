//! Image trust policy: containers-policy.json(5), for the `docker` transport.
//!
//! A policy maps scopes (a registry, a namespace, a repository, a tag or digest,
//! `*.domain` wildcards) to requirements; the most specific scope that names the
//! pulled image applies, then the transport's `""` scope, then `default`. Every
//! requirement of the list must accept the image: `insecureAcceptAnything`,
//! `reject`, or `sigstoreSigned` (one signature, attached in the registry as
//! cosign attaches it, made by a trusted key over the image's manifest digest,
//! naming an identity `signedIdentity` accepts), or `signedBy` with `GPGKeys`
//! (one OpenPGP-signed "atomic container signature", from the lookaside storage
//! registries.d names, by a key of the keyring, for the manifest digest and an
//! accepted identity). A requirement of a kind this module does not know, or one
//! it cannot check fully (Fulcio certificates, Rekor, other key types), makes the
//! file invalid.

pub mod gpg;
pub mod identity;
pub mod registries_d;
pub mod sigstore;

use crate::distribution::digest::Digest;
use crate::distribution::reference::Reference;
use identity::{repo_name, SignedIdentity};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The system-wide policy file.
pub const SYSTEM_POLICY: &str = "/etc/containers/policy.json";

/// The policy file in force when none is named: the user's
/// (`~/.config/containers/policy.json`, not as root), else the system's, if
/// either exists.
pub fn default_path() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if !crate::paths::is_root() {
        if let Some(c) = crate::paths::config_home() {
            candidates.push(c.join("containers/policy.json"));
        }
    }
    candidates.push(PathBuf::from(SYSTEM_POLICY));
    candidates.into_iter().find(|p| p.exists())
}

/// A policy file that does not do.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// It cannot be read.
    #[error("reading the signature policy {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It says something that is not a policy, or that cannot be enforced.
    #[error("signature policy {}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// An image the policy does not let in.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{image} is refused by the signature policy {} (scope {scope:?}): {requirement}", policy.display())]
pub struct Refused {
    /// The image, as pulled.
    pub image: String,
    /// The policy file.
    pub policy: PathBuf,
    /// The scope whose requirements applied (`default` for the file's default).
    pub scope: String,
    /// The requirement that failed, and why.
    pub requirement: String,
}

/// One requirement.
#[derive(Debug, Clone)]
pub enum Requirement {
    /// Anything goes.
    InsecureAcceptAnything,
    /// Nothing goes.
    Reject,
    /// A sigstore signature by one of the keys.
    SigstoreSigned {
        /// The trusted keys.
        keys: Vec<sigstore::PublicKey>,
        /// What the signature's identity must be.
        identity: SignedIdentity,
    },
    /// A GPG signature (lookaside storage) by a key of the keyring.
    SignedBy {
        /// The trusted keys.
        keys: gpg::Keyring,
        /// What the signature's identity must be.
        identity: SignedIdentity,
    },
}

/// The signatures found for an image.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Attached in the registry, as cosign attaches them.
    pub sigstore: Vec<sigstore::Attached>,
    /// From lookaside storage: OpenPGP messages.
    pub simple: Vec<Vec<u8>>,
    /// Where the simple signatures were looked for (the lookaside base), if
    /// anywhere.
    pub lookaside: Option<String>,
}

impl Requirement {
    fn name(&self) -> &'static str {
        match self {
            Requirement::InsecureAcceptAnything => "insecureAcceptAnything",
            Requirement::Reject => "reject",
            Requirement::SigstoreSigned { .. } => "sigstoreSigned",
            Requirement::SignedBy { .. } => "signedBy",
        }
    }
}

/// The requirements that apply to one image, and where they come from.
#[derive(Debug, Clone)]
pub struct Scoped<'a> {
    /// The scope (`default` for the file's default).
    pub scope: String,
    /// Its requirements.
    pub requirements: &'a [Requirement],
}

impl Scoped<'_> {
    /// Whether evaluating these needs the image's sigstore signatures.
    pub fn wants_sigstore(&self) -> bool {
        self.requirements
            .iter()
            .any(|r| matches!(r, Requirement::SigstoreSigned { .. }))
    }

    /// Whether evaluating these needs the image's lookaside (GPG) signatures.
    pub fn wants_simple(&self) -> bool {
        self.requirements
            .iter()
            .any(|r| matches!(r, Requirement::SignedBy { .. }))
    }

    /// Whether these refuse every image, whatever its signatures.
    pub fn rejects(&self) -> bool {
        self.requirements
            .iter()
            .any(|r| matches!(r, Requirement::Reject))
    }
}

/// A parsed policy file.
#[derive(Debug, Clone)]
pub struct Policy {
    path: PathBuf,
    default: Vec<Requirement>,
    docker: BTreeMap<String, Vec<Requirement>>,
}

impl Policy {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text).map_err(|reason| PolicyError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Parses policy JSON; key files are read relative to nothing (they must be
    /// absolute, as containers/image requires).
    pub fn parse(path: &Path, text: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| format!("not JSON ({e})"))?;
        let o = v.as_object().ok_or("not a JSON object")?;
        if let Some(k) = o
            .keys()
            .find(|k| !["default", "transports"].contains(&k.as_str()))
        {
            return Err(format!("unknown field {k:?}"));
        }
        let default = requirements(o.get("default").ok_or("no default policy")?)
            .map_err(|e| format!("default: {e}"))?;
        let mut docker = BTreeMap::new();
        if let Some(t) = o.get("transports") {
            let t = t.as_object().ok_or("transports is not an object")?;
            for (transport, scopes) in t {
                let scopes = scopes
                    .as_object()
                    .ok_or(format!("transports.{transport} is not an object"))?;
                for (scope, reqs) in scopes {
                    let parsed = requirements(reqs)
                        .map_err(|e| format!("transports.{transport}.{scope:?}: {e}"))?;
                    if transport == "docker" {
                        if !scope.is_empty() {
                            check_scope(scope)
                                .map_err(|e| format!("transports.docker: scope {scope:?}: {e}"))?;
                        }
                        docker.insert(scope.clone(), parsed);
                    }
                }
            }
        }
        Ok(Policy {
            path: path.to_path_buf(),
            default,
            docker,
        })
    }

    /// The requirements for `image`: its most specific docker scope, then the
    /// transport's `""`, then the default.
    pub fn requirements_for(&self, image: &Reference) -> Scoped<'_> {
        for scope in scopes(image) {
            if let Some(r) = self.docker.get(&scope) {
                return Scoped {
                    scope,
                    requirements: r,
                };
            }
        }
        if let Some(r) = self.docker.get("") {
            return Scoped {
                scope: "docker".into(),
                requirements: r,
            };
        }
        Scoped {
            scope: "default".into(),
            requirements: &self.default,
        }
    }

    /// Whether `image`, whose manifest has `digest`, may be pulled, given the
    /// sigstore signatures found attached to it (`sigs`; empty when none were
    /// looked for or found).
    pub fn check(
        &self,
        image: &Reference,
        scoped: &Scoped<'_>,
        digest: &Digest,
        found: &Found,
    ) -> Result<(), Refused> {
        let sigs = &found.sigstore;
        let refuse = |requirement: String| Refused {
            image: display(image),
            policy: self.path.clone(),
            scope: scoped.scope.clone(),
            requirement,
        };
        for r in scoped.requirements {
            match r {
                Requirement::InsecureAcceptAnything => {}
                Requirement::Reject => return Err(refuse("reject".into())),
                Requirement::SignedBy { keys, identity } => {
                    if found.simple.is_empty() {
                        return Err(refuse(match &found.lookaside {
                            Some(base) => format!("signedBy: no signature found in {base}"),
                            None => "signedBy: no signature found (registries.d names no lookaside for it)".into(),
                        }));
                    }
                    any_verifies(&found.simple, |s| {
                        gpg::verify(s, keys, digest, |signed| identity.matches(image, signed))
                    })
                    .map_err(|why| refuse(format!("{}: {why}", r.name())))?;
                }
                Requirement::SigstoreSigned { keys, identity } => {
                    if sigs.is_empty() {
                        return Err(refuse(format!(
                            "{}: no signature found (attached at {}, with use-sigstore-attachments in registries.d)",
                            r.name(),
                            sigstore::signature_tag(digest)
                        )));
                    }
                    any_verifies(sigs, |s| {
                        sigstore::verify(s, keys, digest, |signed| identity.matches(image, signed))
                    })
                    .map_err(|why| refuse(format!("{}: {why}", r.name())))?;
                }
            }
        }
        Ok(())
    }
}

/// Ok when one of `sigs` verifies; else what each said, in one line.
fn any_verifies<T>(sigs: &[T], verify: impl Fn(&T) -> Result<(), String>) -> Result<(), String> {
    let mut why = Vec::new();
    for s in sigs {
        match verify(s) {
            Ok(()) => return Ok(()),
            Err(e) => why.push(e),
        }
    }
    why.dedup();
    Err(format!(
        "no signature accepted of {}: {}",
        sigs.len(),
        why.join("; ")
    ))
}

/// Err naming the first key of `o` that is neither `type` nor in `allowed`.
pub(crate) fn only_fields(
    o: &serde_json::Map<String, serde_json::Value>,
    what: &str,
    allowed: &[&str],
) -> Result<(), String> {
    match o
        .keys()
        .find(|k| k.as_str() != "type" && !allowed.contains(&k.as_str()))
    {
        Some(k) => Err(format!("{what}: unknown field {k:?}")),
        None => Ok(()),
    }
}

fn display(r: &Reference) -> String {
    let mut s = repo_name(r);
    if let Some(t) = r.tag() {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = r.digest() {
        s.push('@');
        s.push_str(d);
    }
    s
}

/// The scopes naming `image`, most specific first: the full name, the
/// repository, each namespace above it, the registry, then `*.` wildcards of the
/// registry's domain, longest first.
pub fn scopes(image: &Reference) -> Vec<String> {
    let mut out = Vec::new();
    let repo = repo_name(image);
    if let Some(d) = image.digest() {
        out.push(format!("{repo}@{d}"));
    } else if let Some(t) = image.tag() {
        out.push(format!("{repo}:{t}"));
    }
    let mut cur = repo.as_str();
    loop {
        out.push(cur.to_string());
        match cur.rsplit_once('/') {
            Some((parent, _)) => cur = parent,
            None => break,
        }
    }
    let host = image.registry();
    let host = host.split(':').next().unwrap_or(host);
    let mut rest = host;
    while let Some((_, parent)) = rest.split_once('.') {
        out.push(format!("*.{parent}"));
        rest = parent;
    }
    out
}

fn check_scope(scope: &str) -> Result<(), String> {
    if let Some(domain) = scope.strip_prefix("*.") {
        if domain.is_empty() || domain.contains(['/', ':', '*']) {
            return Err("a wildcard scope is *.DOMAIN".into());
        }
        return Ok(());
    }
    if scope.contains("://")
        || scope.contains('*')
        || scope.starts_with('/')
        || scope.ends_with('/')
    {
        return Err("not a registry, namespace, repository or reference".into());
    }
    Ok(())
}

fn requirements(v: &serde_json::Value) -> Result<Vec<Requirement>, String> {
    let list = v.as_array().ok_or("requirements are not a list")?;
    if list.is_empty() {
        return Err("an empty list of requirements (use insecureAcceptAnything or reject)".into());
    }
    list.iter().map(requirement).collect()
}

fn requirement(v: &serde_json::Value) -> Result<Requirement, String> {
    let o = v.as_object().ok_or("a requirement is not an object")?;
    let ty = o
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or("a requirement has no type")?;
    let only = |keys: &[&str]| only_fields(o, ty, keys);
    Ok(match ty {
        "insecureAcceptAnything" => {
            only(&[])?;
            Requirement::InsecureAcceptAnything
        }
        "reject" => {
            only(&[])?;
            Requirement::Reject
        }
        "sigstoreSigned" => {
            if o.contains_key("fulcio") || o.contains_key("pki") {
                return Err(format!(
                    "{ty}: Fulcio and PKI certificates are not supported; name public keys"
                ));
            }
            only(&[
                "keyPath",
                "keyPaths",
                "keyData",
                "keyDatas",
                "rekorPublicKeyPath",
                "rekorPublicKeyPaths",
                "rekorPublicKeyData",
                "rekorPublicKeyDatas",
                "signedIdentity",
            ])?;
            if o.keys().any(|k| k.starts_with("rekor")) {
                return Err(format!(
                    "{ty}: Rekor transparency-log checks are not supported"
                ));
            }
            let keys = sigstore_keys(o).map_err(|e| format!("{ty}: {e}"))?;
            let identity =
                SignedIdentity::parse(o.get("signedIdentity")).map_err(|e| format!("{ty}: {e}"))?;
            Requirement::SigstoreSigned { keys, identity }
        }
        "signedBy" => {
            only(&[
                "keyType",
                "keyPath",
                "keyPaths",
                "keyData",
                "signedIdentity",
            ])?;
            let key_type = o.get("keyType").and_then(|k| k.as_str());
            if key_type != Some("GPGKeys") {
                return Err(format!(
                    "{ty}: keyType {key_type:?} is not supported (GPGKeys is)"
                ));
            }
            let keys = gpg_keys(o).map_err(|e| format!("{ty}: {e}"))?;
            let identity =
                SignedIdentity::parse(o.get("signedIdentity")).map_err(|e| format!("{ty}: {e}"))?;
            Requirement::SignedBy { keys, identity }
        }
        other => return Err(format!("unknown requirement type {other:?}")),
    })
}

fn gpg_keys(o: &serde_json::Map<String, serde_json::Value>) -> Result<gpg::Keyring, String> {
    use base64::Engine as _;
    let sources = ["keyPath", "keyPaths", "keyData"]
        .iter()
        .filter(|k| o.contains_key(**k))
        .count();
    if sources != 1 {
        return Err("exactly one of keyPath, keyPaths and keyData is needed".into());
    }
    let mut rings = Vec::new();
    let mut paths: Vec<String> = Vec::new();
    match (o.get("keyPath"), o.get("keyPaths"), o.get("keyData")) {
        (Some(p), _, _) => paths.push(p.as_str().ok_or("keyPath is not a string")?.into()),
        (_, Some(ps), _) => {
            let a = ps
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or("keyPaths is not a non-empty list")?;
            for p in a {
                paths.push(p.as_str().ok_or("keyPaths holds a non-string")?.into());
            }
        }
        (_, _, Some(d)) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(d.as_str().ok_or("keyData is not a string")?.trim())
                .map_err(|_| "keyData is not base64")?;
            rings.push(gpg::Keyring::parse(&raw).map_err(|e| format!("keyData: {e}"))?);
        }
        _ => {}
    }
    for path in paths {
        if !Path::new(&path).is_absolute() {
            return Err(format!("key path {path:?} is not absolute"));
        }
        let raw = std::fs::read(&path).map_err(|e| format!("reading {path}: {e}"))?;
        rings.push(gpg::Keyring::parse(&raw).map_err(|e| format!("{path}: {e}"))?);
    }
    gpg::Keyring::merge(rings).ok_or_else(|| "no key".to_string())
}

fn sigstore_keys(
    o: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<sigstore::PublicKey>, String> {
    use base64::Engine as _;
    let mut pems: Vec<(String, String)> = Vec::new();
    let strings = |k: &str| -> Result<Vec<String>, String> {
        match o.get(k) {
            None => Ok(Vec::new()),
            Some(serde_json::Value::String(s)) if !k.ends_with('s') => Ok(vec![s.clone()]),
            Some(serde_json::Value::Array(a)) if k.ends_with('s') && !a.is_empty() => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .ok_or(format!("{k} holds a non-string"))
                })
                .collect(),
            Some(_) => Err(format!(
                "{k} is not a {}",
                if k.ends_with('s') {
                    "non-empty list"
                } else {
                    "string"
                }
            )),
        }
    };
    let sources = ["keyPath", "keyPaths", "keyData", "keyDatas"]
        .iter()
        .filter(|k| o.contains_key(**k))
        .count();
    if sources != 1 {
        return Err("exactly one of keyPath, keyPaths, keyData and keyDatas is needed".into());
    }
    for path in strings("keyPath")?.into_iter().chain(strings("keyPaths")?) {
        if !Path::new(&path).is_absolute() {
            return Err(format!("key path {path:?} is not absolute"));
        }
        let pem = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
        pems.push((path, pem));
    }
    for (i, data) in strings("keyData")?
        .into_iter()
        .chain(strings("keyDatas")?)
        .enumerate()
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|_| format!("keyData {} is not base64", i + 1))?;
        let pem = String::from_utf8(raw).map_err(|_| format!("keyData {} is not PEM", i + 1))?;
        pems.push((format!("keyData {}", i + 1), pem));
    }
    pems.into_iter()
        .map(|(from, pem)| sigstore::PublicKey::from_pem(&pem).map_err(|e| format!("{from}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests;
