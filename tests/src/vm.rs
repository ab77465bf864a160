//! A test node: the Debian VM `tests/node/build-image.sh` makes (systemd as PID 1,
//! cgroup v2 only), booted under qemu with TCG, since a KVM guest does not boot
//! here. The tests drive it through qemu-guest-agent on a virtio serial port and
//! hand it files in a host directory shared over 9p at /mnt/share. It has no
//! network, or with [`Vm::boot_forwarding`] one restricted to a single host port:
//! qemu's user network reaches nothing else. Each boot writes to an overlay of its
//! own on the cached image; `Drop` kills qemu, and the overlay goes with the test's
//! temp root.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The image script, whose hash names the cached image.
const SCRIPT: &str = include_str!("../node/build-image.sh");

/// How long a boot may take under TCG (about 20 s here) before the test gives up.
const BOOT: Duration = Duration::from_secs(300);

/// Whether qemu, qemu-img, debootstrap and mkfs.ext4 are there to build and boot
/// the node.
pub fn available() -> bool {
    // debootstrap and mkfs.ext4 are in sbin, which a test's PATH may lack.
    let sbin = |t: &str| {
        ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(t).is_file())
    };
    ["qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4"]
        .iter()
        .all(|t| crate::skip::which(t).is_some() || sbin(t))
}

/// The cached image's directory (node.img, vmlinuz, initrd.img), built first if
/// need be; one build at a time on a machine. `CRIKIT_NODE_CACHE` moves the cache
/// from /var/cache/crikit/test-node.
pub fn image() -> PathBuf {
    use sha2::Digest as _;
    let cache = std::env::var_os("CRIKIT_NODE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/crikit/test-node"));
    let hash: String = sha2::Sha256::digest(SCRIPT.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache.join(&hash[..16]);
    std::fs::create_dir_all(&cache).expect("the node image cache");
    let lock = std::fs::File::create(cache.join("build.lock")).expect("the build lock");
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("locking the node image cache");
    if dir.join("node.img").exists() {
        return dir;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("node/build-image.sh");
    let t0 = Instant::now();
    eprintln!("building the test node image in {} (once)", dir.display());
    let out = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("running build-image.sh");
    assert!(
        out.status.success(),
        "build-image.sh failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("test node image built in {:?}", t0.elapsed());
    dir
}

/// Where in the guest [`Vm::boot_forwarding`]'s host port is reached.
pub const FORWARD_ADDR: &str = "10.0.2.100:5000";

/// One forwarded connection: stdin and stdout (qemu's side) to a TCP address.
const RELAY: &str = r#"import os, socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while True:
        b = os.read(0, 65536)
        if not b:
            break
        s.sendall(b)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
out = sys.stdout.buffer
while True:
    b = s.recv(65536)
    if not b:
        break
    out.write(b)
    out.flush()
"#;

/// What a command in the guest did.
#[derive(Debug)]
pub struct Output {
    /// Its exit code (-1 when it was killed by a signal).
    pub code: i64,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// A booted test node.
pub struct Vm {
    child: Child,
    qga: PathBuf,
    console: PathBuf,
    /// The host's side of /mnt/share.
    pub share: PathBuf,
    /// How long the boot took, to the guest agent's first answer.
    pub booted_in: Duration,
}

impl Vm {
    /// Boots the node with its files under `dir` (overlay, sockets, console log,
    /// the share) and waits for its guest agent; /mnt/share is mounted.
    pub fn boot(dir: &Path) -> Vm {
        Vm::start(dir, None)
    }

    /// [`Vm::boot`] with one way out: connections the guest makes to
    /// [`FORWARD_ADDR`] go to `host` (`HOST:PORT`, on the host's loopback), each
    /// through a relay process of its own; nothing else leaves the guest.
    pub fn boot_forwarding(dir: &Path, host: &str) -> Vm {
        let (h, port) = host.rsplit_once(':').expect("HOST:PORT");
        let relay = dir.join("relay.py");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&relay, RELAY).unwrap();
        let nic = format!(
            "user,model=virtio-net-pci,restrict=on,net=10.0.2.0/24,\
             guestfwd=tcp:{FORWARD_ADDR}-cmd:python3 {} {h} {port}",
            relay.display()
        );
        let vm = Vm::start(dir, Some(&nic));
        vm.ok(
            "set -e; dev=$(ls /sys/class/net | grep -v -e '^lo$' | head -1); \
             ip link set \"$dev\" up; ip addr add 10.0.2.15/24 dev \"$dev\"",
        );
        vm
    }

    fn start(dir: &Path, nic: Option<&str>) -> Vm {
        let image = image();
        std::fs::create_dir_all(dir).unwrap();
        let overlay = dir.join("node.qcow2");
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(image.join("node.img"))
            .arg(&overlay)
            .status()
            .expect("qemu-img");
        assert!(made.success(), "qemu-img create: {made}");
        let share = dir.join("share");
        std::fs::create_dir_all(&share).unwrap();
        let qga = dir.join("qga.sock");
        let console = dir.join("console.log");
        let log = std::fs::File::create(dir.join("qemu.log")).unwrap();
        let mut qemu = Command::new("qemu-system-x86_64");
        // A test killed outright (a timeout) takes its VM with it; `Drop` does the rest.
        let test = nix::unistd::getpid();
        // SAFETY: the hook makes two system calls and touches no memory of the parent's.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            qemu.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                if nix::unistd::getppid() != test {
                    return Err(std::io::Error::other("the test has exited"));
                }
                Ok(())
            });
        }
        let child = qemu
            .args([
                "-machine",
                "q35,accel=tcg",
                "-cpu",
                "max",
                "-m",
                "2048",
                "-smp",
                "2",
            ])
            .arg("-kernel")
            .arg(image.join("vmlinuz"))
            .arg("-initrd")
            .arg(image.join("initrd.img"))
            .args(["-append", "root=/dev/vda rw console=ttyS0 panic=-1"])
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-nic")
            .arg(nic.unwrap_or("none"))
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-chardev")
            .arg(format!(
                "socket,path={},server=on,wait=off,id=qga0",
                qga.display()
            ))
            .args(["-device", "virtio-serial"])
            .args([
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ])
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=share,security_model=none,id=share",
                share.display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting qemu-system-x86_64");
        let mut vm = Vm {
            child,
            qga,
            console,
            share,
            booted_in: Duration::ZERO,
        };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = vm.child.try_wait() {
                panic!(
                    "qemu exited with {status}: {}{}",
                    std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default(),
                    vm.console_tail()
                );
            }
            if vm
                .call(r#"{"execute":"guest-ping"}"#, Duration::from_secs(2))
                .is_ok()
            {
                break;
            }
            assert!(
                t0.elapsed() < BOOT,
                "the node did not boot in {BOOT:?}{}",
                vm.console_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        vm.booted_in = t0.elapsed();
        vm.ok("mount -t 9p -o trans=virtio,version=9p2000.L share /mnt/share");
        vm
    }

    /// The last lines the guest's kernel and systemd wrote on the console.
    pub fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "\n--- the node's console, last lines:\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    /// One guest agent request and its answer's `return`.
    fn call(&self, request: &str, timeout: Duration) -> Result<serde_json::Value, String> {
        let mut s = UnixStream::connect(&self.qga).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.write_all(format!("{request}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(&s)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"))?;
        match v.get("return") {
            Some(r) => Ok(r.clone()),
            None => Err(format!("the guest agent answered {line}")),
        }
    }

    /// Runs `cmd` with /bin/sh in the guest, as root, and waits for it (at most 5
    /// minutes).
    pub fn sh(&self, cmd: &str) -> Output {
        let request = serde_json::json!({
            "execute": "guest-exec",
            "arguments": {"path": "/bin/sh", "arg": ["-c", cmd], "capture-output": true},
        });
        let started = self
            .call(&request.to_string(), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("guest-exec {cmd:?}: {e}{}", self.console_tail()));
        let pid = started["pid"].as_i64().expect("guest-exec's pid");
        let t0 = Instant::now();
        loop {
            let status = self
                .call(
                    &format!(r#"{{"execute":"guest-exec-status","arguments":{{"pid":{pid}}}}}"#),
                    Duration::from_secs(30),
                )
                .unwrap_or_else(|e| {
                    panic!("guest-exec-status {cmd:?}: {e}{}", self.console_tail())
                });
            if status["exited"] == true {
                let text = |k: &str| {
                    use base64::Engine as _;
                    let b = status[k].as_str().unwrap_or_default();
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .unwrap_or_default();
                    String::from_utf8_lossy(&raw).into_owned()
                };
                return Output {
                    code: status["exitcode"].as_i64().unwrap_or(-1),
                    stdout: text("out-data"),
                    stderr: text("err-data"),
                };
            }
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "{cmd:?} still running in the node after 5 minutes"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `cmd` in the guest and asserts that it succeeds; its stdout.
    pub fn ok(&self, cmd: &str) -> String {
        let out = self.sh(cmd);
        assert_eq!(
            out.code, 0,
            "in the node: {cmd}\nstdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// Waits until `cmd` succeeds in the guest (at most `limit`); its stdout.
    pub fn until_ok(&self, limit: Duration, cmd: &str) -> String {
        let t0 = Instant::now();
        loop {
            let out = self.sh(cmd);
            if out.code == 0 {
                return out.stdout;
            }
            assert!(
                t0.elapsed() < limit,
                "in the node, still failing after {limit:?}: {cmd}\nstdout: {}\nstderr: {}",
                out.stdout,
                out.stderr
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
