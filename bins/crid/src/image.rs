//! The CRI ImageService over the crikit store: the images imgpull pulls are the
//! images crid lists, and the other way round.
//!
//! An image's CRI id is its config digest, as containerd and CRI-O report it; its
//! repo tags are the store names that point at it, its repo digests
//! `REPOSITORY@DIGEST` with the digest the registry served.

use crate::state::Crid;
use crikit::digest::Digest;
use crikit::layout::{ImageEntry, Store, MAX_CONFIG_SIZE};
use crikit::progress::{Event, Sink};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// One image as the CRI sees it: every store name of one config digest.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// `sha256:…` of the config.
    pub id: String,
    /// Store names (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    /// `REPOSITORY@sha256:…`.
    pub repo_digests: Vec<String>,
    /// Bytes of its blobs in the store.
    pub size: u64,
    /// The config's `User`.
    pub user: String,
}

impl ImageInfo {
    fn to_cri(&self) -> cri::Image {
        let user = self.user.split(':').next().unwrap_or_default();
        let (uid, username) = match user.parse::<i64>() {
            Ok(n) => (Some(cri::Int64Value { value: n }), String::new()),
            Err(_) if user.is_empty() => (Some(cri::Int64Value { value: 0 }), String::new()),
            Err(_) => (None, user.to_string()),
        };
        cri::Image {
            id: self.id.clone(),
            repo_tags: self.names.clone(),
            repo_digests: self.repo_digests.clone(),
            size: self.size,
            uid,
            username,
            spec: Some(cri::ImageSpec {
                image: self.id.clone(),
                ..Default::default()
            }),
            pinned: false,
        }
    }
}

/// The store's entries grouped by config digest (one manifest read each), in
/// index order.
fn grouped(store: &Store) -> Result<Vec<(String, Vec<ImageEntry>)>, crikit::layout::LayoutError> {
    let mut groups: Vec<(String, Vec<ImageEntry>)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for e in store.list()? {
        let manifest = store.manifest(&Digest::parse(&e.manifest_digest)?)?;
        let config = manifest.config().digest().to_string();
        match at.get(&config) {
            Some(&i) => groups[i].1.push(e),
            None => {
                at.insert(config.clone(), groups.len());
                groups.push((config, vec![e]));
            }
        }
    }
    Ok(groups)
}

/// The image with config `id`, from its store entries: reads the config and sizes
/// the blobs.
fn describe(
    store: &Store,
    id: String,
    entries: Vec<ImageEntry>,
) -> Result<ImageInfo, crikit::layout::LayoutError> {
    let raw = store.read_blob(&Digest::parse(&id)?, MAX_CONFIG_SIZE)?;
    let user = serde_json::from_slice::<serde_json::Value>(&raw)
        .ok()
        .and_then(|v| v["config"]["User"].as_str().map(String::from))
        .unwrap_or_default();
    let size = match entries.first() {
        Some(e) => store.image_size(&e.descriptor)?,
        None => 0,
    };
    let mut repo_digests: Vec<String> = Vec::new();
    for e in &entries {
        let rd = repo_digest(e);
        if !repo_digests.contains(&rd) {
            repo_digests.push(rd);
        }
    }
    Ok(ImageInfo {
        id,
        names: entries.iter().map(|e| e.name.clone()).collect(),
        repo_digests,
        size,
        user,
    })
}

/// Every image in the store, grouped by config digest, sorted by first name.
pub fn list(store: &Store) -> Result<Vec<ImageInfo>, crikit::layout::LayoutError> {
    let mut out = grouped(store)?
        .into_iter()
        .map(|(id, entries)| describe(store, id, entries))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.names.cmp(&b.names));
    Ok(out)
}

/// `REPOSITORY@DIGEST` of a store entry, the digest as the registry served it.
fn repo_digest(e: &ImageEntry) -> String {
    format!("{}@{}", repository_of(&e.name), e.repo_digest)
}

/// `host/repo` of `host/repo:tag` or `host/repo@digest`.
fn repository_of(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

/// The image `spec` names: an id (full, or a prefix of at least 12 hex digits), a
/// store name, a short name, a `NAME@DIGEST` or a repo digest. Only the image found
/// has its config read and its blobs sized.
pub fn find(store: &Store, spec: &str) -> Result<Option<ImageInfo>, Status> {
    let groups = grouped(store).map_err(internal)?;
    let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
    let by_id = (hex.len() >= 12 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| {
            groups
                .iter()
                .position(|(id, _)| id.trim_start_matches("sha256:").starts_with(hex))
        })
        .flatten();
    let by_repo_digest = || {
        groups
            .iter()
            .position(|(_, entries)| entries.iter().any(|e| repo_digest(e) == spec))
    };
    let found = match by_id.or_else(by_repo_digest) {
        Some(i) => Some(i),
        None => match store.find(spec) {
            Ok(name) => groups
                .iter()
                .position(|(_, entries)| entries.iter().any(|e| e.name == name)),
            Err(e) if e.is_not_found() => None,
            // What is not a digest cannot name an image here.
            Err(crikit::layout::LayoutError::Digest(_)) => None,
            Err(e) => return Err(internal(e)),
        },
    };
    let Some(i) = found else {
        return Ok(None);
    };
    let (id, entries) = groups.into_iter().nth(i).unwrap_or_default();
    describe(store, id, entries).map(Some).map_err(internal)
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn spec_of(s: &Option<cri::ImageSpec>) -> Result<&str, Status> {
    match s.as_ref().map(|s| s.image.as_str()) {
        Some(i) if !i.is_empty() => Ok(i),
        _ => Err(Status::invalid_argument(
            "no image given (ImageSpec.image is empty)",
        )),
    }
}

/// A pull's outcome, shareable between the requests that wait for it.
type PullOutcome = Result<String, (tonic::Code, String)>;

/// Pulls under way, by reference and credentials: concurrent requests for the same
/// image wait for one download.
#[derive(Default)]
pub struct Pulls {
    inflight: std::sync::Mutex<HashMap<String, Shared<BoxFuture<'static, PullOutcome>>>>,
}

/// Records when a pull last moved.
struct Watch {
    start: Instant,
    last_ms: AtomicU64,
}

impl Sink for Watch {
    fn event(&self, _: &Event) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl Watch {
    /// Returns once nothing has happened for `limit`.
    async fn stalled(&self, limit: Duration) {
        loop {
            let idle = self
                .start
                .elapsed()
                .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)));
            if idle >= limit {
                return;
            }
            tokio::time::sleep((limit - idle).max(Duration::from_millis(50))).await;
        }
    }
}

/// Credentials from the CRI's AuthConfig.
fn credentials(
    auth: &Option<cri::AuthConfig>,
) -> Result<Option<crikit::auth::Credentials>, Status> {
    let Some(a) = auth else { return Ok(None) };
    if !a.username.is_empty() {
        return Ok(Some(crikit::auth::Credentials {
            username: a.username.clone(),
            password: a.password.clone(),
        }));
    }
    if !a.auth.is_empty() {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|e| Status::invalid_argument(format!("auth: not base64: {e}")))?;
        let text = String::from_utf8(raw)
            .map_err(|_| Status::invalid_argument("auth: not USER:PASSWORD"))?;
        return crikit::auth::Credentials::parse(&text)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("auth: {e}")));
    }
    if !a.identity_token.is_empty() || !a.registry_token.is_empty() {
        return Err(Status::invalid_argument(
            "auth: identity and registry tokens are not supported; give a user name and password",
        ));
    }
    Ok(None)
}

impl Crid {
    /// Pulls `image`, joining a pull of the same image with the same credentials
    /// that is already under way.
    pub async fn pull(
        self: &Arc<Self>,
        image: &str,
        creds: Option<crikit::auth::Credentials>,
    ) -> PullOutcome {
        let key = format!(
            "{image}\0{}",
            creds
                .as_ref()
                .map(|c| format!("{}\0{}", c.username, c.password))
                .unwrap_or_default()
        );
        let shared = {
            let mut map = self
                .pulls
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let me = Arc::clone(self);
                    let image = image.to_string();
                    // A task of its own: a caller that gives up does not cancel the
                    // download the others wait for.
                    let done_key = key.clone();
                    let task = tokio::spawn(async move {
                        let out = me.pull_now(&image, creds).await;
                        // Finished: the next request pulls afresh, even if every
                        // waiter gave up before now.
                        me.pulls
                            .inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&done_key);
                        out
                    });
                    let fut = async move {
                        task.await
                            .unwrap_or_else(|e| Err((tonic::Code::Internal, e.to_string())))
                    }
                    .boxed()
                    .shared();
                    map.insert(key.clone(), fut.clone());
                    fut
                }
            }
        };
        shared.await
    }

    async fn pull_now(&self, image: &str, creds: Option<crikit::auth::Credentials>) -> PullOutcome {
        let watch = Watch {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        };
        // The shared client keeps the first credentials and the tokens it got per
        // registry: a request's own credentials get a client of their own.
        let forked;
        let puller = match &creds {
            Some(_) => {
                forked = self
                    .puller
                    .fork()
                    .map_err(|e| (tonic::Code::Internal, e.to_string()))?;
                &forked
            }
            None => &self.puller,
        };
        let pull = puller.pull_as(&self.store, image, &watch, creds.as_ref());
        let result = match self.settings.pull_progress_timeout {
            Some(limit) => tokio::select! {
                r = pull => r,
                () = watch.stalled(limit) => {
                    return Err((
                        tonic::Code::DeadlineExceeded,
                        format!(
                            "pulling {image}: no progress for {} s (pull-progress-timeout); cancelled",
                            limit.as_secs()
                        ),
                    ));
                }
            },
            None => pull.await,
        };
        match result {
            Ok(p) => {
                tracing::info!("pulled {}", p.pinned);
                let id = find(&self.store, &p.name)
                    .map_err(|s| (s.code(), s.message().to_string()))?
                    .map(|i| i.id)
                    .unwrap_or_default();
                Ok(id)
            }
            Err(e) => {
                let code = match e.kind() {
                    crikit::registry::ErrorKind::NotFound => tonic::Code::NotFound,
                    crikit::registry::ErrorKind::Usage => tonic::Code::InvalidArgument,
                    crikit::registry::ErrorKind::Registry => tonic::Code::Unavailable,
                    crikit::registry::ErrorKind::Other => tonic::Code::Internal,
                };
                Err((code, e.to_string()))
            }
        }
    }
}

/// The ImageService.
pub struct ImageService(pub Arc<Crid>);

#[tonic::async_trait]
impl cri::image_service_server::ImageService for ImageService {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let store = self.0.store.clone();
        let images = tokio::task::spawn_blocking(move || -> Result<_, Status> {
            Ok(match filter {
                Some(f) => find(&store, &f)?.into_iter().collect(),
                None => list(&store).map_err(internal)?,
            })
        })
        .await
        .map_err(internal)??;
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(ImageInfo::to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let spec = spec_of(&req.image)?.to_string();
        let store = self.0.store.clone();
        let (image, info) = tokio::task::spawn_blocking(move || -> Result<_, Status> {
            let Some(i) = find(&store, &spec)? else {
                return Ok((None, HashMap::new()));
            };
            let mut info = HashMap::new();
            if req.verbose {
                let name = &i.names[0];
                let v = crikit::layout::inspect(&store, name).map_err(internal)?;
                info.insert("info".to_string(), v.to_string());
            }
            Ok((Some(i.to_cri()), info))
        })
        .await
        .map_err(internal)??;
        // An image that is not there is no error: the CRI answers with no image.
        Ok(Response::new(cri::ImageStatusResponse { image, info }))
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let req = req.into_inner();
        let image = spec_of(&req.image)?.to_string();
        crikit::reference::parse(&image)
            .map_err(|e| Status::invalid_argument(format!("image {image:?}: {e}")))?;
        let creds = credentials(&req.auth)?;
        match self.0.pull(&image, creds).await {
            Ok(image_ref) => Ok(Response::new(cri::PullImageResponse { image_ref })),
            Err((code, message)) => Err(Status::new(code, message)),
        }
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let spec = spec_of(&req.into_inner().image)?.to_string();
        let crid = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || crid.remove_image(&spec))
            .await
            .map_err(internal)??;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let root = self.0.settings.root.clone();
        let usage = tokio::task::spawn_blocking(move || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            let (bytes, inodes) = ["images", "layers"]
                .iter()
                .map(|d| crate::fsusage::usage(&root.join(d)))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            cri::FilesystemUsage {
                timestamp: now,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: root.display().to_string(),
                }),
                used_bytes: Some(cri::UInt64Value { value: bytes }),
                inodes_used: Some(cri::UInt64Value { value: inodes }),
            }
        })
        .await
        .map_err(internal)?;
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage.clone()],
            container_filesystems: vec![usage],
        }))
    }
}

impl Crid {
    /// Removes every name of the image `spec` names, then the blobs no image needs.
    /// Nothing to remove is no error (the CRI's RemoveImage is idempotent).
    fn remove_image(&self, spec: &str) -> Result<(), Status> {
        let Some(image) = find(&self.store, spec)? else {
            return Ok(());
        };
        if let Some(user) = self.image_user(&image.id) {
            return Err(Status::failed_precondition(format!(
                "image {} is in use by container {user}",
                image.names.first().unwrap_or(&image.id)
            )));
        }
        for name in &image.names {
            match self.store.remove(name) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(internal(e)),
            }
        }
        self.store.prune().map_err(internal)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::repository_of;

    #[test]
    fn repositories_of_names() {
        assert_eq!(
            repository_of("docker.io/library/busybox:latest"),
            "docker.io/library/busybox"
        );
        assert_eq!(repository_of("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000/a/b");
        assert_eq!(repository_of("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
        assert_eq!(repository_of("registry/a@sha256:00"), "registry/a");
    }
}
