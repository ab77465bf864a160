//! Pod networking through CNI plugins, executed as the CNI spec says: ADD through
//! the list in order, each plugin given the previous one's result; DEL in reverse
//! with the result the ADD recorded; CHECK (CNI 0.4.0 and later) in order; the
//! conflist's `portMappings` capability fed from the pod's port mappings.

pub mod cni;

use crate::error::{CridError, ErrorKind};
use crate::state::record::{Attachment, PodRecord};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The interface name inside the pod.
const IFNAME: &str = "eth0";

/// What went wrong with a pod's network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No usable network configuration.
    #[error(transparent)]
    Conf(#[from] cni::ConfError),
    /// A plugin the list names is in no plugin directory.
    #[error("plugin {plugin:?} not found")]
    PluginMissing {
        /// The network.
        network: String,
        /// The plugin type.
        plugin: String,
    },
    /// A plugin could not be run.
    #[error("running {}", path.display())]
    Exec {
        /// The network.
        network: String,
        /// The plugin binary.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A plugin failed; its own message.
    #[error("{plugin} {command}: {message}")]
    Plugin {
        /// The network.
        network: String,
        /// The plugin type.
        plugin: String,
        /// ADD, DEL or CHECK.
        command: &'static str,
        /// What it said (its error's msg and details, or its stderr).
        message: String,
    },
}

impl NetError {
    /// How a client should take it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            NetError::Conf(_) | NetError::PluginMissing { .. } => ErrorKind::FailedPrecondition,
            NetError::Exec { .. } => ErrorKind::Internal,
            NetError::Plugin { .. } => ErrorKind::Unknown,
        }
    }

    /// The error of pod `pod`'s network.
    pub fn of_pod(self, pod: &str) -> CridError {
        CridError::Network {
            pod: pod.to_string(),
            subject: self.subject(),
            kind: self.kind(),
            source: Box::new(self),
        }
    }

    /// `network NAME`, or `network` before one was chosen.
    pub fn subject(&self) -> String {
        match self {
            NetError::Conf(_) => "network".into(),
            NetError::PluginMissing { network, .. }
            | NetError::Exec { network, .. }
            | NetError::Plugin { network, .. } => format!("network {network}"),
        }
    }
}

/// The CNI set-up crid runs pods with.
#[derive(Debug, Clone)]
pub struct Network {
    /// Where the network configurations are.
    pub conf_dir: PathBuf,
    /// Where the plugins are.
    pub bin_dirs: Vec<PathBuf>,
}

impl Network {
    /// The network configuration crid would use now.
    pub fn conf(&self) -> Result<cni::NetConf, cni::ConfError> {
        cni::load(&self.conf_dir, &self.bin_dirs)
    }

    /// The attachment an ADD is about to make: the network as configured now, no
    /// result yet. Recorded in the pod before the first plugin runs, so that a crid
    /// killed during the ADD still runs DEL (with no previous result) for it.
    pub fn begin(&self) -> Result<Attachment, NetError> {
        let net = self.conf()?;
        Ok(Attachment {
            name: net.name.clone(),
            cni_version: net.cni_version.clone(),
            list: net.list.clone(),
            result: Value::Null,
        })
    }

    /// Runs ADD for the pod through the attachment `att` ([`Network::begin`]);
    /// records it, with its result, and the pod's IPs in the pod. A failed ADD is
    /// undone and leaves the pod without an attachment.
    pub fn add(&self, pod: &mut PodRecord, mut att: Attachment) -> Result<(), NetError> {
        let plugins: Vec<Value> = att.plugins().cloned().collect();
        let mut prev: Option<Value> = None;
        for (i, plugin) in plugins.iter().enumerate() {
            let conf = plugin_conf(&att, plugin, pod, prev.as_ref());
            match self.exec(&att, pod, "ADD", plugin, &conf) {
                Ok(out) => prev = Some(out),
                Err(e) => {
                    // Undo what the plugins up to this one did.
                    let done = Attachment {
                        list: json!({ "plugins": plugins[..=i].to_vec() }),
                        result: prev.clone().unwrap_or(Value::Null),
                        ..att.clone()
                    };
                    if let Err(undo) = self.del_with(pod, &done, prev.is_some()) {
                        tracing::warn!("pod {}: undoing a failed ADD: {undo}", pod.id);
                    }
                    pod.network = None;
                    return Err(e);
                }
            }
        }
        att.result = prev.unwrap_or_else(|| json!({}));
        pod.ips = ips(&att.result);
        pod.network = Some(att);
        Ok(())
    }

    /// Runs DEL for the pod with the attachment its ADD recorded, and once more a
    /// moment later if that fails (DEL may be repeated): plugins that share host
    /// state, iptables above all, fail now and then on what another is changing
    /// (`CHAIN_DEL failed (Device or resource busy)`).
    pub fn del(&self, pod: &PodRecord) -> Result<(), NetError> {
        let Some(att) = &pod.network else {
            return Ok(());
        };
        // An ADD cut short has no result to give.
        let with_result = !att.result.is_null();
        self.del_with(pod, att, with_result).or_else(|e| {
            tracing::debug!("pod {}: {e}; trying DEL again", pod.id);
            std::thread::sleep(std::time::Duration::from_millis(100));
            self.del_with(pod, att, with_result)
        })
    }

    /// Runs CHECK through the list in order with the ADD's result; `Ok(false)`
    /// when the network's CNI version has no CHECK.
    pub fn check(&self, pod: &PodRecord) -> Result<bool, NetError> {
        let Some(att) = &pod.network else {
            return Ok(false);
        };
        let v = att.cni_version.as_str();
        if v.starts_with("0.1.") || v.starts_with("0.2.") || v.starts_with("0.3.") {
            return Ok(false);
        }
        for plugin in att.plugins() {
            let conf = plugin_conf(att, plugin, pod, Some(&att.result));
            self.exec(att, pod, "CHECK", plugin, &conf)?;
        }
        Ok(true)
    }

    /// DEL through `att`'s plugins in reverse; every plugin runs, the first error
    /// is returned.
    fn del_with(
        &self,
        pod: &PodRecord,
        att: &Attachment,
        with_result: bool,
    ) -> Result<(), NetError> {
        let mut first_err = None;
        for plugin in att.plugins().rev() {
            let prev = with_result.then_some(&att.result);
            let conf = plugin_conf(att, plugin, pod, prev);
            if let Err(e) = self.exec(att, pod, "DEL", plugin, &conf) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Runs a plugin; its result, or the error it reported.
    fn exec(
        &self,
        att: &Attachment,
        pod: &PodRecord,
        command: &'static str,
        plugin: &Value,
        conf: &Value,
    ) -> Result<Value, NetError> {
        let ty = plugin["type"].as_str().unwrap_or_default();
        let bin = cni::find_plugin(&self.bin_dirs, ty).ok_or_else(|| NetError::PluginMissing {
            network: att.name.clone(),
            plugin: ty.to_string(),
        })?;
        // A pod recorded before its namespaces were (a crid killed in between) has
        // its network namespace pinned where they all are.
        let netns = pod
            .ns
            .get("net")
            .cloned()
            .or_else(|| crate::host::netns::pinned(&pod.dir.join("ns"), "net"))
            .unwrap_or_default();
        let m = &pod.metadata;
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            m.namespace, m.name, pod.id, m.uid
        );
        let path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let failed = |source| NetError::Exec {
            network: att.name.clone(),
            path: bin.clone(),
            source,
        };
        let mut cmd = Command::new(&bin);
        crate::host::netns::dies_with_crid(&mut cmd);
        let mut child = cmd
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &pod.id)
            .env("CNI_NETNS", &netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(failed)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin that exits without reading says why on stdout or stderr.
            let _ = stdin.write_all(conf.to_string().as_bytes());
        }
        let out = child.wait_with_output().map_err(failed)?;
        let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if !out.status.success() {
            let why = parsed
                .as_ref()
                .map(|v| {
                    let msg = v["msg"].as_str().unwrap_or_default();
                    match v["details"].as_str() {
                        Some(d) if !d.is_empty() => format!("{msg}: {d}"),
                        _ => msg.to_string(),
                    }
                })
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
            return Err(NetError::Plugin {
                network: att.name.clone(),
                plugin: ty.to_string(),
                command,
                message: why,
            });
        }
        Ok(parsed.unwrap_or_else(|| json!({})))
    }
}

/// One plugin's network configuration as the plugin reads it on stdin.
fn plugin_conf(att: &Attachment, plugin: &Value, pod: &PodRecord, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = att.name.clone().into();
    conf["cniVersion"] = att.cni_version.clone().into();
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    if plugin["capabilities"]["portMappings"] == true {
        let maps: Vec<Value> = pod
            .port_mappings
            .iter()
            .filter(|m| m.host_port > 0)
            .map(|m| {
                let mut v = json!({
                    "hostPort": m.host_port,
                    "containerPort": m.container_port,
                    "protocol": m.protocol,
                });
                if !m.host_ip.is_empty() {
                    v["hostIP"] = m.host_ip.clone().into();
                }
                v
            })
            .collect();
        conf["runtimeConfig"] = json!({ "portMappings": maps });
    }
    conf
}

/// The addresses in a CNI result, without their prefix lengths.
fn ips(result: &Value) -> Vec<String> {
    let mut out: Vec<String> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .collect();
    // 0.2.0 results.
    for k in ["ip4", "ip6"] {
        if let Some(a) = result[k]["ip"].as_str() {
            out.push(a.split('/').next().unwrap_or(a).to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_from_results() {
        let r = serde_json::json!({"ips": [{"address": "10.1.0.5/24"}, {"address": "fd00::5/64"}]});
        assert_eq!(super::ips(&r), ["10.1.0.5", "fd00::5"]);
        let old = serde_json::json!({"ip4": {"ip": "10.2.0.3/16"}});
        assert_eq!(super::ips(&old), ["10.2.0.3"]);
    }
}
