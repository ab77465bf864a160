//! What crid's pod suites share: commands on the host, a container's log, the
//! bridges and NAT rules a test's network leaves, and pod metrics.

use crate::crid::World;
use k8s_cri::v1 as cri;
use std::path::PathBuf;

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
