//! Container and pod statistics from the cgroups (v1 controllers where mounted, the
//! unified hierarchy otherwise), the overlay's upper directory and the pod's
//! network interfaces.

use crate::state::record::now_ns;
use crate::state::record::{ContainerRecord, PodRecord};
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What one cgroup reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CgroupStats {
    /// CPU time, ns.
    pub cpu_ns: Option<u64>,
    /// Memory in use, bytes.
    pub usage: Option<u64>,
    /// Usage less inactive file pages, as kubelet counts the working set.
    pub working_set: Option<u64>,
    /// Anonymous memory.
    pub rss: Option<u64>,
    /// Page faults.
    pub pgfault: Option<u64>,
    /// Major page faults.
    pub pgmajfault: Option<u64>,
    /// The memory limit, when there is one.
    pub limit: Option<u64>,
    /// Tasks in it.
    pub pids: Option<u64>,
    /// The most tasks it may have.
    pub pids_max: Option<u64>,
    /// CPU time in user mode, ns.
    pub cpu_user_ns: Option<u64>,
    /// CPU time in kernel mode, ns.
    pub cpu_system_ns: Option<u64>,
    /// CFS enforcement periods elapsed.
    pub cfs_periods: Option<u64>,
    /// CFS periods it was throttled in.
    pub cfs_throttled_periods: Option<u64>,
    /// Time it was throttled, ns.
    pub cfs_throttled_ns: Option<u64>,
    /// Page cache.
    pub cache: Option<u64>,
    /// Memory-mapped files.
    pub mapped_file: Option<u64>,
    /// Swap in use.
    pub swap: Option<u64>,
    /// Kernel memory.
    pub kernel: Option<u64>,
    /// The highest usage seen.
    pub max_usage: Option<u64>,
    /// Times usage hit the limit.
    pub failcnt: Option<u64>,
    /// Processes the OOM killer ended in it.
    pub oom_kills: Option<u64>,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_file(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Reads the cgroup at the absolute cgroup path `path` under `root` (normally
/// /sys/fs/cgroup).
pub fn read(root: &Path, path: &str) -> CgroupStats {
    let rel = path.trim_start_matches('/');
    let v1 = root.join("memory");
    if v1.join("memory.usage_in_bytes").exists() {
        let mem = v1.join(rel);
        let stat = stat_file(&mem.join("memory.stat"));
        let usage = read_u64(&mem.join("memory.usage_in_bytes"));
        let cpu_dir = ["cpu", "cpu,cpuacct"]
            .iter()
            .map(|d| root.join(d).join(rel))
            .find(|d| d.join("cpu.stat").exists());
        let cpu_stat = cpu_dir.map(|d| stat_file(&d.join("cpu.stat")));
        let acct = ["cpuacct", "cpu,cpuacct"]
            .iter()
            .map(|d| root.join(d).join(rel))
            .find(|d| d.join("cpuacct.usage").exists());
        let acct_ns = |f: &str| acct.as_ref().and_then(|d| read_u64(&d.join(f)));
        let oom = stat_file(&mem.join("memory.oom_control"));
        CgroupStats {
            cpu_ns: acct_ns("cpuacct.usage"),
            usage,
            working_set: usage
                .map(|u| u.saturating_sub(stat.get("total_inactive_file").copied().unwrap_or(0))),
            rss: stat.get("total_rss").copied(),
            pgfault: stat.get("total_pgfault").copied(),
            pgmajfault: stat.get("total_pgmajfault").copied(),
            // v1 says "no limit" with a page-rounded i64::MAX.
            limit: read_u64(&mem.join("memory.limit_in_bytes")).filter(|l| *l < 1 << 62),
            pids: read_u64(&root.join("pids").join(rel).join("pids.current")),
            pids_max: read_u64(&root.join("pids").join(rel).join("pids.max")),
            cpu_user_ns: acct_ns("cpuacct.usage_user"),
            cpu_system_ns: acct_ns("cpuacct.usage_sys"),
            cfs_periods: cpu_stat.as_ref().and_then(|c| c.get("nr_periods").copied()),
            cfs_throttled_periods: cpu_stat
                .as_ref()
                .and_then(|c| c.get("nr_throttled").copied()),
            cfs_throttled_ns: cpu_stat
                .as_ref()
                .and_then(|c| c.get("throttled_time").copied()),
            cache: stat.get("total_cache").copied(),
            mapped_file: stat.get("total_mapped_file").copied(),
            swap: stat.get("total_swap").copied(),
            kernel: read_u64(&mem.join("memory.kmem.usage_in_bytes")),
            max_usage: read_u64(&mem.join("memory.max_usage_in_bytes")),
            failcnt: read_u64(&mem.join("memory.failcnt")),
            oom_kills: oom.get("oom_kill").copied(),
        }
    } else {
        let dir = root.join(rel);
        let stat = stat_file(&dir.join("memory.stat"));
        let cpu = stat_file(&dir.join("cpu.stat"));
        let events = stat_file(&dir.join("memory.events"));
        let usec = |k: &str| cpu.get(k).map(|u| u * 1000);
        let usage = read_u64(&dir.join("memory.current"));
        CgroupStats {
            cpu_ns: usec("usage_usec"),
            usage,
            working_set: usage
                .map(|u| u.saturating_sub(stat.get("inactive_file").copied().unwrap_or(0))),
            rss: stat.get("anon").copied(),
            pgfault: stat.get("pgfault").copied(),
            pgmajfault: stat.get("pgmajfault").copied(),
            limit: read_u64(&dir.join("memory.max")),
            pids: read_u64(&dir.join("pids.current")),
            pids_max: read_u64(&dir.join("pids.max")),
            cpu_user_ns: usec("user_usec"),
            cpu_system_ns: usec("system_usec"),
            cfs_periods: cpu.get("nr_periods").copied(),
            cfs_throttled_periods: cpu.get("nr_throttled").copied(),
            cfs_throttled_ns: usec("throttled_usec"),
            cache: stat.get("file").copied(),
            mapped_file: stat.get("file_mapped").copied(),
            swap: read_u64(&dir.join("memory.swap.current")),
            kernel: stat
                .get("kernel")
                .copied()
                .or_else(|| Some(stat.get("kernel_stack")? + stat.get("slab")?)),
            max_usage: read_u64(&dir.join("memory.peak")),
            failcnt: events.get("max").copied(),
            oom_kills: events.get("oom_kill").copied(),
        }
    }
}

/// The processes in the cgroup at `path` under `root`: the pids controller's
/// list on v1, the unified one's on v2.
pub fn processes(root: &Path, path: &str) -> Vec<i32> {
    let rel = path.trim_start_matches('/');
    let v1 = root.join("pids").join(rel).join("cgroup.procs");
    let file = if root.join("pids").join("cgroup.procs").exists() {
        v1
    } else {
        root.join(rel).join("cgroup.procs")
    };
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

pub(crate) const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn u64v(v: Option<u64>) -> Option<cri::UInt64Value> {
    v.map(|value| cri::UInt64Value { value })
}

/// The last CPU sample (time, ns used) per container and pod, for rates.
#[derive(Default)]
pub struct Stats {
    samples: Mutex<HashMap<String, (i64, u64)>>,
}

impl Stats {
    /// CPU use in nanocores since the last sample of `key`.
    fn nano_cores(&self, key: &str, now: i64, cpu_ns: Option<u64>) -> Option<u64> {
        let cpu = cpu_ns?;
        let mut last = crikit::sync::lock(&self.samples);
        let rate = last.get(key).and_then(|&(t, c)| {
            let dt = now.checked_sub(t).filter(|d| *d > 0)? as u128;
            Some((u128::from(cpu.checked_sub(c)?) * 1_000_000_000 / dt) as u64)
        });
        last.insert(key.to_string(), (now, cpu));
        rate
    }

    /// Forgets the samples of `key` (a container id, `pod:ID`).
    pub fn forget(&self, key: &str) {
        crikit::sync::lock(&self.samples).remove(key);
    }

    fn cpu_memory(&self, key: &str, s: &CgroupStats) -> (cri::CpuUsage, cri::MemoryUsage) {
        let now = now_ns();
        (
            cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: u64v(s.cpu_ns),
                usage_nano_cores: u64v(self.nano_cores(key, now, s.cpu_ns)),
            },
            cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: u64v(s.working_set),
                available_bytes: u64v(s.limit.zip(s.working_set).map(|(l, w)| l.saturating_sub(w))),
                usage_bytes: u64v(s.usage),
                rss_bytes: u64v(s.rss),
                page_faults: u64v(s.pgfault),
                major_page_faults: u64v(s.pgmajfault),
            },
        )
    }

    /// One pod's stats: its cgroup parent's when it has one, else the sum of its
    /// `containers`'; its network interfaces where `net` says they are.
    pub fn pod(
        &self,
        pod: &PodRecord,
        containers: Vec<cri::ContainerStats>,
        net: Option<PodNet>,
    ) -> cri::PodSandboxStats {
        let s = match pod.cgroup_parent.as_deref() {
            Some(parent) => read(Path::new(CGROUP_ROOT), &super::cgroups::dir(parent)),
            None => {
                let sum = |f: fn(&cri::ContainerStats) -> Option<u64>| -> Option<u64> {
                    containers.iter().map(f).sum::<Option<u64>>()
                };
                CgroupStats {
                    cpu_ns: sum(|c| {
                        c.cpu
                            .as_ref()?
                            .usage_core_nano_seconds
                            .as_ref()
                            .map(|v| v.value)
                    }),
                    working_set: sum(|c| {
                        c.memory
                            .as_ref()?
                            .working_set_bytes
                            .as_ref()
                            .map(|v| v.value)
                    }),
                    usage: sum(|c| c.memory.as_ref()?.usage_bytes.as_ref().map(|v| v.value)),
                    ..Default::default()
                }
            }
        };
        let (cpu, memory) = self.cpu_memory(&format!("pod:{}", pod.id), &s);
        let network = net.and_then(|n| n.interfaces()).map(interface_usage);
        cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: Some(pod.cri_metadata()),
                labels: pod.labels.clone(),
                annotations: pod.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cpu),
                memory: Some(memory),
                network: network.map(|ifaces| cri::NetworkUsage {
                    timestamp: now_ns(),
                    default_interface: ifaces.iter().find(|i| i.name == "eth0").cloned(),
                    interfaces: ifaces,
                }),
                process: Some(cri::ProcessUsage {
                    timestamp: now_ns(),
                    process_count: u64v(s.pids),
                }),
                containers,
            }),
            windows: None,
        }
    }

    /// One container's stats: its cgroup, its writable layer.
    pub fn container(&self, c: &ContainerRecord) -> cri::ContainerStats {
        let s = read(
            Path::new(CGROUP_ROOT),
            &super::cgroups::dir(&c.cgroups_path),
        );
        let (cpu, memory) = self.cpu_memory(&c.id, &s);
        let upper = c.bundle.join("upper");
        let (bytes, inodes) = crate::host::fsusage::usage(&upper);
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: c.id.clone(),
                metadata: Some(c.metadata()),
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
            }),
            cpu: Some(cpu),
            memory: Some(memory),
            writable_layer: Some(cri::FilesystemUsage {
                timestamp: now_ns(),
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: upper.display().to_string(),
                }),
                used_bytes: u64v(Some(bytes)),
                inodes_used: u64v(Some(inodes)),
            }),
            swap: None,
        }
    }
}

/// One interface's counters from /proc/PID/net/dev.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // named as the file's columns
pub struct NetDev {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Interfaces other than loopback from a /proc/PID/net/dev, as cAdvisor counts
/// them.
pub fn net_devices(p: &Path) -> Option<Vec<NetDev>> {
    Some(parse_net_dev(&std::fs::read_to_string(p).ok()?))
}

/// The interfaces other than loopback in the text of a net/dev file.
fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            let name = name.trim();
            (name != "lo" && f.len() >= 16).then(|| NetDev {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

/// A pod's interfaces as CRI reports them.
fn interface_usage(devs: Vec<NetDev>) -> Vec<cri::NetworkInterfaceUsage> {
    devs.into_iter()
        .map(|d| cri::NetworkInterfaceUsage {
            name: d.name,
            rx_bytes: u64v(Some(d.rx_bytes)),
            rx_errors: u64v(Some(d.rx_errors)),
            tx_bytes: u64v(Some(d.tx_bytes)),
            tx_errors: u64v(Some(d.tx_errors)),
        })
        .collect()
}

/// Where a pod's interfaces are read: inside its own network namespace, else as a
/// process of it (a pod on the host's network) sees them.
#[derive(Debug, Clone)]
pub enum PodNet {
    /// The pod's pinned network namespace.
    Namespace(PathBuf),
    /// A process in the pod.
    Process(i32),
}

impl PodNet {
    /// The pod's interfaces other than loopback; `None` when they cannot be read.
    pub fn interfaces(&self) -> Option<Vec<NetDev>> {
        match self {
            PodNet::Namespace(ns) => match crate::host::netns::read_net_file(ns, "dev") {
                Ok(t) => Some(parse_net_dev(&t)),
                Err(e) => {
                    tracing::debug!("reading net/dev in {}: {e}", ns.display());
                    None
                }
            },
            PodNet::Process(pid) => net_devices(&PathBuf::from(format!("/proc/{pid}/net/dev"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_cgroup_files() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        // v2
        w("pod/c/cpu.stat", "usage_usec 1500\nuser_usec 1000\n");
        w("pod/c/memory.current", "10000\n");
        w(
            "pod/c/memory.stat",
            "anon 4000\ninactive_file 3000\npgfault 7\npgmajfault 1\n",
        );
        w("pod/c/memory.max", "max\n");
        w("pod/c/pids.current", "3\n");
        let s = read(d.path(), "/pod/c");
        assert_eq!(s.cpu_ns, Some(1_500_000));
        assert_eq!(
            (s.usage, s.working_set, s.rss),
            (Some(10000), Some(7000), Some(4000))
        );
        assert_eq!((s.limit, s.pids), (None, Some(3)));
        // v1
        w("memory/memory.usage_in_bytes", "1\n");
        w("memory/pod/c/memory.usage_in_bytes", "9000\n");
        w(
            "memory/pod/c/memory.stat",
            "total_inactive_file 1000\ntotal_rss 5000\n",
        );
        w(
            "memory/pod/c/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        w("cpuacct/pod/c/cpuacct.usage", "42\n");
        w("pids/pod/c/pids.current", "2\n");
        let s = read(d.path(), "/pod/c");
        assert_eq!(
            (s.cpu_ns, s.working_set, s.rss),
            (Some(42), Some(8000), Some(5000))
        );
        assert_eq!((s.limit, s.pids), (None, Some(2)));
    }

    #[test]
    fn interfaces_from_net_dev() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dev");
        std::fs::write(
            &p,
            "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
             eth0:    2000      20    1    0    0     0          0         0     3000      30    2    0    0     0       0          0\n",
        )
        .unwrap();
        let i = interface_usage(net_devices(&p).unwrap());
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].name, "eth0");
        assert_eq!(i[0].rx_bytes.as_ref().unwrap().value, 2000);
        assert_eq!(i[0].tx_bytes.as_ref().unwrap().value, 3000);
        assert_eq!(i[0].tx_errors.as_ref().unwrap().value, 2);
    }
}
