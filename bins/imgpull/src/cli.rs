//! Command line of imgpull: pulling (the default), and --list, --inspect, --remove
//! and --prune on the store.

use crate::progress::{human_size, ProgressMode};
use anyhow::{Context, Result};
use clap::{ArgGroup, CommandFactory, Parser};
use crikit::distribution::layout::{LayoutError, Store};
use crikit::distribution::platform::{Platform, PlatformError};
use crikit::distribution::policy::registries_d::{self, RegistriesD, RegistriesDError};
use crikit::distribution::policy::{Policy, PolicyError};
use crikit::distribution::reference::ReferenceError;
use crikit::distribution::registry::auth::{AuthError, CredentialStore, Credentials};
use crikit::distribution::registry::peers::{Peers, PeersError};
use crikit::distribution::registry::registries::{Registries, RegistriesError};
use crikit::distribution::registry::{ErrorKind, PullOptions, Puller, RegistryError};
use crikit_cli::{LogArgs, EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_REGISTRY, EXIT_USAGE};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Man page sections written by hand, spliced after the generated ones.
pub const MAN_EXTRA: &str = include_str!("../../../man/imgpull.extra.roff");

/// Pull container images from registries into the crikit image store
///
/// Pulls each IMAGE (NAME[:TAG] or NAME@DIGEST; short names are normalised the docker
/// way, busybox is docker.io/library/busybox:latest) into an OCI image layout at
/// ROOT/images, and prints one line per image on stdout: the full reference and the
/// manifest digest the registry resolved it to, NAME:TAG@sha256:…. Progress goes to
/// stderr. Layers download in parallel, blobs already stored are not fetched again,
/// transient failures are retried and cut-off downloads resume.
///
/// With --list, --inspect, --remove or --prune it works on the store instead.
#[derive(Debug, Parser)]
#[command(name = "imgpull", version, max_term_width = 100)]
#[command(group(ArgGroup::new("action").args(["list", "inspect", "remove", "prune"])))]
pub struct Args {
    /// Images to pull, or with --inspect/--remove, images in the store
    #[arg(value_name = "IMAGE")]
    pub images: Vec<String>,

    /// List the images in the store (NAME, DIGEST, SIZE; JSON lines with --json)
    #[arg(long)]
    pub list: bool,
    /// Print one stored image as JSON: name, digests, size, manifest and config
    #[arg(long)]
    pub inspect: bool,
    /// Remove images from the store by name, with the blobs and unpacked layers
    /// that no other image and no bundle uses
    #[arg(long)]
    pub remove: bool,
    /// Delete blobs and unpacked layers that no image and no bundle uses, and the
    /// temp files of killed pulls and unpacks
    #[arg(long)]
    pub prune: bool,
    /// Unpack each layer into ROOT/layers as it downloads (needs root)
    ///
    /// The layers are then ready for bundlegen and crid: the first bundle of the
    /// image unpacks nothing.
    #[arg(long, conflicts_with = "action")]
    pub unpack: bool,

    /// Write results on stdout as JSON lines (see JSON OUTPUT)
    #[arg(long)]
    pub json: bool,

    /// State root; the image store is ROOT/images
    ///
    /// Defaults to /var/lib/crikit as root, $XDG_DATA_HOME/crikit otherwise.
    #[arg(long, env = "CRIKIT_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Platform to pick from multi-platform images, OS/ARCH[/VARIANT]
    ///
    /// Defaults to the host's, e.g. linux/amd64.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,

    /// Credentials for the image's registry, USER:PASSWORD (overrides auth files)
    ///
    /// They go to that registry only: a mirror gets the credentials the auth files
    /// hold for its own host (or these, when --mirror-with-credentials names it),
    /// and a peer never gets them.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,

    /// A mirror that may be sent the --creds of the registry it mirrors, HOST[:PORT];
    /// may be repeated
    #[arg(long = "mirror-with-credentials", value_name = "HOST[:PORT]")]
    pub mirror_with_credentials: Vec<String>,

    /// Ask other nodes' imgserve for blobs before the registry: a file of ADDR:PORT
    /// lines, or dns:NAME:PORT (NAME's A and AAAA records, each with PORT)
    ///
    /// The manifest always comes from the registry (or its mirrors), with this
    /// pull's credentials: a node asks its peers only for an image it has shown it
    /// may read. For each blob the peers are ranked by rendezvous hashing of the
    /// digest and the peer, so every node asks the same peer first. Peers are
    /// reached over plain HTTP and are sent no --creds; what they send is checked
    /// against the manifest's digests. The file or name is read at each pull.
    #[arg(long, value_name = "FILE|dns:NAME:PORT")]
    pub peers: Option<PathBuf>,

    /// This node's own imgserve: ranked with the peers, asked where it ranks first
    #[arg(long = "self", value_name = "ADDR:PORT", requires = "peers")]
    pub self_addr: Option<String>,

    /// Auth file to read credentials from (containers auth.json format)
    ///
    /// Without it: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.config/containers/auth.json, then ~/.docker/config.json.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,

    /// Use plain HTTP for this registry, HOST[:PORT]; may be repeated
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,

    /// Directory of per-registry certificates, DIR/HOST[:PORT]/*.crt; may be repeated
    ///
    /// Replaces the default search: ~/.config/containers/certs.d (not as root),
    /// /etc/containers/certs.d, /etc/docker/certs.d. The first that has a directory
    /// for the registry is used: its CAs (*.crt) are trusted besides the system's,
    /// and its client certificate (NAME.cert with NAME.key) is presented when the
    /// registry asks for one.
    #[arg(long = "certs-dir", value_name = "DIR")]
    pub certs_dir: Vec<PathBuf>,

    /// containers-registries.conf v2 file for rewrites, mirrors and insecure registries
    ///
    /// Defaults to /etc/containers/registries.conf when it exists.
    #[arg(long, env = "CONTAINERS_REGISTRIES_CONF", value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,

    /// containers-policy.json(5) signature policy every pull is checked against
    ///
    /// Defaults to ~/.config/containers/policy.json (not as root), then
    /// /etc/containers/policy.json; with none, every image is let in. A refused
    /// image exits 5 and leaves nothing stored.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// containers-registries.d(5) directory: where signatures are looked for
    ///
    /// Defaults to ~/.config/containers/registries.d, then /etc/containers/registries.d.
    #[arg(long = "registries.d", value_name = "DIR")]
    pub registries_d: Option<PathBuf>,

    /// Blobs downloaded at once
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_concurrent_downloads: u16,

    /// Retries of a request after a transient failure (5xx, reset, timeout)
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub retries: u32,

    /// Delay before the first retry, in milliseconds; it doubles each time
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub retry_delay: u64,

    /// Seconds a connection may deliver nothing before it counts as failed
    ///
    /// A slow download that keeps moving is never cut off.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,

    /// Progress on stderr: bars on a terminal, plain lines otherwise (auto), or JSON
    /// lines, or none
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// No progress output (same as --progress=none)
    #[arg(short, long)]
    pub quiet: bool,

    #[command(flatten)]
    pub log: LogArgs,
}

/// Maps an error to imgpull's exit code (see EXIT STATUS).
pub fn exit_code(e: &anyhow::Error) -> Option<u8> {
    for c in e.chain() {
        if let Some(r) = c.downcast_ref::<RegistryError>() {
            return Some(match r.kind() {
                ErrorKind::NotFound => EXIT_NOT_FOUND,
                ErrorKind::Registry => EXIT_REGISTRY,
                ErrorKind::Usage => EXIT_USAGE,
                ErrorKind::Other => EXIT_FAILURE,
                ErrorKind::Refused => EXIT_REFUSED,
            });
        }
        if c.downcast_ref::<ReferenceError>().is_some()
            || c.downcast_ref::<PlatformError>().is_some()
            || c.downcast_ref::<AuthError>().is_some()
            || c.downcast_ref::<RegistriesError>().is_some()
            || c.downcast_ref::<PeersError>().is_some()
            || c.downcast_ref::<PolicyError>().is_some()
            || c.downcast_ref::<RegistriesDError>().is_some()
        {
            return Some(EXIT_USAGE);
        }
        if let Some(l) = c.downcast_ref::<LayoutError>() {
            return Some(if l.is_not_found() {
                EXIT_NOT_FOUND
            } else {
                EXIT_FAILURE
            });
        }
    }
    None
}

/// The policy of --policy, else the user's (not as root) or the system's when
/// there is one; None: every image is let in.
fn load_policy(explicit: Option<&std::path::Path>) -> Result<Option<Policy>, PolicyError> {
    if let Some(p) = explicit {
        return Policy::load(p).map(Some);
    }
    match crikit::distribution::policy::default_path() {
        Some(p) => Policy::load(&p).map(Some),
        None => Ok(None),
    }
}

fn usage_error(msg: &str) -> ! {
    Args::command()
        .error(clap::error::ErrorKind::ArgumentConflict, msg)
        .exit()
}

/// Runs imgpull.
pub fn run(args: Args) -> Result<()> {
    let root = args
        .root
        .clone()
        .unwrap_or_else(crikit::paths::default_root);
    let images_dir = crikit::paths::images_dir(&root);
    if args.list || args.prune {
        if !args.images.is_empty() {
            usage_error("--list and --prune take no IMAGE");
        }
    } else if args.inspect {
        if args.images.len() != 1 {
            usage_error("--inspect takes exactly one IMAGE");
        }
    } else if args.images.is_empty() {
        usage_error("no IMAGE given (try --help)");
    }
    let open = || {
        Store::open(&images_dir)
            .with_context(|| format!("opening the image store {}", images_dir.display()))
    };
    let mut out = std::io::stdout().lock();
    if args.list {
        return list(&open()?, args.json, &mut out);
    }
    if args.inspect {
        let store = open()?;
        let name = resolve_name(&store, &args.images[0])?;
        let v = crikit::distribution::layout::inspect(&store, &name)
            .with_context(|| format!("inspecting {}", args.images[0]))?;
        if args.json {
            json_line(&mut out, "image", &v, false)?;
            json_line(&mut out, "summary", &serde_json::json!({"images": 1}), true)?;
        } else {
            serde_json::to_writer_pretty(&mut out, &v)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    if args.remove {
        let store = open()?;
        let mut first_err = None;
        for img in &args.images {
            let res = resolve_name(&store, img).and_then(|name| {
                store
                    .remove(&name)
                    .with_context(|| format!("removing {img}"))?;
                Ok(name)
            });
            match res {
                Ok(name) if args.json => json_line(
                    &mut out,
                    "removed",
                    &serde_json::json!({"name": name}),
                    false,
                )?,
                Ok(name) => writeln!(out, "{name}")?,
                Err(e) => report_or_keep(e, &mut first_err),
            }
        }
        // What only the removed images used goes with them.
        let freed = free(&store, &root);
        if args.json {
            json_line(
                &mut out,
                "summary",
                &serde_json::json!({"removed": args.images.len()}),
                true,
            )?;
        }
        return first_err.or(freed.err()).map_or(Ok(()), Err);
    }
    if args.prune {
        let store = open()?;
        let (r, l) = free(&store, &root)?;
        if args.json {
            json_line(&mut out, "pruned", &r, false)?;
            json_line(&mut out, "pruned-layers", &l, false)?;
            json_line(&mut out, "summary", &serde_json::json!({}), true)?;
        } else {
            writeln!(
                out,
                "removed {} blobs, {} layers and {} temp files, freed {}",
                r.blobs,
                l.layers,
                r.temp_files + l.temp_dirs,
                human_size(r.bytes + l.bytes)
            )?;
        }
        return Ok(());
    }
    pull(&args, &root, &images_dir, &mut out)
}

/// Deletes the blobs and the unpacked layers that no image and no bundle uses.
fn free(
    store: &Store,
    root: &std::path::Path,
) -> Result<(
    crikit::distribution::layout::PruneReport,
    crikit::rootfs::bundle::LayerPruneReport,
)> {
    let blobs = store.prune().context("pruning the image store")?;
    let layers =
        crikit::rootfs::bundle::prune_layers(store, root).context("pruning the unpacked layers")?;
    Ok((blobs, layers))
}

fn pull(
    args: &Args,
    root: &std::path::Path,
    images_dir: &std::path::Path,
    out: &mut impl Write,
) -> Result<()> {
    let platform = match &args.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let mut registries = Registries::load(args.registries_conf.as_deref())?;
    registries.add_insecure(args.insecure_registry.iter().cloned());
    let creds = CredentialStore::from_env(args.authfile.as_deref());
    let pull_creds = args.creds.as_deref().map(Credentials::parse).transpose()?;
    let mut opts = PullOptions {
        platform,
        max_concurrent: usize::from(args.max_concurrent_downloads),
        retries: args.retries,
        retry_delay: Duration::from_millis(args.retry_delay),
        stall_timeout: Duration::from_secs(args.stall_timeout),
        peers: Peers::new(args.peers.clone(), args.self_addr.clone())?,
        policy: load_policy(args.policy.as_deref())?.map(std::sync::Arc::new),
        registries_d: RegistriesD::load(&match &args.registries_d {
            Some(d) => vec![d.clone()],
            None => registries_d::default_dirs(),
        })?,
        mirrors_with_credentials: args.mirror_with_credentials.clone(),
        ..PullOptions::default()
    };
    if !args.certs_dir.is_empty() {
        opts.certs_dirs = args.certs_dir.clone();
    }
    if args.unpack {
        if !crikit::paths::is_root() {
            usage_error("--unpack needs root: layers are kept in overlayfs form");
        }
        opts.unpacker = Some(std::sync::Arc::new(
            crikit::rootfs::bundle::LayerCache::new(root),
        ));
    }
    // Bad references are usage errors, found before any network traffic.
    for img in &args.images {
        crikit::distribution::reference::parse(img)?;
    }
    // The HTTP client reads and parses the system's CA certificates (tens of
    // milliseconds with a cold page cache): it is built while the store opens.
    let (puller, store) = std::thread::scope(|s| {
        let client = s.spawn(|| Puller::new(registries, creds, opts));
        let store = Store::open(images_dir)
            .with_context(|| format!("opening the image store {}", images_dir.display()));
        let puller = client
            .join()
            .map_err(|_| anyhow::anyhow!("setting up the registry client panicked"));
        (puller, store)
    });
    let store = store?;
    let puller = puller??;
    let mode = if args.quiet {
        ProgressMode::None
    } else {
        args.progress
    };
    let sink = crate::progress::make(mode);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut first_err = None;
    let mut pulled = 0;
    for img in &args.images {
        match rt.block_on(puller.pull_as(&store, img, sink.as_ref(), pull_creds.as_ref())) {
            Ok(p) => {
                pulled += 1;
                sink.finish_image();
                if args.json {
                    json_line(
                        out,
                        "pulled",
                        &serde_json::json!({
                            "reference": p.pinned,
                            "name": p.name,
                            "repo_digest": p.repo_digest.as_str(),
                            "manifest_digest": p.manifest_digest.as_str(),
                        }),
                        false,
                    )?;
                } else {
                    writeln!(out, "{}", p.pinned)?;
                }
                out.flush()?;
            }
            Err(e) => {
                sink.finish_image();
                // The error starts with "pulling IMAGE" already.
                report_or_keep(anyhow::Error::new(e), &mut first_err);
            }
        }
    }
    if args.json {
        json_line(
            out,
            "summary",
            &serde_json::json!({"pulled": pulled, "failed": args.images.len() - pulled}),
            true,
        )?;
    }
    first_err.map_or(Ok(()), Err)
}

/// With several images, each failure is reported as it happens and the first one
/// decides the exit code.
fn report_or_keep(e: anyhow::Error, first: &mut Option<anyhow::Error>) {
    if first.is_some() {
        eprintln!("imgpull: {}", crikit_cli::one_line(&e));
    } else {
        *first = Some(e);
    }
}

fn resolve_name(store: &Store, input: &str) -> Result<String> {
    Ok(store.find(input)?)
}

fn list(store: &Store, json: bool, out: &mut impl Write) -> Result<()> {
    let images = store.list().context("listing the image store")?;
    let mut rows = Vec::new();
    for img in &images {
        let size = store.image_size(&img.descriptor).ok();
        rows.push((img, size));
    }
    if json {
        for (img, size) in &rows {
            let mut v = serde_json::to_value(img)?;
            v["size"] = serde_json::json!(size);
            json_line(out, "image", &v, false)?;
        }
        json_line(
            out,
            "summary",
            &serde_json::json!({"images": rows.len()}),
            true,
        )?;
        return Ok(());
    }
    let width = rows
        .iter()
        .map(|(i, _)| i.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(out, "{:<width$}  {:<19}  SIZE", "NAME", "DIGEST")?;
    for (img, size) in rows {
        let size = size.map(human_size).unwrap_or_else(|| "incomplete".into());
        writeln!(
            out,
            "{:<width$}  {:<19}  {}",
            img.name,
            &img.repo_digest[..19.min(img.repo_digest.len())],
            size
        )?;
    }
    Ok(())
}

fn json_line(
    out: &mut impl Write,
    kind: &str,
    data: &impl serde::Serialize,
    last: bool,
) -> Result<()> {
    let mut v = serde_json::json!({"type": kind, "data": data});
    if last {
        v["version"] = serde_json::json!(1);
    }
    serde_json::to_writer(&mut *out, &v)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_documented_exit_codes() {
        let reg = |status: &str| RegistryError::Status {
            image: "i".into(),
            registry: "r".into(),
            status: status.into(),
            message: String::new(),
        };
        let nf = RegistryError::NotFound {
            image: "i".into(),
            registry: "r".into(),
            status: "MANIFEST_UNKNOWN".into(),
            message: String::new(),
        };
        let code = |e: anyhow::Error| exit_code(&e.context("pulling"));
        assert_eq!(code(nf.into()), Some(EXIT_NOT_FOUND));
        assert_eq!(code(reg("503").into()), Some(EXIT_REGISTRY));
        assert_eq!(
            code(
                crikit::distribution::reference::parse("A B")
                    .unwrap_err()
                    .into()
            ),
            Some(EXIT_USAGE)
        );
        assert_eq!(
            code(Platform::parse("x").unwrap_err().into()),
            Some(EXIT_USAGE)
        );
        assert_eq!(
            code(LayoutError::ImageNotFound("x".into()).into()),
            Some(EXIT_NOT_FOUND)
        );
        assert_eq!(code(anyhow::anyhow!("disk")), None);
    }

    #[test]
    fn sizes_read_like_skopeo() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_084_930), "1.1 MB");
        assert_eq!(human_size(659_000_000), "659.0 MB");
    }
}
