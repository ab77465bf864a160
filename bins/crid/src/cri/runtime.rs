//! The CRI RuntimeService over [`Crid`]'s pods and containers.

use crate::error::CridError;
use crate::Crid;
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The RuntimeService.
pub struct RuntimeService(pub Arc<Crid>);

/// The CRI API version crid serves.
pub const API_VERSION: &str = "v1";

#[tonic::async_trait]
impl cri::runtime_service_server::RuntimeService for RuntimeService {
    async fn version(
        &self,
        _req: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "crikit".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        req: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let s = &self.0.settings;
        let net = self.0.network.clone();
        let network = tokio::task::spawn_blocking(move || net.conf())
            .await
            .map_err(CridError::from)?
            .map_err(|e| e.to_string());
        let default = s.handler("").map(|h| h.path.clone()).unwrap_or_default();
        let runtime = crate::config::which(&default);
        let cond = |ty: &str, ok: Result<(), String>, reason: &str| cri::RuntimeCondition {
            r#type: ty.into(),
            status: ok.is_ok(),
            reason: if ok.is_ok() {
                String::new()
            } else {
                reason.into()
            },
            message: ok.err().unwrap_or_default(),
        };
        let conditions = vec![
            cond(
                "RuntimeReady",
                runtime
                    .map(|_| ())
                    .ok_or_else(|| format!("the OCI runtime {} is not there", default.display())),
                "RuntimeNotFound",
            ),
            cond(
                "NetworkReady",
                network.as_ref().map(|_| ()).map_err(Clone::clone),
                "NetworkPluginNotReady",
            ),
        ];
        let mut info = HashMap::new();
        if req.into_inner().verbose {
            let v = serde_json::json!({
                "config": s,
                "podCIDR": *crikit::sync::lock(&self.0.pod_cidr),
                "network": network.as_ref().ok().map(|n| serde_json::json!({
                    "name": n.name, "path": n.path, "cniVersion": n.cni_version,
                    "plugins": n.list["plugins"].as_array().map(|p| {
                        p.iter().map(|p| p["type"].clone()).collect::<Vec<_>>()
                    }),
                })),
            });
            info.insert("config".to_string(), v.to_string());
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            runtime_handlers: runtime_handlers(s),
            // SupplementalGroupsPolicy (Merge and Strict) and ContainerStatus.user.
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let id = self.0.run_pod(req.into_inner()).await?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        self.0.stop_pod(&req.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        self.0.remove_pod(&req.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let req = req.into_inner();
        // A verbose status checks the network too: CNI CHECK with the ADD's result.
        let (status, info) = self.0.pod_status(&req.pod_sandbox_id, req.verbose).await?;
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(status),
            info: info.into_iter().collect(),
            containers_statuses: vec![],
            timestamp: crate::state::now_ns(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let items = self.0.list_pods(req.into_inner().filter).await;
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let id = self.0.create_container(req.into_inner()).await?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        self.0
            .start_container(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let req = req.into_inner();
        self.0
            .stop_container(&req.container_id, req.timeout)
            .await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        self.0
            .remove_container(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let containers = self.0.list_containers(req.into_inner().filter).await;
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let req = req.into_inner();
        let (status, c) = self.0.container_status(&req.container_id).await?;
        let mut info = HashMap::new();
        if req.verbose {
            info.insert(
                "info".to_string(),
                serde_json::to_string(&c).unwrap_or_default(),
            );
        }
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let req = req.into_inner();
        self.0
            .update_resources(&req.container_id, req.linux)
            .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        self.0.reopen_log(&req.into_inner().container_id).await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        req: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        Ok(Response::new(self.0.exec_sync(req.into_inner()).await?))
    }

    async fn exec(
        &self,
        req: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        let url = self.0.exec_url(req.into_inner()).await?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(
        &self,
        req: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let url = self.0.attach_url(req.into_inner()).await?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let url = self.0.port_forward_url(req.into_inner()).await?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let id = req.into_inner().container_id;
        let c = self
            .0
            .store
            .container(&id)
            .ok_or_else(|| CridError::NotFound(format!("container {id}")))?;
        let c = c.lock().await.clone();
        let me = Arc::clone(&self.0);
        let stats = tokio::task::spawn_blocking(move || me.stats.container(&c))
            .await
            .map_err(CridError::from)?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        let stats = self
            .0
            .containers_stats(|c| {
                (f.id.is_empty() || c.id.starts_with(&f.id))
                    && (f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
                    && f.label_selector
                        .iter()
                        .all(|(k, v)| c.labels.get(k) == Some(v))
            })
            .await;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let pod = self
            .0
            .store
            .pod(&id)
            .ok_or_else(|| CridError::NotFound(format!("pod {id}")))?;
        let pod = pod.lock().await.clone();
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(self.0.pod_stats(&pod).await),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        let pods = self.0.store.all_pods();
        let mut stats = vec![];
        for p in pods {
            let p = p.lock().await.clone();
            let keep = (f.id.is_empty() || p.id.starts_with(&f.id))
                && f.label_selector
                    .iter()
                    .all(|(k, v)| p.labels.get(k) == Some(v));
            if keep {
                stats.push(self.0.pod_stats(&p).await);
            }
        }
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        // The pod CIDR matters to CNI configs that crid would template; the
        // conflists crid runs carry their own ranges, so it is recorded (and shown
        // in verbose Status) only.
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        crate::validate::pod_cidr("runtime_config.network_config.pod_cidr", &cidr)
            .map_err(CridError::from)?;
        tracing::info!("pod CIDR: {cidr:?}");
        *crikit::sync::lock(&self.0.pod_cidr) = cidr;
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn checkpoint_container(
        &self,
        req: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        self.0.checkpoint_container(req.into_inner()).await?;
        Ok(Response::new(cri::CheckpointContainerResponse {}))
    }

    type GetContainerEventsStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>,
    >;

    async fn get_container_events(
        &self,
        _req: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let metrics = Arc::clone(&self.0.metrics);
        let events = self
            .0
            .events
            .stream(self.0.settings.events_backlog, move || {
                metrics.events_dropped.inc();
            });
        use futures_util::StreamExt as _;
        Ok(Response::new(Box::pin(
            events.map(|e| e.map_err(Status::from)),
        )))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: crate::pod::metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics: self.0.pods_metrics().await,
        }))
    }

    async fn runtime_config(
        &self,
        _req: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        // kubelet (KubeletCgroupDriverFromCRI) takes the driver crid runs with.
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: match self.0.settings.cgroup_manager {
                    crate::config::CgroupManager::Systemd => cri::CgroupDriver::Systemd,
                    crate::config::CgroupManager::Cgroupfs => cri::CgroupDriver::Cgroupfs,
                } as i32,
            }),
        }))
    }
}

/// The handlers with their features; the default one also under "", as kubelet
/// looks it up for pods without a RuntimeClass.
fn runtime_handlers(s: &crate::config::Settings) -> Vec<cri::RuntimeHandler> {
    let entry = |name: &str, h: &crate::config::Handler| cri::RuntimeHandler {
        name: name.to_string(),
        features: Some(cri::RuntimeHandlerFeatures {
            recursive_read_only_mounts: h.recursive_read_only_mounts,
            user_namespaces: h.user_namespaces,
        }),
    };
    let mut out: Vec<cri::RuntimeHandler> =
        s.handler("").map(|h| entry("", h)).into_iter().collect();
    out.extend(s.runtimes.iter().map(|(n, h)| entry(n, h)));
    out
}
