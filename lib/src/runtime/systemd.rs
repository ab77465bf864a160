//! The systemd manager over D-Bus, for the systemd cgroup manager: a process moved
//! into a transient scope of its own (the monitor's `crikit-ctrmon-ID.scope`, as
//! CRI-O puts conmon in `crio-conmon-ID.scope`), and a pod's slice made with its
//! limits when nobody made it before. The runtime (run with `--systemd-cgroup`)
//! makes the containers' scopes itself.
//!
//! Units are asked for on the system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else
//! `/run/dbus/system_bus_socket`), where runc and crun ask too.

use std::path::Path;
use std::time::Duration;
pub use zbus::zvariant::Value;

/// The system bus's socket when `DBUS_SYSTEM_BUS_ADDRESS` names none.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// How long a unit's start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong with a request to systemd.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// The system bus could not be reached.
    #[error("connecting to the system bus: {0}")]
    Connect(#[source] Box<zbus::Error>),
    /// systemd refused or failed a request about `unit`.
    #[error("systemd: {action} {unit}: {source}")]
    Call {
        /// What was asked (`starting`, `stopping`).
        action: &'static str,
        /// The unit.
        unit: String,
        /// systemd's answer.
        #[source]
        source: Box<zbus::Error>,
    },
    /// The unit was asked for but the process did not arrive in it in time.
    #[error("systemd: process {pid} is not in {unit} after {secs} s (its cgroup: {cgroup})")]
    NotMoved {
        /// The process.
        pid: u32,
        /// The scope.
        unit: String,
        /// How long it was waited for.
        secs: u64,
        /// Where the process is instead.
        cgroup: String,
    },
    /// No async runtime could be made for a blocking caller.
    #[error("systemd: starting an event loop: {0}")]
    Runtime(#[source] std::io::Error),
}

impl SystemdError {
    /// Whether systemd refused a start because the unit is loaded already.
    pub fn unit_exists(&self) -> bool {
        matches!(self, SystemdError::Call { source, .. }
            if matches!(&**source, zbus::Error::MethodError(name, _, _)
                if name.as_str() == "org.freedesktop.systemd1.UnitExists"))
    }
}

/// Whether the system bus looks reachable: the socket `DBUS_SYSTEM_BUS_ADDRESS` or
/// the default names exists. A cheap check for a daemon's start; the real answer
/// is a connection.
pub fn system_bus_present() -> Result<(), String> {
    let addr = std::env::var("DBUS_SYSTEM_BUS_ADDRESS").ok();
    match bus_socket(addr.as_deref()) {
        Some(path) if !Path::new(&path).exists() => Err(format!(
            "the system bus socket {path} does not exist (is dbus running?)"
        )),
        _ => Ok(()),
    }
}

/// The socket path a D-Bus address names (`unix:path=P[,...]`, the first of a
/// `;` list that has one), the default when there is no address; None for another
/// transport.
fn bus_socket(addr: Option<&str>) -> Option<String> {
    match addr {
        None => Some(SYSTEM_BUS_SOCKET.to_string()),
        Some(a) => a
            .split(';')
            .find_map(|one| one.strip_prefix("unix:path="))
            .map(|p| p.split(',').next().unwrap_or(p).to_string()),
    }
}

/// A connection to systemd's manager on the system bus.
#[derive(Clone, Debug)]
pub struct Manager {
    conn: zbus::Connection,
}

/// One unit property: its name and value.
pub type Property<'a> = (&'static str, Value<'a>);

impl Manager {
    /// Connects to the system bus.
    pub async fn connect() -> Result<Manager, SystemdError> {
        let conn = zbus::Connection::system()
            .await
            .map_err(|e| SystemdError::Connect(Box::new(e)))?;
        Ok(Manager { conn })
    }

    async fn proxy(&self) -> Result<zbus::Proxy<'static>, zbus::Error> {
        zbus::Proxy::new(
            &self.conn,
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
        )
        .await
    }

    /// Starts the transient unit `unit` with `props` (StartTransientUnit, mode
    /// `fail`); returns once systemd has queued its start job.
    pub async fn start_transient(
        &self,
        unit: &str,
        props: Vec<Property<'_>>,
    ) -> Result<(), SystemdError> {
        let call = |source| SystemdError::Call {
            action: "starting",
            unit: unit.to_string(),
            source: Box::new(source),
        };
        let aux: Vec<(&str, Vec<Property<'_>>)> = Vec::new();
        let _job: zbus::zvariant::OwnedObjectPath = self
            .proxy()
            .await
            .map_err(call)?
            .call("StartTransientUnit", &(unit, "fail", props, aux))
            .await
            .map_err(call)?;
        Ok(())
    }

    /// Stops `unit` (StopUnit, mode `replace`); a unit systemd does not know is
    /// stopped already.
    pub async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        let r: Result<zbus::zvariant::OwnedObjectPath, zbus::Error> = match self.proxy().await {
            Ok(p) => p.call("StopUnit", &(unit, "replace")).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(_) => Ok(()),
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                Ok(())
            }
            Err(source) => Err(SystemdError::Call {
                action: "stopping",
                unit: unit.to_string(),
                source: Box::new(source),
            }),
        }
    }

    /// Moves process `pid` into the new scope `unit` in `slice` and waits until
    /// the kernel shows it there. The scope is delegated (its cgroup is the
    /// process's to divide) and goes away by itself once its processes are gone.
    pub async fn start_scope(
        &self,
        unit: &str,
        slice: &str,
        pid: u32,
        description: &str,
    ) -> Result<(), SystemdError> {
        let props: Vec<Property<'_>> = vec![
            ("Description", Value::from(description)),
            ("Slice", Value::from(slice)),
            ("PIDs", Value::from(vec![pid])),
            ("Delegate", Value::from(true)),
            ("DefaultDependencies", Value::from(false)),
            ("CollectMode", Value::from("inactive-or-failed")),
        ];
        self.start_transient(unit, props).await?;
        // The unified hierarchy's line, or systemd's named v1 one on a legacy host.
        let wanted = format!("/{unit}");
        let cgroup_of =
            || std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let now = cgroup_of();
            if now.lines().any(|l| l.ends_with(&wanted)) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SystemdError::NotMoved {
                    pid,
                    unit: unit.to_string(),
                    secs: START_TIMEOUT.as_secs(),
                    cgroup: now.trim().replace('\n', " "),
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// [`Manager::start_scope`] from code without an async runtime: one is made for
/// the call and shut down when it returns. Its threads may outlive the call by a
/// moment: a caller that forks afterwards waits for them to be gone. Not from a
/// process that has unshared its PID namespace (it can start no thread).
pub fn start_scope_blocking(
    unit: &str,
    slice: &str,
    pid: u32,
    description: &str,
) -> Result<(), SystemdError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SystemdError::Runtime)?;
    let r = rt.block_on(async {
        let m = Manager::connect().await?;
        m.start_scope(unit, slice, pid, description).await
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

/// Where systemd puts the slice `name`: each dash-separated prefix is a parent
/// slice (`a-b.slice` is `/a.slice/a-b.slice`); `-.slice` is the root. None when
/// `name` is no valid slice name.
pub fn slice_dir(name: &str) -> Option<String> {
    if name == "-.slice" {
        return Some("/".into());
    }
    let stem = name.strip_suffix(".slice")?;
    if stem.is_empty()
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
        || stem.contains('/')
        || stem.contains(':')
    {
        return None;
    }
    let mut out = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push('/');
        out.push_str(&prefix);
        out.push_str(".slice");
    }
    Some(out)
}

/// The scope a monitor lives in under the systemd cgroup manager:
/// `crikit-ctrmon-ID.scope`.
pub fn monitor_scope(id: &str) -> String {
    format!("crikit-ctrmon-{id}.scope")
}

/// A pod's limits as slice properties: `memory` bytes (MemoryMax), CPU `shares`
/// (as CPUWeight on a unified host, converted as runc and crun convert them;
/// CPUShares on v1), and a CFS `quota` per `period` µs (CPUQuotaPerSecUSec, and
/// CPUQuotaPeriodUSec when the period is not the default 100 ms, which systemd
/// before 242 does not know). Zero means unset.
pub fn slice_limits(
    unified: bool,
    memory: i64,
    shares: i64,
    quota: i64,
    period: i64,
) -> Vec<Property<'static>> {
    let mut props: Vec<Property<'static>> = vec![
        ("MemoryAccounting", Value::from(true)),
        ("CPUAccounting", Value::from(true)),
        ("TasksAccounting", Value::from(true)),
    ];
    if memory > 0 {
        props.push(("MemoryMax", Value::from(memory as u64)));
    }
    if shares > 0 && unified {
        props.push(("CPUWeight", Value::from(shares_to_weight(shares as u64))));
    } else if shares > 0 {
        props.push(("CPUShares", Value::from((shares as u64).clamp(2, 262_144))));
    }
    if quota > 0 {
        let period = if period > 0 { period as u64 } else { 100_000 };
        // systemd takes a quota per second, in whole percent of a CPU at least.
        let per_sec = (quota as u64)
            .saturating_mul(1_000_000)
            .div_ceil(period)
            .div_ceil(10_000)
            .saturating_mul(10_000);
        props.push(("CPUQuotaPerSecUSec", Value::from(per_sec)));
        if period != 100_000 {
            props.push(("CPUQuotaPeriodUSec", Value::from(period)));
        }
    }
    props
}

/// cgroup v1 CPU shares (2..262144) as a v2 weight (1..10000), the conversion runc
/// and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_laid_out_by_their_names() {
        assert_eq!(
            slice_dir("kubepods-burstable-pod12ab.slice").as_deref(),
            Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12ab.slice")
        );
        assert_eq!(slice_dir("system.slice").as_deref(), Some("/system.slice"));
        assert_eq!(slice_dir("-.slice").as_deref(), Some("/"));
        for bad in [
            "kubepods",
            "-a.slice",
            "a-.slice",
            "a--b.slice",
            ".slice",
            "a/b.slice",
        ] {
            assert_eq!(slice_dir(bad), None, "{bad}");
        }
    }

    #[test]
    fn shares_map_to_weights_as_runc_maps_them() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
    }

    #[test]
    fn slice_limits_carry_what_is_set() {
        let p = slice_limits(true, 256 << 20, 512, 50_000, 100_000);
        fn get(p: &[Property<'static>], n: &str) -> Option<Value<'static>> {
            p.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.try_clone().unwrap())
        }
        assert_eq!(get(&p, "MemoryMax"), Some(Value::from(256u64 << 20)));
        assert_eq!(get(&p, "CPUWeight"), Some(Value::from(20u64)));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(Value::from(500_000u64)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), None, "the default period");
        let v1 = slice_limits(false, 0, 512, 25_000, 50_000);
        assert_eq!(get(&v1, "CPUShares"), Some(Value::from(512u64)));
        assert_eq!(get(&v1, "CPUWeight"), None);
        assert_eq!(
            get(&v1, "CPUQuotaPerSecUSec"),
            Some(Value::from(500_000u64))
        );
        assert_eq!(get(&v1, "CPUQuotaPeriodUSec"), Some(Value::from(50_000u64)));
        let none = slice_limits(true, 0, 0, 0, 0);
        assert!(none.iter().all(|(k, _)| k.ends_with("Accounting")));
        let huge = slice_limits(true, 0, 0, i64::MAX, 1);
        assert!(get(&huge, "CPUQuotaPerSecUSec").is_some());
    }

    #[test]
    fn bus_addresses_name_their_socket() {
        assert_eq!(bus_socket(None).as_deref(), Some(SYSTEM_BUS_SOCKET));
        assert_eq!(
            bus_socket(Some("unix:path=/x/bus,guid=1")).as_deref(),
            Some("/x/bus")
        );
        assert_eq!(
            bus_socket(Some("tcp:host=h;unix:path=/y")).as_deref(),
            Some("/y")
        );
        assert_eq!(bus_socket(Some("unix:abstract=z")), None);
    }
}
