//! ctrmon: monitor one OCI container run by runc.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    if let Some(code) = crikit::cli::generate_if_asked::<cli::Args>("8", cli::MAN_EXTRA) {
        return code;
    }
    let args = cli::Args::parse();
    crikit::cli::init_logging(&args.log);
    match cli::run(args) {
        // The caller's success, or the detached monitor's own exit code.
        Ok(code) => code,
        Err(e) => crikit::cli::finish("ctrmon", Err(e), |e| {
            e.chain()
                .filter_map(|c| c.downcast_ref::<crikit::monitor::run::MonitorError>())
                .any(|m| matches!(m, crikit::monitor::run::MonitorError::Usage { .. }))
                .then_some(crikit::cli::EXIT_USAGE)
        }),
    }
}
