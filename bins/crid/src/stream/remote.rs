//! Exec and Attach over SPDY (the remotecommand subprotocols v4, v3, v2 and
//! channel.k8s.io): the client's streams joined to a ctrmon attach socket, the
//! container's own for Attach, an exec's for Exec (ctrmon `--exec --attach-wait`,
//! so that the process starts once crid is reading it).

use super::session::{Session, Stream, StreamTx};
use super::{spdy, Io, Request, STREAM_CREATION_TIMEOUT};
use crate::Crid;
use bytes::BytesMut;
use crikit::runtime::monitor::attach;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The client's streams, as it opened them.
#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

/// How the session ended, for the error stream.
enum Outcome {
    Exited(i32),
    Detached,
    Failed(String),
}

/// Serves one Exec or Attach session.
pub async fn serve(crid: Arc<Crid>, request: Request, protocol: &str, mut session: Session) {
    let (io, what) = match &request {
        Request::Exec { io, container, .. } => (*io, format!("exec in {container}")),
        Request::Attach { io, container, .. } => (*io, format!("attach to {container}")),
        Request::PortForward { .. } => return,
    };
    let resize = io.tty && protocol != "v2.channel.k8s.io" && protocol != "channel.k8s.io";
    let expected = 1
        + usize::from(io.stdin)
        + usize::from(io.stdout)
        + usize::from(io.stderr)
        + usize::from(resize);
    let Some(mut streams) = wait_for_streams(&mut session, expected).await else {
        tracing::debug!("streaming: {what}: the client did not open its streams");
        session.close().await;
        return;
    };
    // A terminal's first size, before the process starts: a client sends it at once
    // (kubectl and crictl do), so the wait ends when it comes; the bound is for a
    // client that never sends one, and generous for a loaded node.
    let mut size = None;
    if let (Request::Exec { .. }, true, Some(r)) = (&request, io.tty, streams.resize.as_mut()) {
        match tokio::time::timeout(FIRST_SIZE_WAIT, r.rx.recv()).await {
            Ok(Some(d)) => {
                size = d
                    .split(|b| *b == b'\n')
                    .filter_map(terminal_size)
                    .next_back();
                if size.is_none() {
                    tracing::warn!(
                        "streaming: {what}: not a terminal size: {:?}",
                        String::from_utf8_lossy(&d)
                    );
                }
            }
            _ => tracing::warn!(
                "streaming: {what}: no terminal size from the client in {FIRST_SIZE_WAIT:?}"
            ),
        }
    }
    let outcome = match connect(&crid, &request, size).await {
        Ok((sock, exec)) => {
            // An exec's stdin is its own; a container's closes with an attach's only
            // when it was made StdinOnce, else the next attach types on.
            let close_stdin = !matches!(
                request,
                Request::Attach {
                    stdin_once: false,
                    ..
                }
            );
            pump(sock, exec, &mut streams, &mut session, io, close_stdin).await
        }
        Err(e) => Outcome::Failed(e),
    };
    match &outcome {
        Outcome::Failed(e) => tracing::warn!("streaming: {what}: {e}"),
        Outcome::Exited(code) => tracing::debug!("streaming: {what}: exited with {code}"),
        Outcome::Detached => tracing::debug!("streaming: {what}: detached"),
    }
    if let Some(e) = &streams.error {
        if let Some(status) = status_text(protocol, &outcome) {
            e.tx.send(status.as_bytes()).await;
        }
    }
    for s in [
        &streams.stdout,
        &streams.stderr,
        &streams.error,
        &streams.stdin,
        &streams.resize,
    ]
    .into_iter()
    .flatten()
    {
        s.tx.close().await;
    }
    session.close().await;
}

/// Accepts streams until `expected` of a known type are there, for at most
/// [`STREAM_CREATION_TIMEOUT`].
async fn wait_for_streams(session: &mut Session, expected: usize) -> Option<Streams> {
    let mut got = Streams::default();
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while n < expected {
        let s = tokio::time::timeout_at(deadline, session.accept.recv())
            .await
            .ok()??;
        if !s.tx.reply().await {
            return None;
        }
        let slot = match spdy::header(&s.headers, "streamtype") {
            Some("error") => &mut got.error,
            Some("stdin") => &mut got.stdin,
            Some("stdout") => &mut got.stdout,
            Some("stderr") => &mut got.stderr,
            Some("resize") => &mut got.resize,
            _ => continue,
        };
        if slot.is_none() {
            n += 1;
        }
        *slot = Some(s);
    }
    Some(got)
}

/// What the error stream says at the end: v4 a JSON status always, the older
/// protocols a message on failure only.
fn status_text(protocol: &str, outcome: &Outcome) -> Option<String> {
    // v5 (WebSocket) writes v4's status.
    let v4 = matches!(protocol, "v4.channel.k8s.io" | "v5.channel.k8s.io");
    let json = match outcome {
        Outcome::Exited(0) | Outcome::Detached => {
            return v4.then(|| r#"{"status":"Success"}"#.to_string())
        }
        Outcome::Exited(code) => serde_json::json!({
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(e) => serde_json::json!({
            "status": "Failure",
            "message": format!("Internal error occurred: {e}"),
            "reason": "InternalError",
            "code": 500,
        }),
    };
    Some(if v4 {
        json.to_string()
    } else {
        json["message"].as_str().unwrap_or_default().to_string()
    })
}

/// The attach socket to join, and for an exec its monitor (to be waited for and,
/// if the client goes, its process killed).
async fn connect(
    crid: &Arc<Crid>,
    request: &Request,
    size: Option<(u16, u16)>,
) -> Result<(tokio::net::UnixStream, Option<Exec>), String> {
    match request {
        Request::Attach { container, .. } => {
            let path = crid
                .attach_socket(container)
                .await
                .map_err(|e| e.message())?;
            Ok((
                connect_socket(&path).await.map_err(|e| e.to_string())?,
                None,
            ))
        }
        Request::Exec { container, cmd, io } => {
            let mut exec = crid
                .start_exec(container, cmd, *io, size)
                .await
                .map_err(|e| e.message())?;
            let sock = exec.connect().await.map_err(|e| e.message())?;
            Ok((sock, Some(exec)))
        }
        Request::PortForward { .. } => Err("not a remote command".into()),
    }
}

/// Connects to a unix socket whose path may be longer than `sun_path`.
pub async fn connect_socket(path: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    let (_dir, short) = attach::short_path(path)?;
    tokio::net::UnixStream::connect(short).await
}

/// Joins the streams and the socket until the process exits or the client goes.
async fn pump(
    sock: tokio::net::UnixStream,
    mut exec: Option<Exec>,
    streams: &mut Streams,
    session: &mut Session,
    io: Io,
    close_stdin: bool,
) -> Outcome {
    let (mut rd, mut wr) = sock.into_split();
    let stdin = streams
        .stdin
        .as_mut()
        .map(|s| std::mem::replace(&mut s.rx, closed()));
    let resize = streams
        .resize
        .as_mut()
        .map(|s| std::mem::replace(&mut s.rx, closed()));
    // Client to process: stdin (its end becomes the process's), terminal sizes. The
    // task holds the socket's write half until it is aborted at the end: dropping
    // it would shut the connection down, and ctrmon would take crid for gone before
    // it sent the exit frame.
    let input = tokio::spawn(async move {
        let (mut stdin, mut resize) = (stdin, resize);
        let mut sizes = BytesMut::new();
        loop {
            tokio::select! {
                d = recv(&mut stdin), if stdin.is_some() => match d {
                    Some(d) => {
                        if wr.write_all(&attach::encode(attach::STDIN, &d)).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        stdin = None;
                        if close_stdin
                            && wr.write_all(&attach::encode(attach::CLOSE_STDIN, &[])).await.is_err()
                        {
                            return;
                        }
                    }
                },
                d = recv(&mut resize), if resize.is_some() => match d {
                    Some(d) => {
                        sizes.extend_from_slice(&d);
                        while let Some(nl) = sizes.iter().position(|b| *b == b'\n') {
                            let line = sizes.split_to(nl + 1);
                            if let Some((w, h)) = terminal_size(&line) {
                                let mut p = h.to_be_bytes().to_vec();
                                p.extend_from_slice(&w.to_be_bytes());
                                if wr.write_all(&attach::encode(attach::RESIZE, &p)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    None => resize = None,
                },
                else => break,
            }
        }
        std::future::pending::<()>().await;
        drop(wr);
    });
    let out = streams.stdout.as_ref().map(|s| s.tx.clone());
    let err = streams.stderr.as_ref().map(|s| s.tx.clone());
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let outcome = loop {
        let frames = match attach::decode(&mut buf) {
            Ok(f) => f,
            Err(e) => break Outcome::Failed(e.to_string()),
        };
        let mut ended = None;
        for (kind, payload) in frames {
            match kind {
                attach::STDOUT => send(&out, &payload).await,
                attach::STDERR if io.tty => send(&out, &payload).await,
                attach::STDERR => send(&err, &payload).await,
                attach::EXIT => {
                    let code = serde_json::from_slice::<serde_json::Value>(&payload)
                        .ok()
                        .and_then(|v| v["exit_code"].as_i64())
                        .unwrap_or(-1);
                    ended = Some(Outcome::Exited(code as i32));
                }
                _ => {}
            }
        }
        if let Some(o) = ended {
            break o;
        }
        tokio::select! {
            n = rd.read(&mut chunk) => match n {
                Ok(0) | Err(_) => break Outcome::Detached,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            // The client went away (the session's reader ended).
            s = session.accept.recv() => if s.is_none() {
                if let Some(e) = exec.as_mut() {
                    e.kill();
                    // Gone before the session is: the client (or an idle timeout's
                    // next session) never meets the process still running.
                    let _ = tokio::time::timeout(EXIT_WAIT, read_to_exit(&mut rd, &mut buf)).await;
                }
                break Outcome::Detached;
            },
        }
    };
    input.abort();
    if let Some(e) = exec {
        e.finish().await;
    }
    outcome
}

/// How long an exec with a terminal waits for the client's first size.
const FIRST_SIZE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a killed exec's monitor is given to report the exit.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the monitor's frames, output dropped, until its exit frame or the end.
async fn read_to_exit(rd: &mut tokio::net::unix::OwnedReadHalf, buf: &mut Vec<u8>) {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match attach::decode(buf) {
            Ok(frames) if frames.iter().all(|(kind, _)| *kind != attach::EXIT) => {}
            _ => return,
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn closed() -> tokio::sync::mpsc::Receiver<bytes::Bytes> {
    tokio::sync::mpsc::channel(1).1
}

async fn recv(rx: &mut Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>) -> Option<bytes::Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn send(tx: &Option<StreamTx>, data: &[u8]) {
    if let Some(tx) = tx {
        tx.send(data).await;
    }
}

/// `{"Width":W,"Height":H}` as (columns, rows), within a terminal's range.
fn terminal_size(line: &[u8]) -> Option<(u16, u16)> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    let w = u16::try_from(v["Width"].as_u64()?).ok()?;
    let h = u16::try_from(v["Height"].as_u64()?).ok()?;
    Some((w, h))
}

/// An interactive exec being served: its monitor, its attach socket.
pub struct Exec {
    child: tokio::process::Child,
    socket: std::path::PathBuf,
    _process: tempfile::NamedTempFile,
    pid: Option<i32>,
}

impl Exec {
    /// Connects to the exec's socket once its monitor listens (the monitor starts
    /// the process then) and learns the process's pid.
    pub async fn connect(&mut self) -> crate::error::Result<tokio::net::UnixStream> {
        use crate::error::CridError;
        use tokio::io::AsyncBufReadExt;
        let failed = |message: String| CridError::Monitor {
            what: "starting the exec".into(),
            message,
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let sock = loop {
            match connect_socket(&self.socket).await {
                Ok(s) => break s,
                Err(e) => {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        return Err(failed(self.monitor_error().await));
                    }
                    if tokio::time::Instant::now() > deadline {
                        return Err(failed(format!("no attach socket: {e}")));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
        };
        let mut line = String::new();
        if let Some(out) = self.child.stdout.take() {
            let mut out = tokio::io::BufReader::new(out);
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(30), out.read_line(&mut line))
                    .await;
        }
        match line.trim().parse() {
            Ok(pid) => self.pid = Some(pid),
            Err(_) => return Err(failed(self.monitor_error().await)),
        }
        Ok(sock)
    }

    /// What the monitor said on stderr before it gave up.
    async fn monitor_error(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err).await;
        }
        err.trim().to_string()
    }

    /// Kills the process (its client went away).
    pub fn kill(&self) {
        if let Some(pid) = self.pid.filter(|p| *p > 0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Reaps the monitor's starter and removes the socket.
    pub async fn finish(mut self) {
        let _ = self.child.wait().await;
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Crid {
    /// The attach socket of the running container `id`.
    pub async fn attach_socket(&self, id: &str) -> crate::error::Result<std::path::PathBuf> {
        let c = self.running(id).await?;
        Ok(crikit::runtime::monitor::StateDir::new(&self.settings.run_dir, &c.id).attach_socket())
    }

    /// Starts an interactive exec of `cmd` in the running container `id`.
    pub async fn start_exec(
        &self,
        id: &str,
        cmd: &[String],
        io: Io,
        size: Option<(u16, u16)>,
    ) -> crate::error::Result<Exec> {
        use crate::error::CridError;
        let c = self.running(id).await?;
        let runtime = self.runtime(&c.runtime_handler)?;
        let tag = crate::state::new_id().map_err(CridError::io("reading /dev/urandom"))?;
        let socket = crikit::runtime::monitor::StateDir::new(&self.settings.run_dir, &c.id)
            .path()
            .join(format!("exec-{}.sock", &tag[..16]));
        let (child, process) = self
            .monitors(&runtime)
            .exec_interactive(&c.id, &c.bundle, cmd, io, size, &socket)?;
        Ok(Exec {
            child,
            socket,
            _process: process,
            pid: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_kubernetes_json_for_v4_and_text_before() {
        let v4 = "v4.channel.k8s.io";
        assert_eq!(
            status_text(v4, &Outcome::Exited(0)).as_deref(),
            Some(r#"{"status":"Success"}"#)
        );
        let failed: serde_json::Value =
            serde_json::from_str(&status_text(v4, &Outcome::Exited(3)).unwrap()).unwrap();
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        assert_eq!(status_text("v3.channel.k8s.io", &Outcome::Exited(0)), None);
        assert!(
            status_text("channel.k8s.io", &Outcome::Failed("boom".into()))
                .unwrap()
                .contains("boom")
        );
    }

    #[test]
    fn terminal_sizes_come_as_json_lines() {
        assert_eq!(
            terminal_size(b"{\"Width\":80,\"Height\":24}\n"),
            Some((80, 24))
        );
        assert_eq!(terminal_size(b"{\"Width\":-1,\"Height\":24}"), None);
        assert_eq!(terminal_size(b"junk"), None);
    }
}
