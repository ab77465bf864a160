//! Peers as a cluster has them: nodes in network namespaces on a bridge, each with
//! its own store, imgserve and imgpull, and the upstream docker-registry behind a
//! link shaped to 200 Mbit/s, so that the upstream is the bottleneck. The
//! registry's own access log says what it served.

use e2e::cluster::Cluster;
use e2e::{bin, check_store, run, Compression, Image, Layer, Pushed, Registry, TempRoot};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(180);
/// The upstream link, Mbit/s.
const MBIT: u32 = 200;
/// imgserve's port on every node.
const PORT: u16 = 7000;

/// The nodes' stores, and the peer list (every node's imgserve) they share.
struct Nodes {
    roots: Vec<PathBuf>,
    addrs: Vec<String>,
    peers: PathBuf,
    servers: Vec<usize>,
}

/// imgserve on every node of `c`, each knowing the others through one peer list.
fn serve_all(c: &Cluster, tmp: &Path) -> Nodes {
    let peers = tmp.join("peers");
    let auth = tmp.join("auth.json");
    std::fs::write(&auth, r#"{"auths":{}}"#).unwrap();
    let addrs: Vec<String> = c.nodes.iter().map(|n| format!("{}:{PORT}", n.ip)).collect();
    std::fs::write(&peers, addrs.join("\n") + "\n").unwrap();
    let upstream = c.upstream.clone();
    let mut roots = Vec::new();
    let mut servers = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let root = tmp.join(format!("node{i}"));
        std::fs::create_dir_all(&root).unwrap();
        let (said, idx) = c.imgserve(
            i,
            &root,
            &[
                "--peers",
                peers.to_str().unwrap(),
                "--self",
                addr,
                "--registries-conf",
                "/dev/null",
                "--insecure-registry",
                &upstream,
                "--authfile",
                auth.to_str().unwrap(),
            ],
        );
        assert_eq!(&said, addr);
        roots.push(root);
        servers.push(idx);
    }
    Nodes {
        roots,
        addrs,
        peers,
        servers,
    }
}

/// Node `i` pulls `reference` through its peers.
fn pull(c: &Cluster, n: &Nodes, i: usize, reference: &str) -> e2e::Run {
    let mut cmd = c.nodes[i].command(bin("imgpull"));
    cmd.arg("--root")
        .arg(&n.roots[i])
        .args(["--registries-conf", "/dev/null"])
        .args(["--insecure-registry", &c.upstream, "-q"])
        .args(["--stall-timeout", "5"])
        .arg("--peers")
        .arg(&n.peers)
        .args(["--self", &n.addrs[i], reference])
        .env("HOME", &n.roots[i]);
    run(cmd, T)
}

/// The nodes `which` pull `reference` at once; each must end with it stored, every
/// blob of its store whole.
fn pull_at_once(c: &Cluster, n: &Nodes, which: &[usize], reference: &str) {
    std::thread::scope(|s| {
        let pulls: Vec<_> = which
            .iter()
            .map(|&i| s.spawn(move || pull(c, n, i, reference)))
            .collect();
        for p in pulls {
            p.join().expect("pull thread").ok();
        }
    });
    for &i in which {
        let stored = check_store(&n.roots[i].join("images"));
        assert!(
            stored.iter().any(|s| s == reference),
            "node {i}: {stored:?}"
        );
    }
}

/// `image` pushed to a loopback registry as `repo:1`; its reference as the
/// cluster's nodes name it.
fn push(reg: &Registry, c: &Cluster, repo: &str, image: &Image) -> (Pushed, String) {
    let p = reg.push(repo, image);
    let reference = p.reference.replace(&reg.addr, &c.upstream);
    (p, reference)
}

#[test]
fn four_nodes_pulling_at_once_get_each_blob_from_the_shaped_upstream_once() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let c = Cluster::start(4, &reg.data_dir(), MBIT);
    let nodes = serve_all(&c, tmp.path());
    let mut layers: Vec<Layer> = ["a", "b", "c"]
        .iter()
        .map(|f| Layer::large(f, 8, Compression::Gzip))
        .collect();
    layers.push(Layer::busybox(Compression::Gzip));
    let (p, reference) = push(&reg, &c, "cluster/app", &Image::new(layers));
    pull_at_once(&c, &nodes, &[0, 1, 2, 3], &reference);

    let served = c.upstream_blobs();
    for blob in p.layers.iter().chain([&p.config]) {
        let gets = served.get(blob).map_or(0, |(n, _)| *n);
        assert_eq!(gets, 1, "{blob}: served {gets} times: {served:?}");
    }
}

#[test]
fn a_peer_killed_midway_or_serving_corrupt_bytes_costs_time_not_the_image() {
    let reg = Registry::start();
    let tmp = TempRoot::new();
    let c = Cluster::start(4, &reg.data_dir(), MBIT);
    let nodes = serve_all(&c, tmp.path());
    // The node that ranks first for a blob fetches it for the others: kill its
    // imgserve once some of the layer has come, while all four pull.
    let big = Image::new(vec![
        Layer::large("big", 32, Compression::Gzip),
        Layer::busybox(Compression::Gzip),
    ]);
    let (p, reference) = push(&reg, &c, "cluster/killed", &big);
    let layer = &p.layers[0];
    let first = first_ranked(&nodes, layer);
    let ingest = nodes.roots[first].join("images/.ingest");
    let prefix = layer.trim_start_matches("sha256:")[..12].to_string();
    std::thread::scope(|s| {
        let puller = s.spawn(|| pull_at_once(&c, &nodes, &[0, 1, 2, 3], &reference));
        let deadline = Instant::now() + Duration::from_secs(60);
        while largest_temp(&ingest, &prefix) < 4 << 20 {
            assert!(
                Instant::now() < deadline && !puller.is_finished(),
                "node {first} never fetched {layer}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        c.kill(nodes.servers[first]);
        puller.join().expect("pulls");
    });
    // What the dead fetcher had begun came again from upstream, once more.
    let (gets, _) = c.upstream_blobs()[layer];
    assert!(gets >= 2, "{layer} served {gets} times");

    // A node whose stored copy went bad serves it to the others as it is: they
    // find out, and take the blob elsewhere.
    let other = Image::new(vec![
        Layer::large("other", 16, Compression::Gzip),
        Layer::busybox(Compression::Gzip),
    ]);
    let (p, reference) = push(&reg, &c, "cluster/corrupt", &other);
    let layer = &p.layers[0];
    let liar = first_ranked(&nodes, layer);
    let pullers: Vec<usize> = (0..4).filter(|i| *i != liar).collect();
    let mut seed = c.nodes[liar].command(bin("imgpull"));
    seed.arg("--root")
        .arg(&nodes.roots[liar])
        .args(["--registries-conf", "/dev/null"])
        .args(["--insecure-registry", &c.upstream, "-q", &reference]);
    run(seed, T).ok();
    let blob = nodes.roots[liar]
        .join("images/blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let before = c.upstream_blobs().get(layer).map_or(0, |(n, _)| *n);
    pull_at_once(&c, &nodes, &pullers, &reference);
    // The next-ranked peer fetched it once for the three.
    let after = c.upstream_blobs()[layer].0;
    assert_eq!(
        after - before,
        1,
        "{layer}: served {} more times",
        after - before
    );
}

/// Which node ranks first for `digest` among the peers (as every node ranks them).
fn first_ranked(n: &Nodes, digest: &str) -> usize {
    let d = crikit::distribution::digest::Digest::parse(digest).expect("digest");
    let ranked = crikit::distribution::registry::peers::rank(&n.addrs, &d);
    n.addrs
        .iter()
        .position(|a| *a == ranked[0])
        .expect("a ranked node")
}

/// The size of the largest temp file for the blob whose digest begins `prefix`.
fn largest_temp(dir: &Path, prefix: &str) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}
