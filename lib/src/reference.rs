//! Image references, normalised the docker way: `busybox` becomes
//! `docker.io/library/busybox:latest`. Parsing is oci-spec's; this module adds the
//! names the store and the tools print.

pub use oci_spec::distribution::Reference;

/// Errors from parsing an image reference.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The string is not a valid image reference.
    #[error("invalid image reference {input:?}: {reason}")]
    Invalid {
        /// What was given.
        input: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// Parses and normalises an image reference. A reference that is only a digest
/// (`sha256:…`) is refused here: that names something in the store, not a registry.
pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
    let invalid = |reason: String| ReferenceError::Invalid {
        input: input.to_string(),
        reason,
    };
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty".into()));
    }
    if trimmed.chars().any(|c| c.is_ascii_uppercase()) && !trimmed.contains('@') {
        // oci-spec's error for this is a bare "invalid format"; say what is wrong.
        let (name, _) = trimmed.rsplit_once(':').unwrap_or((trimmed, ""));
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository names must be lowercase".into()));
        }
    }
    Reference::try_from(trimmed).map_err(|e| invalid(e.to_string()))
}

/// The name an image gets in the store: `registry/repository:tag`, or
/// `registry/repository@digest` when pulled by digest alone.
pub fn store_name(r: &Reference) -> String {
    match (r.tag(), r.digest()) {
        (Some(tag), _) => format!("{}/{}:{}", r.registry(), r.repository(), tag),
        (None, Some(d)) => format!("{}/{}@{}", r.registry(), r.repository(), d),
        (None, None) => format!("{}/{}:latest", r.registry(), r.repository()),
    }
}

/// The line imgpull prints for a pulled image: the name without any digest, then
/// `@` and the digest the registry resolved the reference to.
pub fn pinned(r: &Reference, digest: &str) -> String {
    match r.tag() {
        Some(tag) => format!("{}/{}:{}@{}", r.registry(), r.repository(), tag, digest),
        None => format!("{}/{}@{}", r.registry(), r.repository(), digest),
    }
}

/// Accepts what a user may type for an image already in the store: a full name, a
/// short docker-style name, a `NAME@DIGEST` line as imgpull prints it, or a digest.
/// Returns candidate store names, most specific first.
pub fn store_candidates(input: &str) -> Vec<String> {
    let input = input.trim();
    let mut out = vec![input.to_string()];
    if input.starts_with("sha256:") {
        return out;
    }
    if let Ok(r) = parse(input) {
        out.push(store_name(&r));
        if let (Some(tag), Some(_)) = (r.tag(), r.digest()) {
            out.push(format!("{}/{}:{}", r.registry(), r.repository(), tag));
        }
        if let Some(d) = r.digest() {
            out.push(format!("{}/{}@{}", r.registry(), r.repository(), d));
            out.push(d.to_string());
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_normalise_like_docker() {
        let d = format!("sha256:{}", "a".repeat(64));
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("user/app", "docker.io/user/app:latest"),
            ("localhost/app", "localhost/app:latest"),
            ("127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1"),
            ("quay.io/a/b/c:t", "quay.io/a/b/c:t"),
        ];
        for (input, want) in cases {
            assert_eq!(store_name(&parse(input).unwrap()), want, "{input}");
        }
        let r = parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(store_name(&r), format!("docker.io/library/busybox@{d}"));
        assert_eq!(pinned(&r, &d), format!("docker.io/library/busybox@{d}"));
        let r = parse("busybox:1.36").unwrap();
        assert_eq!(
            pinned(&r, &d),
            format!("docker.io/library/busybox:1.36@{d}")
        );
    }

    #[test]
    fn bad_references_say_why() {
        for bad in ["", "Busybox", "a b", "busybox@sha256:12", "-x"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid image reference"), "{bad}: {e}");
        }
    }

    #[test]
    fn printed_lines_resolve_back_to_store_names() {
        let d = format!("sha256:{}", "b".repeat(64));
        let c = store_candidates(&format!("busybox:1.36@{d}"));
        assert!(c.contains(&"docker.io/library/busybox:1.36".to_string()));
        assert!(c.contains(&d));
    }
}
