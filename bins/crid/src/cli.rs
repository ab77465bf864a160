//! Command line of crid.

use crikit::cli::LogArgs;

/// Man page sections written by hand, spliced after the generated ones.
pub const MAN_EXTRA: &str = include_str!("../../../man/crid.extra.roff");

/// Serve the Kubernetes Container Runtime Interface for kubelet and crictl
///
/// This version of crid only describes itself; it performs no work yet and
/// fails with exit status 1 when run.
#[derive(Debug, clap::Parser)]
#[command(name = "crid", version, max_term_width = 100)]
pub struct Args {
    /// Where to listen
    #[arg(
        long,
        value_name = "ADDRESS",
        default_value = "unix:///run/crikit/crid.sock"
    )]
    pub listen: String,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Runs crid.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not available in this version of crikit")
}
