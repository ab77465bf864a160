//! The registry API as a pull speaks it (OCI distribution-spec, GET only):
//! manifests and blobs over one HTTP client per registry set-up.
//!
//! Nothing is sent before a registry asks for it: no `/v2/` ping ahead of each
//! request, no credentials to a registry that does not want them. A 401 is
//! answered once, as its challenge says: Basic with the pull's credentials, or a
//! Bearer token fetched from the realm it names for `repository:NAME:pull`. The
//! answer is kept per registry and repository for the requests that follow, until
//! the token expires or the registry refuses it. A client certificate
//! (containers-certs.d(5) `*.cert`/`*.key`) is presented when the TLS server asks.

use crate::distribution::reference::Reference;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RANGE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Credentials for a registry: none, or a user name and password (or token).
#[derive(Clone, PartialEq, Eq)]
pub(super) enum RegistryAuth {
    Anonymous,
    Basic(String, String),
}

impl RegistryAuth {
    /// A digest of the credentials, to tell apart what they got.
    fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        if let RegistryAuth::Basic(user, password) = self {
            h.update(b"basic\0");
            h.update(user.as_bytes());
            h.update(b"\0");
            h.update(password.as_bytes());
        }
        h.finalize().into()
    }
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryAuth::Anonymous => f.write_str("Anonymous"),
            RegistryAuth::Basic(user, _) => write!(f, "Basic({user:?}, <redacted>)"),
        }
    }
}

/// Which registries are spoken to over plain HTTP.
#[derive(Debug, Clone)]
pub(super) enum Protocol {
    /// HTTPS, except for these hosts (`HOST[:PORT]`).
    HttpsExcept(Vec<String>),
    /// Plain HTTP to every host (peers).
    Http,
}

/// How a client is made.
pub(super) struct Setup<'a> {
    pub(super) protocol: Protocol,
    pub(super) stall_timeout: Duration,
    pub(super) connect_timeout: Duration,
    /// CAs (DER) trusted besides the system's.
    pub(super) extra_roots: &'a [Vec<u8>],
    /// A client certificate chain and its key, PEM.
    pub(super) identity: Option<&'a [u8]>,
}

/// Why a request failed.
#[derive(Debug)]
pub(super) enum HttpError {
    /// No response: connect, TLS, a timeout, or the body broke off.
    Request(reqwest::Error),
    /// A status other than success, with the registry's errors (code, message)
    /// when its body holds a distribution-spec error envelope, else its first
    /// words.
    Status {
        code: u16,
        errors: Vec<(String, String)>,
        text: String,
    },
    /// Still 401 after the challenge was answered, or a challenge this pull
    /// cannot answer (Basic without credentials).
    Unauthorized { challenge: String },
    /// The token server refused the credentials or sent no token.
    Token { realm: String, message: String },
    /// A body over the bound it is read with.
    TooLarge { size: u64 },
    /// An answer that breaks the protocol (a range that is not the one asked).
    Protocol(String),
}

/// An authorization kept for a registry and repository.
struct Kept {
    value: HeaderValue,
    until: Option<Instant>,
}

/// What an authorization is kept for: the registry host, the repository, and
/// whose credentials got it (a digest of them), so that a pull never goes with
/// a token that another pull's credentials got.
type KeptFor = (String, String, [u8; 32]);

/// A registry client. Clones share the connections and the kept authorizations.
#[derive(Clone)]
pub(super) struct Client {
    http: reqwest::Client,
    protocol: Arc<Protocol>,
    kept: Arc<Mutex<HashMap<KeptFor, Kept>>>,
}

/// A blob's body as the registry sends it.
pub(super) struct BlobBody {
    /// Whether the registry honoured the range (206): the bytes start at the
    /// offset asked for; otherwise they start at 0.
    pub(super) partial: bool,
    pub(super) response: reqwest::Response,
}

/// What is read of an error body: enough for the registry's message.
const ERROR_BODY_LIMIT: u64 = 64 << 10;
/// What is read of a token server's answer.
const TOKEN_BODY_LIMIT: u64 = 1 << 20;
/// How long a token is kept when the server does not say (distribution's token
/// spec: 60 seconds).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

impl Client {
    pub(super) fn new(setup: Setup<'_>) -> Result<Client, reqwest::Error> {
        let mut b = reqwest::Client::builder()
            .read_timeout(setup.stall_timeout)
            .connect_timeout(setup.connect_timeout)
            .user_agent(concat!("crikit/", env!("CARGO_PKG_VERSION")));
        let roots = setup
            .extra_roots
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()?;
        if !roots.is_empty() {
            b = b.tls_certs_merge(roots);
        }
        if let Some(pem) = setup.identity {
            b = b.identity(reqwest::Identity::from_pem(pem)?);
        }
        Ok(Client {
            http: b.build()?,
            protocol: Arc::new(setup.protocol),
            kept: Default::default(),
        })
    }

    fn scheme(&self, host: &str) -> &'static str {
        match &*self.protocol {
            Protocol::Http => "http",
            Protocol::HttpsExcept(plain) if plain.iter().any(|h| h == host) => "http",
            Protocol::HttpsExcept(_) => "https",
        }
    }

    /// The manifest `r` names (its digest, else its tag), at most `limit` bytes.
    pub(super) async fn manifest(
        &self,
        r: &Reference,
        auth: &RegistryAuth,
        accept: &[&str],
        limit: u64,
    ) -> Result<Vec<u8>, HttpError> {
        let what = r.digest().or(r.tag()).unwrap_or("latest");
        let mut headers = HeaderMap::new();
        let accept = HeaderValue::from_str(&accept.join(", "))
            .map_err(|_| HttpError::Protocol("an Accept header that is not one".into()))?;
        headers.insert(ACCEPT, accept);
        let response = self.get(r, "manifests", what, auth, headers).await?;
        read_bounded(response, limit).await
    }

    /// The blob `digest` of `r`'s repository from byte `offset` on: a range is
    /// always asked for, so a registry that honours it answers 206. A peer is told
    /// the registry the blob comes from (`ns`, sent as `?ns=`).
    pub(super) async fn blob(
        &self,
        r: &Reference,
        digest: &str,
        offset: u64,
        auth: &RegistryAuth,
        ns: Option<&str>,
    ) -> Result<BlobBody, HttpError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            RANGE,
            HeaderValue::from_str(&format!("bytes={offset}-"))
                .map_err(|_| HttpError::Protocol("a range that is not one".into()))?,
        );
        let what = match ns {
            // A registry host is letters, digits, dots, dashes, a port and IPv6
            // brackets: nothing a query needs escaped.
            Some(ns) => format!("{digest}?ns={ns}"),
            None => digest.to_string(),
        };
        let response = self.get(r, "blobs", &what, auth, headers).await?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            return Ok(BlobBody {
                partial: false,
                response,
            });
        }
        // A 206 must be the range asked for, or its bytes would land elsewhere.
        let start = response
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if start != Some(offset) {
            return Err(HttpError::Protocol(format!(
                "asked for bytes from {offset}, answered 206 with Content-Range {:?}",
                response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("(none)")
            )));
        }
        Ok(BlobBody {
            partial: true,
            response,
        })
    }

    /// GET `/v2/REPO/KIND/WHAT`, answering the registry's challenge once.
    async fn get(
        &self,
        r: &Reference,
        kind: &str,
        what: &str,
        auth: &RegistryAuth,
        headers: HeaderMap,
    ) -> Result<reqwest::Response, HttpError> {
        let host = r.resolve_registry().to_string();
        let url = format!(
            "{}://{host}/v2/{}/{kind}/{what}",
            self.scheme(&host),
            r.repository()
        );
        let key = (host, r.repository().to_string(), auth.fingerprint());
        let kept = self.kept(&key);
        let response = self.send(&url, &headers, kept.as_ref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return success(response).await;
        }
        let challenges: Vec<String> = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(String::from)
            .collect();
        // Read out, so the connection can be used again.
        let _ = read_bounded(response, ERROR_BODY_LIMIT).await;
        let (value, lifetime) = self.answer(&challenges, &key.1, auth).await?;
        if kept.as_ref() == Some(&value) {
            // What was refused would be sent again.
            self.forget(&key);
            return Err(HttpError::Unauthorized {
                challenge: challenges.join(", "),
            });
        }
        let response = self.send(&url, &headers, Some(&value)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            self.forget(&key);
            let _ = read_bounded(response, ERROR_BODY_LIMIT).await;
            return Err(HttpError::Unauthorized {
                challenge: challenges.join(", "),
            });
        }
        self.keep(key, value, lifetime);
        success(response).await
    }

    async fn send(
        &self,
        url: &str,
        headers: &HeaderMap,
        authorization: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, HttpError> {
        let mut req = self.http.get(url).headers(headers.clone());
        if let Some(a) = authorization {
            req = req.header(AUTHORIZATION, a.clone());
        }
        req.send().await.map_err(HttpError::Request)
    }

    /// The Authorization that answers `challenges` for `repository`, and how long
    /// it may be kept.
    async fn answer(
        &self,
        challenges: &[String],
        repository: &str,
        auth: &RegistryAuth,
    ) -> Result<(HeaderValue, Option<Duration>), HttpError> {
        let unauthorized = || HttpError::Unauthorized {
            challenge: challenges.join(", "),
        };
        let mut basic = false;
        for header in challenges {
            let Ok(parsed) = http_auth::parse_challenges(header) else {
                continue;
            };
            for c in parsed {
                if c.scheme.eq_ignore_ascii_case("bearer") {
                    let param = |name: &str| {
                        c.params
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v.to_unescaped())
                    };
                    let Some(realm) = param("realm") else {
                        continue;
                    };
                    let scope = format!("repository:{repository}:pull");
                    return self.token(&realm, param("service"), &scope, auth).await;
                }
                basic |= c.scheme.eq_ignore_ascii_case("basic");
            }
        }
        match auth {
            RegistryAuth::Basic(user, password) if basic => {
                Ok((basic_value(user, password).ok_or_else(unauthorized)?, None))
            }
            _ => Err(unauthorized()),
        }
    }

    /// A token from `realm` for `scope`, sent the pull's credentials when it has
    /// some (distribution's token authentication, GET).
    async fn token(
        &self,
        realm: &str,
        service: Option<String>,
        scope: &str,
        auth: &RegistryAuth,
    ) -> Result<(HeaderValue, Option<Duration>), HttpError> {
        let refused = |message: String| HttpError::Token {
            realm: realm.to_string(),
            message,
        };
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| refused(format!("the realm is not a URL: {e}")))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(refused("the realm is not an http(s) URL".into()));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = &service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut req = self.http.get(url);
        if let RegistryAuth::Basic(user, password) = auth {
            req = req.basic_auth(user, Some(password));
        }
        let response = req.send().await.map_err(HttpError::Request)?;
        let status = response.status();
        let body = read_bounded(response, TOKEN_BODY_LIMIT)
            .await
            .map_err(|e| match e {
                HttpError::TooLarge { size } => refused(format!("an answer of {size} bytes")),
                other => other,
            })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let errors = envelope(&body);
            let message = match errors.first() {
                Some((code, m)) => format!("{code}: {m}"),
                None => text.split_whitespace().collect::<Vec<_>>().join(" "),
            };
            return Err(refused(format!("{} {message}", status.as_u16())));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| refused(format!("the answer is not a token: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| refused("the answer holds no token".into()))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| refused("the token is not a header value".into()))?;
        value.set_sensitive(true);
        let lifetime = answer
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok((value, Some(lifetime)))
    }

    fn kept(&self, key: &KeptFor) -> Option<HeaderValue> {
        let kept = crate::sync::lock(&self.kept);
        kept.get(key)
            .filter(|k| k.until.is_none_or(|t| Instant::now() < t))
            .map(|k| k.value.clone())
    }

    fn keep(&self, key: KeptFor, value: HeaderValue, lifetime: Option<Duration>) {
        // A token is dropped a little before it runs out, not on its last second.
        let until = lifetime.map(|l| Instant::now() + l.saturating_sub(l / 10));
        crate::sync::lock(&self.kept).insert(key, Kept { value, until });
    }

    fn forget(&self, key: &KeptFor) {
        crate::sync::lock(&self.kept).remove(key);
    }
}

fn basic_value(user: &str, password: &str) -> Option<HeaderValue> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut v = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// `response` when it is a success, else its status and what its body says.
async fn success(response: reqwest::Response) -> Result<reqwest::Response, HttpError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = read_bounded(response, ERROR_BODY_LIMIT)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    Err(HttpError::Status {
        code: status.as_u16(),
        errors: envelope(&body),
        text: text.split_whitespace().collect::<Vec<_>>().join(" "),
    })
}

/// The (code, message) pairs of a distribution-spec error envelope.
fn envelope(body: &[u8]) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    serde_json::from_slice::<Envelope>(body)
        .map(|e| {
            e.errors
                .into_iter()
                .map(|x| (x.code.unwrap_or_default(), x.message.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// The whole body, or TooLarge once it passes `limit` bytes (before reading, when
/// its length says so).
pub(super) async fn read_bounded(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, HttpError> {
    if let Some(len) = response.content_length().filter(|l| *l > limit) {
        return Err(HttpError::TooLarge { size: len });
    }
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(HttpError::Request)? {
        out.extend_from_slice(&chunk);
        if out.len() as u64 > limit {
            return Err(HttpError::TooLarge {
                size: out.len() as u64,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_envelopes_give_their_codes_and_messages() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}},{"code":"DENIED"}]}"#;
        assert_eq!(
            envelope(body),
            vec![
                (
                    "MANIFEST_UNKNOWN".to_string(),
                    "manifest unknown".to_string()
                ),
                ("DENIED".to_string(), String::new())
            ]
        );
        assert!(envelope(b"<html>nope</html>").is_empty());
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let a = RegistryAuth::Basic("me".into(), "hunter2".into());
        assert!(!format!("{a:?}").contains("hunter2"));
        let v = basic_value("me", "hunter2").unwrap();
        assert!(v.is_sensitive());
        assert_eq!(v.to_str().unwrap(), "Basic bWU6aHVudGVyMg==");
    }
}
