//! ctrmon: monitor one OCI container run by runc or crun, as conmon does; or hold a
//! pod's PID namespace (`--infra`); or run one ExecSync (`--exec`). The contract
//! its callers share (state directory, exit file, exec result, attach framing,
//! command line) is `crikit::runtime::monitor`; the monitor itself is here.
#![deny(unsafe_code)]

mod cli;
mod error;
mod exec;
#[allow(unsafe_code)]
mod infra;
#[allow(unsafe_code)]
mod run;

use clap::Parser;

fn main() -> std::process::ExitCode {
    if let Some(code) = crikit_cli::generate_if_asked::<cli::Args>("8", cli::MAN_EXTRA) {
        return code;
    }
    let args = cli::Args::parse();
    crikit_cli::init_logging(&args.log);
    match cli::run(args) {
        // The caller's success, or the detached monitor's own exit code.
        Ok(code) => code,
        Err(e) => crikit_cli::finish("ctrmon", Err(e), |e| {
            e.chain()
                .filter_map(|c| c.downcast_ref::<error::MonitorError>())
                .any(|m| matches!(m, error::MonitorError::Usage { .. }))
                .then_some(crikit_cli::EXIT_USAGE)
        }),
    }
}
