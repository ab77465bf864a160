//! Serving the CRI on a unix socket until SIGTERM or SIGINT.

use crate::config::Settings;
use crate::config::MAX_MESSAGE;
use crate::cri::{ImageService, RuntimeService};
use crate::Crid;
use anyhow::{Context, Result};
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use std::path::Path;
use std::sync::Arc;

/// Serves until a signal asks to stop; running containers are left alone.
/// `notify` is systemd's notification socket of a Type=notify unit, if any.
pub fn serve(settings: Settings, notify: Option<std::ffi::OsString>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(settings, Notify(notify)))
}

/// systemd's notification socket ($NOTIFY_SOCKET, sd_notify(3)); nothing to tell
/// without one.
struct Notify(Option<std::ffi::OsString>);

impl Notify {
    /// Sends `state` (`READY=1`, `STOPPING=1`, lines of them); a failure is logged.
    fn send(&self, state: &str) {
        use std::os::linux::net::SocketAddrExt as _;
        use std::os::unix::ffi::OsStrExt as _;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let Some(path) = &self.0 else { return };
        let bytes = path.as_bytes();
        let sent = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name),
            None => SocketAddr::from_pathname(path),
        }
        .and_then(|addr| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr));
        if let Err(e) = sent {
            tracing::warn!(
                "telling systemd {state:?} at {}: {e}",
                path.to_string_lossy()
            );
        }
    }
}

async fn run(settings: Settings, notify: Notify) -> Result<()> {
    crate::host::cgroups::check(settings.cgroup_manager).map_err(|e| anyhow::anyhow!(e))?;
    // The events feed's file must be writable before anything else starts: a typo in
    // its path is a failed start, not a warning per event.
    if let Some(path) = &settings.events_file {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("events file {}", path.display()))?;
    }
    let crid = Arc::new(
        Crid::new(settings.clone())
            .map_err(|e| anyhow::anyhow!("{}", e.message()))
            .with_context(|| format!("starting with state in {}", settings.root.display()))?,
    );
    let (pods, containers) = crid.restore();
    if pods + containers > 0 {
        tracing::info!("found {pods} pods and {containers} containers from before");
    }
    let streaming = tokio::net::TcpListener::bind((settings.stream_address, settings.stream_port))
        .await
        .with_context(|| {
            format!(
                "streaming server: listening on {}:{}",
                settings.stream_address, settings.stream_port
            )
        })?;
    let at = streaming
        .local_addr()
        .context("streaming server: its address")?;
    let tls = match &settings.stream_tls {
        Some(t) => Some(
            crikit::wire::tls::server_config(
                "streaming server",
                &t.cert,
                &t.key,
                t.client_ca.as_deref(),
            )
            .context("streaming server: its TLS files")?,
        ),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    crid.streams.set_base(format!("{scheme}://{at}"));
    tracing::info!("streaming server on {scheme}://{at}");
    tokio::spawn(crate::stream::server::serve(
        streaming,
        tls,
        Arc::clone(&crid),
    ));
    {
        let (crid, rt) = (Arc::clone(&crid), tokio::runtime::Handle::current());
        std::thread::spawn(move || crid.watch_exits(rt));
    }
    tokio::spawn(Arc::clone(&crid).send_events());
    if let Some(path) = settings.events_file.clone() {
        let (rx, max) = (crid.events.subscribe_feed(), settings.events_file_max);
        tracing::info!("container and image events to {}", path.display());
        std::thread::spawn(move || crate::events::write_feed(rx, path, max));
    }
    if let Some(addr) = settings.metrics_address {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics server: listening on {addr}"))?;
        tracing::info!("metrics on http://{addr}/metrics");
        tokio::spawn(crate::metrics::serve(l, Arc::clone(&crid.metrics)));
    }
    let listener = bind(&settings.listen)?;
    tracing::info!("serving the CRI on {}", settings.listen.display());
    tokio::spawn(reload_on_hangup(Arc::clone(&crid)));
    // The socket takes connections from here on: a Type=notify unit is up.
    notify.send(&format!(
        "READY=1\nSTATUS=serving the CRI on {}",
        settings.listen.display()
    ));
    let runtime = RuntimeServiceServer::new(RuntimeService(Arc::clone(&crid)))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let images = ImageServiceServer::new(ImageService(Arc::clone(&crid)))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let served = tonic::transport::Server::builder()
        .layer(crate::cri::edge::EdgeLayer(Arc::clone(&crid.metrics)))
        .add_service(runtime)
        .add_service(images)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            stop_signal(),
        )
        .await;
    notify.send("STOPPING=1");
    let _ = std::fs::remove_file(&settings.listen);
    served.context("serving the CRI")?;
    tracing::info!("stopped");
    Ok(())
}

/// Binds the socket, mode 0660. A stale socket is replaced; a live one (another crid
/// answering there) is an error.
fn bind(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{}: another server is listening there", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(l)
}

/// On each SIGHUP, re-reads registries.conf and the credential files, as CRI-O
/// does; running pods are left alone.
async fn reload_on_hangup(crid: Arc<Crid>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handling: registries.conf is read at start only");
        return;
    };
    while hup.recv().await.is_some() {
        match crid.reload() {
            Ok(()) => tracing::info!("SIGHUP: registries.conf and the credential files re-read"),
            Err(e) => tracing::warn!("SIGHUP: {}; pulls go on as before", e.message()),
        }
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handling, serve until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}
