//! Pods and containers as the CRI shows them: their records, and what the monitor
//! and the infra process say now, read as ListPodSandbox, PodSandboxStatus,
//! ListContainers and ContainerStatus answer (and as the events carry them).

use crate::state::record::{ContainerRecord, PodRecord};
use crikit::runtime::monitor::{ExitStatus, StateDir};
use k8s_cri::v1 as cri;

/// The state a container is in: exited once its monitor wrote the exit file;
/// unknown when its monitor is gone without writing one (killed, say), for then
/// nobody reaps the container.
pub fn container_state(
    c: &ContainerRecord,
    dirs: &StateDir,
    exit: &Option<ExitStatus>,
) -> cri::ContainerState {
    match (exit, c.started_at) {
        (Some(_), _) => cri::ContainerState::ContainerExited,
        // Restored only when it starts: no monitor yet.
        (None, 0) if c.restore_from.is_some() => cri::ContainerState::ContainerCreated,
        _ if !dirs.monitor_alive() => cri::ContainerState::ContainerUnknown,
        (None, 0) => cri::ContainerState::ContainerCreated,
        (None, _) => cri::ContainerState::ContainerRunning,
    }
}

fn image_spec(c: &ContainerRecord) -> cri::ImageSpec {
    cri::ImageSpec {
        image: c.image_name.clone(),
        ..Default::default()
    }
}

/// As ListContainers shows it.
pub fn container(c: &ContainerRecord, dirs: &StateDir) -> cri::Container {
    cri::Container {
        id: c.id.clone(),
        pod_sandbox_id: c.pod_id.clone(),
        metadata: Some(c.metadata()),
        image: Some(image_spec(c)),
        image_ref: c.image_ref.clone(),
        state: container_state(c, dirs, &dirs.exit()) as i32,
        created_at: c.created_at,
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        image_id: c.image_id.clone(),
    }
}

/// As ContainerStatus shows it.
pub fn container_status(c: &ContainerRecord, dirs: &StateDir) -> cri::ContainerStatus {
    let exit = dirs.exit();
    let (finished_at, exit_code, reason) = match &exit {
        Some(e) => (
            e.finished_at_ns().unwrap_or(0),
            e.exit_code,
            if e.oom_killed {
                "OOMKilled".to_string()
            } else {
                e.reason.clone()
            },
        ),
        None => (0, 0, String::new()),
    };
    let started_at = match &exit {
        Some(e) if c.started_at == 0 => e.started_at_ns().unwrap_or(0),
        _ => c.started_at,
    };
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(c.metadata()),
        state: container_state(c, dirs, &exit) as i32,
        created_at: c.created_at,
        started_at,
        finished_at,
        exit_code,
        image: Some(image_spec(c)),
        image_ref: c.image_ref.clone(),
        reason,
        message: String::new(),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        mounts: c
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: m.propagation,
                recursive_read_only: m.recursive_read_only,
                image: (!m.image.is_empty()).then(|| cri::ImageSpec {
                    image: m.image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        log_path: c.log_path.clone(),
        resources: c.resources.as_ref().map(|r| cri::ContainerResources {
            linux: Some(r.to_cri()),
            windows: None,
        }),
        image_id: c.image_id.clone(),
        user: c.user.as_ref().map(|u| cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: i64::from(u.uid),
                gid: i64::from(u.gid),
                supplemental_groups: u.groups.iter().map(|g| i64::from(*g)).collect(),
            }),
        }),
    }
}

/// Whether it passes ListContainers' filter.
pub fn container_matches(c: &ContainerRecord, f: &cri::ContainerFilter, dirs: &StateDir) -> bool {
    (f.id.is_empty() || c.id.starts_with(&f.id))
        && (f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
        && f.state
            .as_ref()
            .is_none_or(|s| s.state == container_state(c, dirs, &dirs.exit()) as i32)
        && f.label_selector
            .iter()
            .all(|(k, v)| c.labels.get(k) == Some(v))
}

/// The namespace options a pod asked for, as the CRI reports them.
fn ns_options(pod: &PodRecord) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: pod.namespaces.network.to_cri(),
        pid: pod.namespaces.pid.to_cri(),
        ipc: pod.namespaces.ipc.to_cri(),
        userns_options: Some(match pod.userns {
            Some(u) => cri::UserNamespace {
                mode: cri::NamespaceMode::Pod as i32,
                uids: vec![u.uids.to_cri()],
                gids: vec![u.gids.to_cri()],
            },
            None => cri::UserNamespace {
                mode: cri::NamespaceMode::Node as i32,
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

/// SANDBOX_READY while the pod is ready and its infra process (if any) runs.
pub fn pod_state(pod: &PodRecord) -> i32 {
    // A pod whose infra process died has lost its PID namespace, as one whose pause
    // container exited.
    if pod.ready && (pod.infra_pid.is_none() || infra_process_alive(pod)) {
        cri::PodSandboxState::SandboxReady as i32
    } else {
        cri::PodSandboxState::SandboxNotready as i32
    }
}

/// As ListPodSandbox shows it.
pub fn pod(pod: &PodRecord) -> cri::PodSandbox {
    cri::PodSandbox {
        id: pod.id.clone(),
        metadata: Some(pod.cri_metadata()),
        state: pod_state(pod),
        created_at: pod.created_at,
        labels: pod.labels.clone(),
        annotations: pod.annotations.clone(),
        runtime_handler: pod.runtime_handler.clone(),
    }
}

/// As PodSandboxStatus shows it.
pub fn pod_status(pod: &PodRecord) -> cri::PodSandboxStatus {
    cri::PodSandboxStatus {
        id: pod.id.clone(),
        metadata: Some(pod.cri_metadata()),
        state: pod_state(pod),
        created_at: pod.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: pod.ips.first().cloned().unwrap_or_default(),
            additional_ips: pod
                .ips
                .iter()
                .skip(1)
                .map(|ip| cri::PodIp { ip: ip.clone() })
                .collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(ns_options(pod)),
            }),
        }),
        labels: pod.labels.clone(),
        annotations: pod.annotations.clone(),
        runtime_handler: pod.runtime_handler.clone(),
    }
}

/// Whether it passes ListPodSandbox's filter.
pub fn pod_matches(pod: &PodRecord, f: &cri::PodSandboxFilter) -> bool {
    (f.id.is_empty() || pod.id.starts_with(&f.id))
        && f.state.as_ref().is_none_or(|s| s.state == pod_state(pod))
        && f.label_selector
            .iter()
            .all(|(k, v)| pod.labels.get(k) == Some(v))
}

/// Whether the pod's infra process (crid's own) runs.
pub fn infra_process_alive(pod: &PodRecord) -> bool {
    pod.infra_pid
        .is_some_and(|pid| crikit::runtime::monitor::is_infra(pid, &pod.dir.join("ns")))
}
