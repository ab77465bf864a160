//! crid's domain: pods, containers, images, their networks and statistics, and
//! the state that outlives a restart, as a library; the `crid` binary parses its
//! command line and serves this over gRPC.
//!
//! The layers, each using only those below it:
//! - [`service`] and [`server`]: the gRPC adapters and the socket; the only
//!   modules that know tonic. Errors become gRPC statuses in one place.
//! - [`sandbox`] (pod lifecycle), then [`container`] (container lifecycle, the
//!   CRI request fitted onto a typed runtime spec, the ctrmon client), and
//!   [`stats`]: what [`Crid`] does.
//! - [`image`] (the store, pulls), [`net`] (CNI), [`store`] (the pods and
//!   containers in memory and their state files, [`record`]), [`netns`].
//! - [`error`]: [`CridError`](error::CridError) and what kind of failure each is.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod container;
pub mod error;
pub mod events;
mod fsusage;
pub mod image;
pub mod metrics;
pub mod net;
#[allow(unsafe_code)]
pub mod netns;
pub mod podmetrics;
pub mod record;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod stats;
pub mod store;
pub mod stream;

use config::Settings;
use error::{CridError, Result};

pub use config::MAX_MESSAGE;
pub use record::{new_id, now_ns};
use std::sync::{Arc, Mutex};

/// Looks at `done` every `step` until it holds or `d` has passed; whether it held.
/// For the few waits with nothing to be woken by (a process not crid's child).
pub fn poll_until(
    d: std::time::Duration,
    step: std::time::Duration,
    done: impl Fn() -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + d;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// What every RPC shares.
pub struct Crid {
    /// What it runs with.
    pub settings: Settings,
    /// The pods and containers.
    pub store: store::Store,
    /// The image store and the pulls.
    pub images: Arc<image::Images>,
    /// The pod network.
    pub network: net::Network,
    /// CPU samples for rates.
    pub stats: stats::Stats,
    /// The pod CIDR kubelet gave through UpdateRuntimeConfig.
    pub pod_cidr: Mutex<String>,
    /// The streaming server's URLs handed out and not yet used.
    pub streams: stream::Tokens,
    /// GetContainerEvents' subscribers and the exit watcher.
    pub events: events::Events,
    /// crid's own metrics.
    pub metrics: Arc<metrics::Metrics>,
}

impl Crid {
    /// Opens the image store and sets up the puller (registries.conf, auth files).
    pub fn new(settings: Settings) -> Result<Crid> {
        let layout = crikit::layout::Store::open(crikit::paths::images_dir(&settings.root))?;
        let conf = settings
            .registries_conf
            .clone()
            .or_else(|| std::env::var_os("CONTAINERS_REGISTRIES_CONF").map(Into::into));
        let mut registries = crikit::registries::Registries::load(conf.as_deref())
            .map_err(|e| CridError::Pull(e.into()))?;
        registries.add_insecure(settings.insecure_registries.iter().cloned());
        let creds = crikit::auth::CredentialStore::from_env(None);
        let puller = crikit::registry::Puller::new(
            registries,
            creds,
            crikit::registry::PullOptions::default(),
        )
        .map_err(CridError::Pull)?;
        let metrics = Arc::new(metrics::Metrics::new());
        Ok(Crid {
            store: store::Store::new(&settings.root, &settings.run_dir),
            images: Arc::new(image::Images::new(
                layout,
                puller,
                settings.pull_progress_timeout,
                Arc::clone(&metrics),
            )),
            network: net::Network {
                conf_dir: settings.cni_conf_dir.clone(),
                bin_dirs: settings.cni_bin_dirs.clone(),
            },
            stats: Default::default(),
            pod_cidr: Default::default(),
            streams: Default::default(),
            events: Default::default(),
            metrics,
            settings,
        })
    }

    /// Finds the pods and containers a previous crid left; how many of each.
    pub fn restore(&self) -> (usize, usize) {
        let found = self.store.restore(&self.all_runtimes());
        for c in self.store.all_containers() {
            let Ok(mut c) = c.try_lock() else { continue };
            self.pin_legacy_handler(&mut c);
            // Exits from now on are events; those while crid was away are not.
            let dirs = self.store.monitor_dir(&c.id);
            if !c.infra && dirs.exit().is_none() {
                self.events.watch(&c.id, dirs.path());
            }
        }
        found
    }

    /// A container recorded with no handler's name (by a crid that resolved the
    /// default at each use) gets the handler whose state directory holds it, so that
    /// a default changed since (runc, then crun) does not lose it.
    fn pin_legacy_handler(&self, c: &mut record::ContainerRecord) {
        if !c.runtime_handler.is_empty() {
            return;
        }
        let held = self
            .settings
            .runtimes
            .iter()
            .find(|(_, h)| h.root.join(&c.id).is_dir())
            .map(|(name, _)| name.clone());
        if let Some(name) = held {
            c.runtime_handler = name;
            if let Err(e) = self.store.save_container(c) {
                tracing::warn!("container {}: {}", c.id, e.message());
            }
        }
    }

    /// The OCI runtime of the handler `name` ("" for the default).
    pub fn runtime(&self, name: &str) -> Result<crikit::runc::Runtime> {
        self.settings
            .handler(name)
            .map(config::Handler::runtime)
            .ok_or_else(|| {
                CridError::Invalid(format!(
                    "runtime handler {name:?} is not configured (crid.toml [runtimes.{name}])"
                ))
            })
    }

    /// Every handler's runtime.
    pub fn all_runtimes(&self) -> Vec<crikit::runc::Runtime> {
        self.settings
            .runtimes
            .values()
            .map(config::Handler::runtime)
            .collect()
    }
}
