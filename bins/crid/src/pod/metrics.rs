//! ListMetricDescriptors and ListPodSandboxMetrics: the cAdvisor metrics that
//! kubelet's CRI stats provider serves at /metrics/cadvisor, with cAdvisor's names,
//! units and label keys (`id`, `image`, `namespace`, `pod`, `container`, then the
//! metric's own), read from the cgroups, the writable layer and the pod's network
//! namespace when asked for.
//!
//! Values are whole numbers, as the CRI carries them: seconds are truncated.

use crate::host::stats::{self, CgroupStats, NetDev, PodNet};
use crate::state::record::{ContainerRecord, PodRecord};
use crate::Crid;
use k8s_cri::v1 as cri;
use std::path::Path;
use std::sync::Arc;

const COUNTER: cri::MetricType = cri::MetricType::Counter;
const GAUGE: cri::MetricType = cri::MetricType::Gauge;

/// The label keys every metric starts with.
const BASE_LABELS: [&str; 5] = ["id", "image", "namespace", "pod", "container"];

/// One metric crid reports: its name, help and the label keys after the base ones.
struct Desc {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

const fn d(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Desc {
    Desc { name, help, labels }
}

const IFACE: &[&str] = &["interface"];

const DESCRIPTORS: &[Desc] = &[
    d(
        "container_last_seen",
        "Last time a container was seen by the exporter",
        &[],
    ),
    d(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        &[],
    ),
    d(
        "container_cpu_usage_seconds_total",
        "Cumulative CPU time consumed in seconds.",
        &["cpu"],
    ),
    d(
        "container_cpu_user_seconds_total",
        "Cumulative user CPU time consumed in seconds.",
        &[],
    ),
    d(
        "container_cpu_system_seconds_total",
        "Cumulative system CPU time consumed in seconds.",
        &[],
    ),
    d(
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        &[],
    ),
    d(
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        &[],
    ),
    d(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        &[],
    ),
    d(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        &[],
    ),
    d(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        &[],
    ),
    d("container_memory_rss", "Size of RSS in bytes.", &[]),
    d(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        &[],
    ),
    d(
        "container_memory_mapped_file",
        "Size of memory mapped files in bytes.",
        &[],
    ),
    d(
        "container_memory_swap",
        "Container swap usage in bytes.",
        &[],
    ),
    d(
        "container_memory_kernel_usage",
        "Size of kernel memory allocated in bytes.",
        &[],
    ),
    d(
        "container_memory_max_usage_bytes",
        "Maximum memory usage recorded in bytes",
        &[],
    ),
    d(
        "container_memory_failcnt",
        "Number of memory usage hits limits",
        &[],
    ),
    d(
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
        &["failure_type", "scope"],
    ),
    d(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        &[],
    ),
    d(
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        &[],
    ),
    d(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        &[],
    ),
    d(
        "container_fs_limit_bytes",
        "Number of bytes that can be consumed by the container on this filesystem.",
        &[],
    ),
    d("container_fs_inodes_total", "Number of Inodes", &[]),
    d(
        "container_fs_inodes_free",
        "Number of available Inodes",
        &[],
    ),
    d(
        "container_processes",
        "Number of processes running inside the container.",
        &[],
    ),
    d(
        "container_threads",
        "Number of threads running inside the container",
        &[],
    ),
    d(
        "container_threads_max",
        "Maximum number of threads allowed inside the container, infinity if value is zero",
        &[],
    ),
    d(
        "container_file_descriptors",
        "Number of open file descriptors for the container.",
        &[],
    ),
    d(
        "container_sockets",
        "Number of open sockets for the container.",
        &[],
    ),
    d(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        IFACE,
    ),
    d(
        "container_network_receive_packets_total",
        "Cumulative count of packets received",
        IFACE,
    ),
    d(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving",
        IFACE,
    ),
    d(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        IFACE,
    ),
    d(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        IFACE,
    ),
    d(
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted",
        IFACE,
    ),
    d(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting",
        IFACE,
    ),
    d(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        IFACE,
    ),
];

/// ListMetricDescriptors: every metric ListPodSandboxMetrics may carry.
pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.to_string(),
            help: d.help.to_string(),
            label_keys: BASE_LABELS
                .iter()
                .chain(d.labels)
                .map(|s| s.to_string())
                .collect(),
        })
        .collect()
}

/// Metrics of one subject (a container, or the pod for its network), labelled
/// alike.
struct Metrics {
    base: Vec<String>,
    now: i64,
    out: Vec<cri::Metric>,
}

const NS_PER_S: u64 = 1_000_000_000;

impl Metrics {
    fn new(base: [&str; 5]) -> Metrics {
        Metrics {
            base: base.iter().map(|s| s.to_string()).collect(),
            now: crate::state::now_ns(),
            out: vec![],
        }
    }

    fn put(&mut self, name: &str, kind: cri::MetricType, value: Option<u64>, labels: &[&str]) {
        let Some(value) = value else { return };
        let mut label_values = self.base.clone();
        label_values.extend(labels.iter().map(|s| s.to_string()));
        self.out.push(cri::Metric {
            name: name.to_string(),
            timestamp: self.now,
            metric_type: kind as i32,
            label_values,
            value: Some(cri::UInt64Value { value }),
        });
    }

    fn cgroup(&mut self, s: &CgroupStats) {
        let secs = |ns: Option<u64>| ns.map(|n| n / NS_PER_S);
        self.put(
            "container_cpu_usage_seconds_total",
            COUNTER,
            secs(s.cpu_ns),
            &["total"],
        );
        self.put(
            "container_cpu_user_seconds_total",
            COUNTER,
            secs(s.cpu_user_ns),
            &[],
        );
        self.put(
            "container_cpu_system_seconds_total",
            COUNTER,
            secs(s.cpu_system_ns),
            &[],
        );
        self.put(
            "container_cpu_cfs_periods_total",
            COUNTER,
            s.cfs_periods,
            &[],
        );
        self.put(
            "container_cpu_cfs_throttled_periods_total",
            COUNTER,
            s.cfs_throttled_periods,
            &[],
        );
        self.put(
            "container_cpu_cfs_throttled_seconds_total",
            COUNTER,
            secs(s.cfs_throttled_ns),
            &[],
        );
        self.put("container_memory_usage_bytes", GAUGE, s.usage, &[]);
        self.put(
            "container_memory_working_set_bytes",
            GAUGE,
            s.working_set,
            &[],
        );
        self.put("container_memory_rss", GAUGE, s.rss, &[]);
        self.put("container_memory_cache", GAUGE, s.cache, &[]);
        self.put("container_memory_mapped_file", GAUGE, s.mapped_file, &[]);
        self.put("container_memory_swap", GAUGE, s.swap, &[]);
        self.put("container_memory_kernel_usage", GAUGE, s.kernel, &[]);
        self.put("container_memory_max_usage_bytes", GAUGE, s.max_usage, &[]);
        self.put("container_memory_failcnt", COUNTER, s.failcnt, &[]);
        let faults = [("pgfault", s.pgfault), ("pgmajfault", s.pgmajfault)];
        for (kind, v) in faults {
            self.put(
                "container_memory_failures_total",
                COUNTER,
                v,
                &[kind, "container"],
            );
        }
        // cAdvisor's 0 is "no limit".
        self.put(
            "container_spec_memory_limit_bytes",
            GAUGE,
            Some(s.limit.unwrap_or(0)),
            &[],
        );
        self.put("container_oom_events_total", COUNTER, s.oom_kills, &[]);
        self.put("container_threads", GAUGE, s.pids, &[]);
        self.put(
            "container_threads_max",
            GAUGE,
            Some(s.pids_max.unwrap_or(0)),
            &[],
        );
    }

    fn processes(&mut self, pids: &[i32]) {
        let (mut fds, mut sockets) = (0, 0);
        for pid in pids {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd in dir.flatten() {
                fds += 1;
                let socket = std::fs::read_link(fd.path())
                    .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"));
                sockets += u64::from(socket);
            }
        }
        self.put("container_processes", GAUGE, Some(pids.len() as u64), &[]);
        self.put("container_file_descriptors", GAUGE, Some(fds), &[]);
        self.put("container_sockets", GAUGE, Some(sockets), &[]);
    }

    fn filesystem(&mut self, upper: &Path) {
        let (bytes, _) = crate::host::fsusage::usage(upper);
        self.put("container_fs_usage_bytes", GAUGE, Some(bytes), &[]);
        if let Ok(fs) = nix::sys::statvfs::statvfs(upper) {
            let frag = fs.fragment_size();
            self.put(
                "container_fs_limit_bytes",
                GAUGE,
                Some(fs.blocks() * frag),
                &[],
            );
            self.put("container_fs_inodes_total", GAUGE, Some(fs.files()), &[]);
            self.put(
                "container_fs_inodes_free",
                GAUGE,
                Some(fs.files_free()),
                &[],
            );
        }
    }

    fn network(&mut self, devs: &[NetDev]) {
        for dev in devs {
            let i = [dev.name.as_str()];
            let rows = [
                ("container_network_receive_bytes_total", dev.rx_bytes),
                ("container_network_receive_packets_total", dev.rx_packets),
                (
                    "container_network_receive_packets_dropped_total",
                    dev.rx_dropped,
                ),
                ("container_network_receive_errors_total", dev.rx_errors),
                ("container_network_transmit_bytes_total", dev.tx_bytes),
                ("container_network_transmit_packets_total", dev.tx_packets),
                (
                    "container_network_transmit_packets_dropped_total",
                    dev.tx_dropped,
                ),
                ("container_network_transmit_errors_total", dev.tx_errors),
            ];
            for (name, v) in rows {
                self.put(name, COUNTER, Some(v), &i);
            }
        }
    }
}

/// One container's metrics.
fn container_metrics(pod: &PodRecord, c: &ContainerRecord) -> cri::ContainerMetrics {
    let m = &pod.metadata;
    let mut out = Metrics::new([&c.id, &c.image_name, &m.namespace, &m.name, &c.name]);
    out.put(
        "container_last_seen",
        GAUGE,
        Some(out.now as u64 / NS_PER_S),
        &[],
    );
    let started = (c.started_at > 0).then_some(c.started_at as u64 / NS_PER_S);
    out.put("container_start_time_seconds", GAUGE, started, &[]);
    let root = Path::new(stats::CGROUP_ROOT);
    if !c.cgroups_path.is_empty() {
        let dir = crate::host::cgroups::dir(&c.cgroups_path);
        let s = stats::read(root, &dir);
        // A container that has ended has no cgroup left to read.
        if s.usage.is_some() || s.cpu_ns.is_some() {
            out.cgroup(&s);
            out.processes(&stats::processes(root, &dir));
        }
    }
    out.filesystem(&c.bundle.join("upper"));
    cri::ContainerMetrics {
        container_id: c.id.clone(),
        metrics: out.out,
    }
}

/// One pod's metrics: its network as `pid`, a process in it, sees it, and its
/// containers'.
fn pod_metrics(
    pod: &PodRecord,
    containers: &[ContainerRecord],
    net: Option<&PodNet>,
) -> cri::PodSandboxMetrics {
    let m = &pod.metadata;
    let mut out = Metrics::new([&pod.id, "", &m.namespace, &m.name, "POD"]);
    if let Some(devs) = net.and_then(|n| n.interfaces()) {
        out.network(&devs);
    }
    cri::PodSandboxMetrics {
        pod_sandbox_id: pod.id.clone(),
        metrics: out.out,
        container_metrics: containers
            .iter()
            .map(|c| container_metrics(pod, c))
            .collect(),
    }
}

impl Crid {
    /// ListPodSandboxMetrics: every pod's metrics and its containers'.
    pub async fn pods_metrics(self: &Arc<Self>) -> Vec<cri::PodSandboxMetrics> {
        let mut work = vec![];
        for p in self.store.all_pods() {
            let pod = p.lock().await.clone();
            let mut containers = vec![];
            for id in self.store.containers_of(&pod.id) {
                if let Some(c) = self.store.container(&id) {
                    let c = c.lock().await.clone();
                    if !c.infra {
                        containers.push(c);
                    }
                }
            }
            let net = self.pod_net(&pod);
            work.push((pod, containers, net));
        }
        tokio::task::spawn_blocking(move || {
            work.iter()
                .map(|(pod, containers, net)| pod_metrics(pod, containers, net.as_ref()))
                .collect()
        })
        .await
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_reported_is_described_with_its_labels() {
        let described: std::collections::HashMap<_, _> = descriptors()
            .into_iter()
            .map(|d| (d.name, d.label_keys.len()))
            .collect();
        let mut m = Metrics::new(["c", "img", "ns", "pod", "ctr"]);
        let all = CgroupStats {
            cpu_ns: Some(3 * NS_PER_S + 1),
            usage: Some(1),
            working_set: Some(1),
            rss: Some(1),
            pgfault: Some(1),
            pgmajfault: Some(1),
            limit: Some(1),
            pids: Some(1),
            pids_max: Some(1),
            cpu_user_ns: Some(1),
            cpu_system_ns: Some(1),
            cfs_periods: Some(1),
            cfs_throttled_periods: Some(1),
            cfs_throttled_ns: Some(1),
            cache: Some(1),
            mapped_file: Some(1),
            swap: Some(1),
            kernel: Some(1),
            max_usage: Some(1),
            failcnt: Some(1),
            oom_kills: Some(1),
        };
        m.cgroup(&all);
        m.processes(&[std::process::id() as i32]);
        let d = tempfile::tempdir().unwrap();
        m.filesystem(d.path());
        m.network(&[NetDev {
            name: "eth0".into(),
            ..Default::default()
        }]);
        m.put("container_last_seen", GAUGE, Some(1), &[]);
        m.put("container_start_time_seconds", GAUGE, Some(1), &[]);
        let names: std::collections::HashSet<_> = m.out.iter().map(|x| x.name.clone()).collect();
        assert_eq!(names.len(), described.len(), "every descriptor is used");
        for x in &m.out {
            assert_eq!(
                described.get(&x.name),
                Some(&x.label_values.len()),
                "{}",
                x.name
            );
        }
        let cpu = m
            .out
            .iter()
            .find(|x| x.name == "container_cpu_usage_seconds_total")
            .unwrap();
        assert_eq!(cpu.value.as_ref().unwrap().value, 3, "whole seconds");
        assert_eq!(cpu.label_values[5], "total");
    }
}
