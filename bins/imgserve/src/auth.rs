//! Optional client authentication: HTTP Basic against `USER:PASSWORD` lines, and
//! static bearer tokens, one per line. With neither configured every request is
//! served, except one that carries credentials: they were meant for some
//! registry, and a client that sends them here (a runtime passing a pod's pull
//! secret to every mirror) is told so rather than served. Secrets are compared
//! in constant time.

use base64::Engine as _;
use std::path::Path;

/// A credentials file that does not do.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct AuthFileError {
    /// The file.
    pub path: std::path::PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// Who may pull.
#[derive(Debug, Default, Clone)]
pub struct Auth {
    basic: Vec<(String, String)>,
    bearer: Vec<String>,
}

fn lines(path: &Path) -> Result<Vec<String>, AuthFileError> {
    let bad = |reason: String| AuthFileError {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let out: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if out.is_empty() {
        return Err(bad("no entry in it".into()));
    }
    Ok(out)
}

impl Auth {
    /// Reads the Basic credentials file (`USER:PASSWORD` per line) and the bearer
    /// token file (a token per line), either optional; `#` starts a comment line.
    pub fn load(basic: Option<&Path>, bearer: Option<&Path>) -> Result<Auth, AuthFileError> {
        let mut auth = Auth::default();
        if let Some(p) = basic {
            for (i, l) in lines(p)?.into_iter().enumerate() {
                let Some((u, pw)) = l
                    .split_once(':')
                    .filter(|(u, pw)| !u.is_empty() && !pw.is_empty())
                else {
                    return Err(AuthFileError {
                        path: p.to_path_buf(),
                        reason: format!("line {} is not USER:PASSWORD", i + 1),
                    });
                };
                auth.basic.push((u.to_string(), pw.to_string()));
            }
        }
        if let Some(p) = bearer {
            auth.bearer = lines(p)?;
        }
        Ok(auth)
    }

    /// Whether the request may go on.
    pub fn check(&self, authorization: Option<&str>) -> Verdict {
        if self.basic.is_empty() && self.bearer.is_empty() {
            return match authorization {
                Some(_) => Verdict::Unwanted,
                None => Verdict::Pass,
            };
        }
        let ok = authorization.is_some_and(|h| {
            let (scheme, value) = h.trim().split_once(' ').unwrap_or((h, ""));
            let value = value.trim();
            if scheme.eq_ignore_ascii_case("basic") {
                let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(value) else {
                    return false;
                };
                // Every entry compared, so timing says nothing of which matched.
                self.basic.iter().fold(false, |found, (u, p)| {
                    let want = format!("{u}:{p}");
                    found | eq(want.as_bytes(), &raw)
                })
            } else if scheme.eq_ignore_ascii_case("bearer") {
                self.bearer
                    .iter()
                    .fold(false, |found, t| found | eq(t.as_bytes(), value.as_bytes()))
            } else {
                false
            }
        });
        if ok {
            Verdict::Pass
        } else if !self.basic.is_empty() {
            Verdict::Challenge("Basic realm=\"imgserve\"".into())
        } else {
            Verdict::Challenge("Bearer realm=\"imgserve\"".into())
        }
    }
}

/// What [`Auth::check`] says of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Served.
    Pass,
    /// A 401 with this WWW-Authenticate challenge.
    Challenge(String),
    /// Credentials sent to an imgserve that takes none: refused.
    Unwanted,
}

/// Constant-time equality for equal lengths (a length difference shows).
fn eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_bearer() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("basic");
        let t = dir.path().join("tokens");
        std::fs::write(&b, "# pullers\nnode:s3cret\n").unwrap();
        std::fs::write(&t, "tok-1\n").unwrap();
        let a = Auth::load(Some(&b), Some(&t)).unwrap();
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(a.check(Some(&basic("node:s3cret"))), Verdict::Pass);
        assert_eq!(a.check(Some("Bearer tok-1")), Verdict::Pass);
        let challenge = Verdict::Challenge("Basic realm=\"imgserve\"".into());
        for bad in [
            basic("node:wrong"),
            "Bearer tok-2".into(),
            "Basic !!".into(),
        ] {
            assert_eq!(a.check(Some(&bad)), challenge);
        }
        assert_eq!(a.check(None), challenge);
        // Without credentials configured: served, unless some are sent anyway.
        assert_eq!(Auth::default().check(None), Verdict::Pass);
        assert_eq!(
            Auth::default().check(Some(&basic("pod:secret"))),
            Verdict::Unwanted
        );
        assert_eq!(Auth::default().check(Some("Bearer x")), Verdict::Unwanted);
        std::fs::write(&b, "nopassword\n").unwrap();
        let e = Auth::load(Some(&b), None).unwrap_err();
        assert!(e.to_string().contains("line 1 is not USER:PASSWORD"), "{e}");
    }
}
