//! bundlegen: generate OCI runtime bundles from images in the crikit store.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    if let Some(code) = crikit_cli::generate_if_asked::<cli::Args>("1", cli::MAN_EXTRA) {
        return code;
    }
    let args = cli::Args::parse();
    crikit_cli::init_logging(&args.log);
    crikit_cli::finish("bundlegen", cli::run(args), cli::exit_code)
}
