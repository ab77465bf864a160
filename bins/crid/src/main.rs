//! crid: serve the Kubernetes Container Runtime Interface for kubelet and crictl.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    if let Some(code) = crikit_cli::generate_if_asked::<cli::Args>("8", cli::MAN_EXTRA) {
        return code;
    }
    let args = cli::Args::parse();
    crikit_cli::init_logging(&args.log);
    let run = || -> anyhow::Result<()> { crid::cri::server::serve(cli::resolve(&args)?) };
    crikit_cli::finish("crid", run(), |_| None)
}
