//! crid's own metrics in the Prometheus text format, served at `/metrics` on
//! `--metrics-address`: CRI calls, image pulls, containers, CNI and streaming,
//! named as CRI-O names its own (`crio_operations_total` is crid's
//! `crid_operations_total`).

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// Labels of a per-call metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    /// The CRI method (`RunPodSandbox`), or the CNI command (`ADD`).
    pub operation: String,
}

/// Labels of a failed call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Failed {
    /// The CRI method.
    pub operation: String,
    /// Its gRPC code, by name (`NotFound`).
    pub code: String,
}

/// Labels of a failed pull.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why, as the kind of error (`not_found`, `unavailable`).
    pub reason: String,
}

/// Labels of a streaming session.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Stream {
    /// `exec`, `attach` or `portforward`.
    pub kind: String,
}

type Latency = Family<Operation, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric crid keeps, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    operations: Family<Operation, Counter>,
    operation_errors: Family<Failed, Counter>,
    operation_latency: Latency,
    /// Bytes of image blobs downloaded.
    pub pull_bytes: Counter,
    /// Layers unpacked by pulls.
    pub layers_unpacked: Counter,
    /// Unpacked layers removed because no image and no container used them.
    pub layers_removed: Counter,
    pulls: Counter,
    pull_failures: Family<Reason, Counter>,
    pull_latency: Histogram,
    /// Containers created.
    pub containers_created: Counter,
    /// Containers started.
    pub containers_started: Counter,
    /// Containers whose init ended.
    pub containers_exited: Counter,
    /// Containers the OOM killer ended.
    pub containers_oom: Counter,
    cni_latency: Latency,
    cni_errors: Family<Operation, Counter>,
    streams: Family<Stream, Counter>,
    streams_active: Family<Stream, Gauge>,
    /// Event subscribers dropped for falling behind.
    pub events_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("crid");
        let m = Metrics {
            registry: Registry::default(),
            operations: Family::default(),
            operation_errors: Family::default(),
            operation_latency: Family::new_with_constructor(latency),
            pull_bytes: Counter::default(),
            layers_unpacked: Counter::default(),
            layers_removed: Counter::default(),
            pulls: Counter::default(),
            pull_failures: Family::default(),
            pull_latency: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            containers_created: Counter::default(),
            containers_started: Counter::default(),
            containers_exited: Counter::default(),
            containers_oom: Counter::default(),
            cni_latency: Family::new_with_constructor(latency),
            cni_errors: Family::default(),
            streams: Family::default(),
            streams_active: Family::default(),
            events_dropped: Counter::default(),
        };
        let r = &mut registry;
        r.register("operations", "CRI calls, by method", m.operations.clone());
        r.register(
            "operations_errors",
            "CRI calls that failed, by method and gRPC code",
            m.operation_errors.clone(),
        );
        r.register(
            "operations_latency_seconds",
            "Time to answer a CRI call, by method",
            m.operation_latency.clone(),
        );
        r.register(
            "image_pulls_bytes",
            "Bytes of image blobs downloaded",
            m.pull_bytes.clone(),
        );
        r.register("image_pulls_success", "Images pulled", m.pulls.clone());
        r.register(
            "image_layers_unpacked",
            "Layers unpacked by pulls, as their bytes arrived",
            m.layers_unpacked.clone(),
        );
        r.register(
            "image_layers_removed",
            "Unpacked layers removed once no image and no container used them",
            m.layers_removed.clone(),
        );
        r.register(
            "image_pulls_failure",
            "Image pulls that failed, by reason",
            m.pull_failures.clone(),
        );
        r.register(
            "image_pulls_duration_seconds",
            "Time an image pull took, successful or not",
            m.pull_latency.clone(),
        );
        r.register(
            "containers_created",
            "Containers created",
            m.containers_created.clone(),
        );
        r.register(
            "containers_started",
            "Containers started",
            m.containers_started.clone(),
        );
        r.register(
            "containers_exited",
            "Containers whose first process ended",
            m.containers_exited.clone(),
        );
        r.register(
            "containers_oom",
            "Containers ended by the OOM killer",
            m.containers_oom.clone(),
        );
        r.register(
            "cni_operations_latency_seconds",
            "Time a pod's CNI ADD or DEL took, through the whole plugin list",
            m.cni_latency.clone(),
        );
        r.register(
            "cni_operations_errors",
            "CNI ADDs and DELs that failed",
            m.cni_errors.clone(),
        );
        r.register(
            "streaming_sessions",
            "Exec, attach and port-forward sessions served",
            m.streams.clone(),
        );
        r.register(
            "streaming_sessions_active",
            "Exec, attach and port-forward sessions open now",
            m.streams_active.clone(),
        );
        r.register(
            "container_events_subscribers_dropped",
            "GetContainerEvents subscribers dropped for falling behind",
            m.events_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A CRI call to `method` answered with `code` (a gRPC code's name) after
    /// `took`.
    pub fn operation(&self, method: &str, code: &str, took: Duration) {
        let op = Operation {
            operation: method.to_string(),
        };
        self.operation_latency
            .get_or_create(&op)
            .observe(took.as_secs_f64());
        self.operations.get_or_create(&op).inc();
        if code != "Ok" {
            self.operation_errors
                .get_or_create(&Failed {
                    operation: op.operation,
                    code: code.to_string(),
                })
                .inc();
        }
    }

    /// A pull that took `took`: done, or failed for `reason`.
    pub fn pull(&self, failed: Option<&str>, took: Duration) {
        self.pull_latency.observe(took.as_secs_f64());
        match failed {
            None => self.pulls.inc(),
            Some(reason) => self
                .pull_failures
                .get_or_create(&Reason {
                    reason: reason.to_string(),
                })
                .inc(),
        };
    }

    /// A CNI `command` (ADD, DEL) for a whole pod that took `took`.
    pub fn cni(&self, command: &str, ok: bool, took: Duration) {
        let op = Operation {
            operation: command.to_string(),
        };
        self.cni_latency
            .get_or_create(&op)
            .observe(took.as_secs_f64());
        if !ok {
            self.cni_errors.get_or_create(&op).inc();
        }
    }

    /// A streaming session of `kind` begins; it is counted open until the guard
    /// goes.
    pub fn stream(&self, kind: &str) -> StreamGuard {
        let labels = Stream {
            kind: kind.to_string(),
        };
        self.streams.get_or_create(&labels).inc();
        let active = self.streams_active.get_or_create(&labels).clone();
        active.inc();
        StreamGuard(active)
    }

    /// Everything, as Prometheus text (OpenMetrics 1.0).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// An open streaming session, counted in `crid_streaming_sessions_active`.
pub struct StreamGuard(Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until the process ends; any other path is
/// 404, any other method 405.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!("metrics server: accepting: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, std::convert::Infallible>(answer(&metrics, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .max_buf_size(16 * 1024)
                .header_read_timeout(Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn answer<B>(metrics: &Metrics, req: &hyper::Request<B>) -> hyper::Response<Full<Bytes>> {
    use hyper::{header, Method, StatusCode};
    let (status, kind, body) = if req.uri().path() != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "404 page not found\n".to_string(),
        )
    } else if !matches!(*req.method(), Method::GET | Method::HEAD) {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET or HEAD only\n".to_string(),
        )
    } else {
        (StatusCode::OK, CONTENT_TYPE, metrics.encode())
    };
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_metric_is_named_as_crio_names_its_own() {
        let m = Metrics::new();
        m.operation("RunPodSandbox", "Ok", Duration::from_millis(20));
        m.operation("RunPodSandbox", "Unknown", Duration::from_millis(3));
        m.pull(Some("not_found"), Duration::from_millis(5));
        m.cni("ADD", true, Duration::from_millis(40));
        let guard = m.stream("exec");
        m.containers_created.inc();
        let text = m.encode();
        for want in [
            "crid_operations_total{operation=\"RunPodSandbox\"} 2",
            "crid_operations_errors_total{operation=\"RunPodSandbox\",code=\"Unknown\"} 1",
            "crid_operations_latency_seconds_count{operation=\"RunPodSandbox\"} 2",
            "crid_image_pulls_failure_total{reason=\"not_found\"} 1",
            "crid_image_pulls_success_total 0",
            "crid_cni_operations_latency_seconds_bucket{le=\"0.064\",operation=\"ADD\"} 1",
            "crid_streaming_sessions_total{kind=\"exec\"} 1",
            "crid_streaming_sessions_active{kind=\"exec\"} 1",
            "crid_containers_created_total 1",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        drop(guard);
        assert!(m
            .encode()
            .contains("crid_streaming_sessions_active{kind=\"exec\"} 0"));
    }
}
