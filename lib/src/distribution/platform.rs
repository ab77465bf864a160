//! Platforms (`os/arch[/variant]`) and choosing one manifest from an image index.

use std::fmt;

/// Errors from parsing a platform string.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// Not `os/arch[/variant]`.
    #[error("invalid platform {0:?} (want OS/ARCH[/VARIANT], e.g. linux/arm64/v8)")]
    Invalid(String),
}

/// A target platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`, …
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`, …
    pub architecture: String,
    /// `v7`, `v8`, … when it matters.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on, in GOARCH terms.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(String::from),
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Self, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(PlatformError::Invalid(s.to_string())),
        }
    }

    /// How well an index entry's platform fits: `None` when it does not, higher is
    /// better. An exact variant beats an entry with no variant; arm64 treats a missing
    /// variant as v8, as containerd does.
    pub fn score(&self, os: &str, arch: &str, variant: Option<&str>) -> Option<u8> {
        if os != self.os || arch != self.architecture {
            return None;
        }
        let norm = |v: Option<&str>| -> Option<String> {
            match (arch, v) {
                ("arm64", None) => Some("v8".into()),
                (_, v) => v.map(String::from),
            }
        };
        let (want, have) = (norm(self.variant.as_deref()), norm(variant));
        match (want, have) {
            (None, None) => Some(2),
            (Some(w), Some(h)) if w == h => Some(2),
            (None, Some(_)) => Some(1),
            (Some(_), None) => Some(1),
            _ => None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert_eq!(p.score("linux", "arm64", Some("v8")), Some(2));
        assert_eq!(p.score("linux", "amd64", None), None);
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(p.score("linux", "arm", Some("v6")), None);
        assert_eq!(p.score("linux", "arm", Some("v7")), Some(2));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
    }
}
