//! Command line of bundlegen: making a bundle (the default), --remove and --prune.

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, CommandFactory, Parser, ValueEnum};
use crikit::distribution::layout::{LayoutError, Store};
use crikit::rootfs::bundle::{BundleError, BundleOptions, RootfsMode};
use crikit::rootfs::spec::{Net, Overrides, SpecError};
use crikit_cli::{LogArgs, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_USAGE};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// Man page sections written by hand, spliced after the generated ones.
pub const MAN_EXTRA: &str = include_str!("../../../man/bundlegen.extra.roff");

/// Generate OCI runtime bundles from images in the crikit store
///
/// Makes BUNDLE/rootfs and BUNDLE/config.json from IMAGE, an image in the store
/// (a name, a short name, a NAME@DIGEST line as imgpull prints it, or - for the first
/// line of stdin), so that `runc run -b BUNDLE ID` runs it. As root with overlayfs
/// the rootfs is an overlay of layers unpacked once into ROOT/layers; otherwise the
/// layers are copied into a plain directory, and without root config.json maps the
/// caller to root in a user namespace. Anything after -- replaces the image's Cmd.
/// The bundle is built beside BUNDLE and renamed into place; the absolute BUNDLE path
/// is printed on stdout.
#[derive(Debug, Parser)]
#[command(name = "bundlegen", version, max_term_width = 100)]
#[command(group(ArgGroup::new("action").args(["remove", "prune"])))]
pub struct Args {
    /// Image in the store, or - for the first line of stdin
    #[arg(value_name = "IMAGE")]
    pub image: Option<String>,
    /// Directory to create (it must not exist); with --remove, bundles to remove
    #[arg(value_name = "BUNDLE")]
    pub bundles: Vec<PathBuf>,
    /// Command and arguments replacing the image's Cmd
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,

    /// Remove bundles: unmount the rootfs, delete the directory, release its layers
    #[arg(long)]
    pub remove: bool,
    /// Delete cached layers that no image in the store and no bundle uses
    #[arg(long)]
    pub prune: bool,

    /// State root: the image store is ROOT/images, the layer cache ROOT/layers
    #[arg(long, env = "CRIKIT_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// How to make the rootfs
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Mode::Auto)]
    pub rootfs_mode: Mode,
    /// Print what was made as JSON on stdout (see JSON OUTPUT)
    #[arg(long)]
    pub json: bool,

    /// Replace the image's Entrypoint ("" clears it, and the image's Cmd with it)
    #[arg(long, value_name = "PROG")]
    pub entrypoint: Option<String>,
    /// Set an environment variable, KEY=VALUE (repeatable)
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read KEY=VALUE lines from a file (# comments and blank lines skipped)
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// User: NAME, UID, UID:GID, NAME:GROUP (resolved in the image's /etc/passwd)
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,
    /// Hostname (default: the bundle directory's name)
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Bind mount SRC at DST, read-only with :ro (repeatable)
    #[arg(long, value_name = "SRC:DST[:ro]")]
    pub mount: Vec<String>,
    /// Mount a tmpfs at this path (repeatable)
    #[arg(long, value_name = "PATH")]
    pub tmpfs: Vec<String>,
    /// Make the rootfs read-only
    #[arg(long)]
    pub read_only: bool,
    /// Give the process a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Add a capability (NET_ADMIN or CAP_NET_ADMIN; ALL for every one)
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability (or ALL)
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// All the capabilities this process holds, no seccomp filter, no masked paths, no
    /// no_new_privs
    #[arg(long)]
    pub privileged: bool,
    /// Memory limit: bytes, or with k, m, g suffix
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<i64>,
    /// CPU limit in CPUs (0.5 is half a CPU)
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Maximum number of processes
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<i64>,
    /// Network: none (a new namespace with loopback), host, or a netns path to join
    #[arg(long, value_name = "none|host|PATH", default_value = "none")]
    pub net: String,
    /// Add an annotation, KEY=VALUE (repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,
    /// JSON merge patch (RFC 7396) applied to config.json last; - reads stdin
    #[arg(long, value_name = "FILE|-")]
    pub patch: Option<String>,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Rootfs modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Overlay when root and overlayfs allow, copy otherwise.
    Auto,
    /// Overlay mount of cached layers.
    Overlay,
    /// A plain directory.
    Copy,
}

fn parse_size(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: i64 = match c.to_ascii_lowercase() {
                'b' => 1,
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => return Err(format!("{s:?}: unknown unit {c:?} (use k, m or g)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a positive size"))
}

/// Maps an error to bundlegen's exit code (see EXIT STATUS).
pub fn exit_code(e: &anyhow::Error) -> Option<u8> {
    for c in e.chain() {
        if let Some(l) = c.downcast_ref::<LayoutError>() {
            return Some(if l.is_not_found() {
                EXIT_NOT_FOUND
            } else {
                EXIT_FAILURE
            });
        }
        let spec = match c.downcast_ref::<BundleError>() {
            Some(BundleError::Store(l)) => {
                return Some(if l.is_not_found() {
                    EXIT_NOT_FOUND
                } else {
                    EXIT_FAILURE
                });
            }
            Some(BundleError::Spec(s)) => Some(s),
            _ => c.downcast_ref::<SpecError>(),
        };
        if matches!(
            spec,
            Some(SpecError::Override { .. })
                | Some(SpecError::User { .. })
                | Some(SpecError::Invalid(_))
        ) {
            return Some(EXIT_USAGE);
        }
    }
    None
}

fn usage_error(msg: &str) -> ! {
    Args::command()
        .error(clap::error::ErrorKind::ArgumentConflict, msg)
        .exit()
}

fn key_value(s: &str, flag: &'static str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("{flag} {s:?}: not KEY=VALUE"),
    }
}

/// Runs bundlegen.
pub fn run(args: Args) -> Result<()> {
    let root = args
        .root
        .clone()
        .unwrap_or_else(crikit::paths::default_root);
    let mut out = std::io::stdout().lock();
    if args.prune {
        prune(&args, &root, &mut out)
    } else if args.remove {
        remove(&args, &root)
    } else {
        make(&args, &root, &mut out)
    }
}

/// --prune: deletes the cached layers nothing uses.
fn prune(args: &Args, root: &Path, out: &mut impl Write) -> Result<()> {
    if args.image.is_some() {
        usage_error("--prune takes no IMAGE or BUNDLE");
    }
    let store = Store::open(crikit::paths::images_dir(root)).context("opening the image store")?;
    let r =
        crikit::rootfs::bundle::prune_layers(&store, root).context("pruning the layer cache")?;
    if args.json {
        serde_json::to_writer(&mut *out, &r)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "removed {} layers and {} stale bundle records",
            r.layers, r.stale_records
        )?;
    }
    Ok(())
}

/// --remove: every positional is a bundle to remove.
fn remove(args: &Args, root: &Path) -> Result<()> {
    let bundles: Vec<PathBuf> = args
        .image
        .iter()
        .map(PathBuf::from)
        .chain(args.bundles.iter().cloned())
        .collect();
    if bundles.is_empty() {
        usage_error("--remove needs at least one BUNDLE");
    }
    for b in bundles {
        crikit::rootfs::bundle::remove(root, &b)
            .with_context(|| format!("removing bundle {}", b.display()))?;
    }
    Ok(())
}

/// The default action: makes BUNDLE from IMAGE and prints what was made.
fn make(args: &Args, root: &Path, out: &mut impl Write) -> Result<()> {
    let (Some(image), [bundle]) = (args.image.as_deref(), args.bundles.as_slice()) else {
        usage_error("expected IMAGE and one BUNDLE (try --help)");
    };
    if image == "-" && args.patch.as_deref() == Some("-") {
        usage_error("IMAGE and --patch cannot both read stdin");
    }
    let image = image_arg(image)?;
    let opts = options(args)?;
    let images = crikit::paths::images_dir(root);
    let store = Store::open_existing(&images)
        .with_context(|| format!("opening the image store {}", images.display()))?;
    let name = store.find(&image)?;
    let info = crikit::rootfs::bundle::create(&store, root, &name, bundle, &opts)
        .with_context(|| format!("generating bundle {} from {name}", bundle.display()))?;
    if args.json {
        let v = serde_json::json!({"type": "bundle", "data": info, "version": 1});
        serde_json::to_writer(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", info.path.display())?;
    }
    Ok(())
}

/// IMAGE as given, or the first line of stdin for `-`.
fn image_arg(image: &str) -> Result<String> {
    if image != "-" {
        return Ok(image.to_string());
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading IMAGE from stdin")?;
    let line = line.trim();
    if line.is_empty() {
        bail!("no image reference on stdin");
    }
    Ok(line.to_string())
}

/// How to make the bundle, from the flags.
fn options(args: &Args) -> Result<BundleOptions> {
    let overrides = Overrides {
        cmd: (!args.cmd.is_empty()).then(|| args.cmd.clone()),
        entrypoint: args.entrypoint.clone().map(|e| vec![e]),
        env: env_of(&args.env_file, &args.env)?,
        cwd: args.cwd.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        mounts: args
            .mount
            .iter()
            .map(|m| mount_of(m))
            .collect::<Result<_>>()?,
        tmpfs: args.tmpfs.clone(),
        read_only: args.read_only,
        tty: args.tty,
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        privileged: args.privileged,
        memory: args.memory,
        cpus: args.cpus,
        pids_limit: args.pids_limit,
        net: net_of(&args.net)?,
        annotations: args
            .annotation
            .iter()
            .map(|a| key_value(a, "--annotation"))
            .collect::<Result<_>>()?,
        rootless: None,
        cgroups_path: None,
        member_groups: false,
    };
    Ok(BundleOptions {
        mode: match args.rootfs_mode {
            Mode::Auto => RootfsMode::Auto,
            Mode::Overlay => RootfsMode::Overlay,
            Mode::Copy => RootfsMode::Copy,
        },
        overrides,
        patch: patch_of(args.patch.as_deref())?,
        userns: None,
    })
}

/// --patch: a JSON document from a file, or from stdin for `-`.
fn patch_of(patch: Option<&str>) -> Result<Option<serde_json::Value>> {
    let Some(f) = patch else {
        return Ok(None);
    };
    let text = if f == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the patch from stdin")?;
        s
    } else {
        std::fs::read_to_string(f).with_context(|| format!("reading the patch {f}"))?
    };
    Ok(Some(
        serde_json::from_str(&text).with_context(|| format!("--patch {f}: not JSON"))?,
    ))
}

/// The environment: the --env-file lines first, then --env, each KEY=VALUE.
fn env_of(files: &[PathBuf], vars: &[String]) -> Result<Vec<String>> {
    let mut env = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the env file {}", f.display()))?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            key_value(line, "--env-file")?;
            env.push(line.to_string());
        }
    }
    for e in vars {
        key_value(e, "--env")?;
        env.push(e.clone());
    }
    Ok(env)
}

/// --mount SRC:DST[:ro|:rw], with SRC made absolute and required to exist.
fn mount_of(m: &str) -> Result<(String, String, bool)> {
    let (src, dst, ro) = match m.split(':').collect::<Vec<_>>().as_slice() {
        [s, d] | [s, d, "rw"] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        _ => bail!("--mount {m:?}: not SRC:DST[:ro]"),
    };
    let src = std::path::absolute(src).with_context(|| format!("--mount {m:?}"))?;
    if !src.exists() {
        bail!("--mount {m:?}: {} does not exist", src.display());
    }
    Ok((src.display().to_string(), dst.to_string(), ro))
}

/// --net: none, host, or the path of a namespace to join.
fn net_of(net: &str) -> Result<Net> {
    Ok(match net {
        "none" => Net::None,
        "host" => Net::Host,
        p => {
            let path = PathBuf::from(p);
            if !path.exists() {
                bail!("--net {p:?}: not none, host or an existing namespace path");
            }
            Net::Path(path)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("-1").is_err());
        assert!(parse_size("12x").is_err());
    }
}
