//! Security settings through crid: host namespaces, devices, seccomp, mount
//! propagation, supplemental groups, recursive read-only mounts and user namespaces.

use e2e::crid::{Network, World};
use e2e::pods::*;
use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode::{Container as OwnPid, Node, Pod as SharedPid};
use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_devices_seccomp_profile_and_mount_propagation() {
    // No CNI config at all: a host-network pod needs none.
    let w = World::new(Network::None, &[]).await;
    let mut config = w.pod_config("hostnet", OwnPid);
    config.hostname = String::new();
    config.dns_config = None;
    if let Some(o) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.network = Node as i32;
        o.ipc = Node as i32;
        o.pid = Node as i32;
    }
    let pod = w
        .run_pod(&config)
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
    assert!(!w
        .crid
        .run_dir
        .join("pods")
        .join(&pod)
        .join("ns/net")
        .exists());

    // A shared mount on the host whose later submounts reach the container.
    let prop = w.tmp.path().join("prop");
    std::fs::create_dir_all(prop.join("sub")).unwrap();
    let mount = |args: &[&str]| on_host("mount", args);
    let prop_s = prop.display().to_string();
    mount(&["--bind", &prop_s, &prop_s]);
    mount(&["--make-shared", &prop_s]);
    let profile = w.tmp.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let mut c = w.container_config(
        "c",
        "hostname; echo x > /dev/mynull && echo device-ok; \
         mkdir /tmp/d 2>/dev/null || echo mkdir-denied; \
         echo ipc $(readlink /proc/self/ns/ipc) pid $(readlink /proc/self/ns/pid); \
         echo ready; exec sleep 1000",
    );
    c.devices = vec![cri::Device {
        container_path: "/dev/mynull".into(),
        host_path: "/dev/null".into(),
        permissions: "rwm".into(),
    }];
    c.mounts = vec![cri::Mount {
        container_path: "/prop".into(),
        host_path: prop_s.clone(),
        propagation: cri::MountPropagation::PropagationHostToContainer as i32,
        ..Default::default()
    }];
    c.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Localhost as i32,
                localhost_ref: profile.display().to_string(),
            }),
            ..Default::default()
        }),
    });
    let id = w.start(&pod, &config, c).await;
    let log = w
        .wait_for_log(&log_of(&w, "hostnet", "c"), "stdout F ready")
        .await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let ns = |kind: &str| {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .unwrap()
            .display()
            .to_string()
    };
    for want in [
        format!("stdout F {}", host.trim()),
        "device-ok".into(),
        "mkdir-denied".into(),
        // Host IPC and PID namespaces, as the pod asked.
        format!("ipc {} pid {}", ns("ipc"), ns("pid")),
    ] {
        assert!(log.contains(&want), "{want:?} in {log}");
    }
    // The container shares the host's network: it sees the host's interfaces.
    let r = w
        .exec(&id, &["/bin/cat", "/proc/net/dev"], 10)
        .await
        .unwrap();
    // Less the veths and bridges that tests running beside this one make and remove.
    let names = |t: &str| -> Vec<String> {
        let mut v: Vec<String> = t
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|s| s.trim().to_string())
            .filter(|n| !n.starts_with("veth") && !n.starts_with("ck"))
            .collect();
        v.sort();
        v
    };
    let host_dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert_eq!(names(&String::from_utf8_lossy(&r.stdout)), names(&host_dev));

    // A mount made on the host after the start reaches the container (rslave).
    mount(&[
        "-t",
        "tmpfs",
        "crikit-test",
        &prop.join("sub").display().to_string(),
    ]);
    std::fs::write(prop.join("sub/late"), "x").unwrap();
    let r = w.exec(&id, &["/bin/ls", "/prop/sub"], 10).await.unwrap();
    assert_eq!(
        r.stdout,
        b"late\n",
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );

    // No seccomp field at all: unconfined, as the CRI defines it (issue 11).
    let bare = w.container_config(
        "bare",
        "grep Seccomp: /proc/self/status; echo ready; exec sleep 1000",
    );
    w.start(&pod, &config, bare).await;
    let log = w
        .wait_for_log(&log_of(&w, "hostnet", "bare"), "stdout F ready")
        .await;
    assert!(log.contains("stdout F Seccomp:\t0"), "{log}");

    // Privileged: every capability the runtime holds (this host withholds
    // CAP_SYS_RESOURCE even from root), not a failure to apply them (issue 11).
    let mut privileged = w.container_config(
        "privileged",
        "grep CapEff: /proc/self/status; echo ready; exec sleep 1000",
    );
    privileged.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
    });
    w.start(&pod, &config, privileged).await;
    let log = w
        .wait_for_log(&log_of(&w, "hostnet", "privileged"), "stdout F ready")
        .await;
    let bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .unwrap();
    assert!(
        log.contains(&format!("stdout F CapEff:\t{bounding}")),
        "{bounding} in {log}"
    );
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supplemental_groups_policy_and_the_user_in_the_status() {
    let w = World::new(Network::Loopback, &[]).await;
    let features =
        w.rt.clone()
            .status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner()
            .features;
    assert_eq!(
        features.map(|f| f.supplemental_groups_policy),
        Some(true),
        "Status says the policy is supported"
    );
    // An image whose /etc/group lists root in a group of its own: an implicit
    // membership, as the CRI's SupplementalGroupsPolicy is about.
    let groups = e2e::image::Layer::new(
        &[
            e2e::image::Entry::Dir("etc".into(), 0o755),
            e2e::image::Entry::File(
                "etc/group".into(),
                b"root:x:0:\nimplicit:x:50000:root\n".to_vec(),
                0o644,
            ),
        ],
        e2e::image::Compression::Gzip,
    );
    let image = e2e::image::Image::new(vec![
        e2e::image::Layer::busybox(e2e::image::Compression::Gzip),
        groups,
    ]);
    let pushed = e2e::image::push(&w.reg.addr, "cri/groups", "1", &image);
    w.img
        .clone()
        .pull_image(e2e::crid::pull_request(pushed.reference.clone()))
        .await
        .unwrap();
    let config = w.pod_config("groups", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    for (name, policy, want) in [
        // Merge: the requested groups and the image's membership of the user.
        (
            "merge",
            cri::SupplementalGroupsPolicy::Merge,
            vec![3000, 50000, 4000],
        ),
        // Strict: the requested ones only.
        (
            "strict",
            cri::SupplementalGroupsPolicy::Strict,
            vec![3000, 4000],
        ),
    ] {
        let mut c = w.container_config(name, "id -G; echo ready; exec sleep 1000");
        c.image = Some(cri::ImageSpec {
            image: pushed.reference.clone(),
            ..Default::default()
        });
        c.linux = Some(cri::LinuxContainerConfig {
            resources: None,
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 0 }),
                run_as_group: Some(cri::Int64Value { value: 3000 }),
                supplemental_groups: vec![4000],
                supplemental_groups_policy: policy as i32,
                ..Default::default()
            }),
        });
        let id = w.start(&pod, &config, c).await;
        let log = w
            .wait_for_log(&log_of(&w, "groups", name), "stdout F ready")
            .await;
        let mut sorted = want.clone();
        sorted.sort();
        let line = sorted
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            log.contains(&format!("stdout F {line}\n")),
            "{name}: {line:?} in {log}"
        );
        let user = w.status(&id).await.user.and_then(|u| u.linux);
        assert_eq!(
            user,
            Some(cri::LinuxContainerUser {
                uid: 0,
                gid: 3000,
                supplemental_groups: want,
            }),
            "{name}"
        );
    }
    w.remove_pod(&pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_read_only_mounts_reach_submounts() {
    let w = World::new(Network::Loopback, &[]).await;
    // A host directory with a tmpfs mounted inside it (TempRoot unmounts it).
    let host = w.tmp.path().join("rro-host");
    std::fs::create_dir_all(host.join("tmpfs")).unwrap();
    let sub = host.join("tmpfs").display().to_string();
    on_host("mount", &["-t", "tmpfs", "rro-test", &sub]);
    let config = w.pod_config("rro", OwnPid);
    let pod = w.run_pod(&config).await.unwrap();
    let mount = |rro: bool, readonly: bool, propagation: cri::MountPropagation| cri::Mount {
        container_path: "/mnt".into(),
        host_path: host.display().to_string(),
        readonly,
        recursive_read_only: rro,
        propagation: propagation as i32,
        ..Default::default()
    };
    let write = "echo x > /mnt/tmpfs/f && echo wrote; echo x > /mnt/top 2>/dev/null || echo top-ro";
    let mut results = vec![];
    for (name, rro) in [("plain", false), ("recursive", true)] {
        let mut c = w.container_config(name, "exec sleep 1000");
        c.mounts = vec![mount(rro, true, cri::MountPropagation::PropagationPrivate)];
        let id = w.start(&pod, &config, c).await;
        let r = w.exec(&id, &["/bin/sh", "-c", write], 10).await.unwrap();
        results.push((
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        ));
        let status = w.status(&id).await;
        assert_eq!(status.mounts[0].recursive_read_only, rro, "{name}");
        // The host keeps no copy of its own once the container has one, and the
        // host path's mountpoints can go while it runs.
        let copies = e2e::mounts_under(&w.crid.run_dir.join("rro"));
        assert_eq!(copies, Vec::<PathBuf>::new(), "{name}");
    }
    // Read-only: the top is; without recursion the tmpfs inside stays writable.
    assert_eq!(results[0].0, "wrote\ntop-ro\n", "{results:?}");
    assert_eq!(results[1].0, "top-ro\n", "{results:?}");
    assert!(
        results[1].1.contains("Read-only file system"),
        "{results:?}"
    );
    // The host path's submount can be taken away while the containers run.
    on_host("umount", &["-l", &sub]);
    std::fs::remove_dir(&sub).expect("no mount of this namespace pins it");
    // What the CRI says cannot go with it.
    for (m, why) in [
        (
            mount(true, false, cri::MountPropagation::PropagationPrivate),
            "needs readonly",
        ),
        (
            mount(
                true,
                true,
                cri::MountPropagation::PropagationHostToContainer,
            ),
            "needs private propagation",
        ),
        (
            mount(true, true, cri::MountPropagation::PropagationBidirectional),
            "needs private propagation",
        ),
    ] {
        let mut c = w.container_config("bad", "true");
        c.mounts = vec![m];
        let e = w.create(&pod, &config, c).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(why), "{e:?}");
    }
    w.remove_pod(&pod).await;
    // The read-only copies went with their container.
    let rro = w.crid.run_dir.join("rro");
    let left = e2e::mounts_under(&rro);
    assert_eq!(
        left,
        Vec::<PathBuf>::new(),
        "no mount left under {}",
        rro.display()
    );
    assert!(std::fs::read_dir(&rro).map(|d| d.count()).unwrap_or(0) == 0);
}

/// A pod's user namespace as kubelet asks for one (`hostUsers: false`).
fn userns_options(host_id: u32, mode: cri::NamespaceMode) -> cri::UserNamespace {
    let map = vec![cri::IdMapping {
        host_id,
        container_id: 0,
        length: 65536,
    }];
    cri::UserNamespace {
        mode: mode as i32,
        uids: map.clone(),
        gids: map,
    }
}

fn with_userns(mut config: cri::PodSandboxConfig, u: cri::UserNamespace) -> cri::PodSandboxConfig {
    if let Some(o) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.userns_options = Some(u);
    }
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_in_a_user_namespace_owns_its_rootfs_and_the_layers_stay_the_hosts() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // The pod shares its PID namespace: its infra process runs in the namespace too.
    let w = World::new(Network::Loopback, &[]).await;
    // Clear of the host's own IDs and of other tests' pods.
    let host_id = 1_000_000 + (std::process::id() % 1000) * 65536;
    let base = w.pod_config("userns", SharedPid);

    // Refused, naming why: another mode, two ranges, a range not from 0, the host's
    // network beside it.
    let mut two = userns_options(host_id, cri::NamespaceMode::Pod);
    two.uids.push(two.uids[0]);
    let mut from_one = userns_options(host_id, cri::NamespaceMode::Pod);
    from_one.gids[0].container_id = 1;
    let mut host_net = with_userns(
        base.clone(),
        userns_options(host_id, cri::NamespaceMode::Pod),
    );
    if let Some(o) = host_net
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.network = Node as i32;
    }
    for (config, want) in [
        (
            with_userns(
                base.clone(),
                userns_options(host_id, cri::NamespaceMode::Target),
            ),
            "mode TARGET",
        ),
        (with_userns(base.clone(), two), "2 uid mappings"),
        (with_userns(base.clone(), from_one), "container ID 1, not 0"),
        (host_net, "host's network"),
    ] {
        let e = w.run_pod(&config).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(want), "{want:?} in {e:?}");
    }

    // A private directory above crid's root: the namespace's root could not reach
    // the rootfs, and crid says so before making anything.
    std::fs::set_permissions(w.tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = with_userns(
        base.clone(),
        userns_options(host_id, cri::NamespaceMode::Pod),
    );
    let e = w.run_pod(&config).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains(&w.tmp.path().display().to_string())
            && e.message().contains("not searchable"),
        "{e:?}"
    );
    std::fs::set_permissions(w.tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();

    let pod = w
        .run_pod(&config)
        .await
        .unwrap_or_else(|e| panic!("{e:?}: {}", w.crid.stderr()));
    let status = w.pod_status(&pod).await;
    let reported = status
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .and_then(|o| o.userns_options)
        .unwrap();
    assert_eq!(reported, userns_options(host_id, cri::NamespaceMode::Pod));

    // A volume as kubelet gives one to such a pod: ID-mapped like the namespace.
    let vol = w.tmp.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("config"), "from the host\n").unwrap();
    std::fs::set_permissions(vol.join("config"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let idmapped_mount = |path: &str| cri::Mount {
        container_path: path.into(),
        host_path: vol.display().to_string(),
        uid_mappings: userns_options(host_id, cri::NamespaceMode::Pod).uids,
        gid_mappings: userns_options(host_id, cri::NamespaceMode::Pod).gids,
        ..Default::default()
    };
    let mut cconfig = w.container_config(
        "main",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c '%u:%g' /bin/busybox /etc; \
         echo made > /etc/made-here && stat -c '%u:%g' /etc/made-here; \
         stat -c '%u:%g' /vol/config; cat /vol/config; echo back > /vol/written; \
         echo more >> /etc/passwd && echo appended; sleep 100",
    );
    cconfig.mounts = vec![idmapped_mount("/vol")];
    cconfig.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                userns_options: Some(userns_options(host_id, cri::NamespaceMode::Pod)),
                ..Default::default()
            }),
            ..Default::default()
        }),
    });
    // A container asking for another user namespace than its pod's is refused.
    let mut other = cconfig.clone();
    other.metadata.as_mut().unwrap().name = "other".into();
    if let Some(o) = other
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.userns_options = Some(userns_options(host_id + 65536, cri::NamespaceMode::Pod));
    }
    let e = w.create(&pod, &config, other).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // So is a mount mapped otherwise than the namespace.
    let mut other_map = cconfig.clone();
    other_map.metadata.as_mut().unwrap().name = "other-map".into();
    other_map.mounts[0].uid_mappings[0].host_id += 1;
    let e = w.create(&pod, &config, other_map).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("mount /vol"), "{e:?}");

    let ctr = w.start(&pod, &config, cconfig).await;
    let log = w
        .wait_for_log(&log_of(&w, "userns", "main"), "appended")
        .await;
    let out: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(" stdout F ").map(|(_, t)| t))
        .collect();
    let map = format!("0 {host_id} 65536");
    let squeeze = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(squeeze(out[0]), map, "{log}");
    assert_eq!(squeeze(out[1]), map, "{log}");
    // Root inside, and the image's files its own: the layers are ID-mapped.
    assert_eq!(&out[2..6], ["0", "0:0", "0:0", "0:0"], "{log}");
    // The volume's root-owned, private file is the namespace root's own, and what it
    // writes there is the host's root's.
    assert_eq!(&out[6..8], ["0:0", "from the host"], "{log}");
    let written = std::fs::metadata(vol.join("written")).unwrap();
    assert_eq!((written.uid(), written.gid()), (0, 0));

    // On the host: what it made belongs to the namespace's root; the shared layer
    // cache still belongs to the host's root.
    let upper = w
        .crid
        .root
        .join("containers")
        .join(&ctr)
        .join("bundle")
        .join("upper");
    let made = std::fs::metadata(upper.join("etc/made-here")).unwrap();
    assert_eq!((made.uid(), made.gid()), (host_id, host_id));
    let passwd = std::fs::metadata(upper.join("etc/passwd")).unwrap();
    assert_eq!(passwd.uid(), host_id, "copied up as the namespace's root");
    let mut layer_files = 0;
    for e in std::fs::read_dir(w.crid.root.join("layers"))
        .unwrap()
        .flatten()
    {
        let busybox = e.path().join("diff/bin/busybox");
        if let Ok(m) = std::fs::metadata(&busybox) {
            assert_eq!((m.uid(), m.gid()), (0, 0), "{}", busybox.display());
            layer_files += 1;
        }
    }
    assert_eq!(layer_files, 1, "one cached layer holds busybox");
    // No ID-mapped copy of a layer outlives the making of the rootfs.
    let idmapped: Vec<_> = e2e::mounts_under(&w.crid.root)
        .into_iter()
        .filter(|m| m.to_string_lossy().contains("idmapped"))
        .collect();
    assert!(idmapped.is_empty(), "{idmapped:?}");

    // Exec joins the same namespace.
    let r = w
        .exec(&ctr, &["/bin/cat", "/proc/self/uid_map"], 10)
        .await
        .unwrap();
    assert_eq!(squeeze(&String::from_utf8_lossy(&r.stdout)), map);

    w.remove_pod(&pod).await;
    let ns_dir = w.crid.run_dir.join("pods").join(&pod).join("ns");
    assert!(!ns_dir.exists(), "the pinned namespaces went with the pod");
    assert!(
        e2e::mounts_under(w.tmp.path()).is_empty(),
        "{:?}",
        e2e::mounts_under(w.tmp.path())
    );
}
