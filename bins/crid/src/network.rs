//! Pod networking through CNI plugins, executed as the CNI spec says: ADD through
//! the list in order, each plugin given the previous one's result; DEL in reverse
//! with the cached result; the conflist's `portMappings` capability fed from the
//! pod's port mappings.

use crate::pod::Pod;
use crate::state::Crid;
use k8s_cri::v1 as cri;
use std::io::Write;
use std::process::{Command, Stdio};
use tonic::Status;

/// The interface name inside the pod.
const IFNAME: &str = "eth0";

/// Runs ADD for the pod; records the result and the pod's IPs.
pub fn add(crid: &Crid, pod: &mut Pod) -> Result<(), Status> {
    let s = &crid.settings;
    let net = crate::cni::load(&s.cni_conf_dir, &s.cni_bin_dirs)
        .map_err(|e| Status::failed_precondition(format!("pod network: {e}")))?;
    let mut prev: Option<serde_json::Value> = None;
    let plugins = net.list["plugins"].as_array().cloned().unwrap_or_default();
    for (i, plugin) in plugins.iter().enumerate() {
        let conf = plugin_conf(&net, plugin, pod, prev.as_ref());
        match exec(crid, pod, "ADD", plugin, &conf) {
            Ok(out) => prev = Some(out),
            Err(e) => {
                // Undo what the plugins before it did.
                let done = serde_json::json!({"plugins": plugins[..=i].to_vec()});
                let _ = del_list(crid, pod, &net, &done, prev.as_ref());
                return Err(Status::unknown(format!("pod network {}: {e}", net.name)));
            }
        }
    }
    let result = prev.unwrap_or_else(|| serde_json::json!({}));
    pod.ips = ips(&result);
    pod.network = Some(serde_json::json!({
        "name": net.name,
        "cniVersion": net.cni_version,
        "list": net.list,
        "result": result,
    }));
    Ok(())
}

/// Runs DEL for the pod with the list and result its ADD used.
pub fn del(crid: &Crid, pod: &Pod) -> Result<(), Status> {
    let Some(n) = &pod.network else {
        return Ok(());
    };
    let net = saved_net(n);
    del_list(crid, pod, &net, &n["list"], Some(&n["result"]))
        .map_err(|e| Status::unknown(format!("pod network {}: {e}", net.name)))
}

/// Runs CHECK (CNI 0.4.0 and later) through the list in order with the ADD's
/// result; `Ok(false)` when the network's version has no CHECK.
pub fn check(crid: &Crid, pod: &Pod) -> Result<bool, String> {
    let Some(n) = &pod.network else {
        return Ok(false);
    };
    let net = saved_net(n);
    let version = net.cni_version.as_str();
    if version.starts_with("0.1.") || version.starts_with("0.2.") || version.starts_with("0.3.") {
        return Ok(false);
    }
    for plugin in n["list"]["plugins"].as_array().into_iter().flatten() {
        let conf = plugin_conf(&net, plugin, pod, Some(&n["result"]));
        exec(crid, pod, "CHECK", plugin, &conf)?;
    }
    Ok(true)
}

/// The network a pod's ADD used, as recorded with the pod.
fn saved_net(n: &serde_json::Value) -> crate::cni::NetConf {
    crate::cni::NetConf {
        path: Default::default(),
        name: n["name"].as_str().unwrap_or_default().to_string(),
        cni_version: n["cniVersion"].as_str().unwrap_or("0.4.0").to_string(),
        list: n["list"].clone(),
    }
}

fn del_list(
    crid: &Crid,
    pod: &Pod,
    net: &crate::cni::NetConf,
    list: &serde_json::Value,
    result: Option<&serde_json::Value>,
) -> Result<(), String> {
    let mut first_err = None;
    for plugin in list["plugins"].as_array().into_iter().flatten().rev() {
        let conf = plugin_conf(net, plugin, pod, result);
        if let Err(e) = exec(crid, pod, "DEL", plugin, &conf) {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// One plugin's network configuration as the plugin reads it on stdin.
fn plugin_conf(
    net: &crate::cni::NetConf,
    plugin: &serde_json::Value,
    pod: &Pod,
    prev: Option<&serde_json::Value>,
) -> serde_json::Value {
    let mut conf = plugin.clone();
    conf["name"] = net.name.clone().into();
    conf["cniVersion"] = net.cni_version.clone().into();
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    if plugin["capabilities"]["portMappings"] == true {
        let maps: Vec<serde_json::Value> = pod
            .config
            .port_mappings
            .iter()
            .filter(|m| m.host_port > 0)
            .map(|m| {
                let proto = match cri::Protocol::try_from(m.protocol) {
                    Ok(cri::Protocol::Udp) => "udp",
                    Ok(cri::Protocol::Sctp) => "sctp",
                    _ => "tcp",
                };
                let mut v = serde_json::json!({
                    "hostPort": m.host_port,
                    "containerPort": m.container_port,
                    "protocol": proto,
                });
                if !m.host_ip.is_empty() {
                    v["hostIP"] = m.host_ip.clone().into();
                }
                v
            })
            .collect();
        conf["runtimeConfig"] = serde_json::json!({ "portMappings": maps });
    }
    conf
}

/// Runs a plugin; its result, or the error it reported.
fn exec(
    crid: &Crid,
    pod: &Pod,
    command: &str,
    plugin: &serde_json::Value,
    conf: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let s = &crid.settings;
    let ty = plugin["type"].as_str().unwrap_or_default();
    let bin = crate::cni::find_plugin(&s.cni_bin_dirs, ty)
        .ok_or_else(|| format!("plugin {ty:?} not found"))?;
    let netns = pod.ns.get("net").cloned().unwrap_or_default();
    let meta = pod.config.metadata.clone().unwrap_or_default();
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        meta.namespace, meta.name, pod.id, meta.uid
    );
    let path = std::env::join_paths(&s.cni_bin_dirs).unwrap_or_default();
    let mut child = Command::new(&bin)
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
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(conf.to_string().as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {}: {e}", bin.display()))?;
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
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
        return Err(format!("{ty} {command}: {why}"));
    }
    Ok(parsed.unwrap_or_else(|| serde_json::json!({})))
}

/// The addresses in a CNI result, without their prefix lengths.
fn ips(result: &serde_json::Value) -> Vec<String> {
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
