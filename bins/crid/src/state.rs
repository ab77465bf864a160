//! What every RPC shares: the settings, the image store, the puller.

use crate::cli::Settings;
use crate::image::Pulls;
use anyhow::{Context, Result};
use crikit::layout::Store;
use crikit::registry::{PullOptions, Puller};

/// The server's shared state.
pub struct Crid {
    /// What it runs with.
    pub settings: Settings,
    /// The image store (the one imgpull fills).
    pub store: Store,
    /// Pulls from registries, as imgpull does.
    pub puller: Puller,
    /// Pulls under way.
    pub pulls: Pulls,
}

impl Crid {
    /// Opens the store and sets up the puller.
    pub fn new(settings: Settings) -> Result<Crid> {
        let store = Store::open(crikit::paths::images_dir(&settings.root))
            .with_context(|| format!("opening the image store in {}", settings.root.display()))?;
        let mut registries = crikit::registries::Registries::load(
            settings
                .registries_conf
                .clone()
                .or_else(|| std::env::var_os("CONTAINERS_REGISTRIES_CONF").map(Into::into))
                .as_deref(),
        )?;
        registries.add_insecure(settings.insecure_registries.iter().cloned());
        let creds = crikit::auth::CredentialStore::from_env(None);
        let puller = Puller::new(registries, creds, PullOptions::default())?;
        Ok(Crid {
            settings,
            store,
            puller,
            pulls: Pulls::default(),
        })
    }
}
