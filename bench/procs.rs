//! Servers under measurement: free loopback ports, spawning `etcd` and
//! `wkube server` into temporary data dirs, waiting until they answer, and
//! killing them again — always, also on error or Ctrl-C, because a leaked
//! server would keep its port and skew the next run.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// A port on 127.0.0.1 that was free a moment ago. The listener is closed
/// before the port is handed to a child, so another process could take it in
/// between; on a benchmark machine that race is rare, and the child fails
/// loudly (its log is shown) when it happens.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// A child process that is killed and reaped when this value is dropped.
/// Its stdout and stderr go to a log file, shown when it dies early.
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and both outputs appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Fails, with the end of the child's log, if the child has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} was already stopped", self.name);
        };
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited early ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(4096)
            );
        }
        Ok(())
    }

    /// The last `max` bytes of the child's log (lossy UTF-8).
    pub fn log_tail(&self, max: u64) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
            let _ = f.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL: the data dir is thrown away anyway, and a graceful
            // shutdown that hangs must not hang the benchmark.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A server with its own temporary data dir and the etcd v3 endpoint it
/// serves. Field order matters: the process is killed before its data dir
/// is removed.
pub struct Server {
    pub name: String,
    pub endpoint: String,
    pub version: String,
    pub proc: ChildGuard,
    pub dir: TempDir,
}

/// Calls `probe` until it succeeds, the child dies, or `timeout` passes.
pub async fn wait_until<F, Fut, T>(
    proc: &mut ChildGuard,
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        proc.check_running()?;
        let err = match tokio::time::timeout(Duration::from_secs(2), probe()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e,
            Err(_) => anyhow::anyhow!("probe timed out"),
        };
        if Instant::now() >= deadline {
            bail!(
                "{what}: not ready after {timeout:?} ({err:#}); last lines of {}:\n{}",
                proc.log_path().display(),
                proc.log_tail(4096)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// First line of `BIN --version`, for the report header.
pub fn version_of(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown version".into())
}

/// Starts a single-member etcd on free loopback ports in a fresh temp data
/// dir, with etcd's defaults otherwise (in particular an fsync per commit:
/// it is the reference). Returns once the process is spawned; readiness is
/// the caller's check, with its own client.
pub fn spawn_etcd(bin: &Path) -> Result<Server> {
    if !bin.exists() {
        bail!(
            "{} not found; install it with `apt-get install -y etcd-server etcd-client`",
            bin.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("wkube-bench-etcd-")
        .tempdir()?;
    let client = format!("http://127.0.0.1:{}", free_port()?);
    let peer = format!("http://127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(bin);
    cmd.arg("--name=default")
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=default={peer}"))
        // zap instead of 3.4's deprecated capnslog; only the log format
        // changes, not what etcd does per request.
        .arg("--logger=zap")
        .arg("--log-outputs=stderr");
    let proc = ChildGuard::spawn("etcd", cmd, &dir.path().join("etcd.log"))?;
    Ok(Server {
        name: "etcd".into(),
        endpoint: client,
        version: version_of(bin).replace("etcd Version: ", "etcd "),
        proc,
        dir,
    })
}

/// Starts `wkube server` with plaintext etcd v3 on an OS-chosen loopback
/// port, plus `extra` arguments, and waits (bounded) for the URL it writes
/// to `DATA/etcd.endpoint`.
pub async fn spawn_wkube(bin: &Path, extra: &[&str], timeout: Duration) -> Result<Server> {
    if !bin.exists() {
        bail!(
            "wkube binary {} not found (build it with `cargo build --bins`, or pass --wkube BIN)",
            bin.display()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("wkube-bench-wkube-")
        .tempdir()?;
    let data = dir.path().join("data");
    let mut cmd = Command::new(bin);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&data)
        .args(["--etcd-listen", "127.0.0.1:0", "--tls", "off"])
        // The Kubernetes API on a free port too, so runs never collide.
        .args(["--listen", "127.0.0.1:0"])
        // A local node's agent on a free port too (benchmarks that do not
        // want it pass `--no-agent` through `extra`).
        .args(agent_args(extra))
        .args(extra);
    let mut proc = ChildGuard::spawn("wkube server", cmd, &dir.path().join("wkube.log"))?;
    let endpoint_file = data.join("etcd.endpoint");
    let endpoint = wait_until(&mut proc, "wkube server", timeout, || {
        let path = endpoint_file.clone();
        async move {
            let text = tokio::fs::read_to_string(&path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            let url = text.trim();
            // The file may be observed half-written; a URL ends in a port.
            let has_port = url
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
            if !has_port {
                bail!("{} holds no URL yet: {text:?}", path.display());
            }
            Ok(if url.contains("://") {
                url.to_string()
            } else {
                format!("http://{url}")
            })
        }
    })
    .await?;
    Ok(Server {
        name: "wkube".into(),
        endpoint,
        version: version_of(bin),
        proc,
        dir,
    })
}

/// `wkube` next to the running executable: cargo puts every binary of the
/// crate in the same target dir, so `target/release/wkube-bench` finds
/// `target/release/wkube`.
/// The HTTP component a benchmark's pods run, and where it was read from:
/// `path`, or else this source tree's `hello-http`.
pub fn hello_module(path: Option<&Path>) -> Result<(PathBuf, Vec<u8>)> {
    let path = path.map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-examples/out/hello-http.wasm"),
        Path::to_path_buf,
    );
    let module = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} (build it with guest-examples/build.sh)",
            path.display()
        )
    })?;
    Ok((path, module))
}

/// The bearer token of an admin kubeconfig the server wrote.
pub fn kubeconfig_token(kubeconfig: &str) -> Result<String> {
    Ok(kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .context("no token in the admin kubeconfig")?
        .trim()
        .to_string())
}

pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let dir = exe
        .parent()
        .context("the running executable has no parent dir")?;
    Ok(dir.join(name))
}

/// CPU time (user + system) a process has used so far, from
/// `/proc/PID/stat`; `None` if it cannot be read. `pid` `None` means this
/// process. Used to show where the time of a workload goes: in the client
/// or in the server.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces; fields after its
    // closing parenthesis are space separated, utime and stime being the
    // 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // Clock ticks; USER_HZ is 100 on every Linux architecture we run on
    // (reading sysconf would need the libc crate for one constant).
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The 1-minute load average and the number of cores, for the report: the
/// load generator and both servers share this machine, so anything else
/// running at the same time lowers every figure.
pub fn machine_load() -> (Option<f64>, usize) {
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (load, cores)
}

/// Bytes a process has caused to be written to storage so far
/// (`write_bytes` of `/proc/PID/io`), or `None` if unreadable. Divided by
/// the ops of a workload it shows what one durable write costs the disk.
pub fn disk_write_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// `--agent-listen 127.0.0.1:0` unless `extra` configures the agent itself.
fn agent_args(extra: &[&str]) -> Vec<&'static str> {
    if extra
        .iter()
        .any(|a| a.starts_with("--no-agent") || a.starts_with("--agent-listen"))
    {
        Vec::new()
    } else {
        vec!["--agent-listen", "127.0.0.1:0"]
    }
}

/// Resident memory of a process from `/proc/PID/status`, in KiB, and its
/// thread count.
#[derive(Clone, Copy, Debug, Default)]
pub struct Resident {
    /// `VmRSS`: everything resident, shared file pages included.
    pub rss_kib: u64,
    /// `RssAnon`: the heap, stacks and other private memory.
    pub anon_kib: u64,
    /// `RssFile`: resident pages of mapped files (mostly the binary).
    pub file_kib: u64,
    pub threads: u64,
    /// The machine's `Shmem` (/proc/meminfo): tmpfs, where a kubelet keeps
    /// pods' tokens and Secret volumes, shows in no process's RSS. Its
    /// change over a fill is the pods' share.
    pub shmem_kib: u64,
}

/// [`Resident`] of process `pid`, or an error if it cannot be read (the
/// process is gone).
pub fn resident(pid: u32) -> Result<Resident> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    Ok(Resident {
        rss_kib: field("VmRSS:").context("no VmRSS in /proc/PID/status")?,
        anon_kib: field("RssAnon:").unwrap_or(0),
        file_kib: field("RssFile:").unwrap_or(0),
        threads: field("Threads:").unwrap_or(0),
        shmem_kib: shmem_kib(),
    })
}

/// The machine's `Shmem` from /proc/meminfo, in KiB (0 if unreadable).
pub fn shmem_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Shmem:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// `program` found in a directory of `$PATH`.
pub fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
