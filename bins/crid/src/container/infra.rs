//! A pod's infra process, which holds the PID namespace its containers share:
//! crid's own (`ctrmon --infra`, its namespace pinned at `ns/pid`), or with
//! `--pause-image` a container of that image.

use super::monitor;
use crate::error::{CridError, Result};
use crate::state::record::PodRecord;
use crate::Crid;
use crikit::runtime::monitor::cgroup::Parent;
use k8s_cri::v1 as cri;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Crid {
    /// Starts the pod's infra process, which holds the shared PID namespace: crid's
    /// own (`ctrmon --infra`, its namespace pinned at `ns/pid`), or with
    /// `--pause-image` a container of that image.
    pub async fn start_infra(self: &Arc<Self>, pod: &mut PodRecord) -> Result<()> {
        let Some(image) = self.settings.pause_image.clone() else {
            let me = Arc::clone(self);
            let p = pod.clone();
            let (pid, pinned) =
                tokio::task::spawn_blocking(move || me.spawn_infra_process(&p)).await??;
            pod.infra_pid = Some(pid);
            pod.ns.insert("pid".into(), pinned);
            return Ok(());
        };
        self.start_infra_container(pod, image).await
    }

    /// The infra process of `pod`, its PID namespace pinned; its pid and the pin.
    fn spawn_infra_process(&self, pod: &PodRecord) -> Result<(i32, PathBuf)> {
        let t0 = Instant::now();
        let ns_dir = pod.dir.join("ns");
        std::fs::create_dir_all(&ns_dir)
            .map_err(CridError::io(format!("creating {}", ns_dir.display())))?;
        let parent = crate::host::cgroups::monitor_parent(
            self.settings.cgroup_manager,
            pod.cgroup_parent.as_deref(),
        );
        let pid = monitor::start_infra(
            &self.settings.ctrmon,
            &pod.id,
            &ns_dir,
            &infra_pid_file(pod),
            parent.as_ref(),
        )?;
        match crate::host::netns::pin_pid(&ns_dir, pid) {
            Ok(pinned) => {
                tracing::debug!("pod {}: infra process {pid} in {:?}", pod.id, t0.elapsed());
                Ok((pid, pinned))
            }
            Err(e) => {
                end_infra_process(pod, Some(pid), parent.as_ref());
                Err(CridError::io(format!(
                    "pod {}: pinning its PID namespace",
                    pod.id
                ))(e))
            }
        }
    }

    /// Starts the pod's infra container: the pause image, holding the shared PID
    /// namespace.
    async fn start_infra_container(
        self: &Arc<Self>,
        pod: &mut PodRecord,
        image: String,
    ) -> Result<()> {
        let store = self.images.store.clone();
        let catalog = Arc::clone(&self.images.catalog);
        let image2 = image.clone();
        if tokio::task::spawn_blocking(move || crate::image::find(&store, &catalog, &image2))
            .await??
            .is_none()
        {
            self.images.pull(&image, None, None).await?;
        }
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "infra".into(),
                attempt: pod.metadata.attempt,
            }),
            image: Some(cri::ImageSpec {
                image,
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self.create_in(pod, config, true, None).await?;
        pod.infra = Some(id);
        Ok(())
    }
}

/// Where the infra process's pid is written before crid learns it, so that a crid
/// killed meanwhile still finds it.
fn infra_pid_file(pod: &PodRecord) -> PathBuf {
    pod.dir.join("infra.pid")
}

/// Ends the pod's infra process (`pid`, or the one its pid file names, when it is
/// still that pod's) and waits for it to be gone, at most 5 s; removes the cgroup it
/// was given and its pid file. The kernel kills what was left in its PID namespace.
pub fn end_infra_process(pod: &PodRecord, pid: Option<i32>, parent: Option<&Parent>) {
    let ns_dir = pod.dir.join("ns");
    let file = infra_pid_file(pod);
    let from_file = crikit::runtime::monitor::read_pid(&file);
    let mut pids: Vec<i32> = pid.into_iter().chain(from_file).collect();
    pids.dedup();
    for pid in pids {
        if !crikit::runtime::monitor::is_infra(pid, &ns_dir) {
            continue;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        crikit::sync::poll_until(Duration::from_secs(5), Duration::from_millis(1), || {
            !crikit::runtime::monitor::is_infra(pid, &ns_dir)
        });
    }
    if let Some(parent) = parent {
        // Busy until the process's parent has reaped it; a scope goes by itself.
        crikit::sync::poll_until(Duration::from_secs(1), Duration::from_millis(5), || {
            parent.remove(&pod.id)
        });
    }
    let _ = std::fs::remove_file(&file);
}
