//! imgserve against real clients: skopeo, containerd's ctr (plain and through a
//! hosts.toml mirror with `ns`), imgpull and crid using it as a registries.conf
//! mirror in front of a real docker-registry, and raw HTTP for ranges, HEAD,
//! hostile requests and twenty clients at once.

use e2e::image::{http, push, push_index};
use e2e::imgserve::Server;
use e2e::{bin, check_store, pull_into, run, sha256, Fault, Image, Proxy, Registry};
use e2e::{Compression, ManifestFormat, TempRoot};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

/// Pushes `repo:1`: one layer holding the file `name` of `mib` MiB.
fn push_large(addr: &str, repo: &str, name: &str, mib: usize, c: Compression) -> e2e::Pushed {
    push(addr, repo, "1", &Image::large(name, mib, c))
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn get(addr: &str, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    http(addr, "GET", path, &[], b"")
}

fn error_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    v["errors"][0]["code"].as_str().unwrap_or("").to_string()
}

/// `skopeo inspect --raw` of `image`: the manifest bytes as served.
fn skopeo_raw(image: &str, extra: &[&str]) -> Vec<u8> {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--raw", "--tls-verify=false"])
        .args(extra)
        .arg(format!("docker://{image}"));
    run(c, T).ok().stdout.into_bytes()
}

/// A raw request on a fresh connection; the status line's code (0: no answer).
fn raw_status(addr: &str, request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn serves_manifests_blobs_and_tags_with_the_upstreams_digests() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let root = tmp.path().join("a");
    let single = reg.push("peer/busybox", &Image::busybox());
    let mut docker = Image::busybox();
    docker.format = ManifestFormat::Docker;
    let multi = push_index(&reg.addr, "peer/multi", "1", &[docker.clone()]);
    for p in [&single, &multi] {
        pull_into(&root, &reg.addr, &p.reference);
    }
    let srv = Server::start(&root, &[]);
    let at = &srv.addr;

    // skopeo reads the same bytes from the peer as from the upstream: for an OCI
    // manifest, and for a Docker manifest list whose platform manifest was
    // converted in the store.
    for p in [&single, &multi] {
        let path = p.reference.split_once('/').unwrap().1;
        let upstream = skopeo_raw(&p.reference, &[]);
        let peer = skopeo_raw(&format!("{at}/{path}"), &[]);
        assert_eq!(sha256(&peer), p.digest, "{path}");
        assert_eq!(peer, upstream, "{path}");
    }
    let oci = tmp.path().join("copy");
    let mut c = Command::new("skopeo");
    c.args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{at}/peer/multi:1"))
        .arg(format!("oci:{}:multi", oci.display()));
    run(c, T).ok();
    // (skopeo rewrites the config of a Docker image it turns into OCI.)
    for d in &multi.layers {
        let hex = d.trim_start_matches("sha256:");
        assert!(oci.join("blobs/sha256").join(hex).is_file(), "{d} copied");
    }

    // Manifests: HEAD and GET agree, the type is the registry's, and by digest any
    // repository path will do.
    let (s, h, body) = get(at, "/v2/peer/multi/manifests/1");
    assert_eq!(s, 200);
    assert_eq!(
        header(&h, "Docker-Content-Digest"),
        Some(multi.digest.as_str())
    );
    assert_eq!(
        header(&h, "Content-Type"),
        Some("application/vnd.docker.distribution.manifest.list.v2+json")
    );
    let (s, hh, head_body) = http(at, "HEAD", "/v2/peer/multi/manifests/1", &[], b"");
    assert_eq!(s, 200);
    assert!(head_body.is_empty());
    assert_eq!(
        header(&hh, "Content-Length").map(|l| l.parse::<usize>().unwrap()),
        Some(body.len())
    );
    let child = &multi.children[0];
    let (s, h, _) = get(at, &format!("/v2/any/other/path/manifests/{child}"));
    assert_eq!(s, 200);
    assert_eq!(
        header(&h, "Content-Type"),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
    let (s, _, _) = get(
        at,
        &format!("/v2/x/manifests/{}", single.digest.replace(':', "%3A")),
    );
    assert_eq!(s, 200, "a digest with an encoded colon");
    // imgpull --prune keeps the registry's own manifests the store serves.
    let mut c = Command::new(bin("imgpull"));
    c.arg("--root").arg(&root).args(["--prune", "-q"]);
    run(c, T).ok();
    let (s, h, _) = get(at, &format!("/v2/peer/multi/manifests/{child}"));
    assert_eq!(s, 200, "child manifest after prune");
    assert_eq!(header(&h, "Docker-Content-Digest"), Some(child.as_str()));
    let (_, h, _) = get(at, "/v2/peer/multi/manifests/1");
    assert_eq!(
        header(&h, "Docker-Content-Digest"),
        Some(multi.digest.as_str()),
        "the index after prune"
    );

    // Blobs: whole, by range, HEAD, and 416 past the end.
    let layer = &single.layers[0];
    let (s, h, whole) = get(at, &format!("/v2/elsewhere/blobs/{layer}"));
    assert_eq!(s, 200);
    assert_eq!(sha256(&whole), *layer);
    assert_eq!(header(&h, "Accept-Ranges"), Some("bytes"));
    let size = whole.len();
    let path = format!("/v2/peer/busybox/blobs/{layer}");
    let (s, h, part) = http(at, "GET", &path, &[("Range", "bytes=100-199")], b"");
    assert_eq!(s, 206);
    assert_eq!(part, &whole[100..200]);
    assert_eq!(
        header(&h, "Content-Range"),
        Some(format!("bytes 100-199/{size}").as_str())
    );
    let (s, _, tail) = http(at, "GET", &path, &[("Range", "bytes=-10")], b"");
    assert_eq!((s, tail.as_slice()), (206, &whole[size - 10..]));
    let (s, h, resumed) = http(
        at,
        "GET",
        &path,
        &[("Range", &format!("bytes={}-", size / 2))],
        b"",
    );
    assert_eq!((s, resumed.as_slice()), (206, &whole[size / 2..]));
    assert_eq!(
        header(&h, "Content-Length"),
        Some((size - size / 2).to_string().as_str())
    );
    let (s, h, body) = http(
        at,
        "GET",
        &path,
        &[("Range", &format!("bytes={size}-"))],
        b"",
    );
    assert_eq!(s, 416);
    assert_eq!(
        header(&h, "Content-Range"),
        Some(format!("bytes */{size}").as_str())
    );
    assert_eq!(error_code(&body), "RANGE_INVALID");
    let (s, h, body) = http(at, "HEAD", &path, &[], b"");
    assert_eq!((s, body.len()), (200, 0));
    assert_eq!(
        header(&h, "Content-Length"),
        Some(size.to_string().as_str())
    );
    assert_eq!(header(&h, "Docker-Content-Digest"), Some(layer.as_str()));

    // Tags and the catalog.
    let (s, _, body) = get(at, "/v2/peer/busybox/tags/list");
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"name": "peer/busybox", "tags": ["1"]})
    );
    let (_, _, body) = get(at, "/v2/_catalog");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["repositories"],
        serde_json::json!(["peer/busybox", "peer/multi"])
    );
    // The catalog pages as tag lists do.
    let (s, h, body) = get(at, "/v2/_catalog?n=1");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (s, &v["repositories"]),
        (200, &serde_json::json!(["peer/busybox"]))
    );
    assert_eq!(
        header(&h, "Link"),
        Some("</v2/_catalog?n=1&last=peer/busybox>; rel=\"next\"")
    );
    let (_, h, body) = get(at, "/v2/_catalog?n=1&last=peer%2Fbusybox");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["repositories"], serde_json::json!(["peer/multi"]));
    assert_eq!(header(&h, "Link"), None);

    // ns: the upstream a mirror client names; another upstream's tag is not ours.
    let ns = format!("/v2/peer/busybox/manifests/1?ns={}", reg.addr);
    assert_eq!(get(at, &ns).0, 200);
    let (s, _, body) = get(at, "/v2/peer/busybox/manifests/1?ns=docker.io");
    assert_eq!((s, error_code(&body).as_str()), (404, "MANIFEST_UNKNOWN"));
    let (s, _, body) = get(at, "/v2/peer/busybox/manifests/2");
    assert_eq!((s, error_code(&body).as_str()), (404, "MANIFEST_UNKNOWN"));

    // The same path stored from two registries: a tag needs ns to pick one.
    let store = crikit::distribution::layout::Store::open_existing(root.join("images")).unwrap();
    let desc = store
        .resolve(&format!("{}/peer/busybox:1", reg.addr))
        .unwrap();
    store
        .add_image("other.example/peer/busybox:1", desc)
        .unwrap();
    let (s, _, body) = get(at, "/v2/peer/busybox/manifests/1");
    assert_eq!(s, 404);
    assert!(String::from_utf8_lossy(&body).contains("?ns="));
    assert_eq!(get(at, &ns).0, 200);
    assert_eq!(
        get(at, "/v2/peer/busybox/manifests/1?ns=other.example").0,
        200
    );
}

#[test]
fn only_complete_content_is_served_and_hostile_requests_go_nowhere() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let root = tmp.path().join("a");
    let p = reg.push("peer/busybox", &Image::busybox());
    pull_into(&root, &reg.addr, &p.reference);
    let srv = Server::start(&root, &[]);
    let at = &srv.addr;
    let images = root.join("images");

    // A blob still in .ingest/ is not a blob of the store.
    let pending = b"half written";
    let hex = sha256(pending).trim_start_matches("sha256:").to_string();
    std::fs::create_dir_all(images.join(".ingest")).unwrap();
    std::fs::write(images.join(".ingest").join(&hex), pending).unwrap();
    let (s, _, body) = get(at, &format!("/v2/peer/busybox/blobs/sha256:{hex}"));
    assert_eq!((s, error_code(&body).as_str()), (404, "BLOB_UNKNOWN"));

    // An entry whose layer is missing is not served, by tag or by digest.
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": p.config, "size": 10},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{}", "c".repeat(64)), "size": 10}],
    });
    let raw = serde_json::to_vec(&manifest).unwrap();
    let digest = sha256(&raw);
    let store = crikit::distribution::layout::Store::open_existing(&images).unwrap();
    store
        .put_blob(
            &crikit::distribution::digest::Digest::parse(&digest).unwrap(),
            &raw,
        )
        .unwrap();
    store
        .update_index(|m| {
            let mut d = crikit::oci_spec::image::Descriptor::new(
                crikit::oci_spec::image::MediaType::ImageManifest,
                raw.len() as u64,
                crikit::oci_spec::image::Digest::try_from(digest.as_str()).unwrap(),
            );
            let mut ann = std::collections::HashMap::new();
            ann.insert(
                crikit::distribution::layout::REF_NAME.to_string(),
                format!("{}/peer/broken:1", reg.addr),
            );
            d.set_annotations(Some(ann));
            m.push(d);
            Ok(())
        })
        .unwrap();
    for path in [
        "/v2/peer/broken/manifests/1".to_string(),
        format!("/v2/peer/broken/manifests/{digest}"),
    ] {
        let (s, _, body) = get(at, &path);
        assert_eq!(
            (s, error_code(&body).as_str()),
            (404, "MANIFEST_UNKNOWN"),
            "{path}"
        );
    }
    assert_eq!(get(at, "/v2/peer/busybox/manifests/1").0, 200);
    store
        .remove(&format!("{}/peer/broken:1", reg.addr))
        .unwrap();

    // Hostile paths and methods.
    let passwd = "/v2/peer/busybox/blobs/sha256:..%2F..%2F..%2Fetc%2Fpasswd";
    for (path, status, code) in [
        ("/v2/../../../etc/passwd", 404, "NOT_FOUND"),
        (passwd, 400, "DIGEST_INVALID"),
        ("/v2/peer%2Fbusybox/manifests/1", 400, "NAME_INVALID"),
        (
            "/v2/peer/busybox/manifests/..%2F..%2Findex.json",
            400,
            "TAG_INVALID",
        ),
        ("/v2/peer/busybox/blobs/sha256:1234", 400, "DIGEST_INVALID"),
        ("/v2/peer/busybox/blobs/md5:1234", 400, "DIGEST_INVALID"),
        ("/index.json", 404, "NOT_FOUND"),
    ] {
        let (s, _, body) = get(at, path);
        assert_eq!((s, error_code(&body).as_str()), (status, code), "{path}");
    }
    for (method, path) in [
        ("PUT", "/v2/peer/busybox/manifests/2"),
        (
            "DELETE",
            format!("/v2/peer/busybox/blobs/{}", p.layers[0]).as_str(),
        ),
        ("POST", "/v2/peer/busybox/blobs/uploads/"),
        ("PATCH", "/v2/peer/busybox/blobs/uploads/x"),
    ] {
        let (s, _, body) = http(at, method, path, &[], b"{}");
        assert_eq!(
            (s, error_code(&body).as_str()),
            (405, "UNSUPPORTED"),
            "{method}"
        );
    }
    let long = format!("GET /v2/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
    assert_eq!(raw_status(at, long.as_bytes()), 414);
    let big = format!(
        "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Fill: {}\r\n\r\n",
        "a".repeat(20000)
    );
    assert_eq!(raw_status(at, big.as_bytes()), 431);
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    let many = format!("GET /v2/ HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(raw_status(at, many.as_bytes()), 431);
    assert_eq!(raw_status(at, b"NONSENSE\r\n\r\n"), 400);
    // A TLS ClientHello (Go clients try HTTPS first) is answered at once, so the
    // client falls back to plain HTTP without waiting out a timeout.
    assert_eq!(
        raw_status(at, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]),
        400
    );
    // Still serving, and the store is as it was.
    assert_eq!(get(at, "/v2/").0, 200);
    assert_eq!(check_store(&images).len(), 1);
    // Two requests on one connection (keep-alive), the second pipelined.
    let mut s = TcpStream::connect(at.as_str()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/peer/busybox/tags/list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.contains("\"tags\":[\"1\"]"), "{out}");
    // A HEAD that fails answers headers only: the next answer on the connection
    // follows its blank line directly.
    let missing = format!("sha256:{}", "d".repeat(64));
    let mut s = TcpStream::connect(at.as_str()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "HEAD /v2/peer/busybox/blobs/{missing} HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(out.contains("\r\n\r\nHTTP/1.1 200 OK"), "{out}");
    assert!(
        !out.contains("BLOB_UNKNOWN"),
        "a HEAD answer with a body: {out}"
    );
    // Conflicting lengths are refused.
    let twice =
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(raw_status(at, twice), 400);
    // Tag lists page with a Link to what follows.
    let desc = store.resolve(&p.reference).unwrap();
    store
        .add_image(&format!("{}/peer/busybox:2", reg.addr), desc)
        .unwrap();
    let (s, h, body) = get(at, "/v2/peer/busybox/tags/list?n=1");
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["1"]));
    assert_eq!(
        header(&h, "Link"),
        Some("</v2/peer/busybox/tags/list?n=1&last=1>; rel=\"next\"")
    );
    let (_, h, body) = get(at, "/v2/peer/busybox/tags/list?n=1&last=1");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["2"]));
    assert_eq!(header(&h, "Link"), None);
}

#[test]
fn twenty_clients_at_once_while_the_store_is_written() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let root = tmp.path().join("a");
    let big = push_large(&reg.addr, "peer/big", "big", 24, Compression::None);
    pull_into(&root, &reg.addr, &big.reference);
    let srv = Server::start(&root, &[]);
    let layer = big.layers[0].clone();
    let later = reg.push("peer/later", &Image::busybox());
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..20)
            .map(|i| {
                let (at, layer) = (&srv.addr, &layer);
                s.spawn(move || {
                    let path = format!("/v2/peer/big/blobs/{layer}");
                    let (st, _, body) = if i % 2 == 0 {
                        get(at, &path)
                    } else {
                        http(at, "GET", &path, &[("Range", "bytes=0-")], b"")
                    };
                    assert!(st == 200 || st == 206, "client {i}: {st}");
                    assert_eq!(sha256(&body), *layer, "client {i}");
                })
            })
            .collect();
        // A pull into the same store meanwhile: it appears once it is complete.
        pull_into(&root, &reg.addr, &later.reference);
        for c in clients {
            c.join().unwrap();
        }
    });
    let (s, h, _) = get(&srv.addr, "/v2/peer/later/manifests/1");
    assert_eq!(s, 200);
    assert_eq!(
        header(&h, "Docker-Content-Digest"),
        Some(later.digest.as_str())
    );
    check_store(&root.join("images"));
}

/// A registries.conf for `upstream` with `mirrors` in front, all plain HTTP.
fn mirrors_conf(dir: &Path, upstream: &str, mirrors: &[&str]) -> PathBuf {
    let mut conf = format!("[[registry]]\nlocation = \"{upstream}\"\ninsecure = true\n");
    for m in mirrors {
        conf.push_str(&format!(
            "[[registry.mirror]]\nlocation = \"{m}\"\ninsecure = true\n"
        ));
    }
    let p = dir.join("registries.conf");
    std::fs::write(&p, conf).unwrap();
    p
}

fn imgpull_via(root: &Path, conf: &Path, image: &str) -> e2e::Run {
    let mut c = Command::new(bin("imgpull"));
    c.arg("--root")
        .arg(root)
        .arg("--registries-conf")
        .arg(conf)
        .args(["-q", "--retry-delay", "50", image]);
    run(c, T)
}

#[test]
fn imgpull_uses_a_peer_and_falls_back_from_a_missing_dead_or_lying_one() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let peer_root = tmp.path().join("peer");
    let shared = reg.push("peer/busybox", &Image::busybox());
    let big = push_large(&reg.addr, "peer/big", "big", 2, Compression::Gzip);
    let only_upstream = push_large(&reg.addr, "peer/fresh", "f", 1, Compression::Gzip);
    pull_into(&peer_root, &reg.addr, &shared.reference);
    pull_into(&peer_root, &reg.addr, &big.reference);
    let srv = Server::start(&peer_root, &[]);
    // A port nothing listens on: a peer that is down.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };

    // A peer that lies: every blob it sends has a byte flipped.
    let liar = Proxy::start(&srv.addr);
    liar.fault("/blobs/", Fault::Corrupt, None);
    // A peer that has the manifest but none of the blobs.
    let lacking = Proxy::start(&srv.addr);
    lacking.fault("/blobs/", Fault::Status(404), None);
    let node = tmp.path().join("node");
    let conf = mirrors_conf(
        tmp.path(),
        &reg.addr,
        &[&dead, &lacking.addr, &liar.addr, &srv.addr],
    );
    // Not in the peer: from the upstream.
    let r = imgpull_via(&node, &conf, &only_upstream.reference).ok();
    assert!(r.stdout.contains(&only_upstream.digest), "{}", r.describe());
    // In the peer: the dead and the lying peers are passed over, nothing they sent
    // is kept, and the digest is the upstream's.
    let r = imgpull_via(&node, &conf, &big.reference).ok();
    assert_eq!(
        r.stdout.trim(),
        format!("{}@{}", big.reference, big.digest),
        "{}",
        r.describe()
    );
    for (peer, what) in [(&lacking, "lacking"), (&liar, "lying")] {
        assert!(
            peer.seen().iter().any(|s| s.path.contains("/blobs/")),
            "the {what} peer was asked"
        );
    }
    check_store(&node.join("images"));

    // With the upstream gone, the peer alone serves what it has.
    let upstream = reg.addr.clone();
    drop(reg);
    let conf = mirrors_conf(tmp.path(), &upstream, &[&srv.addr]);
    let r = imgpull_via(&node, &conf, &shared.reference).ok();
    assert_eq!(
        r.stdout.trim(),
        format!("{}@{}", shared.reference, shared.digest)
    );
    let names = check_store(&node.join("images"));
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn basic_auth_and_tls() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let root = tmp.path().join("a");
    let p = reg.push("peer/busybox", &Image::busybox());
    pull_into(&root, &reg.addr, &p.reference);
    let certs = e2e::tls::Certs::make(&tmp.path().join("certs"), "imgserve-test-ca");
    let users = tmp.path().join("users");
    std::fs::write(&users, "node:s3cret\n").unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "tok-123\n").unwrap();
    let plain = Server::start(
        &root,
        &[
            "--basic-auth-file",
            users.to_str().unwrap(),
            "--bearer-token-file",
            tokens.to_str().unwrap(),
        ],
    );
    let (s, h, body) = get(&plain.addr, "/v2/");
    assert_eq!((s, error_code(&body).as_str()), (401, "UNAUTHORIZED"));
    let (s, _, body) = http(
        &plain.addr,
        "HEAD",
        "/v2/peer/busybox/manifests/1",
        &[],
        b"",
    );
    assert_eq!((s, body.len()), (401, 0), "a 401 to HEAD has no body");
    assert_eq!(
        header(&h, "WWW-Authenticate"),
        Some("Basic realm=\"imgserve\"")
    );
    let (s, _, _) = http(
        &plain.addr,
        "GET",
        "/v2/peer/busybox/manifests/1",
        &[("Authorization", "Bearer tok-123")],
        b"",
    );
    assert_eq!(s, 200);
    let image = format!("{}/peer/busybox:1", plain.addr);
    let raw = skopeo_raw(&image, &["--creds", "node:s3cret"]);
    assert_eq!(sha256(&raw), p.digest);
    let mut c = Command::new("skopeo");
    c.args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "node:wrong",
    ])
    .arg(format!("docker://{image}"));
    assert_ne!(run(c, T).code, Some(0), "wrong credentials refused");

    // HTTPS: skopeo trusting the CA, and bad TLS files refused with exit code 2.
    let tls = Server::start(
        &root,
        &[
            "--tls-cert",
            &certs.path("server.crt"),
            "--tls-key",
            &certs.path("server.key"),
        ],
    );
    let ca_dir = tmp.path().join("ca");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(certs.path("ca.crt"), ca_dir.join("ca.crt")).unwrap();
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--raw", "--cert-dir"])
        .arg(&ca_dir)
        .arg(format!("docker://{}/peer/busybox:1", tls.addr));
    let r = run(c, T).ok();
    assert_eq!(sha256(r.stdout.as_bytes()), p.digest);
    let mut c = Command::new(bin("imgserve"));
    c.arg("--root")
        .arg(&root)
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(certs.path("server.crt"))
        .arg("--tls-key")
        .arg(certs.path("client.key"));
    let r = run(c, T).expect_code(2);
    assert!(r.stderr.contains("is not the key of"), "{}", r.describe());
    let mut c = Command::new(bin("imgserve"));
    c.arg("--root").arg(&root).args([
        "--listen",
        "127.0.0.1:0",
        "--basic-auth-file",
        "/nonexistent",
    ]);
    let r = run(c, T).expect_code(2);
    assert!(r.stderr.contains("/nonexistent"), "{}", r.describe());
}

/// A containerd of the test's own (root, state, socket under `dir`), its CRI plugin
/// off; stopped on drop (its snapshot mounts go with the test's temp root).
struct Containerd {
    child: Child,
    sock: PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Containerd {
    fn start(dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        let sock = dir.join("containerd.sock");
        let cfg = dir.join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{s}\"\n",
                d = dir.display(),
                s = sock.display()
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .spawn()
            .expect("starting containerd");
        let c = Containerd { child, sock };
        e2e::wait_for("containerd's socket", || {
            std::os::unix::net::UnixStream::connect(&c.sock).is_ok()
        });
        c
    }

    fn ctr(&self, args: &[&str]) -> e2e::Run {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.sock).args(args);
        run(c, T)
    }
}

#[test]
fn ctr_pulls_from_imgserve_and_through_a_hosts_toml_mirror_with_ns() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let root = tmp.path().join("a");
    let p = reg.push("peer/busybox", &Image::busybox());
    let other = push_large(&reg.addr, "peer/other", "o", 1, Compression::Gzip);
    pull_into(&root, &reg.addr, &p.reference);
    pull_into(&root, &reg.addr, &other.reference);
    // The same path from another upstream, another image: only ?ns= tells them apart.
    let store = crikit::distribution::layout::Store::open_existing(root.join("images")).unwrap();
    let desc = store.resolve(&other.reference).unwrap();
    store
        .add_image("other.example/peer/busybox:1", desc)
        .unwrap();
    let srv = Server::start(&root, &[]);
    let containerd = Containerd::start(&tmp.path().join("containerd"));

    let direct = format!("{}/peer/other:1", srv.addr);
    containerd
        .ctr(&["image", "pull", "--plain-http", &direct])
        .ok();
    let list = containerd.ctr(&["image", "ls"]).ok().stdout;
    assert!(list.contains(&other.digest), "{list}");

    // Through a hosts.toml mirror, the upstream gone: containerd names it in ?ns=.
    let hosts = tmp.path().join("hosts.d");
    std::fs::create_dir_all(hosts.join(&reg.addr)).unwrap();
    std::fs::write(
        hosts.join(&reg.addr).join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.addr, srv.addr
        ),
    )
    .unwrap();
    drop(reg);
    let r = containerd
        .ctr(&[
            "image",
            "pull",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            &p.reference,
        ])
        .ok();
    assert!(r.stdout.contains("done"), "{}", r.describe());
    let list = containerd.ctr(&["image", "ls"]).ok().stdout;
    let line = list
        .lines()
        .find(|l| l.starts_with(&p.reference))
        .unwrap_or_else(|| panic!("{} not in {list}", p.reference));
    assert!(line.contains(&p.digest), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crid_pulls_through_a_peer_named_in_registries_conf() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let peer = tmp.path().join("peer");
    let p = reg.push("peer/busybox", &Image::busybox());
    let fresh = push_large(&reg.addr, "peer/fresh", "f", 1, Compression::Gzip);
    pull_into(&peer, &reg.addr, &p.reference);
    let srv = Server::start(&peer, &[]);
    let conf = mirrors_conf(tmp.path(), &reg.addr, &[&srv.addr]);
    let node = tmp.path().join("node");
    std::fs::create_dir_all(&node).unwrap();
    let crid = e2e::crid::Crid::start(&node, &["--registries-conf", conf.to_str().unwrap()]);
    let mut img = crid.images().await;
    let pull = |image: &str| k8s_cri::v1::PullImageRequest {
        image: Some(k8s_cri::v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Not on the peer: from the upstream.
    let r = img.pull_image(pull(&fresh.reference)).await.unwrap();
    assert_eq!(r.into_inner().image_ref, fresh.config);
    // With the upstream gone, from the peer, with the upstream's digest.
    drop(reg);
    let r = img.pull_image(pull(&p.reference)).await.unwrap();
    assert_eq!(r.into_inner().image_ref, p.config);
    let s = img
        .image_status(k8s_cri::v1::ImageStatusRequest {
            image: Some(k8s_cri::v1::ImageSpec {
                image: p.reference.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    let digests = s.image.map(|i| i.repo_digests).unwrap_or_default();
    assert!(
        digests.iter().any(|d| d.ends_with(&p.digest)),
        "{digests:?}"
    );
    check_store(&crid.root.join("images"));
}
