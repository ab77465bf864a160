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

/// Parses and normalises an image reference, with docker's grammar (distribution's
/// `reference` package): `[DOMAIN[:PORT]/]PATH[:TAG][@ALGO:HEX]`.
///
/// Hand-written rather than oci-spec's `Reference::try_from`, whose regular
/// expression costs every process about 8 ms of CPU to compile (several times that
/// cold); the unit tests hold it to oci-spec's answers.
pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
    let invalid = |reason: &str| ReferenceError::Invalid {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(invalid("empty"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, d)) => (rest, Some(d)),
        None => (s, None),
    };
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        if !valid_tag(t) {
            return Err(invalid("invalid tag format"));
        }
    }
    if let Some(d) = digest {
        check_digest(d).map_err(invalid)?;
    }
    let parts: Vec<&str> = name.split('/').collect();
    let all_paths = parts.iter().all(|p| valid_path_component(p));
    let domain_first = parts.len() > 1
        && valid_domain(parts[0])
        && parts[1..].iter().all(|p| valid_path_component(p));
    if !all_paths && !domain_first {
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid("repository names must be lowercase"));
        }
        return Err(invalid("invalid reference format"));
    }
    let (registry, repository) = split_domain(name);
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(invalid("repository names must be lowercase"));
    }
    if repository.len() > 255 {
        return Err(invalid(
            "repository name must not be more than 255 characters",
        ));
    }
    let (tag, digest) = (tag.map(String::from), digest.map(String::from));
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t, d),
        (None, Some(d)) => Reference::with_digest(registry, repository, d),
        (Some(t), None) => Reference::with_tag(registry, repository, t),
        (None, None) => Reference::with_tag(registry, repository, "latest".into()),
    })
}

/// Whether `path` is a repository path as the distribution spec has it
/// (`library/busybox`: lowercase components joined by `/`, at most 255 bytes), with
/// no registry host in front.
pub fn valid_repository(path: &str) -> bool {
    path.len() <= 255 && path.split('/').all(valid_path_component)
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn valid_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or any number of "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

/// `COMPONENT(.COMPONENT)*(:PORT)?`, a component being `[a-zA-Z0-9]` or
/// `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit())) {
        return false;
    }
    host.split('.').all(|c| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    })
}

/// Whether `t` is a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|c| word(*c) || *c == b'.' || *c == b'-')
}

fn check_digest(d: &str) -> Result<(), &'static str> {
    let (algo, hex) = d.split_once(':').ok_or("invalid checksum digest format")?;
    let algo_ok = algo.split(['-', '_', '+', '.']).all(|c| {
        let b = c.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(|x| x.is_ascii_alphanumeric())
    });
    if !algo_ok || hex.len() < 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err("invalid checksum digest format");
    }
    let want = match algo {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err("unsupported digest algorithm"),
    };
    if hex.len() != want {
        return Err("invalid checksum digest length");
    }
    Ok(())
}

/// docker's split: the first component is a registry when it has a `.` or `:` or
/// is `localhost`; docker hub's official images live under `library/`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((left, right)) if left.contains(['.', ':']) || left == "localhost" => {
            (left.to_string(), right.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
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
    fn agrees_with_oci_spec_on_what_it_accepts() {
        let h64 = "a".repeat(64);
        let inputs = [
            "busybox".to_string(),
            "busybox:1.36".into(),
            "test.com:tag".into(),
            "test.com:5000".into(),
            "test.com/repo:tag".into(),
            "test:5000/repo".into(),
            "test:5000/repo:tag".into(),
            "localhost/app".into(),
            "localhost:5000/a/b/c:v1.2-rc_3".into(),
            "index.docker.io/foo".into(),
            "docker.io/library/busybox".into(),
            "a-b/c__d/e.f/g---h".into(),
            "Registry.Example.com:443/ns/img".into(),
            format!("busybox@sha256:{h64}"),
            format!("busybox:tag@sha256:{h64}"),
            format!("127.0.0.1:5000/x@sha256:{h64}"),
            format!("x@sha512:{}", "b".repeat(128)),
            format!("x@sha256:{}", "a".repeat(63)),
            format!("x@md5:{}", "a".repeat(32)),
            "x@sha256:xyz".into(),
            "a//b".into(),
            "-a/b".into(),
            "a/b-".into(),
            "a/b:".into(),
            "a/b:-tag".into(),
            format!("a:{}", "t".repeat(129)),
            "a..b".into(),
            "a___b".into(),
            "host:/x".into(),
            "host:12a/x".into(),
            "a b".into(),
            "/a".into(),
            "a/".into(),
            ":tag".into(),
            "a@".into(),
        ];
        for input in &inputs {
            let ours = parse(input).map(|r| r.to_string());
            let theirs = Reference::try_from(input.as_str()).map(|r| r.to_string());
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{input}: ours {ours:?}, oci-spec {theirs:?}"
            );
            if let (Ok(a), Ok(b)) = (ours, theirs) {
                assert_eq!(a, b, "{input}");
            }
        }
        // Random strings over the grammar's alphabet.
        let alphabet = b"ab0.-_:/@Z";
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 12) as usize;
            let input: String = (0..len)
                .map(|i| char::from(alphabet[((x >> (i * 4)) % alphabet.len() as u64) as usize]))
                .collect();
            if input.contains('Z') {
                continue; // uppercase: covered below, where the two differ on purpose
            }
            let ours = parse(&input).map(|r| r.to_string());
            let theirs = Reference::try_from(input.as_str()).map(|r| r.to_string());
            assert_eq!(ours.ok(), theirs.ok(), "{input:?}");
        }
        // Stricter than oci-spec: docker refuses uppercase repository names.
        assert!(parse("Foo/bar").is_err());
        assert!(Reference::try_from("Foo/bar").is_ok());
    }

    #[test]
    fn printed_lines_resolve_back_to_store_names() {
        let d = format!("sha256:{}", "b".repeat(64));
        let c = store_candidates(&format!("busybox:1.36@{d}"));
        assert!(c.contains(&"docker.io/library/busybox:1.36".to_string()));
        assert!(c.contains(&d));
    }
}
