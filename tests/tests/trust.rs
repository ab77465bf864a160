//! Where credentials go, and who may be asked for an image: a real docker-registry
//! behind a proxy that requires a token (the upstream), a proxy that answers 401
//! with a Basic challenge (a mirror that wants credentials), and other nodes'
//! imgserve as peers — with imgpull and crid.

use e2e::image::http;
use e2e::{bin, check_store, run, Fault, Image, Proxy, Registry, TempRoot};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(120);
const USER: &str = "alice";
const PASS: &str = "s3cret";

/// A running imgserve; killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(root: &Path) -> Server {
        let mut child = Command::new(bin("imgserve"))
            .arg("--root")
            .arg(root)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting imgserve");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("imgserve's address");
        assert!(!line.is_empty(), "imgserve printed no address");
        Server {
            child,
            addr: line.trim().to_string(),
        }
    }
}

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

#[test]
fn a_pulls_credentials_go_to_its_registry_and_a_mirror_gets_only_its_own() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let pushed = reg.push("private/app", &Image::busybox());
    let upstream = Proxy::start(&reg.addr).with_token_auth(USER, PASS);
    let reference = pushed.reference.replacen(&reg.addr, &upstream.addr, 1);
    let no_auth = authfile(&tmp.path().join("none.json"), &[]);
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
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let pushed = reg.push("private/app", &Image::busybox());
    let upstream = Proxy::start(&reg.addr).with_token_auth(USER, PASS);
    let reference = pushed.reference.replacen(&reg.addr, &upstream.addr, 1);
    let no_auth = authfile(&tmp.path().join("none.json"), &[]);
    let creds = format!("{USER}:{PASS}");
    let peer_root = tmp.path().join("peer");
    std::fs::create_dir_all(&peer_root).unwrap();
    seed(&peer_root, &upstream.addr, &reference, &no_auth);
    let srv = Server::start(&peer_root);
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
    let srv = Server::start(&root);
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
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let pushed = reg.push("private/app", &Image::busybox());
    let upstream = Proxy::start(&reg.addr).with_token_auth(USER, PASS);
    let reference = pushed.reference.replacen(&reg.addr, &upstream.addr, 1);
    let no_auth = authfile(&tmp.path().join("none.json"), &[]);
    let peer_root = tmp.path().join("peer");
    std::fs::create_dir_all(&peer_root).unwrap();
    seed(&peer_root, &upstream.addr, &reference, &no_auth);
    let srv = Server::start(&peer_root);
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
