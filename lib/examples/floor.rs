//! The floor for `make bench`: the least a pull must do, as a program of its own —
//! stream each blob from the registry (one thread and one plain HTTP/1.1 request per
//! blob), SHA-256 it with the same hasher imgpull uses, and write it to a file. No
//! manifest handling, no retries, no fsync, no store.
//!
//! usage: floor HOST:PORT REPO OUTDIR DIGEST...

use std::io::{Read, Write};
use std::net::TcpStream;

fn fetch(addr: &str, repo: &str, digest: &str, out: &std::path::Path) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    write!(
        s,
        "GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    // Read up to the end of the response head; what follows it is body.
    let body_start = loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("{digest}: connection closed in the response head"));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "{digest}: {}",
            String::from_utf8_lossy(&head[..head.len().min(40)])
        ));
    }
    let mut file = std::fs::File::create(out.join(&digest[7..])).map_err(|e| e.to_string())?;
    let mut hasher = crikit::digest::Hasher::new();
    hasher.update(&head[body_start..]);
    file.write_all(&head[body_start..])
        .map_err(|e| e.to_string())?;
    loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|e| e.to_string())?;
    }
    let got = hasher.finish();
    if got.as_str() != digest {
        return Err(format!("{digest}: arrived as {got}"));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: floor HOST:PORT REPO OUTDIR DIGEST...");
        return std::process::ExitCode::from(2);
    }
    let (addr, repo, out) = (&args[0], &args[1], std::path::Path::new(&args[2]));
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("floor: {}: {e}", out.display());
        return std::process::ExitCode::FAILURE;
    }
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = args[3..]
            .iter()
            .map(|d| s.spawn(move || fetch(addr, repo, d, out)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    for r in results {
        if let Err(e) = r {
            eprintln!("floor: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}
