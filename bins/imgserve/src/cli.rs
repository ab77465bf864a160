//! Command line of imgserve.

use anyhow::{Context, Result};
use clap::Parser;
use crikit_cli::{LogArgs, EXIT_USAGE};
use imgserve::auth::{Auth, AuthFileError};
use imgserve::server::{Limits, Shared};
use imgserve::view::Views;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Man page sections written by hand, spliced after the generated ones.
pub const MAN_EXTRA: &str = include_str!("../../../man/imgserve.extra.roff");

/// Serve the crikit image store read-only as an OCI registry
///
/// Serves the images of ROOT/images over the OCI distribution API, pull side:
/// manifests by tag and by digest, blobs (with byte ranges), tag lists. Other
/// nodes list this one as a registry mirror and pull from it instead of the
/// upstream registry. Only complete images are served: blobs still being written
/// and images with a blob missing are not. Blobs and manifests by digest are
/// served under any repository path; a tag is looked up for the upstream named by
/// the request's ?ns= parameter, or else in the one registry the store holds that
/// repository from. Pushes and deletes answer 405 UNSUPPORTED.
///
/// Prints the address it listens on (ADDR:PORT) on stdout once it accepts
/// connections; runs until SIGINT or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "imgserve", version, max_term_width = 100)]
pub struct Args {
    /// Address and port to listen on (port 0 picks a free one)
    ///
    /// Loopback by default; give a node address (or 0.0.0.0:5050) for its peers.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:5050")]
    pub listen: SocketAddr,

    /// State root; the image store is ROOT/images
    ///
    /// Defaults to /var/lib/crikit as root, $XDG_DATA_HOME/crikit otherwise.
    #[arg(long, env = "CRIKIT_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Serve HTTPS with this PEM certificate chain (re-read when it changes)
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA of this PEM file
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Require HTTP Basic credentials: one USER:PASSWORD per line
    #[arg(long, value_name = "FILE")]
    pub basic_auth_file: Option<PathBuf>,
    /// Accept these bearer tokens (Authorization: Bearer TOKEN): one per line
    ///
    /// With --basic-auth-file too, either kind of credential is accepted.
    #[arg(long, value_name = "FILE")]
    pub bearer_token_file: Option<PathBuf>,

    /// Connections served at once; more wait to be accepted (lowered to fit the
    /// open-file limit)
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,

    /// The cluster's nodes: a file of ADDR:PORT lines, or dns:NAME:PORT
    ///
    /// A blob one of them asks for, naming its registry with ?ns=, that the store
    /// does not hold is fetched from that registry once and sent to every node
    /// that asks as its bytes arrive. Requests from other addresses get 404 as
    /// before. The file or name is read at each such request.
    #[arg(long, value_name = "FILE|dns:NAME:PORT")]
    pub peers: Option<PathBuf>,

    /// This node's own address in --peers
    #[arg(long = "self", value_name = "ADDR:PORT", requires = "peers")]
    pub self_addr: Option<String>,

    /// Blobs fetched for peers at once; asked for more, imgserve answers 503
    #[arg(long, value_name = "N", default_value_t = 8, requires = "peers", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_fetches: u32,

    /// containers-registries.conf v2 file for the registries fetched from
    ///
    /// Defaults to /etc/containers/registries.conf when it exists.
    #[arg(
        long,
        env = "CONTAINERS_REGISTRIES_CONF",
        value_name = "FILE",
        requires = "peers"
    )]
    pub registries_conf: Option<PathBuf>,

    /// Use plain HTTP for this registry, HOST[:PORT]; may be repeated
    #[arg(
        long = "insecure-registry",
        value_name = "HOST[:PORT]",
        requires = "peers"
    )]
    pub insecure_registry: Vec<String>,

    /// Auth file with the node's own credentials for the registries fetched from
    ///
    /// Without it: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.config/containers/auth.json, then ~/.docker/config.json.
    #[arg(long, value_name = "FILE", requires = "peers")]
    pub authfile: Option<PathBuf>,

    #[command(flatten)]
    pub log: LogArgs,
}

/// The exit code for a failure: 2 for files given on the command line that do not
/// do (TLS, credentials), 1 for the rest.
pub fn exit_code(e: &anyhow::Error) -> Option<u8> {
    e.chain()
        .any(|c| {
            c.downcast_ref::<AuthFileError>().is_some()
                || c.downcast_ref::<crikit::wire::tls::TlsError>().is_some()
        })
        .then_some(EXIT_USAGE)
}

/// Raises the open-file limit to its hard limit and returns how many connections
/// fit in it (each holds a socket and, while it sends, a blob), at most `asked`.
fn fit_connections(asked: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!("raising the open-file limit: {e}");
            lim = getrlimit(Resource::Nofile);
        }
    }
    let files = lim.current.unwrap_or(u64::MAX);
    let fit = usize::try_from(files.saturating_sub(64) / 2).unwrap_or(usize::MAX);
    if fit < asked {
        tracing::warn!(
            "--max-connections {asked} lowered to {fit}: the open-file limit is {files}"
        );
    }
    asked.min(fit.max(1))
}

/// Runs imgserve until SIGINT or SIGTERM.
pub fn run(args: Args) -> Result<()> {
    let root = args.root.unwrap_or_else(crikit::paths::default_root);
    let auth = Auth::load(
        args.basic_auth_file.as_deref(),
        args.bearer_token_file.as_deref(),
    )
    .context("credentials")?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(
            crikit::wire::tls::server_config("imgserve", cert, key, args.tls_client_ca.as_deref())
                .context("TLS files")?,
        )),
        _ => None,
    };
    let max_connections = fit_connections(args.max_connections as usize);
    let fetcher = match &args.peers {
        None => None,
        Some(spec) => {
            use crikit::distribution::registry::{self, peers::Peers, PullOptions, Puller};
            let peers =
                Peers::new(Some(spec.clone()), args.self_addr.clone()).context("--peers")?;
            let mut registries =
                registry::registries::Registries::load(args.registries_conf.as_deref())
                    .context("registries.conf")?;
            registries.add_insecure(args.insecure_registry.iter().cloned());
            let creds = registry::auth::CredentialStore::from_env(args.authfile.as_deref());
            let puller = Puller::new(registries, creds, PullOptions::default())
                .context("setting up the registry client")?;
            let store = crikit::distribution::layout::Store::open(crikit::paths::images_dir(&root))
                .context("opening the image store")?;
            Some(Arc::new(imgserve::fetch::Fetcher::new(
                puller,
                peers,
                store,
                args.max_fetches as usize,
            )))
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let at = listener.local_addr().context("the listening address")?;
        let shared = Arc::new(Shared {
            views: Views::new(crikit::paths::images_dir(&root)),
            auth,
            limits: Limits {
                max_connections,
                ..Limits::default()
            },
            tls,
            fetcher,
        });
        let mut out = std::io::stdout();
        writeln!(out, "{at}")
            .and_then(|_| out.flush())
            .context("writing the address")?;
        tracing::info!(
            "serving {} on {at}",
            crikit::paths::images_dir(&root).display()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("SIGTERM handler")?;
        tokio::select! {
            _ = imgserve::server::serve(listener, shared) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok(())
    })
}
