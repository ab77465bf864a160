//! Test images built in memory — tar layers (gzip, zstd or plain), an image config,
//! OCI or Docker schema 2 manifests, multi-platform indexes — and pushed to a
//! registry with the distribution API (monolithic blob upload, manifest PUT).

use crate::sha256;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Manifest flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI image manifest.
    Oci,
    /// Docker schema 2.
    Docker,
}

/// One tar entry.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A regular file.
    File(String, Vec<u8>, u32),
    /// A directory.
    Dir(String, u32),
    /// A symlink (path, target).
    Symlink(String, String),
    /// A regular file with extended attributes, written as PAX `SCHILY.xattr.*`.
    FileXattrs(String, Vec<u8>, u32, Vec<(String, Vec<u8>)>),
    /// Any entry with a raw name and link name, unchecked (for hostile layers).
    Raw {
        /// Name bytes as written (at most 100).
        name: String,
        /// Entry type.
        kind: tar::EntryType,
        /// Content.
        data: Vec<u8>,
        /// Link name, for links.
        link: Option<String>,
        /// Mode.
        mode: u32,
    },
}

/// One PAX extended header record, `LEN KEY=VALUE\n` (LEN counts itself).
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// A layer: its uncompressed tar and how it is compressed.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// Compression of the blob.
    pub compression: Compression,
}

impl Layer {
    /// Builds a layer from entries.
    pub fn new(entries: &[Entry], compression: Compression) -> Layer {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            match e {
                Entry::File(p, data, mode) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, data.as_slice()).expect("tar file");
                }
                Entry::Dir(p, mode) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(&mut h, p, std::io::empty()).expect("tar dir");
                }
                Entry::FileXattrs(p, data, mode, xattrs) => {
                    let pax: Vec<u8> = xattrs
                        .iter()
                        .flat_map(|(k, v)| pax_record(&format!("SCHILY.xattr.{k}"), v))
                        .collect();
                    let mut ph = tar::Header::new_ustar();
                    ph.set_entry_type(tar::EntryType::XHeader);
                    ph.set_path("PaxHeaders/x").expect("pax path");
                    ph.set_size(pax.len() as u64);
                    ph.set_cksum();
                    b.append(&ph, pax.as_slice()).expect("pax header");
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, data.as_slice()).expect("tar file");
                }
                Entry::Raw {
                    name,
                    kind,
                    data,
                    link,
                    mode,
                } => {
                    let old = h.as_old_mut();
                    old.name.fill(0);
                    old.name[..name.len()].copy_from_slice(name.as_bytes());
                    if let Some(l) = link {
                        old.linkname.fill(0);
                        old.linkname[..l.len()].copy_from_slice(l.as_bytes());
                    }
                    h.set_entry_type(*kind);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    h.set_cksum();
                    b.append(&h, data.as_slice()).expect("raw entry");
                }
                Entry::Symlink(p, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, p, target).expect("tar symlink");
                }
            }
        }
        Layer {
            tar: b.into_inner().expect("tar finish"),
            compression,
        }
    }

    /// Debian's static busybox with a few applet links, /etc/passwd and /etc/group.
    pub fn busybox(compression: Compression) -> Layer {
        let exe = "/bin/busybox";
        let data = std::fs::read(exe)
            .unwrap_or_else(|e| panic!("{exe}: {e} (install Debian's busybox-static: make deps)"));
        let mut entries = vec![
            Entry::Dir("bin".into(), 0o755),
            Entry::File("bin/busybox".into(), data, 0o755),
            Entry::Dir("etc".into(), 0o755),
            Entry::File(
                "etc/passwd".into(),
                b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
                    .to_vec(),
                0o644,
            ),
            Entry::File(
                "etc/group".into(),
                b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
                0o644,
            ),
            Entry::Dir("tmp".into(), 0o1777),
            Entry::Dir("root".into(), 0o700),
        ];
        for applet in [
            "sh", "echo", "cat", "ls", "id", "sleep", "true", "false", "env", "pwd",
        ] {
            entries.push(Entry::Symlink(format!("bin/{applet}"), "busybox".into()));
        }
        Layer::new(&entries, compression)
    }

    /// A layer holding one file of `mib` MiB of deterministic, poorly compressible bytes.
    pub fn large(path: &str, mib: usize, compression: Compression) -> Layer {
        let mut data = vec![0u8; mib << 20];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        Layer::new(&[Entry::File(path.into(), data, 0o644)], compression)
    }

    /// The blob as pushed.
    pub fn blob(&self) -> Vec<u8> {
        match self.compression {
            Compression::None => self.tar.clone(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&self.tar).expect("gzip");
                e.finish().expect("gzip")
            }
            Compression::Zstd => zstd::encode_all(self.tar.as_slice(), 3).expect("zstd"),
        }
    }

    fn media_type(&self, format: ManifestFormat) -> &'static str {
        match (format, self.compression) {
            (ManifestFormat::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (ManifestFormat::Oci, Compression::Gzip) => {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            }
            (ManifestFormat::Oci, Compression::Zstd) => {
                "application/vnd.oci.image.layer.v1.tar+zstd"
            }
            (ManifestFormat::Docker, Compression::None) => {
                "application/vnd.docker.image.rootfs.diff.tar"
            }
            (ManifestFormat::Docker, _) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
}

/// An image to push.
#[derive(Debug, Clone)]
pub struct Image {
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
    /// Config `config.Cmd`.
    pub cmd: Vec<String>,
    /// Config `config.Env`.
    pub env: Vec<String>,
    /// `architecture`.
    pub arch: String,
    /// `variant`, if any.
    pub variant: Option<String>,
    /// Manifest flavour.
    pub format: ManifestFormat,
}

impl Image {
    /// An OCI image for the host (amd64 here) with these layers, running /bin/sh.
    pub fn new(layers: Vec<Layer>) -> Image {
        Image {
            layers,
            cmd: vec!["/bin/sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            arch: host_arch().into(),
            variant: None,
            format: ManifestFormat::Oci,
        }
    }

    /// The single-layer busybox image.
    pub fn busybox() -> Image {
        Image::new(vec![Layer::busybox(Compression::Gzip)])
    }

    /// An image of one layer holding one file of `mib` MiB (see [`Layer::large`]).
    pub fn large(path: &str, mib: usize, compression: Compression) -> Image {
        Image::new(vec![Layer::large(path, mib, compression)])
    }
}

/// The host architecture in GOARCH terms.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// What was pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `HOST:PORT/REPO:TAG`.
    pub reference: String,
    /// The manifest's (or index's) digest.
    pub digest: String,
    /// Digests of the layer blobs (of the first platform for an index).
    pub layers: Vec<String>,
    /// Digest of the config blob.
    pub config: String,
    /// Digests of platform manifests (index only).
    pub children: Vec<String>,
}

/// A minimal blocking HTTP/1.1 request on loopback; returns (status, headers, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write request");
    s.write_all(body).expect("write body");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read response");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, buf[split + 4..].to_vec())
}

/// Uploads one blob (monolithic POST + PUT).
pub fn push_blob(addr: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let (st, _, _) = http(
        addr,
        "HEAD",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        &[],
    );
    if st == 200 {
        return digest;
    }
    let (st, h, body) = http(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        &[],
    );
    assert_eq!(
        st,
        202,
        "starting upload: {}",
        String::from_utf8_lossy(&body)
    );
    let loc = h
        .iter()
        .find(|(k, _)| k == "location")
        .map(|(_, v)| v.clone())
        .expect("Location");
    let path = match loc.find("/v2/") {
        Some(i) => loc[i..].to_string(),
        None => loc,
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let (st, _, body) = http(
        addr,
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(
        st,
        201,
        "uploading blob: {}",
        String::from_utf8_lossy(&body)
    );
    digest
}

/// Uploads a manifest under `reference` (a tag or digest).
pub fn push_manifest(
    addr: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    data: &[u8],
) -> String {
    let (st, _, body) = http(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        data,
    );
    assert_eq!(
        st,
        201,
        "pushing manifest: {}",
        String::from_utf8_lossy(&body)
    );
    sha256(data)
}

fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": sha256(data), "size": data.len()})
}

/// Pushes an image's blobs and returns its manifest (not yet pushed), with digests.
fn push_parts(addr: &str, repo: &str, img: &Image) -> (Vec<u8>, &'static str, Vec<String>, String) {
    let diff_ids: Vec<String> = img.layers.iter().map(|l| sha256(&l.tar)).collect();
    let mut config = serde_json::json!({
        "architecture": img.arch,
        "os": "linux",
        "config": {"Cmd": img.cmd, "Env": img.env},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(v) = &img.variant {
        config["variant"] = v.clone().into();
    }
    let config = serde_json::to_vec(&config).expect("config json");
    push_blob(addr, repo, &config);
    let mut layers = Vec::new();
    let mut digests = Vec::new();
    for l in &img.layers {
        let blob = l.blob();
        digests.push(push_blob(addr, repo, &blob));
        layers.push(descriptor(l.media_type(img.format), &blob));
    }
    let (mt, config_mt) = match img.format {
        ManifestFormat::Oci => (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
        ),
        ManifestFormat::Docker => (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
        ),
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": descriptor(config_mt, &config),
        "layers": layers,
    });
    (
        serde_json::to_vec(&manifest).expect("manifest json"),
        mt,
        digests,
        sha256(&config),
    )
}

/// Pushes `img` as `repo:tag` to the registry at `addr`.
pub fn push(addr: &str, repo: &str, tag: &str, img: &Image) -> Pushed {
    let (manifest, mt, layers, config) = push_parts(addr, repo, img);
    let digest = push_manifest(addr, repo, tag, mt, &manifest);
    Pushed {
        reference: format!("{addr}/{repo}:{tag}"),
        digest,
        layers,
        config,
        children: Vec::new(),
    }
}

/// Pushes a multi-platform index of `images` as `repo:tag` (a Docker manifest list
/// when the images are Docker schema 2).
pub fn push_index(addr: &str, repo: &str, tag: &str, images: &[Image]) -> Pushed {
    let mut entries = Vec::new();
    let mut children = Vec::new();
    let mut first = None;
    for img in images {
        let (manifest, mt, layers, config) = push_parts(addr, repo, img);
        let d = push_manifest(addr, repo, &sha256(&manifest), mt, &manifest);
        let mut platform = serde_json::json!({"os": "linux", "architecture": img.arch});
        if let Some(v) = &img.variant {
            platform["variant"] = v.clone().into();
        }
        let mut e = descriptor(mt, &manifest);
        e["platform"] = platform;
        entries.push(e);
        children.push(d);
        first.get_or_insert((layers, config));
    }
    // Docker images go in a Docker manifest list, OCI ones in an OCI index.
    let mt = match images.first().map(|i| i.format) {
        Some(ManifestFormat::Docker) => "application/vnd.docker.distribution.manifest.list.v2+json",
        _ => "application/vnd.oci.image.index.v1+json",
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "manifests": entries,
    });
    let data = serde_json::to_vec(&index).expect("index json");
    let digest = push_manifest(addr, repo, tag, mt, &data);
    let (layers, config) = first.unwrap_or_default();
    Pushed {
        reference: format!("{addr}/{repo}:{tag}"),
        digest,
        layers,
        config,
        children,
    }
}
