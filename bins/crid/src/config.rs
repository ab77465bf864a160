//! What crid runs with, once the command line, the configuration file and the
//! defaults are resolved (by the binary).

use std::path::PathBuf;
use std::time::Duration;

/// The largest CRI message either way, as kubelet's own limit.
pub const MAX_MESSAGE: usize = 16 << 20;

/// crid's settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    /// The socket path.
    pub listen: PathBuf,
    /// The state directory.
    pub root: PathBuf,
    /// The runtime state directory.
    pub run_dir: PathBuf,
    /// The OCI runtime.
    pub runtime: PathBuf,
    /// CNI configurations.
    pub cni_conf_dir: PathBuf,
    /// CNI plugin directories.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// registries.conf, if any.
    pub registries_conf: Option<PathBuf>,
    /// The pause image.
    pub pause_image: String,
    /// No-progress limit for pulls; `None` never cancels.
    #[serde(with = "secs")]
    pub pull_progress_timeout: Option<Duration>,
    /// Registries reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// The ctrmon binary.
    pub ctrmon: PathBuf,
}

impl Settings {
    /// The OCI runtime, its state in `RUN/runc`.
    pub fn oci_runtime(&self) -> crikit::runc::Runtime {
        crikit::runc::Runtime::new(&self.runtime, Some(self.run_dir.join("runc")))
    }
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.map_or(0, |d| d.as_secs()))
    }
}
