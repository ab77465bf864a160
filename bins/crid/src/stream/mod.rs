//! The streaming server: Exec, Attach and PortForward answer with a URL on it,
//! `http://ADDRESS:PORT/{exec,attach,portforward}/TOKEN` (https with
//! `--stream-tls-cert`), and the client (kubelet, kubectl, crictl) connects there and
//! upgrades to SPDY/3.1 or WebSocket.
//!
//! A token is random, good for one connection, and only for a minute; any other
//! path, a used token or an expired one is a bare 404. Sessions are bounded in
//! number (`--stream-max-sessions`) and end when idle (`--stream-idle-timeout`).

pub mod forward;
pub mod remote;
pub mod server;
pub mod session;
pub use crikit::wire::spdy;
pub mod websocket;

use crate::error::{CridError, Result};
pub use crate::state::tokens::{Io, Request};
use std::time::Duration;

/// How long the client has to open its streams after the upgrade.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

impl crate::Crid {
    fn url(&self, r: Request) -> Result<String> {
        self.streams
            .url_for(r)?
            .ok_or_else(|| CridError::NotReady("no streaming server runs".into()))
    }

    /// Exec: a URL for a process in the running container.
    pub async fn exec_url(&self, req: k8s_cri::v1::ExecRequest) -> Result<String> {
        crate::validate::command("cmd", &req.cmd)?;
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(CridError::Invalid(
                "Exec: one of stdin, stdout and stderr must be asked for".into(),
            ));
        }
        let c = self.running(&req.container_id).await?;
        self.url(Request::Exec {
            container: c.id,
            cmd: req.cmd,
            io: Io {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr && !req.tty,
                tty: req.tty,
            },
        })
    }

    /// Attach: a URL for the running container's own process.
    pub async fn attach_url(&self, req: k8s_cri::v1::AttachRequest) -> Result<String> {
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(CridError::Invalid(
                "Attach: one of stdin, stdout and stderr must be asked for".into(),
            ));
        }
        let c = self.running(&req.container_id).await?;
        if req.stdin && !c.stdin {
            return Err(CridError::Invalid(format!(
                "Attach: container {} was made without stdin",
                c.id
            )));
        }
        self.url(Request::Attach {
            stdin_once: c.stdin_once,
            container: c.id,
            io: Io {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr && !c.tty,
                tty: c.tty,
            },
        })
    }

    /// PortForward: a URL for ports in the ready pod's network namespace.
    pub async fn port_forward_url(&self, req: k8s_cri::v1::PortForwardRequest) -> Result<String> {
        crate::validate::ports("port", &req.port)?;
        let pod = self
            .store
            .pod(&req.pod_sandbox_id)
            .ok_or_else(|| CridError::NotFound(format!("pod {}", req.pod_sandbox_id)))?;
        let pod = pod.lock().await;
        if !pod.ready {
            return Err(CridError::NotReady(format!("pod {} is not ready", pod.id)));
        }
        if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(CridError::Invalid(format!("PortForward: port {p}")));
        }
        self.url(Request::PortForward {
            pod: pod.id.clone(),
        })
    }
}
