//! crid: serve the Kubernetes Container Runtime Interface for kubelet and crictl.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    if let Some(code) = crikit_cli::generate_if_asked::<cli::Args>("8", cli::MAN_EXTRA) {
        return code;
    }
    // systemd's notification socket is crid's alone: a runtime that finds
    // NOTIFY_SOCKET in its environment (runc, crun) waits in `start` for the
    // container to send READY=1 itself, and most never do.
    let notify = std::env::var_os("NOTIFY_SOCKET");
    // SAFETY: no other thread is running yet to read the environment.
    unsafe { std::env::remove_var("NOTIFY_SOCKET") };
    let args = cli::Args::parse();
    crikit_cli::init_logging(&args.log);
    let run = || -> anyhow::Result<()> {
        let settings = cli::resolve(&args)?;
        match args.command {
            Some(cli::Command::Config) => {
                print!("{}", cli::to_toml(&settings)?);
                Ok(())
            }
            None => crid::cri::server::serve(settings, notify),
        }
    };
    crikit_cli::finish("crid", run(), |_| None)
}
