//! `signedBy` with `GPGKeys`: the "atomic container signature" that
//! containers/image (skopeo copy --sign-by) writes: an OpenPGP signed message
//! (one-pass signature, usually compressed) whose literal data is JSON naming the
//! image and its manifest digest. Signatures are found in lookaside storage as
//! registries.d names it: `BASE/REPOSITORY@sha256=HEX/signature-N`, N from 1,
//! under a file://, http:// or https:// base.
//! OpenPGP is rPGP's (the `pgp` crate).

use crate::distribution::digest::Digest;
use crate::distribution::reference::Reference;
use pgp::composed::{Message, PublicOrSecret, SignedPublicKey};
use std::io::Read as _;

/// The `critical.type` of a simple-signing payload.
pub const PAYLOAD_TYPE: &str = "atomic container signature";
/// Signatures read per image, at most.
pub const MAX_SIGNATURES: usize = 16;
/// A signature file larger than this is not read.
pub const MAX_SIGNATURE: u64 = 64 << 10;

/// Trusted keys: a keyring's public keys.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// From keyring bytes, binary or ASCII-armored (what `gpg --export` writes,
    /// with or without `--armor`).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let (items, _) = PublicOrSecret::from_reader_many(bytes)
            .map_err(|e| format!("not an OpenPGP keyring ({e})"))?;
        let mut keys = Vec::new();
        for item in items {
            match item.map_err(|e| format!("not an OpenPGP keyring ({e})"))? {
                PublicOrSecret::Public(k) => keys.push(k),
                PublicOrSecret::Secret(_) => {
                    return Err("holds a secret key; give the public keys only".into())
                }
            }
        }
        if keys.is_empty() {
            return Err("holds no public key".into());
        }
        Ok(Keyring { keys })
    }

    fn add(&mut self, other: Keyring) {
        self.keys.extend(other.keys);
    }

    /// From several keyrings.
    pub fn merge(rings: Vec<Keyring>) -> Option<Keyring> {
        let mut it = rings.into_iter();
        let mut first = it.next()?;
        for r in it {
            first.add(r);
        }
        Some(first)
    }

    /// The signed data of `signature` when a key of the ring (a primary key or
    /// one of its subkeys) made it; Err says why not.
    pub fn open(&self, signature: &[u8]) -> Result<Vec<u8>, String> {
        let msg =
            Message::from_bytes(signature).map_err(|e| format!("not an OpenPGP message ({e})"))?;
        let mut msg = msg
            .decompress()
            .map_err(|e| format!("cannot decompress the message ({e})"))?;
        if !msg.is_one_pass_signed() && !matches!(msg, Message::Signed { .. }) {
            return Err("the message is not signed".into());
        }
        let mut data = Vec::new();
        (&mut msg)
            .take(MAX_SIGNATURE + 1)
            .read_to_end(&mut data)
            .map_err(|e| format!("reading the signed data ({e})"))?;
        if data.len() as u64 > MAX_SIGNATURE {
            return Err("the signed data is too large".into());
        }
        for key in &self.keys {
            if msg.verify(key).is_ok() {
                return Ok(data);
            }
            for sub in &key.public_subkeys {
                if msg.verify(sub).is_ok() {
                    return Ok(data);
                }
            }
        }
        Err("not signed by a trusted key".into())
    }
}

/// Checks one signature file: made by a key of `keys`, its payload naming
/// `digest` and an identity `accept` takes.
pub fn verify(
    signature: &[u8],
    keys: &Keyring,
    digest: &Digest,
    accept: impl Fn(&Reference) -> bool,
) -> Result<(), String> {
    let payload = keys.open(signature)?;
    super::sigstore::check_claims(&payload, PAYLOAD_TYPE, digest, accept)
}

/// Where signature `n` (from 1) of the image at `digest` in `repository` (its
/// path, without the registry) is, under the lookaside `base` URL.
pub fn lookaside_url(base: &str, repository: &str, digest: &Digest, n: usize) -> String {
    let (algo, hex) = digest.as_str().split_once(':').unwrap_or(("sha256", ""));
    format!(
        "{}/{repository}@{algo}={hex}/signature-{n}",
        base.trim_end_matches('/')
    )
}

/// Whether `base` is lookaside storage this module reads: file://, http://, https://.
pub fn check_lookaside(base: &str) -> Result<(), String> {
    if ["file://", "http://", "https://"]
        .iter()
        .any(|s| base.starts_with(s))
    {
        Ok(())
    } else {
        Err(format!(
            "lookaside {base:?} is neither file://, http:// nor https://"
        ))
    }
}

/// The signatures of the image in file:// lookaside storage `base`:
/// signature-1, signature-2, … until one is missing. Ok(empty) when there are none.
pub fn read_lookaside_files(
    base: &str,
    repository: &str,
    digest: &Digest,
) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for n in 1..=MAX_SIGNATURES {
        let url = lookaside_url(base, repository, digest, n);
        let Some(path) = url.strip_prefix("file://").map(std::path::PathBuf::from) else {
            break;
        };
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let mut data = Vec::new();
        f.take(MAX_SIGNATURE + 1)
            .read_to_end(&mut data)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        if data.len() as u64 > MAX_SIGNATURE {
            return Err(format!(
                "{}: larger than {MAX_SIGNATURE} bytes",
                path.display()
            ));
        }
        out.push(data);
    }
    Ok(out)
}
