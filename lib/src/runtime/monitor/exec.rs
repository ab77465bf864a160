//! What an exec did, as `ctrmon --exec` prints it and its callers read it: the
//! contract of ctrmon's ExecSync (the exec itself runs in ctrmon).

/// What an exec did: the JSON object `ctrmon --exec` prints, one line. Output is
/// `{"text": …}` when it is UTF-8, `{"bytes": BASE64}` otherwise (the convention
/// ripgrep's JSON output uses).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecResult {
    /// Its exit code (128+N when killed by signal N).
    pub exit_code: i32,
    /// Its stdout, up to the bound.
    #[serde(with = "json_bytes")]
    pub stdout: Vec<u8>,
    /// Its stderr, up to the bound.
    #[serde(with = "json_bytes")]
    pub stderr: Vec<u8>,
    /// Whether output beyond the bound was dropped.
    pub truncated: bool,
    /// Whether the timeout killed it.
    pub timed_out: bool,
}

/// A byte string in JSON: `{"text": …}` when it is UTF-8, `{"bytes": BASE64}`
/// otherwise.
mod json_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text { text: String },
        Bytes { bytes: String },
    }

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(t) => Repr::Text {
                text: t.to_string(),
            },
            Err(_) => Repr::Bytes {
                bytes: base64::engine::general_purpose::STANDARD.encode(b),
            },
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text { text } => Ok(text.into_bytes()),
            Repr::Bytes { bytes } => base64::engine::general_purpose::STANDARD
                .decode(bytes)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExecResult;

    #[test]
    fn results_round_trip_as_text_or_base64() {
        let r = ExecResult {
            exit_code: 3,
            stdout: b"hi\n".to_vec(),
            stderr: vec![0xff, 0, 1],
            truncated: false,
            timed_out: true,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""stdout":{"text":"hi\n"}"#), "{line}");
        assert!(line.contains(r#""stderr":{"bytes":"/wAB"}"#), "{line}");
        assert_eq!(serde_json::from_str::<ExecResult>(&line).unwrap(), r);
    }
}
