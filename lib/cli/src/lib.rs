//! What every crikit binary shares at its edge, and the library does not do (it
//! never prints, exits or reads argv): exit codes, the one-line error report,
//! logging set-up, and the hidden `--generate=man|bash|zsh|fish` that writes man
//! pages and shell completions from the clap definitions.
#![deny(unsafe_code)]
#![deny(missing_docs)]

use clap::{Args, CommandFactory, ValueEnum};
use std::io::Write;
use std::process::ExitCode;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the operation failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: usage error (bad flag, bad reference, bad configuration).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the image, tag, repository or platform does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit status: the registry or the network failed (after retries), or sent bad data.
pub const EXIT_REGISTRY: u8 = 4;
/// Exit status: the signature policy refuses the image.
pub const EXIT_REFUSED: u8 = 5;

/// Logging flags shared by every binary.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Diagnostics level on stderr: error, warn, info, debug or trace
    ///
    /// RUST_LOG, when set, overrides it with a full filter.
    #[arg(long, value_name = "LEVEL", default_value = "warn", global = true)]
    pub log_level: String,
    /// Diagnostics format on stderr
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// More diagnostics (-v info, -vv debug, -vvv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// How diagnostics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up `tracing` to stderr at the level asked for. RUST_LOG, when set, is a
/// list of `target=level` directives and plain levels (`crikit::distribution::registry=debug,warn`),
/// as `tracing_subscriber::filter::Targets` reads it: no regex engine in every tool
/// for a syntax nobody needs here.
pub fn init_logging(args: &LogArgs) {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let level = match args.verbose {
        0 => args
            .log_level
            .parse::<LevelFilter>()
            .unwrap_or(LevelFilter::WARN),
        1 => LevelFilter::INFO,
        2 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let filter: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync> =
        match std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()) {
            Some(spec) => Box::new(
                spec.parse::<tracing_subscriber::filter::Targets>()
                    .unwrap_or_else(|_| {
                        tracing_subscriber::filter::Targets::new().with_default(level)
                    }),
            ),
            None => Box::new(level),
        };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt: Box<dyn Layer<_> + Send + Sync> = match args.log_format {
        LogFormat::Text => Box::new(fmt.without_time()),
        LogFormat::Json => Box::new(fmt.json()),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}

/// What `--generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    /// A man page (roff) on stdout.
    Man,
    /// A bash completion script.
    Bash,
    /// A zsh completion script.
    Zsh,
    /// A fish completion script.
    Fish,
}

/// Handles a lone `--generate=KIND` before clap parses the real arguments (required
/// positionals would reject it otherwise). `extra` is roff spliced into the man page
/// (EXIT STATUS, FILES, EXAMPLES …). Returns the exit code when it handled it.
pub fn generate_if_asked<C: CommandFactory>(section: &str, extra: &str) -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let first = args.next()?;
    if args.next().is_some() {
        return None;
    }
    let first = first.to_str()?;
    let kind = first.strip_prefix("--generate=")?;
    let kind = Generate::from_str(kind, true).ok()?;
    let mut cmd = C::command();
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    let res = match kind {
        Generate::Man => render_man(cmd, section, extra, &mut out),
        Generate::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, &name, &mut out);
            Ok(())
        }
        Generate::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, &name, &mut out);
            Ok(())
        }
        Generate::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, &name, &mut out);
            Ok(())
        }
    };
    match res.and_then(|_| std::io::stdout().write_all(&out)) {
        Ok(()) => Some(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("{name}: --generate: {e}");
            Some(ExitCode::from(EXIT_FAILURE))
        }
    }
}

fn render_man(
    cmd: clap::Command,
    section: &str,
    extra: &str,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    let cmd = cmd.disable_help_subcommand(true);
    let man = clap_mangen::Man::new(cmd.clone())
        .section(section)
        .date("")
        .manual("crikit");
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    // In this page: clap_mangen would point at a page per command, and there is none.
    let commands: Vec<&clap::Command> =
        cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    if !commands.is_empty() {
        out.extend_from_slice(b".SH COMMANDS\n");
        for c in commands {
            let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
            let line = format!(
                ".TP\n\\fB{} {}\\fR\n{}\n",
                cmd.get_name(),
                c.get_name(),
                roff_text(&about)
            );
            out.extend_from_slice(line.as_bytes());
        }
    }
    out.extend_from_slice(extra.as_bytes());
    if !extra.ends_with('\n') && !extra.is_empty() {
        out.push(b'\n');
    }
    if cmd.get_version().is_some() {
        man.render_version_section(out)?;
    }
    Ok(())
}

/// `text` as roff body text: backslashes and dashes escaped, no line taken for a
/// request.
fn roff_text(text: &str) -> String {
    text.replace('\\', "\\e")
        .replace('-', "\\-")
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reports the outcome of `run` the way every tool does: nothing on success, one
/// line `PROG: context: cause: cause` on stderr on failure, and the exit code
/// `code_of` picks (1 when it picks none). A closed stdout (`EPIPE`) is success.
pub fn finish(
    prog: &str,
    result: anyhow::Result<()>,
    code_of: impl Fn(&anyhow::Error) -> Option<u8>,
) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("{prog}: {}", one_line(&e));
            ExitCode::from(code_of(&e).unwrap_or(EXIT_FAILURE))
        }
    }
}

/// An error chain on one line, each cause once.
pub fn one_line(e: &anyhow::Error) -> String {
    crikit::one_line(e.as_ref())
}
