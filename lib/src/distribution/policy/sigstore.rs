//! `sigstoreSigned` with public keys: signatures as cosign attaches them to an
//! image in its registry. For an image whose manifest digest is `sha256:HEX`, the
//! tag `sha256-HEX.sig` in the same repository holds an OCI manifest; each of its
//! layers is a simple-signing payload (JSON naming the image and its manifest
//! digest), and the layer's `dev.cosignproject.cosign/signature` annotation is the
//! base64 of an ECDSA signature (ASN.1 DER) over the payload's SHA-256.

use crate::distribution::digest::Digest;
use crate::distribution::reference::{self, Reference};
use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;

/// The annotation holding a layer's signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The media type of a payload layer.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The `critical.type` of a cosign payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// Payloads larger than this are not fetched.
pub const MAX_PAYLOAD: u64 = 64 << 10;
/// Signature layers looked at, at most.
pub const MAX_SIGNATURES: usize = 16;

/// The tag cosign attaches signatures of `digest` at.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}.sig", digest.as_str().replacen(':', "-", 1))
}

/// A public key a policy trusts.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: p256::ecdsa::VerifyingKey,
}

impl PublicKey {
    /// From a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) of an ECDSA P-256 key, as
    /// `cosign generate-key-pair` writes `cosign.pub`.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        p256::ecdsa::VerifyingKey::from_public_key_pem(pem.trim())
            .map(|key| PublicKey { key })
            .map_err(|e| format!("not a PEM ECDSA P-256 public key ({e})"))
    }

    fn verifies(&self, payload: &[u8], sig_der: &[u8]) -> bool {
        match p256::ecdsa::Signature::from_der(sig_der) {
            Ok(sig) => self.key.verify(payload, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// One signature found attached to an image.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The payload's bytes (digest-checked against its layer descriptor).
    pub payload: Vec<u8>,
    /// The annotation's value: base64 of the DER signature.
    pub signature: String,
}

/// What the signature's payload says.
struct Claims {
    identity: Reference,
    digest: String,
}

fn claims(payload: &[u8], payload_type: &str) -> Result<Claims, String> {
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON ({e})"))?;
    let critical = v
        .get("critical")
        .and_then(|c| c.as_object())
        .ok_or("payload has no critical object")?;
    if let Some(k) = critical
        .keys()
        .find(|k| !["identity", "image", "type"].contains(&k.as_str()))
    {
        return Err(format!("payload's critical has an unknown field {k:?}"));
    }
    let ty = critical.get("type").and_then(|t| t.as_str());
    if ty != Some(payload_type) {
        return Err(format!("payload type is {ty:?}, not {payload_type:?}"));
    }
    let digest = critical
        .get("image")
        .and_then(|i| i.get("docker-manifest-digest"))
        .and_then(|d| d.as_str())
        .ok_or("payload names no docker-manifest-digest")?;
    let identity = critical
        .get("identity")
        .and_then(|i| i.get("docker-reference"))
        .and_then(|d| d.as_str())
        .ok_or("payload names no docker-reference")?;
    let identity =
        reference::parse(identity).map_err(|e| format!("payload's docker-reference: {e}"))?;
    Ok(Claims {
        identity,
        digest: digest.to_string(),
    })
}

/// Checks one attached signature: made by one of `keys`, over a payload naming
/// `digest` and an identity `accept` takes. Err says why not.
pub fn verify(
    sig: &Attached,
    keys: &[PublicKey],
    digest: &Digest,
    accept: impl Fn(&Reference) -> bool,
) -> Result<(), String> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(sig.signature.trim())
        .map_err(|_| "the signature is not base64".to_string())?;
    if !keys.iter().any(|k| k.verifies(&sig.payload, &der)) {
        return Err("not signed by a trusted key".into());
    }
    check_claims(&sig.payload, PAYLOAD_TYPE, digest, accept)
}

/// Checks what a signed simple-signing payload says: its type, the manifest
/// digest, and an identity `accept` takes.
pub fn check_claims(
    payload: &[u8],
    payload_type: &str,
    digest: &Digest,
    accept: impl Fn(&Reference) -> bool,
) -> Result<(), String> {
    let c = claims(payload, payload_type)?;
    if c.digest != digest.as_str() {
        return Err(format!("signed for {}, not {digest}", c.digest));
    }
    if !accept(&c.identity) {
        return Err(format!(
            "signed as {}, which the policy's signedIdentity does not accept",
            super::identity::repo_name(&c.identity)
                + &c.identity
                    .tag()
                    .map(|t| format!(":{t}"))
                    .unwrap_or_default()
        ));
    }
    Ok(())
}

/// A simple-signing payload for `image` at `digest`, as cosign writes it.
pub fn payload(image: &str, digest: &Digest) -> Vec<u8> {
    serde_json::json!({
        "critical": {
            "identity": { "docker-reference": image },
            "image": { "docker-manifest-digest": digest.as_str() },
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    })
    .to_string()
    .into_bytes()
}
