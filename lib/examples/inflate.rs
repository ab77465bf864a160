//! Gzip inflate throughput of the candidate decoders, on a layer blob: flate2 with
//! its zlib-rs backend (what crikit uses), miniz_oxide (flate2's pure-Rust default),
//! and libdeflate (whole-member: the compressed and uncompressed buffers in memory).
//! zlib-ng (`libz-ng-sys`) needs cmake, which these machines lack.
//!
//! usage: inflate GZIP-FILE   (best of 3 per decoder, MB/s of uncompressed output)

use std::io::Read;
use std::time::Instant;

fn best<F: FnMut() -> usize>(mut f: F) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..3 {
        let t = Instant::now();
        n = f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, n)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: inflate GZIP-FILE")?;
    let data = std::fs::read(&path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (t, n) = best(|| {
        let mut d = flate2::bufread::MultiGzDecoder::new(&data[..]);
        let mut total = 0;
        while let Ok(k) = d.read(&mut buf) {
            if k == 0 {
                break;
            }
            total += k;
        }
        total
    });
    println!("flate2/zlib-rs  {:7.0} MB/s", n as f64 / t / 1e6);
    let (t, n) = best(|| {
        // miniz_oxide on the raw deflate stream after the 10-byte gzip header.
        miniz_oxide::inflate::decompress_to_vec(&data[10..data.len() - 8])
            .map(|v| v.len())
            .unwrap_or(0)
    });
    println!("miniz_oxide     {:7.0} MB/s", n as f64 / t / 1e6);
    let isize = u32::from_le_bytes(data[data.len() - 4..].try_into()?) as usize;
    let (t, n) = best(|| {
        let mut out = vec![0u8; isize.max(1)];
        let mut d = libdeflater::Decompressor::new();
        d.gzip_decompress(&data, &mut out).unwrap_or(0)
    });
    println!("libdeflate      {:7.0} MB/s", n as f64 / t / 1e6);
    Ok(())
}
