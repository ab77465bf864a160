//! HTTP clients: the shared one, one per registry with CAs or a client
//! certificate of its own (certs.d), and the credentials a request goes with.

use super::*;

/// A registry's own client and the certs.d files it was made from.
pub(super) struct HostClient {
    pub(super) roots: Vec<Vec<u8>>,
    pub(super) identity: Option<Vec<u8>>,
    pub(super) client: Client,
}

/// The HTTP client for `registries` (plain HTTP for insecure hosts) and `opts`,
/// trusting the CAs `extra_roots` (DER) besides the system's and presenting
/// `identity` (a certificate chain and key, PEM) when a server asks for one.
pub(super) fn make_client(
    registries: &Registries,
    opts: &PullOptions,
    extra_roots: &[Vec<u8>],
    identity: Option<&[u8]>,
) -> Result<Client> {
    make_client_with(
        Protocol::HttpsExcept(registries.insecure_hosts()),
        opts,
        extra_roots,
        identity,
    )
}

/// The client for peers: plain HTTP to any host.
fn make_peer_client(opts: &PullOptions) -> Result<Option<Client>> {
    if !opts.peers.configured() {
        return Ok(None);
    }
    make_client_with(Protocol::Http, opts, &[], None).map(Some)
}

fn make_client_with(
    protocol: Protocol,
    opts: &PullOptions,
    extra_roots: &[Vec<u8>],
    identity: Option<&[u8]>,
) -> Result<Client> {
    // TLS runs on rustls with ring's cryptography, installed once per process
    // (reqwest takes the process default); a second install is refused, harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(Setup {
        protocol,
        stall_timeout: opts.stall_timeout,
        connect_timeout: opts.connect_timeout,
        extra_roots,
        identity,
    })
    .map_err(|e| {
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
            client: make_client(&registries, &opts, &[], None)?,
            peer_client: make_peer_client(&opts)?,
            lookaside_client: Default::default(),
            host_clients: Default::default(),
            registries,
            creds,
            opts,
        })
    }

    /// The client for `registry`: one of its own when a certs.d directory gives it
    /// CAs or a client certificate (kept while they stay the same: the directory
    /// is read on every pull, as containers-image does), the shared one otherwise.
    /// A new client reads the system's CAs: it is made off the async workers and
    /// outside the lock.
    pub(super) async fn client_for(&self, registry: &str) -> Result<Client> {
        let certs = crate::distribution::registry::certs::for_host(&self.opts.certs_dirs, registry)
            .map_err(|source| RegistryError::Certs {
                registry: registry.to_string(),
                source,
            })?;
        let Some(certs) = certs else {
            return Ok(self.client.clone());
        };
        let identity = certs.identity.map(|i| i.pem);
        if certs.roots.is_empty() && identity.is_none() {
            return Ok(self.client.clone());
        }
        let cached = crate::sync::lock(&self.host_clients)
            .get(registry)
            .filter(|h| h.roots == certs.roots && h.identity == identity)
            .map(|h| h.client.clone());
        if let Some(c) = cached {
            return Ok(c);
        }
        let (registries, opts, roots, id) = (
            self.registries.clone(),
            self.opts.clone(),
            certs.roots.clone(),
            identity.clone(),
        );
        let client = tokio::task::spawn_blocking(move || {
            make_client(&registries, &opts, &roots, id.as_deref())
        })
        .await
        .map_err(|e| RegistryError::Client {
            message: e.to_string(),
        })??;
        crate::sync::lock(&self.host_clients).insert(
            registry.to_string(),
            HostClient {
                roots: certs.roots,
                identity,
                client: client.clone(),
            },
        );
        Ok(client)
    }

    /// The peers to rank for each blob now: the list as its file or name says at
    /// this moment, and this node's own imgserve (`--self`) among them when there
    /// are others. Where this node ranks first for a blob, its own imgserve is
    /// asked, which fetches the blob from upstream once for this node and for
    /// every peer that asks, as any first-ranked peer does. A list that cannot be
    /// read costs the peers, not the pull.
    pub(super) async fn peers_now(&self) -> Vec<String> {
        if self.peer_client.is_none() {
            return Vec::new();
        }
        let mut peers = self.opts.peers.list().await.unwrap_or_else(|e| {
            tracing::warn!("{}; pulling without peers", crate::one_line(&e));
            Vec::new()
        });
        if let Some(me) = &self.opts.peers.self_addr {
            if !peers.is_empty() {
                peers.push(me.clone());
            }
        }
        peers
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
