//! Command line of bundlegen.

use crikit::cli::LogArgs;

/// Man page sections written by hand, spliced after the generated ones.
pub const MAN_EXTRA: &str = include_str!("../../../man/bundlegen.extra.roff");

/// Generate OCI runtime bundles from images in the crikit store
///
/// This version of bundlegen only describes itself; it performs no work yet and
/// fails with exit status 1 when run.
#[derive(Debug, clap::Parser)]
#[command(name = "bundlegen", version, max_term_width = 100)]
pub struct Args {
    /// Image in the store, or - for the first line of stdin
    #[arg(value_name = "IMAGE")]
    pub image: Option<String>,
    /// Directory to create the bundle in
    #[arg(value_name = "BUNDLE")]
    pub bundle: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Runs bundlegen.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not available in this version of crikit")
}
