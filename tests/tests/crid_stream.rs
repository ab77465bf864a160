//! crid's streaming server through the tests' own SPDY and WebSocket clients, for
//! what crictl cannot show: exit codes in each protocol's status, a resize reaching
//! the terminal mid-session, sessions at once, a client that drops mid-stream.

use e2e::crid::{Network, World};
use e2e::stream::{ExecIo, RemoteCommand};
use e2e::{process_runs, wait_for};
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A pod of its own PID namespace with one container that sleeps; its id and the
/// container's.
async fn sleeper(w: &World, name: &str) -> (String, String) {
    let config = w.pod_config(name, cri::NamespaceMode::Container);
    let pod = w.run_pod(&config).await.unwrap();
    let ctr = w.run_sh(&pod, &config, "c", "exec sleep 1000").await;
    (pod, ctr)
}

/// Runs `f` on a blocking thread (the clients are blocking), failing with its panic.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_reach_the_error_stream_in_each_protocol() {
    let w = World::new(Network::Loopback, &[]).await;
    let (pod, ctr) = sleeper(&w, "codes").await;
    let script = ["/bin/sh", "-c", "echo out; echo err >&2; exit 7"];
    // v4: Kubernetes JSON, the code in the ExitCode cause; stdout and stderr apart.
    let url = w.exec_url(&ctr, &script, ExecIo::default()).await;
    let (status, out, err) = blocking(move || {
        let mut s = RemoteCommand::open(&url, "v4.channel.k8s.io", ExecIo::default());
        let status = s.status();
        (status, s.text("stdout"), s.text("stderr"))
    })
    .await;
    let v: serde_json::Value =
        serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"));
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["reason"], "NonZeroExitCode", "{v}");
    assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode", "{v}");
    assert_eq!(v["details"]["causes"][0]["message"], "7", "{v}");
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    // v4, success.
    let url = w.exec_url(&ctr, &["/bin/true"], ExecIo::default()).await;
    let status = blocking(move || {
        RemoteCommand::open(&url, "v4.channel.k8s.io", ExecIo::default()).status()
    })
    .await;
    assert_eq!(status, r#"{"status":"Success"}"#);
    // The older protocols: a message on failure, nothing on success.
    for protocol in ["v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"] {
        let url = w.exec_url(&ctr, &script, ExecIo::default()).await;
        let status =
            blocking(move || RemoteCommand::open(&url, protocol, ExecIo::default()).status()).await;
        assert!(status.contains("exit status 7"), "{protocol}: {status}");
        let url = w.exec_url(&ctr, &["/bin/true"], ExecIo::default()).await;
        let status =
            blocking(move || RemoteCommand::open(&url, protocol, ExecIo::default()).status()).await;
        assert_eq!(status, "", "{protocol}");
    }
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_mid_session_reaches_the_terminal() {
    let w = World::new(Network::Loopback, &[]).await;
    let (pod, ctr) = sleeper(&w, "resize").await;
    let io = ExecIo {
        stdin: true,
        tty: true,
    };
    let url = w
        .exec_url(
            &ctr,
            &["/bin/sh", "-c", "stty size; read x; stty size; tty"],
            io,
        )
        .await;
    let (out, status) = blocking(move || {
        let mut s = RemoteCommand::open(&url, "v4.channel.k8s.io", io);
        // The first size, as a client sends it at once: the process starts with it.
        s.resize(100, 40);
        assert!(
            s.read_until(|g| g
                .get("stdout")
                .is_some_and(|o| o.windows(6).any(|w| w == b"40 100"))),
            "the first size: {:?}",
            s.text("stdout")
        );
        // A new size while it runs, then the line it waits for.
        s.resize(120, 50);
        std::thread::sleep(Duration::from_millis(200));
        s.send("stdin", b"\n", false);
        let status = s.status();
        (s.text("stdout"), status)
    })
    .await;
    assert!(out.contains("50 120"), "{out:?}");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert_eq!(status, r#"{"status":"Success"}"#);
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_at_once_each_get_their_own_output() {
    let w = World::new(Network::Loopback, &[]).await;
    let (pod, ctr) = sleeper(&w, "many").await;
    let script = "for i in 1 2 3 4 5; do echo $0-$i; sleep 0.1; done; exit $0";
    let mut urls = Vec::new();
    for n in 1..=6 {
        let tag = n.to_string();
        urls.push((
            n,
            w.exec_url(&ctr, &["/bin/sh", "-c", script, &tag], ExecIo::default())
                .await,
        ));
    }
    // All six open before any has ended.
    let t0 = Instant::now();
    let handles: Vec<_> = urls
        .into_iter()
        .map(|(n, url)| {
            std::thread::spawn(move || {
                let mut s = RemoteCommand::open(&url, "v4.channel.k8s.io", ExecIo::default());
                let status = s.status();
                (n, s.text("stdout"), status)
            })
        })
        .collect();
    for h in handles {
        let (n, out, status) = h.join().unwrap();
        let want: String = (1..=5).map(|i| format!("{n}-{i}\n")).collect();
        assert_eq!(out, want, "session {n}");
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(v["details"]["causes"][0]["message"], n.to_string(), "{v}");
    }
    // Each takes half a second; one after the other would take three.
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    w.remove_pod(&pod).await;
}

/// crid's open descriptors.
fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dropped_mid_stream_frees_its_session_process_and_sockets() {
    let w = World::new(Network::Loopback, &["--stream-max-sessions", "1"]).await;
    let (pod, ctr) = sleeper(&w, "dropped").await;
    let before = fds(w.crid.pid());
    let url = w
        .exec_url(
            &ctr,
            &["/bin/sh", "-c", "echo started; exec sleep 777"],
            ExecIo::default(),
        )
        .await;
    blocking(move || {
        let mut s = RemoteCommand::open(&url, "v4.channel.k8s.io", ExecIo::default());
        assert!(s.read_until(|g| g.contains_key("stdout")));
        wait_for("the exec", || process_runs(b"sleep\x00777\x00"));
        // Gone without a word: the connection just closes.
        drop(s);
        wait_for("the exec's end", || !process_runs(b"sleep\x00777\x00"));
    })
    .await;
    // The one session slot is free again (once the session's task wound up), and
    // what the session held is closed.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let url = w.exec_url(&ctr, &["/bin/true"], ExecIo::default()).await;
        let r = blocking(move || {
            RemoteCommand::try_open(&url, "v4.channel.k8s.io", ExecIo::default())
                .map(|mut s| s.status())
        })
        .await;
        match r {
            Ok(status) => break status,
            Err(head) => assert!(
                head.contains(" 503 ") && Instant::now() < deadline,
                "the slot stayed taken: {head}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, r#"{"status":"Success"}"#);
    let pid = w.crid.pid();
    wait_for("crid's descriptors back to before", || fds(pid) <= before);
    w.remove_pod(&pod).await;
}

/// A v5.channel.k8s.io WebSocket to `url`.
async fn websocket(url: &str) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let (host, _) = e2e::stream::split_url(url);
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    ws
}

/// Reads messages until the WebSocket closes (for at most 30 s): what came on each
/// channel, and whether it closed with a close message.
async fn read_channels(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> (std::collections::HashMap<u8, Vec<u8>>, bool) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut got: std::collections::HashMap<u8, Vec<u8>> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the session never ended");
        match msg {
            Some(Ok(Message::Binary(d))) if !d.is_empty() => {
                got.entry(d[0]).or_default().extend_from_slice(&d[1..]);
            }
            Some(Ok(Message::Close(_))) => return (got, true),
            None | Some(Err(_)) => return (got, false),
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_over_websocket_carries_stdin_its_close_and_the_exit_code() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let w = World::new(Network::Loopback, &[]).await;
    let (pod, ctr) = sleeper(&w, "ws").await;
    let io = ExecIo {
        stdin: true,
        tty: false,
    };
    let url = w
        .exec_url(&ctr, &["/bin/sh", "-c", "wc -c; echo e >&2; exit 4"], io)
        .await;
    let mut ws = websocket(&url).await;
    ws.send(Message::binary(b"\x0012345".to_vec()))
        .await
        .unwrap();
    // [255, 0]: the end of stdin, which wc waits for.
    ws.send(Message::binary(vec![255u8, 0])).await.unwrap();
    let (got, closed) = read_channels(&mut ws).await;
    assert!(closed, "crid ends the session with a close message");
    let text = |ch: u8| String::from_utf8_lossy(got.get(&ch).map_or(&[][..], |v| v)).to_string();
    assert_eq!(text(1).trim(), "5");
    assert_eq!(text(2), "e\n");
    let v: serde_json::Value = serde_json::from_str(&text(3)).unwrap();
    assert_eq!(v["details"]["causes"][0]["message"], "4", "{v}");
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_session_ends_and_takes_its_process() {
    let w = World::new(Network::Loopback, &["--stream-idle-timeout", "2"]).await;
    let (pod, ctr) = sleeper(&w, "wsidle").await;
    let url = w
        .exec_url(&ctr, &["/bin/sleep", "556"], ExecIo::default())
        .await;
    let t0 = Instant::now();
    let mut ws = websocket(&url).await;
    wait_for("the exec", || process_runs(b"/bin/sleep\x00556\x00"));
    let (got, _) = read_channels(&mut ws).await;
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(15),
        "{elapsed:?}"
    );
    assert!(got.get(&1).is_none_or(|o| o.is_empty()), "{got:?}");
    wait_for("the idle exec's end", || {
        !process_runs(b"/bin/sleep\x00556\x00")
    });
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_forward_session_carries_several_ports_and_connections_at_once() {
    use crikit::wire::spdy::{Frame, FLAG_FIN};
    let w = World::new(Network::Loopback, &[]).await;
    let config = w.pod_config("forward", cri::NamespaceMode::Container);
    let pod = w.run_pod(&config).await.unwrap();
    let script = "mkdir -p /a /b; echo eighty > /a/index.html; echo eighty-one > /b/index.html; \
                  httpd -p 8080 -h /a; exec httpd -f -p 8081 -h /b";
    let ctr = w.run_sh(&pod, &config, "web", script).await;
    let get = "wget -q -O- http://127.0.0.1:8080/index.html http://127.0.0.1:8081/index.html";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !w
        .exec(&ctr, &["/bin/sh", "-c", get], 10)
        .await
        .is_ok_and(|r| r.exit_code == 0)
    {
        assert!(Instant::now() < deadline, "the web servers never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url =
        w.rt.clone()
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![8080, 8081],
            })
            .await
            .unwrap()
            .into_inner()
            .url;
    let answers = blocking(move || {
        let mut s = e2e::stream::Spdy::connect(&url, &["portforward.k8s.io"]);
        assert_eq!(s.protocol, "portforward.k8s.io");
        // Four connections opened before any is answered: two to each port and one
        // to a port nothing listens on.
        let mut data = HashMap::new();
        let mut errors = HashMap::new();
        for (req, port) in [
            ("1", "8080"),
            ("2", "8081"),
            ("3", "8081"),
            ("4", "8080"),
            ("5", "9"),
        ] {
            let h = |t| [("streamtype", t), ("port", port), ("requestid", req)];
            errors.insert(s.open(&h("error")), req);
            let d = s.open(&h("data"));
            data.insert(d, req);
            if port != "9" {
                s.send(d, b"GET /index.html HTTP/1.0\r\n\r\n", false);
            }
        }
        let mut got: HashMap<&str, Vec<u8>> = HashMap::new();
        let mut open: Vec<u32> = data.keys().copied().collect();
        while !open.is_empty() {
            match s.next_frame().expect("the session ended early") {
                Frame::Data {
                    stream_id,
                    flags,
                    data: bytes,
                } => {
                    let key = match (data.get(&stream_id), errors.get(&stream_id)) {
                        (Some(r), _) => *r,
                        (None, Some(r)) => {
                            if *r == "5" {
                                "5 error"
                            } else {
                                "error"
                            }
                        }
                        _ => continue,
                    };
                    got.entry(key).or_default().extend_from_slice(&bytes);
                    if flags & FLAG_FIN != 0 {
                        open.retain(|id| *id != stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => open.retain(|id| *id != stream_id),
                _ => {}
            }
        }
        got.into_iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(&v).to_string()))
            .collect::<HashMap<String, String>>()
    })
    .await;
    for (req, body) in [
        ("1", "eighty\n"),
        ("4", "eighty\n"),
        ("2", "eighty-one\n"),
        ("3", "eighty-one\n"),
    ] {
        let a = &answers[req];
        assert!(
            a.starts_with("HTTP/1.") && a.ends_with(body),
            "{req}: {a:?}"
        );
    }
    assert!(
        answers["5 error"].contains("error forwarding port 9"),
        "{answers:?}"
    );
    // The others' error streams end with nothing said.
    assert!(
        answers.get("error").is_none_or(|e| e.is_empty()),
        "{answers:?}"
    );
    w.remove_pod(&pod).await;
}

/// `curl URL`: its status code and body.
fn curl(url: &str, method: &str) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-X", method, "-w", "\n%{http_code}", url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

/// The value of the sample `series` (name and labels, as written) in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_counts_calls_pulls_containers_cni_and_sessions() {
    let port = e2e::net::free_port();
    let addr = format!("127.0.0.1:{port}");
    let w = World::new(Network::Loopback, &["--metrics-address", &addr]).await;
    let url = format!("http://{addr}/metrics");
    let (pod, ctr) = sleeper(&w, "metrics").await;
    // A pull that fails: the tag is not in the registry.
    let missing = format!("{}-missing", w.image);
    let err = w
        .img
        .clone()
        .pull_image(e2e::crid::pull_request(missing))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // A call that fails.
    let err =
        w.rt.clone()
            .container_status(cri::ContainerStatusRequest {
                container_id: "nope".into(),
                verbose: false,
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // A container the OOM killer ends.
    let config = w.pod_config("metrics", cri::NamespaceMode::Container);
    let oom = w.start(&pod, &config, w.oom_container_config("oom")).await;
    // An exec session, open while the metrics are read.
    let exec = w
        .exec_url(
            &ctr,
            &["/bin/sh", "-c", "echo open; sleep 3"],
            ExecIo::default(),
        )
        .await;
    let session = std::thread::spawn(move || {
        RemoteCommand::open(&exec, "v4.channel.k8s.io", ExecIo::default()).status()
    });
    let read = {
        let url = url.clone();
        move || curl(&url, "GET")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (code, text) = blocking(read.clone()).await;
        assert_eq!(code, "200", "{text}");
        let settled = sample(&text, "crid_containers_oom_total") == Some(1.0)
            && sample(&text, "crid_streaming_sessions_active{kind=\"exec\"}") == Some(1.0);
        if settled {
            break text;
        }
        assert!(Instant::now() < deadline, "never settled: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(w.status(&oom).await.reason, "OOMKilled");
    let at_least = |series: &str, n: f64| {
        let v = sample(&text, series);
        assert!(v.is_some_and(|v| v >= n), "{series} = {v:?} in {text}");
    };
    at_least("crid_operations_total{operation=\"RunPodSandbox\"}", 1.0);
    at_least("crid_operations_total{operation=\"CreateContainer\"}", 2.0);
    at_least(
        "crid_operations_latency_seconds_count{operation=\"StartContainer\"}",
        2.0,
    );
    at_least(
        "crid_operations_errors_total{operation=\"ContainerStatus\",code=\"NotFound\"}",
        1.0,
    );
    at_least(
        "crid_operations_errors_total{operation=\"PullImage\",code=\"NotFound\"}",
        1.0,
    );
    at_least("crid_image_pulls_success_total", 1.0);
    at_least("crid_image_pulls_failure_total{reason=\"not_found\"}", 1.0);
    at_least("crid_image_pulls_bytes_total", 100_000.0);
    at_least("crid_image_pulls_duration_seconds_count", 2.0);
    at_least("crid_containers_created_total", 2.0);
    at_least("crid_containers_started_total", 2.0);
    at_least("crid_containers_exited_total", 1.0);
    at_least(
        "crid_cni_operations_latency_seconds_count{operation=\"ADD\"}",
        1.0,
    );
    at_least("crid_streaming_sessions_total{kind=\"exec\"}", 1.0);
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let status = blocking(move || session.join().unwrap()).await;
    assert_eq!(status, r#"{"status":"Success"}"#);
    w.remove_pod(&pod).await;
    // Its end shows once crid has closed it.
    let text = loop {
        let (_, text) = blocking(read.clone()).await;
        if sample(&text, "crid_streaming_sessions_active{kind=\"exec\"}") == Some(0.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "the session stays open: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        sample(
            &text,
            "crid_cni_operations_latency_seconds_count{operation=\"DEL\"}"
        ) >= Some(1.0)
    );
    // Only /metrics, and only to read it.
    assert_eq!(curl(&format!("http://{addr}/other"), "GET").0, "404");
    assert_eq!(curl(&url, "POST").0, "405");
}
