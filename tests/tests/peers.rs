//! Nodes that pull the same image at the same moment: each blob is fetched from
//! the registry once, by the node that ranks first for it, and sent to the others
//! as it arrives. The nodes are stores with imgserve and imgpull on loopback; the
//! registry is a real docker-registry behind a proxy that counts what it serves.

use e2e::imgserve::Server;
use e2e::{
    bin, check_store, run, Compression, Fault, Image, Layer, Proxy, Pushed, Registry, TempRoot,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

/// A node: its store, and its imgserve with the cluster's peer list.
struct Node {
    root: PathBuf,
    addr: String,
    _server: Server,
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// `n` nodes on loopback that know each other through the file `peers`; the
/// peer list holds `listed` for each node (its imgserve, or something in front).
fn cluster(tmp: &Path, n: usize, upstream: &str) -> (Vec<Node>, PathBuf) {
    let peers = tmp.join("peers");
    let auth = tmp.join("auth.json");
    std::fs::write(&auth, r#"{"auths":{}}"#).unwrap();
    let nodes: Vec<Node> = (0..n)
        .map(|i| {
            let root = tmp.join(format!("node{i}"));
            std::fs::create_dir_all(&root).unwrap();
            let addr = free_addr();
            let server = Server::start_on(
                &root,
                &addr,
                &[
                    "--peers",
                    peers.to_str().unwrap(),
                    "--self",
                    &addr,
                    "--registries-conf",
                    "/dev/null",
                    "--insecure-registry",
                    upstream,
                    "--authfile",
                    auth.to_str().unwrap(),
                ],
            );
            Node {
                root,
                addr,
                _server: server,
            }
        })
        .collect();
    let list: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    std::fs::write(&peers, list.join("\n") + "\n").unwrap();
    (nodes, peers)
}

/// Every node pulls `reference` at once; each must end with it stored.
fn pull_all(nodes: &[Node], peers: &Path, upstream: &str, reference: &str) {
    std::thread::scope(|s| {
        let pulls: Vec<_> = nodes
            .iter()
            .map(|n| {
                s.spawn(move || {
                    let mut c = Command::new(bin("imgpull"));
                    c.arg("--root")
                        .arg(&n.root)
                        .args(["--registries-conf", "/dev/null"])
                        .args(["--insecure-registry", upstream, "-q"])
                        .arg("--peers")
                        .arg(peers)
                        .args(["--self", &n.addr, reference])
                        .env("HOME", &n.root);
                    run(c, T)
                })
            })
            .collect();
        for p in pulls {
            p.join().expect("pull thread").ok();
        }
    });
    for n in nodes {
        assert_eq!(check_store(&n.root.join("images")), [reference]);
    }
}

/// The registry behind a proxy that counts what it serves, holding `cluster/app:1`:
/// an 8 MiB layer for each of `files` and busybox on top; the image's reference
/// through the proxy.
fn upstream_with(files: &[&str]) -> (Registry, Proxy, Pushed, String) {
    let reg = Registry::start();
    let upstream = Proxy::start(&reg.addr);
    let mut layers: Vec<Layer> = files
        .iter()
        .map(|f| Layer::large(f, 8, Compression::Gzip))
        .collect();
    layers.push(Layer::busybox(Compression::Gzip));
    let p = reg.push("cluster/app", &Image::new(layers));
    let reference = p.reference.replace(&reg.addr, &upstream.addr);
    (reg, upstream, p, reference)
}

#[test]
fn nodes_pulling_at_once_fetch_each_blob_from_the_registry_once() {
    let (_reg, upstream, p, reference) = upstream_with(&["a", "b", "c"]);
    let tmp = TempRoot::new();
    let (nodes, peers) = cluster(tmp.path(), 4, &upstream.addr);
    pull_all(&nodes, &peers, &upstream.addr, &reference);

    let seen = upstream.seen();
    let mut table = Vec::new();
    for blob in p.layers.iter().chain([&p.config]) {
        let gets = seen
            .iter()
            .filter(|s| s.method == "GET" && s.path.ends_with(&format!("/blobs/{blob}")))
            .count();
        table.push((blob.clone(), gets));
    }
    assert!(table.iter().all(|(_, n)| *n == 1), "{table:?}\n{seen:?}");
    let manifests = seen
        .iter()
        .filter(|s| s.path.contains("/manifests/"))
        .count();
    assert_eq!(manifests, nodes.len(), "{seen:?}");
}

#[test]
fn a_peer_that_lies_dies_midway_or_stalls_costs_time_not_the_image() {
    let (_reg, upstream, p, reference) = upstream_with(&["a", "b"]);
    let tmp = TempRoot::new();
    let (nodes, peers) = cluster(tmp.path(), 3, &upstream.addr);
    // The list names the nodes through proxies: one corrupts every blob it
    // passes on, one sends half of each and hangs up, one says nothing.
    let liar = Proxy::start(&nodes[0].addr);
    liar.fault("/blobs/", Fault::Corrupt, None);
    let dying = Proxy::start(&nodes[1].addr);
    dying.fault("/blobs/", Fault::Truncate(0.5), None);
    let silent = Proxy::start(&nodes[2].addr);
    silent.fault("/blobs/", Fault::Stall(Duration::from_secs(60)), None);
    std::fs::write(
        &peers,
        format!("{}\n{}\n{}\n", liar.addr, dying.addr, silent.addr),
    )
    .unwrap();
    let root = tmp.path().join("puller");
    let mut c = Command::new(bin("imgpull"));
    c.arg("--root")
        .arg(&root)
        .args(["--registries-conf", "/dev/null"])
        .args(["--insecure-registry", &upstream.addr, "-q"])
        .args(["--stall-timeout", "2"])
        .arg("--peers")
        .arg(&peers)
        .arg(&reference)
        .env("HOME", &root);
    run(c, T).ok();
    assert_eq!(check_store(&root.join("images")), [reference.as_str()]);
    // Each was asked once for each blob, and cost only that attempt: the blob came
    // from the registry in the end.
    let blobs = 1 + p.layers.len();
    for (name, peer) in [("liar", &liar), ("dying", &dying), ("silent", &silent)] {
        let asked = peer
            .seen()
            .iter()
            .filter(|s| s.path.contains("/blobs/"))
            .count();
        assert_eq!(asked, blobs, "{name}: {:?}", peer.seen());
    }
}
