//! SHA-256 throughput of the hasher every blob goes through (`make bench` prints it
//! beside coreutils' sha256sum on the same bytes).
//!
//! usage: hashspeed FILE    (hashes FILE from memory, best of 5, prints MB/s)

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: hashspeed FILE")?;
    let data = std::fs::read(&path)?;
    let mut best = f64::MAX;
    let mut digest = None;
    for _ in 0..5 {
        let t = Instant::now();
        let mut h = crikit::distribution::digest::Hasher::new();
        for chunk in data.chunks(1 << 20) {
            h.update(chunk);
        }
        digest = Some(h.finish());
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mbps = data.len() as f64 / best / 1e6;
    println!(
        "{mbps:.0} {}",
        digest.map(|d| d.to_string()).unwrap_or_default()
    );
    Ok(())
}
