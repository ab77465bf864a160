//! CNI network configuration: which conflist crid uses, and whether it can.
//!
//! As the CNI spec and CRI-O do: the first file of the conf dir in name order
//! ending in `.conflist`, `.conf` or `.json`; a single-plugin `.conf` is a list of
//! one. The network is usable when every plugin it names is in a plugin directory.

use std::path::{Path, PathBuf};

/// Why there is no usable network configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// The conf dir cannot be read.
    #[error("CNI config dir {}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It holds no configuration.
    #[error("no CNI network config in {}", dir.display())]
    Empty {
        /// The directory.
        dir: PathBuf,
    },
    /// The configuration crid would use cannot be.
    #[error("CNI config {}: {reason}", path.display())]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A network configuration list.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// The file it came from.
    pub path: PathBuf,
    /// Its name.
    pub name: String,
    /// Its CNI version.
    pub cni_version: String,
    /// The list as JSON (a `.conf` made into a list).
    pub list: serde_json::Value,
}

/// The network crid would use, or why there is none.
pub fn load(conf_dir: &Path, bin_dirs: &[PathBuf]) -> Result<NetConf, ConfError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .map_err(|source| ConfError::Dir {
            dir: conf_dir.to_path_buf(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let path = files.into_iter().next().ok_or_else(|| ConfError::Empty {
        dir: conf_dir.to_path_buf(),
    })?;
    let bad = |reason: String| ConfError::Bad {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    if v.get("plugins").is_none() {
        // A single plugin's .conf: the list of one.
        let mut plugin = v.clone();
        if let Some(o) = plugin.as_object_mut() {
            o.remove("cniVersion");
            o.remove("name");
        }
        v = serde_json::json!({
            "cniVersion": v["cniVersion"],
            "name": v["name"],
            "plugins": [plugin],
        });
    }
    let name = v["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("no network name".into()))?
        .to_string();
    let cni_version = v["cniVersion"].as_str().unwrap_or("0.4.0").to_string();
    let plugins = v["plugins"]
        .as_array()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad("no plugins".into()))?;
    for p in plugins {
        let ty = p["type"]
            .as_str()
            .ok_or_else(|| bad("a plugin without a type".into()))?;
        if ty.contains('/') || find_plugin(bin_dirs, ty).is_none() {
            return Err(bad(format!(
                "plugin {ty:?} is not in {}",
                std::env::join_paths(bin_dirs)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )));
        }
    }
    Ok(NetConf {
        path,
        name,
        cni_version,
        list: v,
    })
}

/// The plugin binary `ty` in the first directory that has it.
pub fn find_plugin(bin_dirs: &[PathBuf], ty: &str) -> Option<PathBuf> {
    bin_dirs.iter().map(|d| d.join(ty)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_config_by_name_with_every_plugin_present() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let conf = d.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        let dirs = [bin.clone()];
        assert!(load(&conf, &dirs)
            .unwrap_err()
            .to_string()
            .contains("no CNI network config"));
        std::fs::write(
            conf.join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(
            conf.join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(conf.join("00-ignored.txt"), "x").unwrap();
        assert!(load(&conf, &dirs)
            .unwrap_err()
            .to_string()
            .contains("\"bridge\" is not in"));
        std::fs::write(bin.join("bridge"), "").unwrap();
        let n = load(&conf, &dirs).unwrap();
        assert_eq!(n.name, "a");
        assert_eq!(n.list["plugins"][0]["type"], "bridge");
        assert!(n.list["plugins"][0].get("name").is_none());
        std::fs::remove_file(conf.join("10-a.conf")).unwrap();
        assert!(load(&conf, &dirs)
            .unwrap_err()
            .to_string()
            .contains("\"portmap\""));
        std::fs::write(bin.join("portmap"), "").unwrap();
        assert_eq!(load(&conf, &dirs).unwrap().cni_version, "1.0.0");
    }
}
