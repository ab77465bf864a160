//! The floor for `make bench`: the least a pull must do, as a program of its own —
//! fetch the manifest by tag, then stream every blob it names at once (one thread
//! and one plain HTTP/1.1 request per blob), SHA-256 each with the same hasher
//! imgpull uses, and write it to a file. No retries, no fsync, no store.
//!
//! usage: floor HOST:PORT REPO TAG OUTDIR

use std::io::{Read, Write};
use std::net::TcpStream;

const ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json";

/// GETs `path` and streams the body through the hasher into `out/NAME`; returns the
/// body's digest and, when `keep` is set, the body itself.
fn fetch(
    addr: &str,
    path: &str,
    out: &std::path::Path,
    name: &str,
    keep: bool,
) -> Result<(String, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {ACCEPT}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    // Read up to the end of the response head; what follows it is body.
    let body_start = loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("{path}: connection closed in the response head"));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "{path}: {}",
            String::from_utf8_lossy(&head[..head.len().min(40)])
        ));
    }
    let mut file = std::fs::File::create(out.join(name)).map_err(|e| e.to_string())?;
    let mut hasher = crikit::distribution::digest::Hasher::new();
    let mut kept = Vec::new();
    let mut take = |data: &[u8]| -> Result<(), String> {
        hasher.update(data);
        if keep {
            kept.extend_from_slice(data);
        }
        file.write_all(data).map_err(|e| e.to_string())
    };
    take(&head[body_start..])?;
    loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        take(&buf[..n])?;
    }
    Ok((hasher.finish().to_string(), kept))
}

fn run(addr: &str, repo: &str, tag: &str, out: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (_, raw) = fetch(
        addr,
        &format!("/v2/{repo}/manifests/{tag}"),
        out,
        "manifest",
        true,
    )?;
    let m: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
    let digests: Vec<&str> = std::iter::once(&m["config"])
        .chain(m["layers"].as_array().into_iter().flatten())
        .filter_map(|d| d["digest"].as_str())
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = digests
            .iter()
            .map(|&d| {
                s.spawn(move || {
                    let path = format!("/v2/{repo}/blobs/{d}");
                    let name = d.trim_start_matches("sha256:");
                    let (got, _) = fetch(addr, &path, out, name, false)?;
                    if got != d {
                        return Err(format!("{d}: arrived as {got}"));
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
    })
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, repo, tag, out] = args.as_slice() else {
        eprintln!("usage: floor HOST:PORT REPO TAG OUTDIR");
        return std::process::ExitCode::from(2);
    };
    match run(addr, repo, tag, std::path::Path::new(out)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
