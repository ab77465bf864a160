//! Content digests (`sha256:<hex>`) and a hasher that computes them while streaming.
//!
//! Digests come from registries and manifests, which are hostile input: a digest is
//! only ever built through [`Digest::parse`], which accepts nothing but `sha256:`
//! followed by 64 lowercase hex digits, so a digest can be used as a file name.

use sha2::Digest as _;
use std::fmt;

/// Errors from parsing a digest string.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The string is not `algorithm:hex`.
    #[error("{0:?} is not a digest (want sha256:<64 hex digits>)")]
    Malformed(String),
    /// The algorithm is not sha256.
    #[error("digest {0:?} uses an unsupported algorithm (only sha256 is supported)")]
    UnsupportedAlgorithm(String),
}

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates a digest string.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(s.to_string()))?;
        if algo != "sha256" {
            if !algo.is_empty() && algo.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+') {
                return Err(DigestError::UnsupportedAlgorithm(s.to_string()));
            }
            return Err(DigestError::Malformed(s.to_string()));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::Malformed(s.to_string()));
        }
        Ok(Digest(s.to_string()))
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        let mut h = Hasher::new();
        h.update(data);
        h.finish()
    }

    /// The hex part, without the algorithm; safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The whole digest, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for humans: the first 12 hex digits.
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

/// SHA-256 over a stream of bytes. The `sha2` crate picks the CPU's SHA extensions at
/// run time when the processor has them.
#[derive(Clone, Default)]
pub struct Hasher(sha2::Sha256);

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let out = self.0.finalize();
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in out.iter() {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        Digest(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_matches_known_value() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_rejects_paths_and_other_algorithms() {
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha256:{}", "a".repeat(63))).is_err());
        assert!(matches!(
            Digest::parse(&format!("sha512:{}", "a".repeat(128))),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        let ok = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(Digest::parse(&ok).unwrap().hex(), "ab".repeat(32));
    }
}
