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
        // A key that made the signature but may not vouch for anything now: the
        // signature is refused, as gpgme's verdict makes containers/image refuse it.
        let now = pgp::types::Timestamp::now().as_secs();
        let mut refused = None;
        for key in &self.keys {
            let primary = unusable_primary(key, now);
            if let Ok(sig) = msg.verify(key) {
                match primary.clone().or_else(|| expired_signature(sig, now)) {
                    None => return Ok(data),
                    Some(why) => {
                        refused = Some(format!("signed by key {}, {why}", fingerprint(key)))
                    }
                }
            }
            for sub in &key.public_subkeys {
                if let Ok(sig) = msg.verify(sub) {
                    let why = primary
                        .clone()
                        .map(|why| format!("whose primary key is {why}"))
                        .or_else(|| unusable_subkey(sub, key, now))
                        .or_else(|| expired_signature(sig, now));
                    match why {
                        None => return Ok(data),
                        Some(why) => {
                            refused = Some(format!("signed by subkey {}, {why}", fingerprint(sub)))
                        }
                    }
                }
            }
        }
        Err(refused.unwrap_or_else(|| "not signed by a trusted key".into()))
    }
}

fn fingerprint(k: &impl pgp::types::KeyDetails) -> String {
    format!("{:X}", k.fingerprint())
}

/// The date `secs` after the epoch, for messages.
fn date(secs: u64) -> String {
    let days = secs / 86_400;
    let (y, m, d) = crate::time::civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Why a primary key may not vouch for anything now: its self-signatures do not
/// verify, it is revoked, or it expired. None when it may.
fn unusable_primary(k: &SignedPublicKey, now: u32) -> Option<String> {
    use pgp::types::KeyDetails as _;
    if k.details.verify_bindings(&k.primary_key).is_err() {
        return Some("whose self-signatures do not verify".into());
    }
    if !k.details.revocation_signatures.is_empty() {
        return Some("which is revoked".into());
    }
    // The newest self-signature says when the key expires.
    let newest = k
        .details
        .users
        .iter()
        .flat_map(|u| u.signatures.iter())
        .chain(k.details.direct_signatures.iter())
        .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0));
    expired(k.primary_key.created_at().as_secs(), newest, now)
}

/// Why a subkey may not sign now: no binding that verifies, revoked, expired,
/// not a signing key.
fn unusable_subkey(
    sub: &pgp::composed::SignedPublicSubKey,
    primary: &SignedPublicKey,
    now: u32,
) -> Option<String> {
    use pgp::types::KeyDetails as _;
    if sub.verify_bindings(&primary.primary_key).is_err() {
        return Some("whose binding signature does not verify".into());
    }
    use pgp::packet::SignatureType;
    if sub
        .signatures
        .iter()
        .any(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
    {
        return Some("which is revoked".into());
    }
    let newest = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))?;
    if !newest.key_flags().sign() {
        return Some("which is not a signing key".into());
    }
    expired(sub.key.created_at().as_secs(), Some(newest), now)
}

/// "which expired on DATE" when `sig`'s key expiration time, counted from the
/// key's creation at `created`, is past.
fn expired(created: u32, sig: Option<&pgp::packet::Signature>, now: u32) -> Option<String> {
    let lifetime = u64::from(sig?.key_expiration_time()?.as_secs());
    let end = u64::from(created) + lifetime;
    (lifetime > 0 && end <= u64::from(now)).then(|| format!("which expired on {}", date(end)))
}

/// "the signature expired on DATE" when it has.
fn expired_signature(sig: &pgp::packet::Signature, now: u32) -> Option<String> {
    let created = sig.created()?.as_secs();
    let lifetime = u64::from(sig.signature_expiration_time()?.as_secs());
    let end = u64::from(created) + lifetime;
    (lifetime > 0 && end <= u64::from(now))
        .then(|| format!("the signature expired on {}", date(end)))
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
