//! HTTP clients: the shared one, one per registry with CAs of its own
//! (certs.d), and the credentials a request goes with.

use super::*;

/// A registry's own client and the CAs (DER) it was made to trust.
pub(super) struct HostClient {
    pub(super) roots: Vec<Vec<u8>>,
    pub(super) client: Client,
}

/// The HTTP client for `registries` (plain HTTP for insecure hosts) and `opts`,
/// trusting the CAs `extra_roots` (DER) besides the system's.
pub(super) fn make_client(
    registries: &Registries,
    opts: &PullOptions,
    extra_roots: &[Vec<u8>],
) -> Result<Client> {
    make_client_with(
        ClientProtocol::HttpsExcept(registries.insecure_hosts()),
        opts,
        extra_roots,
    )
}

/// The client for peers: plain HTTP to any host.
fn make_peer_client(opts: &PullOptions) -> Result<Option<Client>> {
    if !opts.peers.configured() {
        return Ok(None);
    }
    make_client_with(ClientProtocol::Http, opts, &[]).map(Some)
}

fn make_client_with(
    protocol: ClientProtocol,
    opts: &PullOptions,
    extra_roots: &[Vec<u8>],
) -> Result<Client> {
    // TLS runs on rustls with ring's cryptography, installed once per process
    // (reqwest takes the process default); a second install is refused, harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = ClientConfig {
        protocol,
        platform_resolver: None,
        read_timeout: Some(opts.stall_timeout),
        connect_timeout: Some(opts.connect_timeout),
        max_concurrent_download: opts.max_concurrent.max(1),
        user_agent: concat!("crikit/", env!("CARGO_PKG_VERSION")),
        extra_root_certificates: extra_roots
            .iter()
            .map(|der| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Der,
                data: der.clone(),
            })
            .collect(),
        ..Default::default()
    };
    // Not Client::new: it logs a failed set-up (no CA certificates, say) and carries
    // on with a default client that ignores the insecure hosts.
    Client::try_from(config).map_err(|e| {
        let mut message = crate::one_line(&e);
        // rustls-platform-verifier's words. The client is built with the system's
        // CAs even when every registry is plain HTTP, so say where they come from.
        if message.contains("No CA certificates were loaded") {
            message.push_str(
                " (install the ca-certificates package, or name a CA bundle in SSL_CERT_FILE)",
            );
        }
        RegistryError::Client { message }
    })
}

impl Puller {
    /// A puller with its HTTP client configured from `registries` (plain HTTP for
    /// insecure hosts) and `opts`.
    pub fn new(registries: Registries, creds: CredentialStore, opts: PullOptions) -> Result<Self> {
        Ok(Puller {
            client: make_client(&registries, &opts, &[])?,
            peer_client: make_peer_client(&opts)?,
            lookaside_client: Default::default(),
            host_clients: Default::default(),
            registries,
            creds,
            opts,
        })
    }

    /// The same puller with an HTTP client of its own. The client remembers the
    /// first credentials and the tokens it got for each registry: a pull made with
    /// credentials of its own (a CRI request's) must not leave them behind for
    /// other pulls, nor use someone else's.
    pub fn fork(&self) -> Result<Self> {
        Ok(Puller {
            client: make_client(&self.registries, &self.opts, &[])?,
            // Peers are sent no pod's credentials: theirs can be shared.
            peer_client: self.peer_client.clone(),
            lookaside_client: Default::default(),
            host_clients: Default::default(),
            registries: self.registries.clone(),
            creds: self.creds.clone(),
            opts: self.opts.clone(),
        })
    }

    /// The client for `registry`: one of its own when a certs.d directory gives it
    /// CAs (kept while they stay the same: the directory is read on every pull, as
    /// containers-image does), the shared one otherwise. A new client reads the
    /// system's CAs: it is made off the async workers and outside the lock.
    pub(super) async fn client_for(&self, registry: &str) -> Result<Client> {
        let certs = crate::distribution::registry::certs::for_host(&self.opts.certs_dirs, registry)
            .map_err(|source| RegistryError::Certs {
                registry: registry.to_string(),
                source,
            })?;
        let Some(certs) = certs else {
            return Ok(self.client.clone());
        };
        if certs.client_identity {
            tracing::warn!(
                "{}: client certificates are not supported; only its CAs (*.crt) are used",
                certs.dir.display()
            );
        }
        if certs.roots.is_empty() {
            return Ok(self.client.clone());
        }
        let cached = crate::sync::lock(&self.host_clients)
            .get(registry)
            .filter(|h| h.roots == certs.roots)
            .map(|h| h.client.clone());
        if let Some(c) = cached {
            return Ok(c);
        }
        let (registries, opts, roots) = (
            self.registries.clone(),
            self.opts.clone(),
            certs.roots.clone(),
        );
        let client = tokio::task::spawn_blocking(move || make_client(&registries, &opts, &roots))
            .await
            .map_err(|e| RegistryError::Client {
                message: e.to_string(),
            })??;
        crate::sync::lock(&self.host_clients).insert(
            registry.to_string(),
            HostClient {
                roots: certs.roots,
                client: client.clone(),
            },
        );
        Ok(client)
    }

    /// The peers to ask now: the list as its file or name says at this moment. A
    /// list that cannot be read costs the peers, not the pull.
    pub(super) async fn peers_now(&self) -> Vec<String> {
        if self.peer_client.is_none() {
            return Vec::new();
        }
        self.opts.peers.list().await.unwrap_or_else(|e| {
            tracing::warn!("{}; pulling without peers", crate::one_line(&e));
            Vec::new()
        })
    }

    /// What a peer is sent: the credentials stored for its own host (the node's,
    /// from the auth files), never a pull's.
    pub(super) fn peer_auth(&self, peer: &str) -> Result<RegistryAuth> {
        Ok(match self.creds.lookup(peer, "")? {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        })
    }

    pub(super) fn auth_for(
        &self,
        r: &Reference,
        creds: Option<&Credentials>,
    ) -> Result<RegistryAuth> {
        if let Some(c) = creds {
            return Ok(RegistryAuth::Basic(c.username.clone(), c.password.clone()));
        }
        Ok(match self.creds.lookup(r.registry(), r.repository())? {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        })
    }
}
