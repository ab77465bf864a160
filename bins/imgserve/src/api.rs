//! The OCI distribution API, pull side, over a [`Views`] of the store: what a parsed
//! request gets, with no sockets in sight.
//!
//! Paths are split on `/` before anything is decoded, and every part is checked
//! against the spec's grammar (repository components, tags, `sha256:` digests), so a
//! request never names a file: blobs are opened by digest only. Write methods answer
//! 405 UNSUPPORTED.

use crate::auth::{Auth, Verdict};
use crate::view::{Lookup, Views};
use crikit::distribution::digest::Digest;
use std::fs::File;

/// A request as the API sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// `GET`, `HEAD`, …
    pub method: &'a str,
    /// The request target: path and query.
    pub target: &'a str,
    /// The `Range` header, if any.
    pub range: Option<&'a str>,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
}

/// A response body.
#[derive(Debug)]
pub enum Body {
    /// No body.
    Empty,
    /// Bytes in memory (JSON documents, errors).
    Bytes(Vec<u8>),
    /// `len` bytes of `file` from `offset`: a blob or manifest, sent from the file.
    File {
        /// The open file.
        file: File,
        /// Where to start.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// A blob still arriving from upstream, sent as it does.
    Growing(Box<crate::growing::Growing>),
}

impl Body {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
            Body::Growing(g) => g.len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A response.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// Headers besides Content-Length and Connection.
    pub headers: Vec<(&'static str, String)>,
    /// The body; for HEAD its length is sent and its bytes are not.
    pub body: Body,
    /// The length to announce when it is not the body's (HEAD).
    pub content_length: Option<u64>,
    /// A blob GET the store cannot answer that names its upstream (`?ns=`): what
    /// a fetch for peers would need.
    pub missing_blob: Option<Box<MissingBlob>>,
}

/// A blob asked for and not stored, with where it comes from.
#[derive(Debug, Clone)]
pub struct MissingBlob {
    /// The upstream registry (`?ns=`).
    pub registry: String,
    /// The repository of the request path.
    pub repository: String,
    /// The blob.
    pub digest: Digest,
    /// The Range header, if any.
    pub range: Option<String>,
}

impl Response {
    fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            content_length: None,
            missing_blob: None,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The same response with one more header.
    pub fn with_header(self, name: &'static str, value: impl Into<String>) -> Response {
        self.header(name, value)
    }

    /// A blob's bytes as they arrive from upstream: `body` (from `start` of a blob
    /// of `size` bytes), 206 when a range was asked.
    pub fn growing(body: crate::growing::Growing, start: u64, size: u64, ranged: bool) -> Response {
        let mut r = Response::new(if ranged { 206 } else { 200 })
            .header("Content-Type", "application/octet-stream")
            .header("Accept-Ranges", "bytes");
        if ranged {
            r = r.header(
                "Content-Range",
                format!("bytes {start}-{}/{size}", size.saturating_sub(1)),
            );
        }
        r.body = Body::Growing(Box::new(body));
        r
    }

    fn json(status: u16, v: &serde_json::Value) -> Response {
        let mut r = Response::new(status).header("Content-Type", "application/json");
        r.body = Body::Bytes(v.to_string().into_bytes());
        r
    }

    /// An error in the spec's shape: `{"errors": [{"code", "message", "detail"}]}`.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
        Response::json(
            status,
            &serde_json::json!({"errors": [{"code": code, "message": message.into(), "detail": null}]}),
        )
    }

    /// The length sent in Content-Length.
    pub fn length(&self) -> u64 {
        self.content_length.unwrap_or_else(|| self.body.len())
    }
}

/// Answers `req` from `views`.
pub fn handle(views: &Views, auth: &Auth, req: &Request<'_>) -> Response {
    let mut r = route(views, auth, req);
    // HEAD gets every answer's headers and length and none of its bytes, errors
    // included: a body there would be read as the next response.
    if req.method == "HEAD" {
        r = headless(r);
    }
    r.header("Docker-Distribution-API-Version", "registry/2.0")
}

/// An answer to a request that never reached the API (malformed, over a limit),
/// with the headers every answer carries.
pub fn protocol_error(status: u16, message: &str) -> Response {
    Response::error(status, "BAD_REQUEST", message)
        .header("Docker-Distribution-API-Version", "registry/2.0")
}

fn route(views: &Views, auth: &Auth, req: &Request<'_>) -> Response {
    match auth.check(req.authorization) {
        Verdict::Pass => {}
        Verdict::Challenge(challenge) => {
            return Response::error(401, "UNAUTHORIZED", "authentication required")
                .header("WWW-Authenticate", challenge);
        }
        Verdict::Unwanted => {
            return Response::error(
                403,
                "DENIED",
                "this imgserve takes no credentials: they were meant for a registry, not for it",
            );
        }
    }
    let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
    let Some(rest) = path
        .strip_prefix("/v2/")
        .or(if path == "/v2" { Some("") } else { None })
    else {
        return Response::error(404, "NOT_FOUND", "not an OCI distribution path");
    };
    let read = matches!(req.method, "GET" | "HEAD");
    let parts: Vec<&str> = rest.split('/').collect();
    let ns = query_param(query, "ns");
    // Writes first: whatever their path, they are refused the same way.
    if !read {
        return Response::error(
            405,
            "UNSUPPORTED",
            format!("{} is not supported: imgserve is read-only", req.method),
        )
        .header("Allow", "GET, HEAD");
    }
    if parts.windows(2).any(|w| w == ["blobs", "uploads"]) {
        return Response::error(405, "UNSUPPORTED", "uploads are not supported");
    }
    match parts.as_slice() {
        [] | [""] => Response::json(200, &serde_json::json!({})),
        ["_catalog"] => {
            let view = views.get();
            let (list, next) = page(view.repositories(), query);
            let r = Response::json(200, &serde_json::json!({"repositories": list}));
            match next {
                Some((n, end)) => r.header("Link", next_link("/v2/_catalog", n, end, "")),
                None => r,
            }
        }
        [name @ .., "manifests", reference] => {
            with_name(name, |repo| manifest(views, repo, reference, ns))
        }
        [name @ .., "blobs", digest] => with_name(name, |repo| {
            let mut r = blob(views, digest, req.range);
            if r.status == 404 && req.method == "GET" {
                r.missing_blob = ns.zip(path_digest(digest)).map(|(registry, digest)| {
                    Box::new(MissingBlob {
                        registry,
                        repository: repo.to_string(),
                        digest,
                        range: req.range.map(String::from),
                    })
                });
            }
            r
        }),
        [name @ .., "tags", "list"] => with_name(name, |repo| tags(views, repo, ns, query)),
        _ => Response::error(404, "NOT_FOUND", "no such endpoint"),
    }
}

/// Checks the repository path before `f` gets it.
fn with_name(parts: &[&str], f: impl FnOnce(&str) -> Response) -> Response {
    let repo = parts.join("/");
    if parts.is_empty() || !crikit::distribution::reference::valid_repository(&repo) {
        return Response::error(
            400,
            "NAME_INVALID",
            format!("invalid repository name {:?}", truncate(&repo)),
        );
    }
    f(&repo)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(100) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A HEAD answer: the GET's headers and length, no body.
fn headless(mut r: Response) -> Response {
    if r.content_length.is_none() {
        r.content_length = Some(r.body.len());
    }
    r.body = Body::Empty;
    r
}

/// N of `bytes=N-`, the one range form a fetch for peers answers.
pub fn range_start(range: &str) -> Option<u64> {
    range
        .trim()
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

/// A digest in a path: `sha256:` and 64 hex digits, `%3A` for the colon accepted.
fn path_digest(s: &str) -> Option<Digest> {
    let s = s.replacen("%3A", ":", 1).replacen("%3a", ":", 1);
    Digest::parse(&s).ok()
}

/// A `key=value` of a query string (`ns=docker.io`), the value percent-decoded.
fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn manifest(views: &Views, repo: &str, reference: &str, ns: Option<String>) -> Response {
    let view = views.get();
    let found = if reference.contains(':') || reference.to_ascii_lowercase().contains("%3a") {
        let Some(d) = path_digest(reference) else {
            return Response::error(
                400,
                "DIGEST_INVALID",
                format!("{:?} is not a sha256 digest", truncate(reference)),
            );
        };
        view.manifest(&d).cloned()
    } else if crikit::distribution::reference::valid_tag(reference) {
        match view.tag(repo, reference, ns.as_deref()) {
            Lookup::Found(m) => Some(m.clone()),
            Lookup::Missing => None,
            Lookup::Ambiguous(regs) => {
                return Response::error(
                    404,
                    "MANIFEST_UNKNOWN",
                    format!(
                        "{repo}:{reference} is stored from {}: name the upstream with ?ns=",
                        regs.join(", ")
                    ),
                )
            }
        }
    } else {
        return Response::error(
            400,
            "TAG_INVALID",
            format!("{:?} is not a tag or digest", truncate(reference)),
        );
    };
    let Some(m) = found else {
        return Response::error(
            404,
            "MANIFEST_UNKNOWN",
            format!("manifest {repo}:{reference} is not in the store"),
        );
    };
    match open(views, &m.digest) {
        Err(r) => r,
        Ok(Some((file, len))) => {
            let mut r = Response::new(200)
                .header("Content-Type", m.media_type.clone())
                .header("Docker-Content-Digest", m.digest.to_string())
                .header("ETag", format!("\"{}\"", m.digest));
            r.body = Body::File {
                file,
                offset: 0,
                len,
            };
            r
        }
        Ok(None) => Response::error(
            404,
            "MANIFEST_UNKNOWN",
            format!("manifest {} is not in the store", m.digest),
        ),
    }
}

/// Opens a blob of the store; its file and size, None when it is not there, or
/// the answer to give when it could not be read (out of file descriptors, say).
fn open(views: &Views, d: &Digest) -> Result<Option<(File, u64)>, Response> {
    let unreadable = |e: std::io::Error| {
        tracing::warn!("reading blob {d}: {e}");
        Response::error(503, "UNAVAILABLE", format!("blob {d} cannot be read now"))
            .header("Retry-After", "1")
    };
    let f = match File::open(views.blob_path(d)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let meta = f.metadata().map_err(unreadable)?;
    Ok(meta.is_file().then_some((f, meta.len())))
}

fn blob(views: &Views, digest: &str, range: Option<&str>) -> Response {
    let Some(d) = path_digest(digest) else {
        return Response::error(
            400,
            "DIGEST_INVALID",
            format!("{:?} is not a sha256 digest", truncate(digest)),
        );
    };
    let (file, size) = match open(views, &d) {
        Ok(Some(found)) => found,
        Ok(None) => {
            return Response::error(404, "BLOB_UNKNOWN", format!("blob {d} is not in the store"))
        }
        Err(r) => return r,
    };
    blob_file(&d, file, size, range)
}

/// The answer for blob `d`, open as `file` of `size` bytes, and the Range header
/// `range`.
pub fn blob_file(d: &Digest, file: File, size: u64, range: Option<&str>) -> Response {
    let base = |status| {
        Response::new(status)
            .header("Content-Type", "application/octet-stream")
            .header("Docker-Content-Digest", d.to_string())
            .header("ETag", format!("\"{d}\""))
            .header("Accept-Ranges", "bytes")
    };
    let (status, offset, len) = match range.map(|r| parse_range(r, size)) {
        None | Some(RangeAsk::Ignore) => (200, 0, size),
        Some(RangeAsk::Unsatisfiable) => {
            return Response::error(
                416,
                "RANGE_INVALID",
                format!(
                    "range {:?} is outside the blob",
                    truncate(range.unwrap_or(""))
                ),
            )
            .header("Content-Range", format!("bytes */{size}"));
        }
        Some(RangeAsk::Part(start, end)) => (206, start, end - start + 1),
    };
    let mut r = base(status);
    if status == 206 {
        r = r.header(
            "Content-Range",
            format!("bytes {offset}-{}/{size}", offset + len - 1),
        );
    }
    r.body = Body::File { file, offset, len };
    r
}

/// What a Range header asks of a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Nothing of the blob.
    Unsatisfiable,
    /// Not a single byte range we answer: the whole blob, as RFC 9110 allows.
    Ignore,
}

fn parse_range(h: &str, size: u64) -> RangeAsk {
    let h = h.trim();
    let Some(spec) = h
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| &h[6..])
    else {
        return RangeAsk::Ignore;
    };
    if spec.contains(',') {
        return RangeAsk::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Ignore;
    };
    // Digits only; a number past u64 is as good as u64::MAX (a last position
    // beyond the blob is clamped, a first one is past its end).
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
    };
    match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if size == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part(size.saturating_sub(n), size - 1),
            None => RangeAsk::Ignore,
        },
        (s, "") => match num(s) {
            Some(s) if s >= size => RangeAsk::Unsatisfiable,
            Some(s) => RangeAsk::Part(s, size - 1),
            None => RangeAsk::Ignore,
        },
        (s, e) => match (num(s), num(e)) {
            (Some(s), Some(e)) if s > e => RangeAsk::Ignore,
            (Some(s), Some(_)) if s >= size => RangeAsk::Unsatisfiable,
            (Some(s), Some(e)) => RangeAsk::Part(s, e.min(size - 1)),
            _ => RangeAsk::Ignore,
        },
    }
}

fn tags(views: &Views, repo: &str, ns: Option<String>, query: &str) -> Response {
    let view = views.get();
    let all = match view.tags(repo, ns.as_deref()) {
        Lookup::Found(t) => t,
        Lookup::Missing => {
            return Response::error(
                404,
                "NAME_UNKNOWN",
                format!("repository {repo} is not in the store"),
            )
        }
        Lookup::Ambiguous(regs) => {
            return Response::error(
                404,
                "NAME_UNKNOWN",
                format!(
                    "{repo} is stored from {}: name the upstream with ?ns=",
                    regs.join(", ")
                ),
            )
        }
    };
    let (list, next) = page(all, query);
    let r = Response::json(200, &serde_json::json!({"name": repo, "tags": list}));
    match next {
        Some((n, end)) => {
            // Only a host name goes back into a header: nothing decoded from the
            // request can add lines to it.
            let ns = ns
                .filter(|ns| {
                    ns.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b".-:[]".contains(&c))
                })
                .map(|ns| format!("&ns={ns}"))
                .unwrap_or_default();
            let path = format!("/v2/{repo}/tags/list");
            r.header("Link", next_link(&path, n, end, &ns))
        }
        None => r,
    }
}

/// One page of a sorted list as the spec has it: the items after `last`, at most
/// `n` of them; with the `n` and the last item given when more remain.
fn page<'a>(all: Vec<&'a str>, query: &str) -> (Vec<&'a str>, Option<(usize, &'a str)>) {
    let last = query_param(query, "last");
    let n = query_param(query, "n").and_then(|n| n.parse::<usize>().ok());
    let mut after: Vec<&str> = all
        .into_iter()
        .filter(|t| last.as_deref().is_none_or(|l| *t > l))
        .collect();
    let more = n.is_some_and(|n| n < after.len());
    after.truncate(n.unwrap_or(usize::MAX));
    let next = match (n, after.last()) {
        (Some(n), Some(end)) if more => Some((n, *end)),
        _ => None,
    };
    (after, next)
}

/// The Link header naming the next page. Only repository paths and tags, both
/// checked against the spec's grammar, and `extra` go into it.
fn next_link(path: &str, n: usize, last: &str, extra: &str) -> String {
    format!("<{path}?n={n}&last={last}{extra}>; rel=\"next\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeAsk::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), Part(0, 99));
        assert_eq!(parse_range("bytes=50-1000", 100), Part(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=9-0", 100), Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignore);
        assert_eq!(parse_range("items=0-1", 100), Ignore);
        assert_eq!(parse_range("bytes=+1-2", 100), Ignore);
        assert_eq!(parse_range("Bytes=0-9", 100), Part(0, 9));
        assert_eq!(
            parse_range("bytes=10-99999999999999999999", 100),
            Part(10, 99)
        );
        assert_eq!(
            parse_range("bytes=99999999999999999999-", 100),
            Unsatisfiable
        );
        assert_eq!(parse_range("bytes=x-", 100), Ignore);
    }

    #[test]
    fn queries_and_digests() {
        assert_eq!(
            query_param("n=2&ns=docker.io", "ns").as_deref(),
            Some("docker.io")
        );
        assert_eq!(
            query_param("ns=reg%3A5000", "ns").as_deref(),
            Some("reg:5000")
        );
        assert_eq!(query_param("ns=%zz", "ns"), None);
        assert_eq!(query_param("x=1", "ns"), None);
        let hex = "a".repeat(64);
        assert!(path_digest(&format!("sha256:{hex}")).is_some());
        assert!(path_digest(&format!("sha256%3A{hex}")).is_some());
        assert!(path_digest(&format!("sha256:{hex}/..")).is_none());
        assert!(path_digest("sha256:../../etc/passwd").is_none());
        assert!(path_digest(&format!("sha512:{hex}")).is_none());
    }

    fn get<'a>(target: &'a str) -> Request<'a> {
        Request {
            method: "GET",
            target,
            range: None,
            authorization: None,
        }
    }

    fn code(r: &Response) -> String {
        match &r.body {
            Body::Bytes(b) => serde_json::from_slice::<serde_json::Value>(b).unwrap()["errors"][0]
                ["code"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        }
    }

    #[test]
    fn hostile_paths_never_reach_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let views = Views::new(dir.path().to_path_buf());
        let auth = Auth::default();
        let hex = "b".repeat(64);
        for (target, status, want) in [
            ("/v2/../../etc/passwd", 404, "NOT_FOUND"),
            ("/v2/a/blobs/sha256:../../../etc/passwd", 404, "NOT_FOUND"),
            (
                "/v2/a/blobs/sha256:..%2F..%2Fetc%2Fpasswd",
                400,
                "DIGEST_INVALID",
            ),
            ("/v2/a%2Fb/manifests/latest", 400, "NAME_INVALID"),
            ("/v2/../blobs/sha256:x", 400, "NAME_INVALID"),
            ("/v2/A/manifests/latest", 400, "NAME_INVALID"),
            ("/v2/a/manifests/..", 400, "TAG_INVALID"),
            ("/v2/a/manifests/sha256:zz", 400, "DIGEST_INVALID"),
            (&format!("/v2/a/blobs/sha256:{hex}"), 404, "BLOB_UNKNOWN"),
            ("/v2/a/manifests/latest", 404, "MANIFEST_UNKNOWN"),
            ("/v2/a/tags/list", 404, "NAME_UNKNOWN"),
            ("/etc/passwd", 404, "NOT_FOUND"),
        ] {
            let r = handle(&views, &auth, &get(target));
            assert_eq!((r.status, code(&r).as_str()), (status, want), "{target}");
        }
        for method in ["PUT", "POST", "PATCH", "DELETE"] {
            let r = handle(
                &views,
                &auth,
                &Request {
                    method,
                    ..get("/v2/a/blobs/uploads/")
                },
            );
            assert_eq!((r.status, code(&r).as_str()), (405, "UNSUPPORTED"));
        }
        let r = handle(&views, &auth, &get("/v2/"));
        assert_eq!(r.status, 200);
    }
}
