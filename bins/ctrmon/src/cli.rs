//! Command line of ctrmon.

use crikit::cli::LogArgs;

/// Man page sections written by hand, spliced after the generated ones.
pub const MAN_EXTRA: &str = include_str!("../../../man/ctrmon.extra.roff");

/// Monitor one OCI container run by runc: stdio, CRI logs, exit status
///
/// This version of ctrmon only describes itself; it performs no work yet and
/// fails with exit status 1 when run.
#[derive(Debug, clap::Parser)]
#[command(name = "ctrmon", version, max_term_width = 100)]
pub struct Args {
    /// Bundle directory of the container
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<std::path::PathBuf>,
    /// Container id
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Runs ctrmon.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not available in this version of crikit")
}
