//! crid's domain: pods, containers, images, their networks and statistics, and
//! the state that outlives a restart, as a library; the `crid` binary parses its
//! command line and serves this over gRPC.
//!
//! One folder per concern, each on its floor; a module imports only from the
//! floors below it (or its own folder), which `tests/layering.rs` checks:
//! - [`cri`]: the gRPC adapters (one method per CRI call, each a few lines into
//!   the domain), the socket and the signals. The only modules that know tonic;
//!   crid's errors become gRPC statuses there, in one place.
//! - [`pod`] (sandbox lifecycle, pod metrics) and [`stream`] (the streaming server
//!   for Exec, Attach and PortForward): what kubelet asks of a pod.
//! - [`container`]: create (the CRI request fitted onto a typed runtime spec),
//!   start, stop, remove, exec, the infra process, checkpoint and restore, the
//!   ctrmon client, and the events each emits.
//! - [`Crid`] (here): what every request shares, made once at start.
//! - [`image`] (the store, pulls) and [`events`] (the event feed and the exit
//!   watcher): services [`Crid`] holds.
//! - [`host`]: namespaces, CNI, cgroup statistics, filesystem usage. Never knows
//!   [`Crid`].
//! - [`state`]: the pods and containers in memory and their state files, their
//!   CRI statuses, the streaming URLs handed out; [`validate`]: every field of a
//!   CRI request checked before anything is made. Neither knows [`Crid`] or the
//!   host.
//! - [`error`] ([`CridError`](error::CridError) and what kind of failure each is),
//!   [`metrics`], [`config`]: the ground.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod container;
pub mod cri;
pub mod error;
pub mod events;
pub mod host;
pub mod image;
pub mod metrics;
pub mod pod;
pub mod state;
pub mod stream;
pub mod validate;

use config::Settings;
use error::{CridError, Result};
use host::net;
use state::{record, store};
use std::sync::{Arc, Mutex};

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
    pub stats: host::stats::Stats,
    /// The pod CIDR kubelet gave through UpdateRuntimeConfig.
    pub pod_cidr: Mutex<String>,
    /// The streaming server's URLs handed out and not yet used.
    pub streams: state::tokens::Tokens,
    /// GetContainerEvents' subscribers and the exit watcher.
    pub events: events::Events,
    /// crid's own metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The containers StopContainer calls are at work on, with how many calls.
    pub stopping: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Pods being made in each pod slice, under the systemd cgroup manager; held
    /// while a slice is made or let go (several pods may share one).
    pub slices: tokio::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Crid {
    /// Opens the image store and sets up the puller (registries.conf, auth files).
    pub fn new(settings: Settings) -> Result<Crid> {
        let layout =
            crikit::distribution::layout::Store::open(crikit::paths::images_dir(&settings.root))?;
        let puller = puller(&settings)?;
        let metrics = Arc::new(metrics::Metrics::new());
        let events = events::Events::new();
        Ok(Crid {
            store: store::Store::new(&settings.root, &settings.run_dir),
            images: Arc::new(
                image::Images::new(
                    layout,
                    settings.root.clone(),
                    puller,
                    settings.pull_progress_timeout,
                    Arc::clone(&metrics),
                    image::Pins::new(&settings.pinned_images, settings.pause_image.as_deref()),
                    Box::new(events.image_teller()),
                )
                .with_policies(image::Policies {
                    file: settings.signature_policy.clone(),
                    dir: settings.signature_policy_dir.clone(),
                }),
            ),
            network: net::Network {
                conf_dir: settings.cni_conf_dir.clone(),
                bin_dirs: settings.cni_bin_dirs.clone(),
            },
            stats: Default::default(),
            pod_cidr: Default::default(),
            streams: Default::default(),
            events,
            stopping: Default::default(),
            slices: Default::default(),
            metrics,
            settings,
        })
    }

    /// Re-reads registries.conf and the credential files (SIGHUP): pulls from now
    /// on use them; pods, containers and pulls under way are left alone. On an
    /// error the ones before stay.
    pub fn reload(&self) -> Result<()> {
        self.images.set_puller(puller(&self.settings)?);
        Ok(())
    }

    /// Finds the pods and containers a previous crid left; how many of each.
    pub fn restore(&self) -> (usize, usize) {
        let found = self.store.restore(&self.all_runtimes());
        // Layers that no image and no container uses any more (removals cut short,
        // images removed by other tools), unless someone works in the cache now.
        match crikit::rootfs::bundle::prune_layers_if_idle(&self.images.store, &self.settings.root)
        {
            Ok(Some(r)) if r.layers > 0 || r.temp_dirs > 0 => {
                self.metrics.layers_removed.inc_by(r.layers);
                tracing::info!(
                    "removed {} unused layers and {} temp dirs from the layer cache",
                    r.layers,
                    r.temp_dirs
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("layer cache: {e}"),
        }
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
    pub fn runtime(&self, name: &str) -> Result<crikit::runtime::runc::Runtime> {
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
    pub fn all_runtimes(&self) -> Vec<crikit::runtime::runc::Runtime> {
        self.settings
            .runtimes
            .values()
            .map(config::Handler::runtime)
            .collect()
    }
}

/// The puller `settings` describe: registries.conf (--registries-conf, else
/// $CONTAINERS_REGISTRIES_CONF, else the system's), the insecure registries, and
/// the credential files of containers-auth.json(5).
fn puller(settings: &Settings) -> Result<crikit::distribution::registry::Puller> {
    let conf = settings
        .registries_conf
        .clone()
        .or_else(|| std::env::var_os("CONTAINERS_REGISTRIES_CONF").map(Into::into));
    let mut registries =
        crikit::distribution::registry::registries::Registries::load(conf.as_deref())
            .map_err(|e| CridError::Pull(e.into()))?;
    registries.add_insecure(settings.insecure_registries.iter().cloned());
    let creds = crikit::distribution::registry::auth::CredentialStore::from_env(None);
    // Layers are unpacked as they arrive: a pulled image is ready to run.
    let peers = crikit::distribution::registry::peers::Peers::new(
        settings.peers.clone(),
        settings.self_address.clone(),
    )
    .map_err(|e| CridError::Pull(e.into()))?;
    let opts = crikit::distribution::registry::PullOptions {
        unpacker: Some(Arc::new(crikit::rootfs::bundle::LayerCache::new(
            &settings.root,
        ))),
        peers,
        mirrors_with_credentials: settings.mirrors_with_credentials.clone(),
        registries_d: crikit::distribution::policy::registries_d::RegistriesD::load(
            &match &settings.registries_d {
                Some(d) => vec![d.clone()],
                None => crikit::distribution::policy::registries_d::default_dirs(),
            },
        )
        .map_err(|e| CridError::Invalid(crikit::one_line(&e)))?,
        ..Default::default()
    };
    crikit::distribution::registry::Puller::new(registries, creds, opts).map_err(CridError::Pull)
}
