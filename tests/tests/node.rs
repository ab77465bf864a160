//! crid on a node like kubelet's: a Debian VM (tests/src/vm.rs) with systemd as PID
//! 1 and cgroup v2 alone, crid started by its own unit (bins/crid/dist), pods and
//! containers through crictl with the systemd cgroup manager (under crun and runc)
//! and with cgroupfs: where the containers, their monitors and the pod's infra
//! process are, the pod's slice and its limits, resources, OOM kills, a crid
//! restarted by systemd.
//! Runs when qemu (with qemu-img, debootstrap, mkfs.ext4) and crictl are there;
//! `make test-node` runs it alone.

use e2e::vm::Vm;
use e2e::{bin, run, Image, Registry, TempRoot};
use std::path::Path;
use std::time::{Duration, Instant};

/// The pod's cgroup parent as kubelet's driver of that name sends it: under
/// systemd the slice's whole path, of which a runtime takes the last.
fn pod_parent(manager: &str, uid: &str) -> String {
    match manager {
        "systemd" => {
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice")
        }
        _ => format!("/kubepods/burstable/pod{uid}"),
    }
}

/// The pod's slice: the last of the path kubelet sends.
fn slice_of(parent: &str) -> &str {
    parent.rsplit('/').next().unwrap_or(parent)
}

/// Where the pod's cgroup is, from the cgroup root: a slice laid out by its name.
fn pod_cgroup(manager: &str, parent: &str) -> String {
    match manager {
        "systemd" => {
            let stem = slice_of(parent).trim_end_matches(".slice");
            let mut path = String::new();
            let mut prefix = String::new();
            for part in stem.split('-') {
                if !prefix.is_empty() {
                    prefix.push('-');
                }
                prefix.push_str(part);
                path.push_str(&format!("/{prefix}.slice"));
            }
            path
        }
        _ => parent.to_string(),
    }
}

/// Where a container's cgroup is, from the cgroup root.
fn container_cgroup(manager: &str, parent: &str, id: &str) -> String {
    let pod = pod_cgroup(manager, parent);
    match manager {
        "systemd" => format!("{pod}/crikit-{id}.scope"),
        _ => format!("{pod}/crikit-{id}"),
    }
}

/// Where the monitor of container (or pod) `id` is, from the cgroup root: a scope
/// of its own under systemd, as conmon's.
fn monitor_cgroup(manager: &str, parent: &str, id: &str) -> String {
    let pod = pod_cgroup(manager, parent);
    match manager {
        "systemd" => format!("{pod}/crikit-ctrmon-{id}.scope"),
        _ => format!("{pod}/ctrmon-{id}"),
    }
}

/// `cmd` in the node, which must succeed; on failure, crid's journal too.
fn ok(vm: &Vm, cmd: &str) -> String {
    let out = vm.sh(cmd);
    if out.code != 0 {
        let journal = vm
            .sh("journalctl -u crid --no-pager | grep -v Connection | tail -30")
            .stdout;
        panic!(
            "in the node: {cmd}\nstdout: {}\nstderr: {}\n--- crid's journal:\n{journal}",
            out.stdout, out.stderr
        );
    }
    out.stdout
}

fn json(v: serde_json::Value) -> String {
    v.to_string().replace('\'', "'\\''")
}

/// The busybox image in an image store of its own, for the node to copy in.
fn stage(share: &Path, reference: &str, registry: &str) {
    let bins = share.join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    for b in ["crid", "ctrmon"] {
        std::fs::copy(bin(b), bins.join(b)).unwrap();
    }
    let crictl = e2e::skip::find("CRICTL", "crictl").unwrap();
    std::fs::copy(crictl, bins.join("crictl")).unwrap();
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bins/crid/dist");
    for f in ["crid.service", "crictl.yaml"] {
        std::fs::copy(dist.join(f), share.join(f)).unwrap();
    }
    let mut c = std::process::Command::new(bin("imgpull"));
    c.arg("--root")
        .arg(share.join("store"))
        .args(["--insecure-registry", registry, reference]);
    run(c, Duration::from_secs(120)).ok();
}

#[test]
fn a_systemd_node_runs_crid_as_a_unit_under_both_cgroup_managers() {
    if !e2e::skip::require(
        "qemu",
        e2e::vm::available(),
        "qemu-system-x86_64, qemu-img, debootstrap or mkfs.ext4 is missing (make deps)",
    ) {
        return;
    }
    if !e2e::skip::require(
        "crictl",
        e2e::skip::find("CRICTL", "crictl").is_some(),
        "it is not found (CRICTL or PATH)",
    ) {
        return;
    }
    let t0 = Instant::now();
    let reg = Registry::start();
    let image = reg.push("cri/busybox", &Image::busybox()).reference;
    let tmp = TempRoot::new();
    let share = tmp.path().join("vm").join("share");
    std::fs::create_dir_all(&share).unwrap();
    stage(&share, &image, &reg.addr);
    let vm = Vm::boot(&tmp.path().join("vm"));
    eprintln!("the node booted in {:?}", vm.booted_in);

    // What `make install` does, and a CNI bridge of the node's own.
    ok(
        &vm,
        r#"set -e
        install -m755 /mnt/share/bin/crid /mnt/share/bin/ctrmon /mnt/share/bin/crictl /usr/local/bin/
        sed 's|@PREFIX@|/usr/local|g' /mnt/share/crid.service > /etc/systemd/system/crid.service
        cp /mnt/share/crictl.yaml /etc/crictl.yaml
        mkdir -p /etc/crikit /etc/cni/net.d /var/lib/crikit
        cp -a /mnt/share/store/. /var/lib/crikit/
        cat > /etc/cni/net.d/10-node.conflist <<'EOF'
{"cniVersion": "1.0.0", "name": "node", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
        test "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs
        test "$(ps -o comm= -p 1)" = systemd"#,
    );

    // systemd's cgroups with both runtimes (crun keeps a scope's processes in a
    // `container` cgroup below it, runc in the scope), and cgroupfs.
    for (manager, handler) in [
        ("systemd", "crun"),
        ("systemd", "runc"),
        ("cgroupfs", "crun"),
    ] {
        eprintln!("{manager}, {handler}: {:?} in", t0.elapsed());
        ok(
            &vm,
            &format!(
                "set -e; printf 'cgroup-manager = \"{manager}\"\\n' > /etc/crikit/crid.toml
             systemctl daemon-reload; systemctl enable crid 2>/dev/null
             systemctl restart crid || {{ journalctl -u crid --no-pager | tail -20 >&2; exit 1; }}"
            ),
        );
        // Type=notify: active only once crid said READY=1.
        assert_eq!(ok(&vm, "systemctl is-active crid").trim(), "active");
        let info: serde_json::Value = serde_json::from_str(&ok(&vm, "crictl info")).unwrap();
        assert_eq!(
            info["config"]["config"]["cgroup_manager"], manager,
            "{info}"
        );

        let uid = format!("node{manager}{handler}");
        let parent = pod_parent(manager, &uid);
        // The pod's resources and overhead, as kubelet sums them; its PID namespace
        // shared, so that crid runs an infra process for it.
        let pod = json(serde_json::json!({
            "metadata": {"name": format!("web-{manager}"), "namespace": "default", "uid": uid},
            "log_directory": format!("/var/log/pods/{uid}"),
            "linux": {
                "cgroup_parent": parent,
                "resources": {"cpu_period": 100000, "cpu_quota": 30000, "cpu_shares": 307,
                              "memory_limit_in_bytes": 268435456},
                "overhead": {"cpu_period": 100000, "cpu_quota": 5000, "cpu_shares": 51,
                             "memory_limit_in_bytes": 16777216},
                "security_context": {"namespace_options": {"pid": 0}}
            }
        }));
        // A busy loop held to a fifth of a CPU, with a memory limit.
        let busy = json(serde_json::json!({
            "metadata": {"name": "busy"},
            "image": {"image": image},
            "command": ["/bin/sh", "-c", "while :; do :; done"],
            "log_path": "busy.log",
            "linux": {"resources": {
                "cpu_period": 100000, "cpu_quota": 20000, "cpu_shares": 204,
                "memory_limit_in_bytes": 67108864
            }}
        }));
        let pod_id = vm
            .ok(&format!(
                "echo '{pod}' > /tmp/pod.json; crictl runp --runtime {handler} /tmp/pod.json"
            ))
            .trim()
            .to_string();
        let busy_id = vm
            .ok(&format!(
                "echo '{busy}' > /tmp/busy.json; crictl create {pod_id} /tmp/busy.json /tmp/pod.json"
            ))
            .trim()
            .to_string();
        ok(&vm, &format!("crictl start {busy_id}"));
        // The container's cgroup is where the manager puts it; crun puts the
        // processes of a systemd scope in a `container` cgroup below it.
        let unit = container_cgroup(manager, &parent, &busy_id);
        let pid = ok(
            &vm,
            &format!("crictl inspect -o go-template --template '{{{{.info.pid}}}}' {busy_id}"),
        );
        let own = ok(
            &vm,
            &format!("sed -n 's/^0:://p' /proc/{}/cgroup", pid.trim()),
        );
        let own = own.trim();
        assert!(
            own == unit || own == format!("{unit}/container"),
            "{manager}, {handler}: in {own}, not {unit}"
        );
        let cg = format!("/sys/fs/cgroup{own}");
        // An overlay rootfs, though nothing had mounted one since boot (Debian's
        // overlay module loads on the first mount).
        let fstype = ok(
            &vm,
            &format!("findmnt -n -o FSTYPE /var/lib/crikit/containers/{busy_id}/bundle/rootfs"),
        );
        assert_eq!(fstype.trim(), "overlay", "{manager}, {handler}: the rootfs");
        // No oom_score_adj asked: 0, not crid's own -999 from its unit.
        let adj = ok(&vm, &format!("cat /proc/{}/oom_score_adj", pid.trim()));
        assert_eq!(
            adj.trim(),
            "0",
            "{manager}, {handler}: the container's oom_score_adj"
        );
        assert_eq!(ok(&vm, &format!("cat {cg}/memory.max")).trim(), "67108864");
        assert_eq!(ok(&vm, &format!("cat {cg}/cpu.max")).trim(), "20000 100000");
        // The container's monitor and the pod's infra process in cgroups of their
        // own in the pod's: scopes under systemd, made over D-Bus.
        let monitor_pid = ok(&vm, &format!("cat /run/crikit/ctrmon/{busy_id}/ctrmon.pid"));
        let infra_pid = ok(&vm, &format!("cat /run/crikit/pods/{pod_id}/infra.pid"));
        for (what, pid, id) in [
            ("monitor", monitor_pid.trim(), &busy_id),
            ("infra process", infra_pid.trim(), &pod_id),
        ] {
            let want = monitor_cgroup(manager, &parent, id);
            let now = ok(&vm, &format!("sed -n 's/^0:://p' /proc/{pid}/cgroup"));
            assert_eq!(now.trim(), want, "{manager}, {handler}: the {what} {pid}");
        }
        if manager == "systemd" {
            // systemd's own view: the scopes, active, in the pod's slice.
            let status = ok(
                &vm,
                &format!("systemctl status --no-pager {} || true", slice_of(&parent)),
            );
            for scope in [
                format!("crikit-{busy_id}.scope"),
                format!("crikit-ctrmon-{busy_id}.scope"),
                format!("crikit-ctrmon-{pod_id}.scope"),
            ] {
                assert_eq!(
                    ok(&vm, &format!("systemctl is-active {scope}")).trim(),
                    "active",
                    "{manager}, {handler}: {scope}"
                );
                assert!(status.contains(&scope), "{scope} not in {status}");
            }
            // No kubelet made the pod's slice: crid did, limited to the pod's
            // resources plus its overhead.
            let slice = format!("/sys/fs/cgroup{}", pod_cgroup(manager, &parent));
            assert_eq!(
                ok(&vm, &format!("cat {slice}/memory.max")).trim(),
                (268435456 + 16777216).to_string(),
                "{manager}, {handler}: the pod's slice"
            );
            assert_eq!(
                ok(&vm, &format!("cat {slice}/cpu.max")).trim(),
                "35000 100000",
                "{manager}, {handler}: the pod's slice"
            );
        }
        // The quota takes effect: throttled, and well under one CPU.
        let usage = |cg: &str| -> (u64, u64) {
            let stat = ok(&vm, &format!("cat {cg}/cpu.stat"));
            let field = |k: &str| {
                stat.lines()
                    .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
                    .unwrap_or(0)
            };
            (field("usage_usec "), field("nr_throttled "))
        };
        let (u0, _) = usage(&cg);
        ok(&vm, "sleep 3");
        let (u1, throttled) = usage(&cg);
        assert!(throttled > 0, "{manager}, {handler}: never throttled");
        assert!(
            u1 - u0 < 2_000_000,
            "{manager}, {handler}: {} ms of CPU in 3 s at a fifth of a CPU",
            (u1 - u0) / 1000
        );
        // Stats with values, as kubelet reads them.
        let stats: serde_json::Value =
            serde_json::from_str(&ok(&vm, &format!("crictl stats -o json {busy_id}"))).unwrap();
        let s = &stats["stats"][0];
        let cpu: u64 = s["cpu"]["usageCoreNanoSeconds"]["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(cpu > 0, "{manager}, {handler}: {stats}");
        // The pod's stats (its slice, or its cgroupfs parent) and the cAdvisor
        // metrics kubelet's CRI stats provider reads, with values.
        let statsp: serde_json::Value =
            serde_json::from_str(&ok(&vm, &format!("crictl statsp -o json --id {pod_id}")))
                .unwrap();
        let pod_mem: u64 = statsp["stats"][0]["linux"]["memory"]["workingSetBytes"]["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(pod_mem > 0, "{manager}, {handler}: {statsp}");
        let metrics: serde_json::Value =
            serde_json::from_str(&ok(&vm, "crictl metricsp -o json")).unwrap();
        let busy_cpu = metrics["podMetrics"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["containerMetrics"].as_array().into_iter().flatten())
            .filter(|c| c["containerId"] == busy_id.as_str())
            .flat_map(|c| c["metrics"].as_array().into_iter().flatten())
            .find(|m| m["name"] == "container_cpu_usage_seconds_total")
            .and_then(|m| m["value"]["value"].as_str()?.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(busy_cpu > 0, "{manager}, {handler}: {metrics}");
        // UpdateContainerResources lands in the same cgroup.
        ok(
            &vm,
            &format!("crictl update --memory 134217728 --cpu-quota 30000 {busy_id}"),
        );
        assert_eq!(ok(&vm, &format!("cat {cg}/memory.max")).trim(), "134217728");
        assert_eq!(ok(&vm, &format!("cat {cg}/cpu.max")).trim(), "30000 100000");

        // A container over its memory limit is OOMKilled.
        let hog = json(serde_json::json!({
            "metadata": {"name": "hog"},
            "image": {"image": image},
            "command": ["/bin/sh", "-c", "tail /dev/zero"],
            "log_path": "hog.log",
            "linux": {"resources": {"memory_limit_in_bytes": 33554432}}
        }));
        let hog_id = vm
            .ok(&format!(
                "echo '{hog}' > /tmp/hog.json; crictl create {pod_id} /tmp/hog.json /tmp/pod.json"
            ))
            .trim()
            .to_string();
        ok(&vm, &format!("crictl start {hog_id}"));
        vm.until_ok(
            Duration::from_secs(120),
            &format!("crictl inspect -o go-template --template '{{{{.status.state}}}}' {hog_id} | grep -q EXITED"),
        );
        let reason = ok(
            &vm,
            &format!("crictl inspect -o go-template --template '{{{{.status.reason}}}}' {hog_id}"),
        );
        if reason.trim() != "OOMKilled" {
            let why = vm.sh(&format!(
                "crictl inspect {hog_id} | head -40; cat /run/crikit/ctrmon/{hog_id}/ctrmon.log; \
                 cat /var/log/pods/{uid}/hog.log | tail -5; journalctl -k --no-pager | tail -15"
            ));
            panic!(
                "{manager}, {handler}: the hog ended {reason:?}, not OOMKilled\n{}{}",
                why.stdout, why.stderr
            );
        }

        // crid killed: systemd starts it again, and it adopts what runs.
        let restarts = |vm: &Vm| -> u32 {
            ok(vm, "systemctl show -p NRestarts --value crid")
                .trim()
                .parse()
                .unwrap()
        };
        let before = restarts(&vm);
        // crid alone, as a crash would end it: not the monitors left in its cgroup.
        ok(&vm, "kill -KILL $(systemctl show -p MainPID --value crid)");
        vm.until_ok(
            Duration::from_secs(60),
            &format!("test \"$(systemctl show -p NRestarts --value crid)\" -gt {before} && systemctl is-active crid"),
        );
        let state = ok(
            &vm,
            &format!("crictl inspect -o go-template --template '{{{{.status.state}}}}' {busy_id}"),
        );
        assert_eq!(
            state.trim(),
            "CONTAINER_RUNNING",
            "{manager}, {handler}: after the restart"
        );
        let pods = ok(&vm, &format!("crictl pods -q --state ready --id {pod_id}"));
        assert_eq!(
            pods.trim(),
            pod_id,
            "{manager}, {handler}: the pod after the restart"
        );
        assert_eq!(ok(&vm, &format!("cat {cg}/cpu.max")).trim(), "30000 100000");

        // A second pod in the same slice: the slice crid made stays while any of
        // its pods does.
        let other = json(serde_json::json!({
            "metadata": {"name": format!("other-{manager}"), "namespace": "default",
                         "uid": format!("{uid}-2")},
            "linux": {"cgroup_parent": parent}
        }));
        let other_id = vm
            .ok(&format!(
                "echo '{other}' > /tmp/other.json; crictl runp --runtime {handler} /tmp/other.json"
            ))
            .trim()
            .to_string();
        // Gone with the pod.
        ok(
            &vm,
            &format!("crictl stopp {pod_id} && crictl rmp {pod_id}"),
        );
        if manager == "systemd" {
            let slice = slice_of(&parent);
            assert_eq!(
                ok(&vm, &format!("systemctl is-active {slice}")).trim(),
                "active",
                "{manager}, {handler}: the slice while another pod is in it"
            );
            assert_eq!(
                ok(
                    &vm,
                    &format!("systemctl is-active crikit-ctrmon-{other_id}.scope")
                )
                .trim(),
                "active",
                "{manager}, {handler}: the other pod's infra process"
            );
        }
        ok(
            &vm,
            &format!("crictl stopp {other_id} && crictl rmp {other_id}"),
        );
        vm.until_ok(
            Duration::from_secs(30),
            &format!("! test -e /sys/fs/cgroup{unit}"),
        );
        if manager == "systemd" {
            for unit in [
                format!("crikit-{busy_id}.scope"),
                format!("crikit-ctrmon-{busy_id}.scope"),
                format!("crikit-ctrmon-{pod_id}.scope"),
                slice_of(&parent).to_string(),
            ] {
                let gone = vm.sh(&format!("systemctl is-active {unit}"));
                assert_ne!(
                    gone.stdout.trim(),
                    "active",
                    "{manager}, {handler}: {unit} after rmp"
                );
            }
        }
        for id in [&busy_id, &pod_id] {
            let dir = monitor_cgroup(manager, &parent, id);
            vm.until_ok(
                Duration::from_secs(30),
                &format!("! test -e /sys/fs/cgroup{dir}"),
            );
        }
    }
    eprintln!("the node suite took {:?}", t0.elapsed());
}

/// critest's specs whose full text holds one of tests/cri/known-failures.txt's lines.
fn known_failures() -> Vec<String> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("cri/known-failures.txt");
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Each spec of a ginkgo JSON report, as `(state, full text, failure message)`.
fn specs(report: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out = vec![];
    for suite in report.as_array().into_iter().flatten() {
        for spec in suite["SpecReports"].as_array().into_iter().flatten() {
            if spec["LeafNodeType"] != "It" {
                continue;
            }
            let mut text: Vec<String> = spec["ContainerHierarchyTexts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(String::from))
                .collect();
            text.push(spec["LeafNodeText"].as_str().unwrap_or_default().into());
            let state = spec["State"].as_str().unwrap_or_default().to_string();
            let why = spec["Failure"]["Message"].as_str().unwrap_or_default();
            let why: String = why.chars().take(400).collect();
            out.push((state, text.join(" "), why.replace('\n', " ")));
        }
    }
    out
}

/// The node's CNI network: a bridge with masquerading and host ports.
const NODE_CNI: &str = r#"{"cniVersion": "1.0.0", "name": "node", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
  {"type": "loopback"}]}"#;

#[test]
fn critest_passes_on_the_systemd_node() {
    if !e2e::skip::require(
        "qemu",
        e2e::vm::available(),
        "qemu-system-x86_64, qemu-img, debootstrap or mkfs.ext4 is missing (make deps)",
    ) {
        return;
    }
    let Some(critest) = e2e::skip::find("CRITEST", "critest") else {
        e2e::skip::require("critest", false, "it is not found (CRITEST or PATH)");
        return;
    };
    // The node's one forwarded port goes through a relay in Python.
    if !e2e::skip::require(
        "qemu",
        e2e::skip::which("python3").is_some(),
        "python3, which relays the node's forwarded port, is missing",
    ) {
        return;
    }
    let mirror = std::env::var("CRI_MIRROR").unwrap_or_default();
    if !e2e::skip::require(
        "cri-mirror",
        !mirror.is_empty(),
        "CRI_MIRROR names no registry with critest's images (make test-node-cri)",
    ) {
        return;
    }
    let t0 = Instant::now();
    let tmp = TempRoot::new();
    let dir = tmp.path().join("vm");
    let share = dir.join("share");
    let bins = share.join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    for b in ["crid", "ctrmon"] {
        std::fs::copy(bin(b), bins.join(b)).unwrap();
    }
    std::fs::copy(&critest, bins.join("critest")).unwrap();
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bins/crid/dist");
    std::fs::copy(dist.join("crid.service"), share.join("crid.service")).unwrap();
    std::fs::write(share.join("10-node.conflist"), NODE_CNI).unwrap();
    let vm = Vm::boot_forwarding(&dir, &mirror);
    eprintln!("the node booted in {:?}", vm.booted_in);

    // crid from its unit with the systemd cgroup manager (the default there), the
    // registries critest pulls from sent to the host's mirror, a CNI bridge.
    let mirror_in = e2e::vm::FORWARD_ADDR;
    ok(
        &vm,
        &format!(
            r#"set -e
        install -m755 /mnt/share/bin/crid /mnt/share/bin/ctrmon /mnt/share/bin/critest /usr/local/bin/
        sed 's|@PREFIX@|/usr/local|g' /mnt/share/crid.service > /etc/systemd/system/crid.service
        mkdir -p /etc/containers /etc/cni/net.d
        for p in registry.k8s.io k8s.gcr.io gcr.io; do
          printf '[[registry]]\nprefix = "%s"\nlocation = "%s"\ninsecure = true\n' "$p" "{mirror_in}"
        done > /etc/containers/registries.conf
        cp /mnt/share/10-node.conflist /etc/cni/net.d/
        systemctl daemon-reload
        systemctl start crid || {{ journalctl -u crid --no-pager | tail -20 >&2; exit 1; }}
        test "$(systemctl is-active crid)" = active"#
        ),
    );
    // critest outlives a guest command's limit: it runs in the background and
    // leaves its exit status beside its report on the share.
    // CRITEST_ARGS adds flags (a -ginkgo.focus or -ginkgo.skip to run fewer specs).
    let extra = std::env::var("CRITEST_ARGS").unwrap_or_default();
    std::fs::write(share.join("critest.args"), &extra).unwrap();
    ok(
        &vm,
        "cd /root && (critest --runtime-endpoint unix:///run/crikit/crid.sock \
           --image-endpoint unix:///run/crikit/crid.sock --ginkgo.no-color \
           --ginkgo.json-report=/mnt/share/report.json $(cat /mnt/share/critest.args) \
           > /mnt/share/critest.log 2>&1; \
           echo $? > /mnt/share/critest.done) > /dev/null 2>&1 &",
    );
    let limit = Duration::from_secs(60 * 60);
    let started = Instant::now();
    while !share.join("critest.done").exists() {
        assert!(
            started.elapsed() < limit,
            "critest still running in the node after {limit:?}"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    eprintln!("critest ran in the node in {:?}", started.elapsed());
    let report: serde_json::Value = match std::fs::read(share.join("report.json")) {
        Ok(b) => serde_json::from_slice(&b).unwrap(),
        Err(e) => panic!(
            "critest wrote no report ({e}): {}",
            std::fs::read_to_string(share.join("critest.log")).unwrap_or_default()
        ),
    };
    let specs = specs(&report);
    let mut slowest: Vec<(f64, String)> = vec![];
    for suite in report.as_array().into_iter().flatten() {
        for spec in suite["SpecReports"].as_array().into_iter().flatten() {
            let secs = spec["RunTime"].as_f64().unwrap_or(0.0) / 1e9;
            let text = spec["LeafNodeText"].as_str().unwrap_or_default();
            slowest.push((secs, text.to_string()));
        }
    }
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    eprintln!("the slowest specs:");
    for (secs, text) in slowest.iter().take(10) {
        eprintln!("  {secs:6.1} s  {text}");
    }
    let count = |s: &str| specs.iter().filter(|(state, _, _)| state == s).count();
    let failed: Vec<(&String, &String)> = specs
        .iter()
        .filter(|(s, _, _)| !matches!(s.as_str(), "passed" | "skipped" | "pending"))
        .map(|(_, t, why)| (t, why))
        .collect();
    eprintln!(
        "critest on the node (systemd, cgroup v2, crun): {} passed, {} failed, {} skipped",
        count("passed"),
        failed.len(),
        count("skipped")
    );
    let known = known_failures();
    let unknown: Vec<String> = failed
        .iter()
        .filter(|(t, _)| !known.iter().any(|k| t.contains(k.as_str())))
        .map(|(t, why)| format!("{t}: {why}"))
        .collect();
    for (t, _) in &failed {
        eprintln!("  failed: {t}");
    }
    assert!(count("passed") > 0, "critest passed nothing: {report}");
    if !unknown.is_empty() {
        let journal = vm
            .sh("journalctl -u crid --no-pager | grep -v Connection | tail -40")
            .stdout;
        panic!(
            "critest on the node: {} failure(s) not in tests/cri/known-failures.txt: {unknown:#?}\n\
             --- crid's journal:\n{journal}",
            unknown.len()
        );
    }
    eprintln!("the node's critest took {:?} in all", t0.elapsed());
}
