//! What crid's pod suites share: commands on the host, a container's log, the
//! bridges and NAT rules a test's network leaves, pod metrics, and what is left on
//! the host of the pods a crid made.

use crate::crid::World;
use k8s_cri::v1 as cri;
use std::path::{Path, PathBuf};

/// Runs `prog args` on the host; panics with its stderr when it fails.
pub fn on_host(prog: &str, args: &[&str]) {
    let out = std::process::Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn log_of(w: &World, pod: &str, container: &str) -> PathBuf {
    w.tmp
        .path()
        .join("logs")
        .join(pod)
        .join(format!("{container}.log"))
}

/// A bridge of a test's own, deleted on drop (CNI's DEL leaves bridges in place).
pub struct Bridge(pub String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .output();
    }
}

/// The nat rules the CNI plugins of network `.0` made (their comments name it), and
/// the chains they jump to, removed on drop: what a DEL that never came (a test that
/// failed halfway) would have removed.
pub struct NatRules(pub String);

impl Drop for NatRules {
    fn drop(&mut self) {
        let Ok(out) = std::process::Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
        else {
            return;
        };
        let mark = format!("name: \\\"{}\\\"", self.0);
        let mut chains = vec![];
        for rule in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(spec) = rule.strip_prefix("-A ").filter(|_| rule.contains(&mark)) else {
                continue;
            };
            if let Some(chain) = spec.split_once(" -j CNI-").map(|(_, c)| c) {
                let chain = format!("CNI-{}", chain.split_whitespace().next().unwrap_or(""));
                if !chain.starts_with("CNI-HOSTPORT-") {
                    chains.push(chain);
                }
            }
            // The rule as iptables printed it, quoting and all, deleted.
            let _ = std::process::Command::new("sh")
                .args(["-c", &format!("iptables -t nat -D {spec}")])
                .output();
        }
        for chain in chains {
            for op in ["-F", "-X"] {
                let _ = std::process::Command::new("iptables")
                    .args(["-t", "nat", op, &chain])
                    .output();
            }
        }
    }
}

/// A CNI bridge network of a test's own, written as its crid's only conflist: a
/// bridge, a free /24 with host-local addresses and portmap. The NAT rules its
/// plugins made, the bridge and the /24's hold go on drop, in that order.
pub struct BridgeNet {
    /// The network's name.
    pub name: String,
    _nat: NatRules,
    /// The bridge.
    pub bridge: Bridge,
    /// The /24 its pods get addresses in.
    pub subnet: crate::net::Subnet,
}

impl BridgeNet {
    /// Writes the network for `w`'s crid. `prefix` (three characters) starts the
    /// bridge's name; with `masq` the pods' traffic out is masqueraded and hairpin
    /// is on, as on kubelet's nodes.
    pub fn write(w: &World, prefix: &str, masq: bool) -> BridgeNet {
        let tag = w.cgroup.trim_start_matches("/crikit-test-");
        let hex = crikit::distribution::digest::Digest::of(tag.as_bytes())
            .hex()
            .to_string();
        let name = format!("crikit-{prefix}-{}", &hex[..8]);
        let bridge = Bridge(format!("{prefix}{}", &hex[..8]));
        let subnet = crate::net::Subnet::pick();
        crate::crid::write_conflist(
            w.tmp.path(),
            "10-bridge",
            &serde_json::json!({
                "cniVersion": "1.0.0",
                "name": name,
                "plugins": [
                    {"type": "bridge", "bridge": bridge.0, "isGateway": true, "ipMasq": masq,
                     "hairpinMode": masq,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet.cidr()}]],
                              "dataDir": w.tmp.path().join("ipam")}},
                    {"type": "portmap", "capabilities": {"portMappings": true}},
                    {"type": "loopback"},
                ],
            }),
        );
        BridgeNet {
            _nat: NatRules(name.clone()),
            name,
            bridge,
            subnet,
        }
    }
}

/// ListPodSandboxMetrics: every pod's metrics.
pub async fn pod_metrics(w: &World) -> Vec<cri::PodSandboxMetrics> {
    w.rt.clone()
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .into_inner()
        .pod_metrics
}

/// The value of the metric `name` among `metrics`, whose labels after the base
/// ones are `extra`.
pub fn metric(metrics: &[cri::Metric], name: &str, extra: &[&str]) -> Option<u64> {
    metrics
        .iter()
        .find(|m| m.name == name && m.label_values[5..] == *extra)
        .map(|m| m.value.as_ref().unwrap().value)
}

/// What is left on the host of the pods a crid under `w` made: mounts, network
/// namespaces and other pins, veths on `bridge`, leases in `ipam`, iptables rules of
/// the network `net`, cgroups below the test's parent, ctrmon processes, runtime
/// state, and directories of pods and containers. Empty when nothing is.
pub fn leftovers(w: &World, bridge: &str, ipam: &Path, net: &str) -> Vec<String> {
    let mut out: Vec<String> = crate::mounts_under(w.tmp.path())
        .iter()
        .map(|m| format!("mount {}", m.display()))
        .collect();
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.extend(links.lines().map(|l| format!("veth {l}")));
    for e in std::fs::read_dir(ipam.join(net))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "lock" && !name.starts_with("last_reserved_ip") {
            out.push(format!("lease {name}"));
        }
    }
    let nat = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.extend(
        nat.lines()
            .filter(|l| l.contains(net))
            .map(|l| format!("iptables {l}")),
    );
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for h in crikit::runtime::monitor::cgroup::hierarchies(&info) {
        let top = h.mount.join(w.cgroup.trim_start_matches('/'));
        for e in std::fs::read_dir(&top).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(format!("cgroup {}", e.path().display()));
            }
        }
    }
    if crate::process_runs(w.crid.run_dir.as_os_str().as_encoded_bytes()) {
        out.push(format!(
            "a process whose command line names {}",
            w.crid.run_dir.display()
        ));
    }
    for dir in [
        w.crid.root.join("pods"),
        w.crid.root.join("containers"),
        w.crid.run_dir.join("pods"),
        w.crid.run_dir.join("ctrmon"),
        w.crid.run_dir.join("rro"),
        w.crid.run_dir.join("runc"),
        w.crid.run_dir.join("runtimes/crun"),
    ] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            out.push(format!("left in {}: {:?}", dir.display(), e.file_name()));
        }
    }
    for e in std::fs::read_dir(w.crid.root.join("layers"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            out.push(format!("half-unpacked layer {:?}", e.file_name()));
        }
    }
    out
}
