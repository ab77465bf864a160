//! `signedIdentity`: how the identity a signature names must relate to the image
//! being pulled, as containers-policy.json(5) defines it.

use crate::distribution::reference::{self, Reference};

/// What the identity in a signature must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    /// The same repository and the same tag or digest.
    MatchExact,
    /// By digest: the same repository; by tag: as [`SignedIdentity::MatchExact`].
    /// The default.
    MatchRepoDigestOrExact,
    /// The same repository, whatever the tag or digest.
    MatchRepository,
    /// Exactly this reference, whatever is pulled.
    ExactReference(Reference),
    /// This repository, whatever is pulled.
    ExactRepository(String),
    /// The pulled name with `prefix` replaced by `signed_prefix`, then
    /// [`SignedIdentity::MatchRepoDigestOrExact`].
    RemapIdentity {
        /// A host, a host and namespace, or a repository.
        prefix: String,
        /// What it stands for in signatures.
        signed_prefix: String,
    },
}

/// `registry/repository`.
pub fn repo_name(r: &Reference) -> String {
    format!("{}/{}", r.registry(), r.repository())
}

/// The full name, with the tag and the digest it has.
fn full_name(r: &Reference) -> String {
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

fn exact(image: &Reference, signed: &Reference) -> bool {
    // An image named by tag and digest both is matched by its digest-less name
    // too, as containers/image compares the name it pulls.
    full_name(image) == full_name(signed)
}

fn repo_digest_or_exact(image: &Reference, signed: &Reference) -> bool {
    if image.digest().is_some() && image.tag().is_none() {
        repo_name(image) == repo_name(signed)
    } else {
        exact(image, signed)
    }
}

impl SignedIdentity {
    /// Parses the `signedIdentity` object; None stands for the default.
    pub fn parse(v: Option<&serde_json::Value>) -> Result<Self, String> {
        let Some(v) = v else {
            return Ok(SignedIdentity::MatchRepoDigestOrExact);
        };
        let o = v.as_object().ok_or("signedIdentity is not an object")?;
        let ty = o
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or("signedIdentity has no type")?;
        let what = format!("signedIdentity {ty}");
        let only = |keys: &[&str]| super::only_fields(o, &what, keys);
        let string = |k: &str| -> Result<String, String> {
            o.get(k)
                .and_then(|x| x.as_str())
                .filter(|s| !s.is_empty())
                .map(String::from)
                .ok_or(format!("signedIdentity {ty} needs {k:?}"))
        };
        Ok(match ty {
            "matchExact" => {
                only(&[])?;
                SignedIdentity::MatchExact
            }
            "matchRepoDigestOrExact" => {
                only(&[])?;
                SignedIdentity::MatchRepoDigestOrExact
            }
            "matchRepository" => {
                only(&[])?;
                SignedIdentity::MatchRepository
            }
            "exactReference" => {
                only(&["dockerReference"])?;
                let s = string("dockerReference")?;
                let r = reference::parse(&s).map_err(|e| e.to_string())?;
                // Normalising adds :latest; the policy must have named a tag.
                let last = s.rsplit('/').next().unwrap_or_default();
                if r.tag().is_none() && r.digest().is_none() || !last.contains([':', '@']) {
                    return Err(format!(
                        "signedIdentity exactReference: {s:?} has neither tag nor digest"
                    ));
                }
                SignedIdentity::ExactReference(r)
            }
            "exactRepository" => {
                only(&["dockerRepository"])?;
                let s = string("dockerRepository")?;
                let r = reference::parse(&s).map_err(|e| e.to_string())?;
                SignedIdentity::ExactRepository(repo_name(&r))
            }
            "remapIdentity" => {
                only(&["prefix", "signedPrefix"])?;
                SignedIdentity::RemapIdentity {
                    prefix: string("prefix")?,
                    signed_prefix: string("signedPrefix")?,
                }
            }
            other => return Err(format!("unknown signedIdentity type {other:?}")),
        })
    }

    /// Whether a signature naming `signed` may stand for `image`.
    pub fn matches(&self, image: &Reference, signed: &Reference) -> bool {
        match self {
            SignedIdentity::MatchExact => exact(image, signed),
            SignedIdentity::MatchRepoDigestOrExact => repo_digest_or_exact(image, signed),
            SignedIdentity::MatchRepository => repo_name(image) == repo_name(signed),
            SignedIdentity::ExactReference(r) => exact(r, signed),
            SignedIdentity::ExactRepository(repo) => *repo == repo_name(signed),
            SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            } => {
                let name = full_name(image);
                let remapped = match name.strip_prefix(prefix.as_str()) {
                    // At a component boundary only: example.com/ns does not
                    // remap example.com/nsfoo.
                    Some(rest)
                        if rest.is_empty()
                            || rest.starts_with(['/', ':', '@'])
                            || prefix.ends_with('/') =>
                    {
                        format!("{signed_prefix}{rest}")
                    }
                    _ => return repo_digest_or_exact(image, signed),
                };
                match reference::parse(&remapped) {
                    Ok(r) => repo_digest_or_exact(&r, signed),
                    Err(_) => false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        reference::parse(s).unwrap()
    }

    #[test]
    fn identities_as_the_man_page_says() {
        let d = format!("sha256:{}", "a".repeat(64));
        let tagged = r("example.com/ns/app:1");
        let by_digest = r(&format!("example.com/ns/app@{d}"));
        let other_tag = r("example.com/ns/app:2");
        let other_repo = r("example.com/ns/other:1");
        let id = |j: serde_json::Value| SignedIdentity::parse(Some(&j)).unwrap();

        let def = SignedIdentity::parse(None).unwrap();
        assert!(def.matches(&tagged, &tagged));
        assert!(!def.matches(&tagged, &other_tag));
        assert!(
            def.matches(&by_digest, &other_tag),
            "by digest: any tag of the repo"
        );
        assert!(!def.matches(&by_digest, &other_repo));

        let exact = id(serde_json::json!({"type": "matchExact"}));
        assert!(exact.matches(&tagged, &tagged));
        assert!(!exact.matches(&by_digest, &tagged));

        let repo = id(serde_json::json!({"type": "matchRepository"}));
        assert!(repo.matches(&tagged, &other_tag));
        assert!(!repo.matches(&tagged, &other_repo));

        let er = id(
            serde_json::json!({"type": "exactReference", "dockerReference": "example.com/ns/other:1"}),
        );
        assert!(er.matches(&tagged, &other_repo));
        assert!(!er.matches(&tagged, &tagged));

        let erepo = id(
            serde_json::json!({"type": "exactRepository", "dockerRepository": "example.com/ns/other"}),
        );
        assert!(erepo.matches(&tagged, &r("example.com/ns/other:9")));
        assert!(!erepo.matches(&tagged, &tagged));

        let remap = id(
            serde_json::json!({"type": "remapIdentity", "prefix": "mirror.local/ns", "signedPrefix": "example.com/ns"}),
        );
        assert!(remap.matches(&r("mirror.local/ns/app:1"), &tagged));
        assert!(!remap.matches(&r("mirror.local/ns/app:1"), &other_tag));
        assert!(!remap.matches(&r("mirror.local/nsx/app:1"), &tagged));
        // Not under the prefix: the default rule, unremapped.
        assert!(remap.matches(&tagged, &tagged));

        for bad in [
            serde_json::json!({"type": "matchExact", "extra": 1}),
            serde_json::json!({"type": "exactReference", "dockerReference": "example.com/ns/app"}),
            serde_json::json!({"type": "exactRepository"}),
            serde_json::json!({"type": "remapIdentity", "prefix": "a"}),
            serde_json::json!({"type": "nope"}),
            serde_json::json!("matchExact"),
        ] {
            assert!(SignedIdentity::parse(Some(&bad)).is_err(), "{bad}");
        }
    }
}
