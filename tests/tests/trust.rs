//! Where credentials go, and who may be asked for an image: a real docker-registry
//! behind a proxy that requires a token (the upstream), a proxy that answers 401
//! with a Basic challenge (a mirror that wants credentials), and other nodes'
//! imgserve as peers — with imgpull and crid.

use e2e::image::http;
use e2e::imgserve::Server;
use e2e::{bin, check_store, run, Fault, Image, Proxy, Registry, TempRoot};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);
const USER: &str = "alice";
const PASS: &str = "s3cret";

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// A registries.conf: `upstream` with `mirrors` in front, all plain HTTP.
fn conf(dir: &Path, upstream: &str, mirrors: &[&str]) -> PathBuf {
    let mut c = format!("[[registry]]\nlocation = \"{upstream}\"\ninsecure = true\n");
    for m in mirrors {
        c.push_str(&format!(
            "[[registry.mirror]]\nlocation = \"{m}\"\ninsecure = true\n"
        ));
    }
    let p = dir.join("registries.conf");
    std::fs::write(&p, c).unwrap();
    p
}

/// imgpull into `root` with `conf` and `extra` flags, no auth file but `authfile`.
fn imgpull(root: &Path, conf: &Path, authfile: &Path, extra: &[&str]) -> e2e::Run {
    let mut c = Command::new(bin("imgpull"));
    c.arg("--root")
        .arg(root)
        .arg("--registries-conf")
        .arg(conf)
        .arg("--authfile")
        .arg(authfile)
        .args(["-q", "--retry-delay", "50"])
        .args(extra)
        // No other auth file of the machine's is read.
        .env("HOME", root)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE");
    run(c, T)
}

fn authfile(path: &Path, entries: &[(&str, &str, &str)]) -> PathBuf {
    use base64::Engine as _;
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(host, u, p)| {
            let a = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            (host.to_string(), serde_json::json!({ "auth": a }))
        })
        .collect();
    std::fs::write(path, serde_json::json!({ "auths": auths }).to_string()).unwrap();
    path.to_path_buf()
}

fn authorizations(p: &Proxy) -> Vec<String> {
    p.seen()
        .into_iter()
        .filter_map(|s| s.authorization)
        .collect()
}

/// A private image: a real registry behind a proxy that wants a token for
/// USER/PASS (`upstream`), the image's name there (`reference`), and an empty
/// auth file.
struct Private {
    reg: Registry,
    tmp: TempRoot,
    pushed: e2e::Pushed,
    upstream: Proxy,
    reference: String,
    no_auth: PathBuf,
}

fn private_image() -> Private {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let pushed = reg.push("private/app", &Image::busybox());
    let upstream = Proxy::start(&reg.addr).with_token_auth(USER, PASS);
    let reference = pushed.reference.replacen(&reg.addr, &upstream.addr, 1);
    let no_auth = authfile(&tmp.path().join("none.json"), &[]);
    Private {
        reg,
        tmp,
        pushed,
        upstream,
        reference,
        no_auth,
    }
}

#[test]
fn a_pulls_credentials_go_to_its_registry_and_a_mirror_gets_only_its_own() {
    let Private {
        reg,
        tmp,
        pushed,
        upstream,
        reference,
        no_auth,
    } = private_image();
    let creds = format!("{USER}:{PASS}");

    // A mirror that answers 401 with a Basic challenge is sent nothing: the pull
    // passes over it and gets the image from the registry, with the credentials.
    let mirror = Proxy::start(&reg.addr).with_basic_challenge();
    let c = conf(tmp.path(), &upstream.addr, &[&mirror.addr]);
    let root = tmp.path().join("a");
    let r = imgpull(&root, &c, &no_auth, &["--creds", &creds, &reference]).ok();
    assert_eq!(
        r.stdout.trim(),
        format!("{reference}@{}", pushed.digest),
        "{}",
        r.describe()
    );
    assert!(!mirror.seen().is_empty(), "the mirror was tried first");
    assert_eq!(authorizations(&mirror), Vec::<String>::new());
    assert!(
        authorizations(&upstream).contains(&basic(USER, PASS)),
        "the registry got the credentials: {:?}",
        authorizations(&upstream)
    );
    check_store(&root.join("images"));

    // The auth file's entry for the mirror's own host is what the mirror gets.
    let own = authfile(
        &tmp.path().join("mirror.json"),
        &[(&mirror.addr, "mirrorbot", "m1rror")],
    );
    let root = tmp.path().join("b");
    imgpull(&root, &c, &own, &["--creds", &creds, &reference]).ok();
    let sent = authorizations(&mirror);
    assert!(sent.contains(&basic("mirrorbot", "m1rror")), "{sent:?}");
    assert!(!sent.contains(&basic(USER, PASS)), "{sent:?}");

    // Named as trusted with them, the mirror gets the pull's credentials.
    let trusting = Proxy::start(&reg.addr).with_basic_challenge();
    let c = conf(tmp.path(), &upstream.addr, &[&trusting.addr]);
    let root = tmp.path().join("c");
    imgpull(
        &root,
        &c,
        &no_auth,
        &[
            "--creds",
            &creds,
            "--mirror-with-credentials",
            &trusting.addr,
            &reference,
        ],
    )
    .ok();
    assert!(authorizations(&trusting).contains(&basic(USER, PASS)));

    // Without credentials the registry refuses and nothing is stored.
    let root = tmp.path().join("d");
    imgpull(&root, &c, &no_auth, &[&reference]).expect_code(4);
    assert!(
        !root.join("images/index.json").exists() || check_store(&root.join("images")).is_empty()
    );
}

/// Pulls `reference` with the credentials into `root` through the upstream.
fn seed(root: &Path, upstream: &str, reference: &str, auth: &Path) {
    let c = conf(root.parent().unwrap(), upstream, &[]);
    imgpull(
        root,
        &c,
        auth,
        &["--creds", &format!("{USER}:{PASS}"), reference],
    )
    .ok();
}

#[test]
fn peers_are_asked_only_for_what_the_registry_let_the_node_read_and_get_no_credentials() {
    let Private {
        reg: _reg,
        tmp,
        pushed,
        upstream,
        reference,
        no_auth,
    } = private_image();
    let creds = format!("{USER}:{PASS}");
    let peer_root = tmp.path().join("peer");
    std::fs::create_dir_all(&peer_root).unwrap();
    seed(&peer_root, &upstream.addr, &reference, &no_auth);
    let srv = Server::start(&peer_root, &[]);
    let peer = Proxy::start(&srv.addr);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let myself = "127.0.0.1:1";
    let peers = tmp.path().join("peers");
    std::fs::write(
        &peers,
        format!("# the nodes' imgserve\n{myself}\n{dead}\n{}\n", peer.addr),
    )
    .unwrap();
    let c = conf(tmp.path(), &upstream.addr, &[]);
    let with_peers = |root: &Path, extra: &[&str]| {
        let mut args = vec!["--peers", peers.to_str().unwrap(), "--self", myself];
        args.extend_from_slice(extra);
        imgpull(root, &c, &no_auth, &args)
    };

    // A node without the right credentials is refused by the registry, and no
    // peer is asked for anything: the image is private.
    let node = tmp.path().join("node");
    with_peers(&node, &[&reference]).expect_code(4);
    with_peers(&node, &["--creds", "alice:wrong", &reference]).expect_code(4);
    assert!(
        peer.seen().is_empty(),
        "the peer was asked: {:?}",
        peer.seen()
    );

    // With them: the manifest from the registry, every blob from the peer, which
    // is sent no credentials; the registry serves no blob.
    let before = upstream.seen().len();
    let r = with_peers(&node, &["--creds", &creds, &reference]).ok();
    assert_eq!(
        r.stdout.trim(),
        format!("{reference}@{}", pushed.digest),
        "{}",
        r.describe()
    );
    let asked: Vec<_> = peer.seen();
    let blobs = asked.iter().filter(|s| s.path.contains("/blobs/")).count();
    assert_eq!(blobs, 1 + pushed.layers.len(), "{asked:?}");
    assert_eq!(authorizations(&peer), Vec::<String>::new());
    let from_upstream = &upstream.seen()[before..];
    assert!(
        from_upstream.iter().any(|s| s.path.contains("/manifests/")),
        "{from_upstream:?}"
    );
    assert!(
        !from_upstream.iter().any(|s| s.path.contains("/blobs/")),
        "{from_upstream:?}"
    );
    check_store(&node.join("images"));

    // A peer that sends wrong bytes costs time, not the image: the registry
    // sends them again.
    peer.fault("/blobs/", Fault::Corrupt, None);
    let node2 = tmp.path().join("node2");
    let r = with_peers(&node2, &["--creds", &creds, &reference]).ok();
    assert!(r.stdout.contains(&pushed.digest), "{}", r.describe());
    assert!(upstream.seen().iter().any(|s| s.path.contains("/blobs/")));
    check_store(&node2.join("images"));

    // A peer that fails is asked once per blob, not retried: the next source is
    // there.
    peer.clear();
    peer.fault("/blobs/", Fault::Status(503), None);
    let before = peer.seen().len();
    let node3 = tmp.path().join("node3");
    with_peers(&node3, &["--creds", &creds, &reference]).ok();
    let seen = peer.seen().split_off(before);
    let asked = seen.iter().filter(|s| s.path.contains("/blobs/")).count();
    assert_eq!(asked, 1 + pushed.layers.len(), "{seen:?}");
    check_store(&node3.join("images"));
}

#[test]
fn a_bad_peer_list_is_one_clear_error() {
    let tmp = TempRoot::new();
    let peers = tmp.path().join("peers");
    std::fs::write(&peers, "10.0.0.1:5050\nhttp://10.0.0.2:5050\n").unwrap();
    let c = conf(tmp.path(), "127.0.0.1:1", &[]);
    let no_auth = authfile(&tmp.path().join("none.json"), &[]);
    let r = imgpull(
        &tmp.path().join("r"),
        &c,
        &no_auth,
        &["--peers", peers.to_str().unwrap(), "127.0.0.1:1/a:1"],
    )
    .expect_code(2);
    let want = format!(
        "peer list {}, line 2: \"http://10.0.0.2:5050\" is not ADDR:PORT",
        peers.display()
    );
    assert!(r.stderr.contains(&want), "{}", r.describe());
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.describe());
}

#[test]
fn imgserve_without_credentials_of_its_own_refuses_requests_that_carry_some() {
    let tmp = TempRoot::new();
    let root = tmp.path().join("store");
    std::fs::create_dir_all(root.join("images")).unwrap();
    let srv = Server::start(&root, &[]);
    let (s, _, _) = http(&srv.addr, "GET", "/v2/", &[], b"");
    assert_eq!(s, 200);
    for a in [basic(USER, PASS), "Bearer tok".to_string()] {
        let (s, _, body) = http(&srv.addr, "GET", "/v2/", &[("Authorization", &a)], b"");
        let body = String::from_utf8_lossy(&body);
        assert_eq!(s, 403, "{body}");
        assert!(body.contains("DENIED"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crid_sends_a_pods_secret_to_its_registry_only_and_asks_peers_after() {
    let Private {
        reg,
        tmp,
        pushed,
        upstream,
        reference,
        no_auth,
    } = private_image();
    let peer_root = tmp.path().join("peer");
    std::fs::create_dir_all(&peer_root).unwrap();
    seed(&peer_root, &upstream.addr, &reference, &no_auth);
    let srv = Server::start(&peer_root, &[]);
    let peer = Proxy::start(&srv.addr);
    let peers = tmp.path().join("peers");
    std::fs::write(&peers, format!("{}\n", peer.addr)).unwrap();
    let mirror = Proxy::start(&reg.addr).with_basic_challenge();
    let c = conf(tmp.path(), &upstream.addr, &[&mirror.addr]);
    let node = tmp.path().join("node");
    std::fs::create_dir_all(&node).unwrap();
    let crid = e2e::crid::Crid::start(
        &node,
        &[
            "--registries-conf",
            c.to_str().unwrap(),
            "--peers",
            peers.to_str().unwrap(),
        ],
    );
    let mut img = crid.images().await;
    let pull = |auth: Option<(&str, &str)>| k8s_cri::v1::PullImageRequest {
        image: Some(k8s_cri::v1::ImageSpec {
            image: reference.clone(),
            ..Default::default()
        }),
        auth: auth.map(|(u, p)| k8s_cri::v1::AuthConfig {
            username: u.into(),
            password: p.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // A pod without the right secret: refused, as a failed pull, and no peer asked.
    for auth in [None, Some((USER, "wrong"))] {
        let e = img.pull_image(pull(auth)).await.unwrap_err();
        assert_ne!(e.code(), tonic::Code::Internal, "{e:?}");
        assert_ne!(e.code(), tonic::Code::Unknown, "{e:?}");
    }
    assert!(peer.seen().is_empty(), "{:?}", peer.seen());
    // With it: the mirror gets nothing, the blobs come from the peer.
    let before = upstream.seen().len();
    let r = img.pull_image(pull(Some((USER, PASS)))).await.unwrap();
    assert_eq!(r.into_inner().image_ref, pushed.config);
    assert_eq!(authorizations(&mirror), Vec::<String>::new());
    assert_eq!(authorizations(&peer), Vec::<String>::new());
    assert!(peer.seen().iter().any(|s| s.path.contains("/blobs/")));
    assert!(!upstream.seen()[before..]
        .iter()
        .any(|s| s.path.contains("/blobs/")));
    check_store(&crid.root.join("images"));
}

// ---- Signature policy ----

/// imgpull with `policy` (and `registries_d`) of `image`, from a plain-HTTP
/// registry; its exit code.
fn imgpull_policy(
    root: &Path,
    policy: &Path,
    registries_d: Option<&Path>,
    image: &str,
) -> e2e::Run {
    imgpull_policy_with(root, policy, registries_d, image, &[])
}

/// [`imgpull_policy`] with `extra` arguments.
fn imgpull_policy_with(
    root: &Path,
    policy: &Path,
    registries_d: Option<&Path>,
    image: &str,
    extra: &[&str],
) -> e2e::Run {
    let mut c = Command::new(bin("imgpull"));
    c.args(extra);
    let host = image.split('/').next().unwrap_or_default();
    c.arg("--root")
        .arg(root)
        .arg("--policy")
        .arg(policy)
        .args(["--insecure-registry", host, "-q", "--retry-delay", "50"])
        .env("CONTAINERS_REGISTRIES_CONF", "/dev/null");
    match registries_d {
        Some(d) => c.arg("--registries.d").arg(d),
        None => c.arg("--registries.d").arg(root.join("no-registries.d")),
    };
    c.arg(image);
    run(c, T)
}

/// What skopeo says of copying `image` under `policy`: true when it lets it in.
fn skopeo_allows(policy: &Path, image: &str, dest: &Path) -> bool {
    let mut c = Command::new("skopeo");
    c.arg("--policy")
        .arg(policy)
        .args(["copy", "--src-tls-verify=false", "--quiet"])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:x", dest.display()))
        .env("CONTAINERS_REGISTRIES_CONF", "/dev/null");
    let r = run(c, T);
    if r.code != Some(0) {
        assert!(
            r.stderr.contains("policy") || r.stderr.contains("rejected"),
            "skopeo failed for another reason: {}",
            r.describe()
        );
    }
    r.code == Some(0)
}

/// Nothing of the image is in the store: no name, no blob but those a policy-free
/// earlier pull left.
fn nothing_stored(root: &Path) {
    let blobs = root.join("images/blobs/sha256");
    let n = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(n, 0, "blobs were stored for a refused image");
}

#[test]
fn policy_verdicts_match_skopeos() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let app1 = reg.push("ns/app", &Image::busybox());
    let host = reg.addr.clone();
    let app2 = e2e::image::push(&host, "ns/app", "2", &Image::busybox());
    let other = e2e::image::push(&host, "other/tool", "1", &Image::busybox());
    let by_digest = format!("{host}/ns/app@{}", app1.digest);
    let accept = serde_json::json!([{"type": "insecureAcceptAnything"}]);
    let reject = serde_json::json!([{"type": "reject"}]);
    let policies = [
        ("accept", serde_json::json!({"default": accept})),
        ("reject", serde_json::json!({"default": reject})),
        (
            "registry allowed",
            serde_json::json!({"default": reject, "transports": {"docker": {host.clone(): accept}}}),
        ),
        (
            "namespace allowed, one tag not",
            serde_json::json!({"default": reject, "transports": {"docker": {
                format!("{host}/ns"): accept, format!("{host}/ns/app:2"): reject}}}),
        ),
        (
            "repository rejected",
            serde_json::json!({"default": accept, "transports": {"docker": {format!("{host}/other/tool"): reject}}}),
        ),
        (
            "transport default",
            serde_json::json!({"default": accept, "transports": {"docker": {"": reject, format!("{host}/other"): accept}}}),
        ),
        (
            "wildcard",
            serde_json::json!({"default": accept, "transports": {"docker": {"*.0.0.1": reject}}}),
        ),
        (
            "digest scope",
            serde_json::json!({"default": reject, "transports": {"docker": {by_digest.clone(): accept}}}),
        ),
    ];
    let images = [
        app1.reference.clone(),
        app2.reference.clone(),
        other.reference.clone(),
        by_digest,
    ];
    let mut table = Vec::new();
    for (i, (name, p)) in policies.iter().enumerate() {
        let file = tmp.path().join(format!("policy-{i}.json"));
        std::fs::write(&file, p.to_string()).unwrap();
        for (j, image) in images.iter().enumerate() {
            let oracle = skopeo_allows(&file, image, &tmp.path().join(format!("oci-{i}-{j}")));
            let root = tmp.path().join(format!("root-{i}-{j}"));
            let r = imgpull_policy(&root, &file, None, image);
            let ours = match r.code {
                Some(0) => true,
                Some(5) => {
                    assert!(
                        r.stderr.contains(&file.display().to_string()),
                        "{}",
                        r.describe()
                    );
                    nothing_stored(&root);
                    false
                }
                _ => panic!("{name}, {image}: {}", r.describe()),
            };
            table.push(format!(
                "{name:32} {image:60} skopeo {oracle:5} imgpull {ours:5}"
            ));
            assert_eq!(
                ours,
                oracle,
                "{name}, {image}: skopeo {oracle}, imgpull {ours}\n{}",
                r.describe()
            );
        }
    }
    println!("{}", table.join("\n"));
}

/// Attaches a cosign-style signature of the manifest `digest` to `repo`.
fn attach(addr: &str, repo: &str, digest: &str, payload: &[u8], signature: &str) {
    let config =
        br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = e2e::image::push_blob(addr, repo, config);
    let payload_digest = e2e::image::push_blob(addr, repo, payload);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest,
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": signature}
        }]
    });
    let tag = format!("{}.sig", digest.replacen(':', "-", 1));
    e2e::image::push_manifest(
        addr,
        repo,
        &tag,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
}

fn cosign_payload(image: &str, digest: &str) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": {"docker-reference": image},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    })
    .to_string()
    .into_bytes()
}

fn cosign_sign(key: &p256::ecdsa::SigningKey, payload: &[u8]) -> String {
    use base64::Engine as _;
    use p256::ecdsa::signature::Signer as _;
    let sig: p256::ecdsa::Signature = key.sign(payload);
    base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
}

#[test]
fn sigstore_signed_images_only_valid_and_untampered() {
    use p256::pkcs8::EncodePublicKey as _;
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let host = reg.addr.clone();
    let key = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    let stranger = p256::ecdsa::SigningKey::from_slice(&[0x17; 32]).unwrap();
    let pubkey = tmp.path().join("cosign.pub");
    std::fs::write(
        &pubkey,
        key.verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    let rd = sigstore_attachments(tmp.path());
    let policy = |identity: serde_json::Value| {
        let mut req = serde_json::json!({"type": "sigstoreSigned", "keyPath": pubkey});
        if !identity.is_null() {
            req["signedIdentity"] = identity;
        }
        let f = tmp
            .path()
            .join(format!("policy-{}.json", sha_short(&req.to_string())));
        std::fs::write(&f, serde_json::json!({"default": [req]}).to_string()).unwrap();
        f
    };
    let default = policy(serde_json::Value::Null);

    // (repo, what is attached, verdict under the default signedIdentity)
    let mut n = 0;
    // Refused: the reason the refusal must give.
    let mut case = |what: &str, sign: &Attacher<'_>, refused: Option<&str>| {
        n += 1;
        let repo = format!("signed/case{n}");
        let p = e2e::image::push(&host, &repo, "1", &Image::busybox());
        if let Some((payload, sig)) = sign(&p.reference, &p.digest) {
            attach(&host, &repo, &p.digest, &payload, &sig);
        }
        let root = tmp.path().join(format!("root{n}"));
        let r = imgpull_policy(&root, &default, Some(&rd), &p.reference);
        match refused {
            None => {
                assert_eq!(r.code, Some(0), "{what}: {}", r.describe());
                check_store(&root.join("images"));
            }
            Some(why) => {
                assert_eq!(r.code, Some(5), "{what}: {}", r.describe());
                let said = r.stderr.contains("sigstoreSigned") && r.stderr.contains(why);
                assert!(said, "{what}: not refused for {why:?}: {}", r.describe());
                nothing_stored(&root);
            }
        }
    };
    let signed_as = |image: &str, digest: &str, key: &p256::ecdsa::SigningKey| {
        let pl = cosign_payload(image, digest);
        Some((pl.clone(), cosign_sign(key, &pl)))
    };
    case(
        "signed",
        &|image, digest| signed_as(image, digest, &key),
        None,
    );
    case("unsigned", &|_, _| None, Some("no signature found"));
    case(
        "signed by another key",
        &|image, digest| signed_as(image, digest, &stranger),
        Some("not signed by a trusted key"),
    );
    case(
        "tampered payload",
        &|image, digest| {
            let (_, sig) = signed_as(image, digest, &key)?;
            Some((cosign_payload(&image.replace(":1", ":2"), digest), sig))
        },
        Some("not signed by a trusted key"),
    );
    case(
        "signature for another digest",
        &|image, _| signed_as(image, &format!("sha256:{}", "0".repeat(64)), &key),
        Some("signed for sha256:000"),
    );
    case(
        "signature for another name",
        &|image, digest| signed_as(&image.replace("signed/", "other/"), digest, &key),
        Some("signedIdentity does not accept"),
    );
    case(
        "corrupted signature",
        &|image, digest| {
            let (pl, sig) = signed_as(image, digest, &key)?;
            let mut sig = sig.into_bytes();
            sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
            Some((pl, String::from_utf8(sig).ok()?))
        },
        Some("no signature accepted"),
    );

    // signedIdentity: a signature for another tag of the repository passes
    // matchRepository, not the default; exactReference names what it must say.
    let p = e2e::image::push(&host, "signed/ident", "1", &Image::busybox());
    let pl = cosign_payload(&p.reference.replace(":1", ":stable"), &p.digest);
    attach(
        &host,
        "signed/ident",
        &p.digest,
        &pl,
        &cosign_sign(&key, &pl),
    );
    for (identity, allowed) in [
        (serde_json::Value::Null, false),
        (serde_json::json!({"type": "matchRepository"}), true),
        (serde_json::json!({"type": "matchExact"}), false),
        (
            serde_json::json!({"type": "exactReference", "dockerReference": p.reference.replace(":1", ":stable")}),
            true,
        ),
        (
            serde_json::json!({"type": "exactRepository", "dockerRepository": format!("{host}/signed/ident")}),
            true,
        ),
        (
            serde_json::json!({"type": "remapIdentity", "prefix": format!("{host}/signed"), "signedPrefix": format!("{host}/elsewhere")}),
            false,
        ),
    ] {
        let root = tmp
            .path()
            .join(format!("ident-{}", sha_short(&identity.to_string())));
        let r = imgpull_policy(&root, &policy(identity.clone()), Some(&rd), &p.reference);
        assert_eq!(r.code == Some(0), allowed, "{identity}: {}", r.describe());
    }
    // Without use-sigstore-attachments, signatures are not looked for.
    let root = tmp.path().join("no-attachments");
    let r = imgpull_policy(&root, &default, None, &format!("{host}/signed/case1:1"));
    assert_eq!(r.code, Some(5), "{}", r.describe());
    assert!(r.stderr.contains("no signature found"), "{}", r.describe());
}

/// A policy in `dir` that wants sigstore signatures by `key` for every image
/// (its public key written beside it as NAME.pub).
fn sigstore_policy(dir: &Path, name: &str, key: &p256::ecdsa::SigningKey) -> PathBuf {
    use p256::pkcs8::EncodePublicKey as _;
    let pem = key
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    let keyfile = dir.join(format!("{name}.pub"));
    std::fs::write(&keyfile, pem).unwrap();
    let f = dir.join(format!("{name}.json"));
    let req = serde_json::json!({"type": "sigstoreSigned", "keyPath": keyfile});
    std::fs::write(&f, serde_json::json!({"default": [req]}).to_string()).unwrap();
    f
}

/// A registries.d in `dir` that looks for attached sigstore signatures everywhere.
fn sigstore_attachments(dir: &Path) -> PathBuf {
    let rd = dir.join("registries.d");
    std::fs::create_dir_all(&rd).unwrap();
    std::fs::write(
        rd.join("default.yaml"),
        "default-docker:\n  use-sigstore-attachments: true\n",
    )
    .unwrap();
    rd
}

#[test]
fn sigstore_signatures_kept_with_the_image_are_checked_again_without_the_registry() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let tmp = TempRoot::new();
    let key = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    let stranger = p256::ecdsa::SigningKey::from_slice(&[0x17; 32]).unwrap();
    let (trusted, other) = (
        sigstore_policy(tmp.path(), "trusted", &key),
        sigstore_policy(tmp.path(), "other", &stranger),
    );
    let rd = sigstore_attachments(tmp.path());
    let p = reg.push("signed/kept", &Image::busybox());
    let reference = p.reference.replace(&reg.addr, &proxy.addr);
    let payload = cosign_payload(&reference, &p.digest);
    attach(
        &reg.addr,
        "signed/kept",
        &p.digest,
        &payload,
        &cosign_sign(&key, &payload),
    );
    let tag = format!(
        "/manifests/sha256-{}.sig",
        p.digest.trim_start_matches("sha256:")
    );
    // What the proxy saw from request `from` on.
    let since = |from: usize| proxy.seen().split_off(from);
    let asks_signatures = |seen: &[e2e::proxy::Seen]| seen.iter().any(|s| s.path.ends_with(&tag));
    let root = tmp.path().join("root");

    // The first pull fetches the signatures and keeps them with the image.
    imgpull_policy(&root, &trusted, Some(&rd), &reference).ok();
    assert!(asks_signatures(&since(0)));
    // The next checks those again and asks the registry for the manifest only.
    let mark = proxy.seen().len();
    imgpull_policy(&root, &trusted, Some(&rd), &reference).ok();
    let seen = since(mark);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].path.ends_with("/manifests/1"), "{seen:?}");
    // Under a policy they do not satisfy, the registry is asked again, and the
    // verdict is its signatures'; the image already stored stays.
    let mark = proxy.seen().len();
    let r = imgpull_policy(&root, &other, Some(&rd), &reference).expect_code(5);
    assert!(
        r.stderr.contains("not signed by a trusted key"),
        "{}",
        r.describe()
    );
    assert!(asks_signatures(&since(mark)));
    assert_eq!(check_store(&root.join("images")), [reference.as_str()]);

    // The kept signatures are blobs of the image: removed with it, not before.
    let count = || {
        std::fs::read_dir(root.join("images/blobs/sha256"))
            .unwrap()
            .count()
    };
    let with_signatures = count();
    let mut c = Command::new(bin("imgpull"));
    c.arg("--root").arg(&root).arg("--prune");
    run(c, T).ok();
    assert_eq!(count(), with_signatures);
    let mut c = Command::new(bin("imgpull"));
    c.arg("--root").arg(&root).args(["--remove", &reference]);
    run(c, T).ok();
    assert_eq!(count(), 0);
}

/// A first pull under sigstoreSigned downloads the blobs while it fetches and
/// checks the signatures, and keeps nothing before the verdict: with the
/// signature tag answered late, a refused image's layers were asked for, and yet
/// no blob or temp file is left; an unpacking pull of it (its config already in
/// the store, so the layers come at once) unpacks nothing; a signed one is stored
/// and unpacked.
#[test]
fn blobs_download_while_the_signatures_are_checked_and_wait_for_the_verdict() {
    let reg = Registry::start();
    let proxy = Proxy::start(&reg.addr);
    let tmp = TempRoot::new();
    let key = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    let stranger = p256::ecdsa::SigningKey::from_slice(&[0x17; 32]).unwrap();
    let policy = sigstore_policy(tmp.path(), "cosign", &key);
    let rd = sigstore_attachments(tmp.path());
    // The signature tag is answered a second and a half late.
    proxy.fault(".sig", Fault::Delay(Duration::from_millis(1500)), None);
    let image = Image::busybox();
    let entries = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for (repo, k, unpack, refused) in [
        ("late/other", &stranger, false, true),
        ("late/other-unpacked", &stranger, true, true),
        ("late/signed", &key, true, false),
    ] {
        let p = reg.push(repo, &image);
        let reference = p.reference.replace(&reg.addr, &proxy.addr);
        let payload = cosign_payload(&reference, &p.digest);
        attach(
            &reg.addr,
            repo,
            &p.digest,
            &payload,
            &cosign_sign(k, &payload),
        );
        let root = tmp.path().join(repo.replace('/', "-"));
        let config = root
            .join("images/blobs/sha256")
            .join(p.config.trim_start_matches("sha256:"));
        if unpack && refused {
            let path = format!("/v2/{repo}/blobs/{}", p.config);
            let (status, _, body) = http(&reg.addr, "GET", &path, &[], b"");
            assert_eq!(status, 200, "{path}");
            std::fs::create_dir_all(config.parent().unwrap()).unwrap();
            std::fs::write(&config, body).unwrap();
        }
        let mark = proxy.seen().len();
        let extra: &[&str] = if unpack { &["--unpack"] } else { &[] };
        // Watched while it runs: an unpack begun shows as a .tmp-* directory.
        let layers = root.join("layers");
        let done = std::sync::atomic::AtomicBool::new(false);
        let (r, begun) = std::thread::scope(|s| {
            let watch = s.spawn(|| {
                let mut begun = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    for n in entries(&layers) {
                        if n.starts_with(".tmp-") && !begun.contains(&n) {
                            begun.push(n);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                begun
            });
            let r = imgpull_policy_with(&root, &policy, Some(&rd), &reference, extra);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (r, watch.join().unwrap())
        });
        let seen = proxy.seen().split_off(mark);
        let asked_blob = |digest: &str| {
            seen.iter()
                .any(|s| s.path.contains(&format!("/blobs/{digest}")))
        };
        for layer in &p.layers {
            assert!(asked_blob(layer), "{repo}: {layer} not asked for: {seen:?}");
        }
        if refused {
            let r = r.expect_code(5);
            assert!(
                r.stderr.contains("not signed by a trusted key"),
                "{}",
                r.describe()
            );
            if config.exists() {
                std::fs::remove_file(&config).unwrap();
            }
            nothing_stored(&root);
            let temp = entries(&root.join("images/.ingest"));
            assert!(temp.is_empty(), "temp files left: {temp:?}");
            let unpacked: Vec<String> = entries(&layers)
                .into_iter()
                .filter(|n| n.starts_with("sha256"))
                .collect();
            assert!(unpacked.is_empty(), "layers unpacked: {unpacked:?}");
            assert!(
                begun.is_empty(),
                "unpacks begun before the verdict: {begun:?}"
            );
        } else {
            r.ok();
            assert_eq!(check_store(&root.join("images")), [reference.as_str()]);
            assert!(
                !entries(&layers).is_empty(),
                "nothing unpacked in {}",
                layers.display()
            );
        }
    }
}

/// Given the image reference and its manifest digest, the payload and the
/// signature to attach; None attaches nothing.
type Attacher<'a> = dyn Fn(&str, &str) -> Option<(Vec<u8>, String)> + 'a;

fn sha_short(s: &str) -> String {
    e2e::sha256(s.as_bytes())[7..19].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crid_checks_each_namespaces_policy() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let p = reg.push("ns/app", &Image::busybox());
    let dir = tmp.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let global = tmp.path().join("policy.json");
    std::fs::write(
        &global,
        r#"{"default": [{"type": "insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("locked.json"),
        r#"{"default": [{"type": "reject"}]}"#,
    )
    .unwrap();
    let node = tmp.path().join("node");
    std::fs::create_dir_all(&node).unwrap();
    let crid = e2e::crid::Crid::start(
        &node,
        &[
            "--insecure-registry",
            &reg.addr,
            "--signature-policy",
            global.to_str().unwrap(),
            "--signature-policy-dir",
            dir.to_str().unwrap(),
        ],
    );
    let mut img = crid.images().await;
    let pull = |ns: &str| k8s_cri::v1::PullImageRequest {
        image: Some(k8s_cri::v1::ImageSpec {
            image: p.reference.clone(),
            ..Default::default()
        }),
        sandbox_config: Some(k8s_cri::v1::PodSandboxConfig {
            metadata: Some(k8s_cri::v1::PodSandboxMetadata {
                name: "p".into(),
                namespace: ns.into(),
                uid: "u".into(),
                attempt: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = img.pull_image(pull("locked")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    let want = format!(
        "refused by the signature policy {}",
        dir.join("locked.json").display()
    );
    assert!(e.message().contains(&want), "{}", e.message());
    assert!(e.message().contains("reject"), "{}", e.message());
    let list = img
        .list_images(k8s_cri::v1::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.images.is_empty(), "{:?}", list.images);
    let e = img.pull_image(pull("Bad/NS")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // Another namespace: the global policy, which lets it in.
    let r = img.pull_image(pull("open")).await.unwrap();
    assert_eq!(r.into_inner().image_ref, p.config);
}

/// A GPG home of its own with one signing key; (home, fingerprint).
fn gpg_key(dir: &Path, name: &str) -> (PathBuf, String) {
    gpg_key_at(dir, name, None)
}

/// [`gpg_key`] made at the faked time `at` (gpg's `--faked-system-time`).
fn gpg_key_at(dir: &Path, name: &str, at: Option<&str>) -> (PathBuf, String) {
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let params = dir.join(format!("{name}.params"));
    std::fs::write(
        &params,
        format!("%no-protection\nKey-Type: RSA\nKey-Length: 2048\nName-Real: {name}\nName-Email: {name}@crikit.invalid\nExpire-Date: 0\n%commit\n"),
    )
    .unwrap();
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", &home).arg("--batch");
    if let Some(t) = at {
        c.args(["--faked-system-time", t]);
    }
    c.arg("--gen-key").arg(&params);
    run(c, T).ok();
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", &home)
        .args(["--with-colons", "--list-keys"]);
    let out = run(c, T).ok().stdout;
    let fpr = out
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .and_then(|l| l.split(':').find(|f| f.len() == 40))
        .expect("fingerprint")
        .to_string();
    (home, fpr)
}

fn gpg_export(home: &Path, fpr: &str, armor: bool, to: &Path) {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home).args(["--batch", "--export"]);
    if armor {
        c.arg("--armor");
    }
    c.args(["--output"]).arg(to).arg(fpr);
    run(c, T).ok();
}

/// skopeo copy within the registry, signing with `key` when given.
fn skopeo_copy(rd: &Path, from: &str, to: &str, key: Option<(&Path, &str)>) {
    let accept = rd.join("../accept.json");
    std::fs::write(
        &accept,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let mut c = Command::new("skopeo");
    c.arg("--policy")
        .arg(&accept)
        .arg("--registries.d")
        .arg(rd)
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ]);
    if let Some((home, fpr)) = key {
        c.env("GNUPGHOME", home).args(["--sign-by", fpr]);
    }
    c.arg(format!("docker://{from}"))
        .arg(format!("docker://{to}"));
    run(c, T).ok();
}

fn skopeo_allows_with(policy: &Path, rd: &Path, image: &str, dest: &Path) -> bool {
    let mut c = Command::new("skopeo");
    c.arg("--policy")
        .arg(policy)
        .arg("--registries.d")
        .arg(rd)
        // Verified at the source; an oci: layout cannot hold them.
        .args([
            "copy",
            "--quiet",
            "--remove-signatures",
            "--src-tls-verify=false",
        ])
        .arg(format!("docker://{image}"))
        .arg(format!("oci:{}:x", dest.display()));
    let r = run(c, T);
    if r.code != Some(0) {
        assert!(
            r.stderr.contains("policy")
                || r.stderr.contains("rejected")
                || r.stderr.contains("signature"),
            "skopeo failed for another reason: {}",
            r.describe()
        );
    }
    r.code == Some(0)
}

#[test]
fn gpg_signed_images_verdicts_match_skopeos() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let host = reg.addr.clone();
    let (home_a, fpr_a) = gpg_key(tmp.path(), "trusted");
    let (home_b, fpr_b) = gpg_key(tmp.path(), "stranger");
    let sigs = tmp.path().join("sigs");
    let rd = tmp.path().join("registries.d");
    std::fs::create_dir_all(&rd).unwrap();
    std::fs::write(
        rd.join("test.yaml"),
        format!(
            "docker:\n  {host}:\n    lookaside: file://{s}\n    lookaside-staging: file://{s}\n",
            s = sigs.display()
        ),
    )
    .unwrap();
    let src = reg.push("src/app", &Image::busybox());
    let digest = src.digest.clone();
    let hex = digest.trim_start_matches("sha256:");
    skopeo_copy(
        &rd,
        &src.reference,
        &format!("{host}/signed/a:1"),
        Some((&home_a, &fpr_a)),
    );
    skopeo_copy(
        &rd,
        &src.reference,
        &format!("{host}/signed/b:1"),
        Some((&home_b, &fpr_b)),
    );
    // Keys that signed while good: one has expired since (its newest self-signature,
    // made in 2020, says it expired the next day), one has been revoked.
    let (home_c, fpr_c) = gpg_key_at(tmp.path(), "expired", Some("20200101T000000!"));
    let (home_d, fpr_d) = gpg_key(tmp.path(), "revoked");
    skopeo_copy(
        &rd,
        &src.reference,
        &format!("{host}/signed/c:1"),
        Some((&home_c, &fpr_c)),
    );
    skopeo_copy(
        &rd,
        &src.reference,
        &format!("{host}/signed/d:1"),
        Some((&home_d, &fpr_d)),
    );
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", &home_c).args([
        "--batch",
        "--faked-system-time",
        "20200102T000000!",
        "--quick-set-expire",
        &fpr_c,
        "1d",
    ]);
    run(c, T).ok();
    // gpg keeps a revocation certificate of every key it makes, guarded by a colon.
    let rev = home_d.join(format!("openpgp-revocs.d/{fpr_d}.rev"));
    let certificate = std::fs::read_to_string(&rev)
        .unwrap()
        .replace(":-----BEGIN", "-----BEGIN");
    std::fs::write(&rev, certificate).unwrap();
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", &home_d)
        .args(["--batch", "--import"])
        .arg(&rev);
    run(c, T).ok();
    skopeo_copy(&rd, &src.reference, &format!("{host}/plain/x:1"), None);
    // Signed as another name: A's signature of signed/a, where named/two's would be.
    skopeo_copy(&rd, &src.reference, &format!("{host}/named/two:1"), None);
    let sig_a = sigs.join(format!("signed/a@sha256={hex}/signature-1"));
    assert!(
        sig_a.is_file(),
        "skopeo wrote no signature at {}",
        sig_a.display()
    );
    let put = |repo: &str, data: &[u8]| {
        let d = sigs.join(format!("{repo}@sha256={hex}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("signature-1"), data).unwrap();
    };
    put("named/two", &std::fs::read(&sig_a).unwrap());
    // A corrupted signature.
    skopeo_copy(&rd, &src.reference, &format!("{host}/corrupt/c:1"), None);
    let mut bad = std::fs::read(&sig_a).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    put("corrupt/c", &bad);
    // A signature for another digest: a differently built image, A's signature of
    // signed/a put where its signature would be.
    let other = e2e::image::push(
        &host,
        "digest/d",
        "1",
        &Image::large("x", 1, e2e::Compression::Gzip),
    );
    let ohex = other.digest.trim_start_matches("sha256:");
    let d = sigs.join(format!("digest/d@sha256={ohex}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(&sig_a, d.join("signature-1")).unwrap();

    let key_a = tmp.path().join("a.gpg");
    gpg_export(&home_a, &fpr_a, false, &key_a);
    let key_a_armored = tmp.path().join("a.asc");
    gpg_export(&home_a, &fpr_a, true, &key_a_armored);
    let key_b = tmp.path().join("b.gpg");
    gpg_export(&home_b, &fpr_b, false, &key_b);
    let (key_c, key_d) = (tmp.path().join("c.gpg"), tmp.path().join("d.gpg"));
    gpg_export(&home_c, &fpr_c, false, &key_c);
    gpg_export(&home_d, &fpr_d, false, &key_d);
    let signed_by = |key: &Path, identity: Option<serde_json::Value>| {
        let mut r = serde_json::json!({"type": "signedBy", "keyType": "GPGKeys", "keyPath": key});
        if let Some(i) = identity {
            r["signedIdentity"] = i;
        }
        r
    };
    let policies = [
        (
            "signedBy A",
            serde_json::json!({"default": [signed_by(&key_a, None)]}),
        ),
        (
            "signedBy A, armored key",
            serde_json::json!({"default": [signed_by(&key_a_armored, None)]}),
        ),
        (
            "signedBy B",
            serde_json::json!({"default": [signed_by(&key_b, None)]}),
        ),
        (
            "signedBy C, expired since",
            serde_json::json!({"default": [signed_by(&key_c, None)]}),
        ),
        (
            "signedBy D, revoked since",
            serde_json::json!({"default": [signed_by(&key_d, None)]}),
        ),
        (
            "signedBy A or B (keyPaths)",
            serde_json::json!({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPaths": [key_b, key_a]}]}),
        ),
        (
            "signedBy A, matchRepository",
            serde_json::json!({"default": [signed_by(&key_a, Some(serde_json::json!({"type": "matchRepository"})))]}),
        ),
        (
            "signedBy A, exactRepository signed/a",
            serde_json::json!({"default": [signed_by(&key_a, Some(serde_json::json!({"type": "exactRepository", "dockerRepository": format!("{host}/signed/a")})))]}),
        ),
        (
            "signedBy A, remapIdentity named -> signed",
            serde_json::json!({"default": [signed_by(&key_a, Some(serde_json::json!({"type": "remapIdentity", "prefix": format!("{host}/named/two"), "signedPrefix": format!("{host}/signed/a")})))]}),
        ),
        (
            "signedBy A for signed/, accept elsewhere",
            serde_json::json!({"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {format!("{host}/signed"): [signed_by(&key_a, None)]}}}),
        ),
    ];
    let images = [
        format!("{host}/signed/a:1"),
        format!("{host}/signed/b:1"),
        format!("{host}/signed/c:1"),
        format!("{host}/signed/d:1"),
        format!("{host}/plain/x:1"),
        format!("{host}/named/two:1"),
        format!("{host}/corrupt/c:1"),
        other.reference.clone(),
    ];
    let mut table = Vec::new();
    let mut allowed = 0;
    for (i, (name, p)) in policies.iter().enumerate() {
        let file = tmp.path().join(format!("gpg-policy-{i}.json"));
        std::fs::write(&file, p.to_string()).unwrap();
        for (j, image) in images.iter().enumerate() {
            let oracle =
                skopeo_allows_with(&file, &rd, image, &tmp.path().join(format!("goci-{i}-{j}")));
            let root = tmp.path().join(format!("groot-{i}-{j}"));
            let r = imgpull_policy(&root, &file, Some(&rd), image);
            // A key that signed while good says why it no longer counts.
            let why = match (
                i,
                image.ends_with("/signed/c:1"),
                image.ends_with("/signed/d:1"),
            ) {
                (3, true, _) => Some(format!(
                    "signed by key {fpr_c}, which expired on 2020-01-03"
                )),
                (4, _, true) => Some(format!("signed by key {fpr_d}, which is revoked")),
                _ => None,
            };
            if let Some(why) = why {
                assert!(r.stderr.contains(&why), "{name}, {image}: {}", r.describe());
            }
            let ours = match r.code {
                Some(0) => true,
                Some(5) => {
                    nothing_stored(&root);
                    false
                }
                _ => panic!("{name}, {image}: {}", r.describe()),
            };
            allowed += usize::from(ours);
            table.push(format!(
                "{name:44} {:24} skopeo {oracle:5} imgpull {ours:5}",
                image.split_once('/').map_or("", |x| x.1)
            ));
            assert_eq!(
                ours,
                oracle,
                "{name}, {image}: skopeo {oracle}, imgpull {ours}\n{}",
                r.describe()
            );
        }
    }
    println!("{}", table.join("\n"));
    assert!(
        allowed > 0 && allowed < policies.len() * images.len(),
        "every verdict was the same"
    );

    // The same signatures served over HTTP as lookaside storage.
    let web = StaticFiles::serve(&sigs);
    std::fs::write(
        rd.join("test.yaml"),
        format!("docker:\n  {host}:\n    lookaside: http://{}/\n", web.addr),
    )
    .unwrap();
    let file = tmp.path().join("gpg-policy-0.json");
    for (j, image) in images.iter().enumerate() {
        let oracle = skopeo_allows_with(&file, &rd, image, &tmp.path().join(format!("hoci-{j}")));
        let r = imgpull_policy(
            &tmp.path().join(format!("hroot-{j}")),
            &file,
            Some(&rd),
            image,
        );
        assert_eq!(
            r.code == Some(0),
            oracle,
            "over HTTP, {image}: {}",
            r.describe()
        );
    }
    assert!(web.requests() > 0, "the lookaside server was not asked");
}

/// Files of a directory over plain HTTP on loopback, GET only; stopped on drop.
struct StaticFiles {
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl StaticFiles {
    fn serve(dir: &Path) -> StaticFiles {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (dir, st, n) = (dir.to_path_buf(), stop.clone(), count.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                n.fetch_add(1, Ordering::SeqCst);
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let path = text
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .replace("%40", "@")
                    .replace("%3D", "=");
                let body = if path.contains("..") {
                    None
                } else {
                    std::fs::read(dir.join(path.trim_start_matches('/'))).ok()
                };
                let _ = match body {
                    Some(b) => conn
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                b.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|_| conn.write_all(&b)),
                    None => conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            }
        });
        StaticFiles { addr, stop, count }
    }

    fn requests(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for StaticFiles {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(&self.addr);
    }
}

#[test]
fn peers_from_a_dns_name_and_ranked_per_blob_alike_on_every_node() {
    use crikit::distribution::digest::Digest;
    use crikit::distribution::registry::peers::rank;
    let reg = Registry::start();
    let tmp = TempRoot::new();
    // An image of several layers, so that the ranking has blobs to spread.
    let layers = (0..6)
        .map(|i| e2e::Layer::large(&format!("f{i}"), 1, e2e::Compression::Gzip))
        .collect();
    let pushed = reg.push("spread/app", &Image::new(layers));
    let no_auth = authfile(&tmp.path().join("none.json"), &[]);
    let seeded = tmp.path().join("seeded");
    std::fs::create_dir_all(&seeded).unwrap();
    let c = conf(tmp.path(), &reg.addr, &[]);
    imgpull(&seeded, &c, &no_auth, &[&pushed.reference]).ok();
    let srv = Server::start(&seeded, &[]);
    let (a, b) = (Proxy::start(&srv.addr), Proxy::start(&srv.addr));
    let peers = tmp.path().join("peers");
    std::fs::write(&peers, format!("{}\n{}\n", a.addr, b.addr)).unwrap();

    // Each blob is asked of the peer the ranking puts first, and only of it.
    let node = tmp.path().join("node");
    let p = peers.to_str().unwrap();
    imgpull(&node, &c, &no_auth, &["--peers", p, &pushed.reference]).ok();
    let list = vec![a.addr.clone(), b.addr.clone()];
    let mut blobs = pushed.layers.clone();
    blobs.push(pushed.config.clone());
    // A blob's path, without the ?ns= that names its registry.
    let asked = |p: &Proxy, d: &str| {
        let path = format!("/blobs/{d}");
        p.seen()
            .iter()
            .filter(|s| s.path.split('?').next().is_some_and(|p| p.ends_with(&path)))
            .count()
    };
    let mut first_a = 0;
    for d in &blobs {
        let first = &rank(&list, &Digest::parse(d).unwrap())[0];
        let (top, other) = if *first == a.addr { (&a, &b) } else { (&b, &a) };
        first_a += usize::from(*first == a.addr);
        assert_eq!((asked(top, d), asked(other, d)), (1, 0), "{d}");
    }
    assert!(
        first_a > 0 && first_a < blobs.len(),
        "one peer served every blob"
    );
    check_store(&node.join("images"));

    // dns:NAME:PORT: localhost's addresses with the port; the one nothing serves
    // (::1 where localhost has it) is passed over.
    let port = a.addr.rsplit_once(':').unwrap().1;
    let before = a.seen().len();
    let node2 = tmp.path().join("node2");
    let spec = format!("dns:localhost:{port}");
    imgpull(&node2, &c, &no_auth, &["--peers", &spec, &pushed.reference]).ok();
    let served = a.seen()[before..]
        .iter()
        .filter(|s| s.path.contains("/blobs/"))
        .count();
    assert_eq!(served, blobs.len());
    check_store(&node2.join("images"));
    // ... and --self names the node's own imgserve: not a peer of the list, but
    // ranked with them, and asked (for the blobs it ranks first) only when there
    // are others.
    let before = a.seen().len();
    let node3 = tmp.path().join("node3");
    let me = format!("127.0.0.1:{port}");
    imgpull(
        &node3,
        &c,
        &no_auth,
        &["--peers", &spec, "--self", &me, &pushed.reference],
    )
    .ok();
    let others: Vec<String> =
        std::net::ToSocketAddrs::to_socket_addrs(&("localhost", port.parse::<u16>().unwrap()))
            .unwrap()
            .map(|s| s.to_string())
            .filter(|s| *s != me)
            .collect();
    let mut ranked = others.clone();
    ranked.push(me.clone());
    let expected = if others.is_empty() {
        0
    } else {
        blobs
            .iter()
            .filter(|d| rank(&ranked, &Digest::parse(d).unwrap())[0] == me)
            .count()
    };
    let asked_me = a.seen()[before..]
        .iter()
        .filter(|s| s.path.contains("/blobs/"))
        .count();
    assert_eq!(asked_me, expected, "{others:?}");
    check_store(&node3.join("images"));
}
