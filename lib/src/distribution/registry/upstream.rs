//! A blob opened at its registry for a node that serves it on as it arrives
//! (imgserve fetching for its peers): the registry reached as a pull reaches it
//! (registries.conf mirrors and location, certs.d), sent only the credentials the
//! node's auth files hold for each endpoint's host.

use super::*;

/// A blob's bytes as a registry sends them.
pub struct UpstreamBlob {
    /// Its size, as the registry announced it (Content-Length), if it did.
    pub size: Option<u64>,
    /// The endpoint that sends it (`HOST[:PORT]`).
    pub registry: String,
    response: reqwest::Response,
}

impl UpstreamBlob {
    /// The next bytes; None at the end of the body.
    pub async fn chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        let registry = self.registry.clone();
        self.response
            .chunk()
            .await
            .map_err(|e| RegistryError::Network {
                image: String::new(),
                registry,
                message: crate::one_line(&e),
            })
    }
}

impl Puller {
    /// Opens the blob `digest` of `repository` at `registry` (an image reference's
    /// registry, `docker.io` say), trying the endpoints registries.conf gives it in
    /// turn. No pull's credentials exist here: each endpoint gets only what the auth
    /// files hold for its host.
    pub async fn open_blob(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<UpstreamBlob> {
        let r = Reference::with_digest(
            registry.to_string(),
            repository.to_string(),
            digest.to_string(),
        );
        let name = format!("{registry}/{repository}@{digest}");
        let mut last = None;
        for ep in self.registries.endpoints(&r)? {
            let host = ep.reference.registry().to_string();
            let auth = self.auth_for(&ep.reference, None)?;
            let client = self.client_for(&host).await?;
            let ctx = Ctx {
                image: &name,
                registry: &host,
                mirror: ep.mirror,
                peer: false,
            };
            let what = digest.to_string();
            match client.blob(&ep.reference, &what, 0, &auth, None).await {
                Ok(body) => {
                    let size = body.response.content_length();
                    return Ok(UpstreamBlob {
                        size,
                        registry: host,
                        response: body.response,
                    });
                }
                Err(e) => {
                    let e = ctx.classify(e, &what);
                    if !ep.mirror {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Network {
            image: name,
            registry: registry.to_string(),
            message: "no endpoint to try".into(),
        }))
    }
}
