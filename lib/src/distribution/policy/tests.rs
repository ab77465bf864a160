use super::*;
use crate::distribution::reference::parse as r;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;

fn key(seed: u8) -> (p256::ecdsa::SigningKey, String) {
    let sk = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
    let pem = sk
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    (sk, pem)
}

fn sign(sk: &p256::ecdsa::SigningKey, payload: &[u8]) -> sigstore::Attached {
    let sig: p256::ecdsa::Signature = sk.sign(payload);
    sigstore::Attached {
        payload: payload.to_vec(),
        signature: base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes()),
    }
}

fn sig_found(sigstore: Vec<sigstore::Attached>) -> Found {
    Found {
        sigstore,
        ..Found::default()
    }
}

fn policy(json: serde_json::Value) -> Result<Policy, String> {
    Policy::parse(
        Path::new("/etc/containers/policy.json"),
        json.to_string().as_bytes(),
    )
}

#[test]
fn the_most_specific_scope_applies() {
    let p = policy(serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                "": [{"type": "insecureAcceptAnything"}],
                "example.com": [{"type": "reject"}],
                "example.com/ns": [{"type": "insecureAcceptAnything"}],
                "example.com/ns/app:bad": [{"type": "reject"}],
                "*.internal.example": [{"type": "reject"}]
            },
            "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}
        }
    }))
    .unwrap();
    let d = Digest::of(b"m");
    let verdict = |img: &str| {
        let image = r(img).unwrap();
        let s = p.requirements_for(&image);
        (
            s.scope.clone(),
            p.check(&image, &s, &d, &Found::default()).is_ok(),
        )
    };
    assert_eq!(
        verdict("example.com/ns/app:1"),
        ("example.com/ns".into(), true)
    );
    assert_eq!(
        verdict("example.com/ns/app:bad"),
        ("example.com/ns/app:bad".into(), false)
    );
    assert_eq!(
        verdict("example.com/other/app:1"),
        ("example.com".into(), false)
    );
    assert_eq!(
        verdict("a.b.internal.example/x:1"),
        ("*.internal.example".into(), false)
    );
    assert_eq!(verdict("busybox"), ("docker".into(), true));
    let e = p
        .check(
            &r("example.com/x:1").unwrap(),
            &p.requirements_for(&r("example.com/x:1").unwrap()),
            &d,
            &Found::default(),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "example.com/x:1 is refused by the signature policy /etc/containers/policy.json (scope \"example.com\"): reject"
    );
    assert_eq!(
        scopes(&r("a.b.example.com:5000/ns/app:1").unwrap()),
        [
            "a.b.example.com:5000/ns/app:1",
            "a.b.example.com:5000/ns/app",
            "a.b.example.com:5000/ns",
            "a.b.example.com:5000",
            "*.b.example.com",
            "*.example.com",
            "*.com"
        ]
    );
}

#[test]
fn sigstore_signatures_are_checked_for_key_digest_and_identity() {
    let (sk, pem) = key(7);
    let (other, _) = key(9);
    let data = base64::engine::general_purpose::STANDARD.encode(&pem);
    let p = policy(serde_json::json!({
        "default": [{"type": "sigstoreSigned", "keyData": data}]
    }))
    .unwrap();
    let image = r("example.com/ns/app:1").unwrap();
    let s = p.requirements_for(&image);
    assert!(s.wants_sigstore());
    let digest = Digest::of(b"manifest");
    let good = sign(&sk, &sigstore::payload("example.com/ns/app:1", &digest));
    assert!(p
        .check(&image, &s, &digest, &sig_found(vec![good.clone()]))
        .is_ok());
    // One good signature among bad ones is enough.
    let wrong_key = sign(&other, &sigstore::payload("example.com/ns/app:1", &digest));
    assert!(p
        .check(
            &image,
            &s,
            &digest,
            &sig_found(vec![wrong_key.clone(), good])
        )
        .is_ok());
    let cases = [
        (vec![], "no signature found (attached at sha256-"),
        (vec![wrong_key], "not signed by a trusted key"),
        (
            vec![sign(
                &sk,
                &sigstore::payload("example.com/ns/app:1", &Digest::of(b"x")),
            )],
            "signed for sha256:",
        ),
        (
            vec![sign(
                &sk,
                &sigstore::payload("example.com/ns/other:1", &digest),
            )],
            "signed as example.com/ns/other:1",
        ),
        (
            vec![{
                let mut t = sign(&sk, &sigstore::payload("example.com/ns/app:1", &digest));
                t.payload[20] ^= 1;
                t
            }],
            "not signed by a trusted key",
        ),
        (
            vec![sigstore::Attached {
                payload: b"{}".to_vec(),
                signature: "!!".into(),
            }],
            "not base64",
        ),
    ];
    for (sigs, want) in cases {
        let e = p.check(&image, &s, &digest, &sig_found(sigs)).unwrap_err();
        assert!(e.requirement.contains(want), "{e}");
        assert!(e.requirement.starts_with("sigstoreSigned"), "{e}");
    }
}

#[test]
fn policies_that_cannot_be_enforced_are_refused_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let keyfile = dir.path().join("cosign.pub");
    std::fs::write(&keyfile, key(3).1).unwrap();
    let ok = policy(serde_json::json!({
        "default": [{"type": "sigstoreSigned", "keyPath": keyfile, "signedIdentity": {"type": "matchRepository"}}]
    }));
    assert!(ok.is_ok(), "{ok:?}");
    for (bad, want) in [
        (serde_json::json!({}), "no default policy"),
        (serde_json::json!({"default": []}), "empty list"),
        (
            serde_json::json!({"default": [{"type": "accept"}]}),
            "unknown requirement type",
        ),
        (
            serde_json::json!({"default": [{"type": "reject", "x": 1}]}),
            "unknown field \"x\"",
        ),
        (
            serde_json::json!({"default": [{"type": "sigstoreSigned", "fulcio": {}}]}),
            "Fulcio",
        ),
        (
            serde_json::json!({"default": [{"type": "sigstoreSigned"}]}),
            "exactly one of keyPath",
        ),
        (
            serde_json::json!({"default": [{"type": "sigstoreSigned", "keyPath": "rel.pub"}]}),
            "not absolute",
        ),
        (
            serde_json::json!({"default": [{"type": "sigstoreSigned", "keyData": "bm90IGEga2V5"}]}),
            "not a PEM ECDSA P-256 public key",
        ),
        (
            serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {"http://x": [{"type": "reject"}]}}}),
            "scope \"http://x\"",
        ),
        (
            serde_json::json!({"default": [{"type": "reject"}], "extra": 1}),
            "unknown field",
        ),
    ] {
        let e = policy(bad.clone()).unwrap_err();
        assert!(e.contains(want), "{bad}: {e}");
    }
}
