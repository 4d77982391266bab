//! Shared fixtures for the integration tests: a real `wkube server` process
//! on loopback with a temporary data directory, and helpers that run stock
//! `etcdctl`, `wkube kv` and stock `kubectl` against it with bounded waits.

// Each test module uses its own subset of these helpers.
#![allow(dead_code)]

pub mod agent;
pub mod builders;
pub mod etcd;
pub mod netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

/// Stock etcdctl from Debian's `etcd-client` package.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Name of the node the test server runs (unless a test names another).
pub const TEST_NODE: &str = "node-1";

/// Upper bound for any single command a test runs.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for a server to come up (debug build, certificates made on
/// first start).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds a [`TestServer`].
pub struct TestServerBuilder {
    tls: bool,
    /// Run the local node (kubelet); off by default so store and API tests
    /// see only their own writes.
    node: bool,
    extra_args: Vec<String>,
    outlives_drop: bool,
    netns: Option<(String, std::net::Ipv4Addr)>,
}

impl TestServerBuilder {
    /// Runs the server inside network namespace `ns`, on its address `ip`
    /// (see [`netns::Lab`]); kubectl, etcdctl and `wkube` commands of this
    /// server then run in that namespace too.
    pub fn netns(mut self, ns: &str, ip: std::net::Ipv4Addr) -> Self {
        self.netns = Some((ns.to_string(), ip));
        self
    }

    /// TLS with client certificates (the default) or plaintext (`--tls off`).
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Runs the server's local node (`node-1`, agent on a free port).
    pub fn with_node(mut self) -> Self {
        self.node = true;
        self
    }

    /// One more flag for `wkube server`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Starts a server meant to live in a `static` for a whole test binary:
    /// statics are never dropped, so the server runs under a small shell
    /// that kills it and removes its files once the test process exits
    /// (however it exits), when the shell's stdin — a pipe the test process
    /// holds — reaches end of file.
    pub fn start_for_process(mut self) -> TestServer {
        self.outlives_drop = true;
        self.start()
    }

    /// Starts the server and waits until it has published its endpoints and
    /// the admin kubeconfig.
    pub fn start(self) -> TestServer {
        let root = tempfile::Builder::new()
            .prefix("wkube-test-")
            .tempdir()
            .expect("temp dir");
        let mut server = TestServer {
            data_dir: root.path().join("data"),
            log: root.path().join("server.log"),
            root,
            tls: self.tls,
            node: self.node,
            extra_args: self.extra_args,
            outlives_drop: self.outlives_drop,
            netns: self.netns,
            child: None,
            endpoint: String::new(),
            api_url: String::new(),
            starts: 0,
            addresses: cluster_addresses(),
        };
        server.spawn();
        server
    }
}

/// A running `wkube server`; killed (SIGKILL) when dropped.
pub struct TestServer {
    root: tempfile::TempDir,
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// stdout and stderr of every start, appended.
    pub log: PathBuf,
    tls: bool,
    node: bool,
    extra_args: Vec<String>,
    /// Runs under the reaper shell of [`TestServerBuilder::start_for_process`].
    outlives_drop: bool,
    /// The network namespace and address it runs in, if not the host's.
    pub netns: Option<(String, std::net::Ipv4Addr)>,
    child: Option<Child>,
    /// URL of the etcd v3 API, as read from DATA/etcd.endpoint.
    pub endpoint: String,
    /// URL of the Kubernetes API, as read from DATA/api.endpoint.
    pub api_url: String,
    starts: usize,
    /// This cluster's addresses (see [`cluster_addresses`]).
    pub addresses: ClusterAddresses,
}

/// The addresses of one test cluster, chosen so no other test cluster of
/// this machine uses them at the same time: its proxy listens on its node's
/// NodePorts, its ClusterIPs and its pods' IPs (sharing with SO_REUSEPORT),
/// so two clusters on the same addresses would answer each other.
#[derive(Clone, Debug)]
pub struct ClusterAddresses {
    /// `127.X.Y.1`: X from the process, Y counting clusters within it.
    pub node_ip: std::net::Ipv4Addr,
    /// `127.(X+32).Y.0/24`.
    pub service_cidr: String,
    /// A /20 of 127.128.0.0/9, split into /24s per node.
    pub cluster_cidr: String,
    /// `127.(X+64).Y.100-127.(X+64).Y.199`: LoadBalancer addresses.
    pub lb_range: String,
}

/// The next [`ClusterAddresses`]. Outside the load-balancer pool
/// (127.0.0.100-199).
pub fn cluster_addresses() -> ClusterAddresses {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let x = 1 + (std::process::id() % 31) as u8;
    let y = NEXT.fetch_add(1, Ordering::Relaxed);
    let block = (u32::from(x) * 16 + u32::from(y % 16)) << 12;
    ClusterAddresses {
        node_ip: std::net::Ipv4Addr::new(127, x, y, 1),
        service_cidr: format!("127.{}.{y}.0/24", x + 32),
        cluster_cidr: format!(
            "{}/20",
            std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 128, 0, 0)) + block)
        ),
        lb_range: format!("127.{0}.{y}.100-127.{0}.{y}.199", x + 64),
    }
}

impl TestServer {
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            tls: true,
            node: false,
            extra_args: Vec::new(),
            outlives_drop: false,
            netns: None,
        }
    }

    /// A server with the default configuration (TLS on).
    pub fn start() -> TestServer {
        Self::builder().start()
    }

    /// The command line that starts this server.
    pub fn server_command(&self) -> Command {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_wkube"));
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .arg("server")
            .args(["--etcd-listen", "127.0.0.1:0"]);
        if !self.tls {
            cmd.args(["--tls", "off"]);
        }
        // The default 6443 would make concurrent test servers collide. A
        // restart keeps the port, as a configured server would: a new one
        // would rewrite the `kubernetes` Endpoints (a store write).
        if !self.extra_args.iter().any(|a| a.starts_with("--listen")) {
            let port = self
                .api_url
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .unwrap_or(0);
            let ip = self
                .netns
                .as_ref()
                .map_or("127.0.0.1".to_string(), |n| n.1.to_string());
            cmd.args(["--listen", &format!("{ip}:{port}")]);
        }
        let has = |flag: &str| self.extra_args.iter().any(|a| a.starts_with(flag));
        if let Some((_, ip)) = &self.netns
            && !has("--advertise-address")
        {
            cmd.args(["--advertise-address", &ip.to_string()]);
        }
        // The local node: a known name, and an agent port of its own (the
        // default 10250 would collide between concurrent test servers).
        if !self.node {
            cmd.arg("--no-agent");
        } else {
            // Each test cluster gets addresses of its own: its node's
            // NodePorts and its ClusterIPs are listened on by its proxy
            // (shared with SO_REUSEPORT), so two clusters on the same
            // addresses would answer each other's requests.
            let a = &self.addresses;
            let node_ip = self.netns.as_ref().map_or(a.node_ip, |n| n.1);
            if !has("--node-ip") {
                cmd.args(["--node-ip", &node_ip.to_string()]);
            }
            if !has("--service-cidr") {
                cmd.args(["--service-cidr", &a.service_cidr]);
            }
            if !has("--lb-range") {
                cmd.args(["--lb-range", &a.lb_range]);
            }
            if !has("--cluster-cidr") {
                cmd.args(["--cluster-cidr", &a.cluster_cidr]);
                cmd.args(["--node-cidr-mask-size", "24"]);
            }
            if !has("--agent-listen") {
                cmd.args(["--agent-listen", &format!("{node_ip}:0")]);
            }
            if !has("--node-name") {
                cmd.args(["--node-name", TEST_NODE]);
            }
        }
        // Leader election renews Leases every 2 s: store tests must see
        // only their own writes, so it is on only where a test asks.
        if !has("--leader-elect") {
            cmd.arg("--leader-elect=false");
        }
        cmd.args(&self.extra_args);
        cmd.env("RUST_LOG", "info");
        cmd
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        // A file left by a killed server must not be mistaken for the new one.
        let endpoint_file = self.data_dir.join("etcd.endpoint");
        let api_endpoint_file = self.data_dir.join("api.endpoint");
        let _ = std::fs::remove_file(&endpoint_file);
        let _ = std::fs::remove_file(&api_endpoint_file);
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open server log");
        writeln!(&log, "----- start #{} -----", self.starts).expect("write log");
        let server = self.server_command();
        let child = if self.outlives_drop {
            let mut reaper = Command::new("sh");
            // A background job of a non-interactive shell reads /dev/null,
            // so only `read` sees the pipe.
            reaper
                .arg("-c")
                .arg(r#""$@" & pid=$!; read -r _; kill -9 "$pid"; wait "$pid"; rm -rf "$WKUBE_TEST_ROOT""#)
                .arg("sh")
                .arg(server.get_program())
                .args(server.get_args())
                .envs(server.get_envs().filter_map(|(k, v)| Some((k, v?))))
                .env("WKUBE_TEST_ROOT", self.root.path())
                .stdin(Stdio::piped());
            reaper
        } else {
            let mut server = server;
            server.stdin(Stdio::null());
            server
        }
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn wkube server");
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // The etcd endpoint is published first, then the API endpoint,
            // then the admin kubeconfig naming it.
            if let Ok(s) = std::fs::read_to_string(&endpoint_file)
                && s.ends_with('\n')
                && let Ok(api) = std::fs::read_to_string(&api_endpoint_file)
                && api.ends_with('\n')
                && std::fs::read_to_string(self.admin_kubeconfig())
                    .is_ok_and(|k| k.contains(api.trim()))
            {
                self.endpoint = s.trim().to_owned();
                self.api_url = api.trim().to_owned();
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "wkube server exited with {status} before it published its endpoint:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "wkube server did not publish {} within {START_TIMEOUT:?}:\n{}",
                    endpoint_file.display(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash or power cut would stop it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.outlives_drop {
                // Closing the pipe makes the reaper shell kill the server.
                drop(child.stdin.take());
            } else {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Sends a signal and waits (bounded) for the process to exit.
    pub fn signal_and_wait(&mut self, signal: &str, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server not running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not exit within {timeout:?} after SIG{signal}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Flags added to every later start (a restart on another store).
    pub fn add_args(&mut self, args: impl IntoIterator<Item = String>) {
        self.extra_args.extend(args);
    }

    /// SIGTERM and wait for a clean exit, as an operator stops a server.
    pub fn stop(&mut self) {
        let status = self.signal_and_wait("TERM", Duration::from_secs(30));
        assert!(status.success(), "the server exited with {status}");
    }

    /// A PKI file of this server's data directory.
    pub fn pki(&self, file: &str) -> PathBuf {
        self.data_dir.join("pki").join(file)
    }

    /// etcdctl's connection flags for this server, with the admin client
    /// certificate when TLS is on.
    pub fn etcdctl_flags(&self) -> Vec<String> {
        let mut flags = vec![
            format!("--endpoints={}", self.endpoint),
            "--dial-timeout=5s".to_owned(),
            "--command-timeout=15s".to_owned(),
        ];
        if self.tls {
            flags.push(format!("--cacert={}", self.pki("ca.crt").display()));
            flags.push(format!("--cert={}", self.pki("etcd-client.crt").display()));
            flags.push(format!("--key={}", self.pki("etcd-client.key").display()));
        }
        flags
    }

    /// Runs stock etcdctl (v3 API) against this server.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_with_stdin(args, None)
    }

    pub fn etcdctl_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = etcdctl_command();
        cmd.args(self.etcdctl_flags()).args(args);
        run(cmd, stdin, COMMAND_TIMEOUT)
    }

    /// Runs `wkube kv ARGS` the way a user types it: no connection flags,
    /// only the data directory to find the server and its certificates.
    pub fn wkube_kv(&self, args: &[&str]) -> Output {
        self.wkube_kv_with_stdin(args, None)
    }

    pub fn wkube_kv_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wkube"));
        cmd.env("WKUBE_DATA_DIR", &self.data_dir)
            .env("RUST_LOG", "warn")
            .arg("kv")
            .args(args);
        run(cmd, stdin, COMMAND_TIMEOUT)
    }

    /// Starts a long-running command (a watch) whose stdout lines the test
    /// reads one by one.
    pub fn spawn_lines(&self, mut cmd: Command) -> LineStream {
        LineStream::spawn(&mut cmd)
    }

    /// `etcdctl ARGS`, not yet run, with this server's flags.
    pub fn etcdctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = etcdctl_command();
        if let Some((ns, _)) = &self.netns {
            let mut wrapped = in_netns(Some(ns), ETCDCTL);
            wrapped.env("ETCDCTL_API", "3");
            cmd = wrapped;
        }
        cmd.args(self.etcdctl_flags()).args(args);
        cmd
    }

    /// `wkube kv ARGS`, not yet run, finding the server through the data dir.
    pub fn wkube_kv_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wkube"));
        cmd.env("WKUBE_DATA_DIR", &self.data_dir)
            .env("RUST_LOG", "warn")
            .arg("kv")
            .args(args);
        cmd
    }

    /// The store's current revision, as `etcdctl endpoint status` reports it.
    pub fn revision(&self) -> i64 {
        let out = self
            .etcdctl(&["endpoint", "status", "-w", "json"])
            .success();
        let v: serde_json::Value = serde_json::from_str(&out).expect("status json");
        v[0]["Status"]["header"]["revision"]
            .as_i64()
            .expect("revision in status")
    }

    /// Root of the test's temporary files (outside the data dir).
    pub fn scratch(&self) -> &Path {
        self.root.path()
    }

    /// `DATA/admin.kubeconfig`: the cluster admin (group system:masters).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// A temporary HOME for tools that keep state there (kubectl's
    /// discovery cache); shared by everything that asks this server. Use
    /// [`TestServer::kubectl`] for a fresh one per test.
    pub fn home(&self) -> PathBuf {
        let home = self.root.path().join("home");
        std::fs::create_dir_all(&home).expect("create temp HOME");
        home
    }

    /// Stock kubectl as the admin, with a HOME of its own so its discovery
    /// cache starts empty.
    pub fn kubectl(&self) -> Kubectl {
        self.kubectl_with(self.admin_kubeconfig())
    }

    /// Stock kubectl with another kubeconfig (another user), fresh HOME.
    pub fn kubectl_with(&self, kubeconfig: impl Into<PathBuf>) -> Kubectl {
        Kubectl {
            home: tempfile::Builder::new()
                .prefix("wkube-kubectl-home-")
                .tempdir()
                .expect("temp HOME"),
            kubeconfig: kubeconfig.into(),
            server_log: self.log.clone(),
            netns: self.netns.as_ref().map(|n| n.0.clone()),
        }
    }

    /// `program`, run in this server's network namespace.
    pub fn command(&self, program: &str) -> Command {
        in_netns(self.netns.as_ref().map(|n| n.0.as_str()), program)
    }

    /// `wkube ARGS` against this server's data directory.
    pub fn wkube(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_wkube"));
        cmd.env("WKUBE_DATA_DIR", &self.data_dir)
            .env("RUST_LOG", "warn")
            .args(args);
        run(cmd, None, COMMAND_TIMEOUT)
    }

    /// The last `n` lines the server logged.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }
}

fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One server for every test that asks for it (the kubectl tests), started on
/// first use. Tests sharing it keep to namespaces of their own.
pub fn shared_server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| TestServer::builder().start_for_process())
}

/// Stock kubectl pointed at one kubeconfig, with its own temporary HOME.
pub struct Kubectl {
    home: tempfile::TempDir,
    kubeconfig: PathBuf,
    server_log: PathBuf,
    netns: Option<String>,
}

/// `program`, run inside network namespace `ns` when one is given
/// (`ip netns exec` enters it and then executes the program itself, so
/// the child's pid is the program's).
pub fn in_netns(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, program]);
            cmd
        }
        None => Command::new(program),
    }
}

impl Kubectl {
    /// `kubectl ARGS`, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = in_netns(self.netns.as_deref(), "kubectl");
        cmd.env("HOME", self.home.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args);
        cmd
    }

    /// Runs `kubectl ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        run(self.command(args), None, COMMAND_TIMEOUT)
    }

    /// Runs `kubectl ARGS` with `stdin` (a manifest for `-f -`).
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        run(self.command(args), Some(stdin.as_bytes()), COMMAND_TIMEOUT)
    }

    /// Runs `kubectl ARGS`, asserts success and returns stdout; a failure
    /// shows the end of the server's log too.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        self.expect_ok(args, self.run(args))
    }

    /// [`Kubectl::ok`] with `stdin`.
    #[track_caller]
    pub fn ok_with_stdin(&self, args: &[&str], stdin: &str) -> String {
        self.expect_ok(args, self.run_with_stdin(args, stdin))
    }

    /// Runs `kubectl ARGS`, asserts it failed and returns stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} succeeded but should have failed:\nstdout: {}",
            out.stdout
        );
        out.stderr
    }

    /// `kubectl ARGS`, running until dropped, stdout line by line.
    pub fn spawn_lines(&self, args: &[&str]) -> LineStream {
        LineStream::spawn(&mut self.command(args))
    }

    #[track_caller]
    fn expect_ok(&self, args: &[&str], out: Output) -> String {
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\nstdout: {}\nstderr: {}\n--- server log (tail) ---\n{}",
            out.status,
            out.stdout,
            out.stderr,
            log_tail(&self.server_log, 30)
        );
        out.stdout
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- wkube server log ---\n{}", self.log_text());
        }
    }
}

/// etcdctl with the v3 API selected and no inherited endpoint settings.
pub fn etcdctl_command() -> Command {
    let mut cmd = Command::new(ETCDCTL);
    cmd.env("ETCDCTL_API", "3");
    for var in [
        "ETCDCTL_ENDPOINTS",
        "ETCDCTL_CACERT",
        "ETCDCTL_CERT",
        "ETCDCTL_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts the command succeeded and returns its stdout.
    #[track_caller]
    pub fn success(self) -> String {
        assert!(
            self.status.success(),
            "command failed ({}):\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        self.stdout
    }

    /// Asserts the command failed with `Error: MESSAGE` on stderr and exit
    /// code 1, as etcdctl reports a server error.
    #[track_caller]
    pub fn fails_with(self, message: &str) {
        let line = format!("Error: {message}");
        assert!(
            self.stderr.lines().any(|l| l == line),
            "expected `{line}` on stderr\nstatus: {}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        assert_eq!(
            self.status.code(),
            Some(1),
            "exit code; stderr: {}",
            self.stderr
        );
    }
}

/// Runs `cmd` to completion, feeding `stdin`, killing it after `timeout`.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let data = data.to_vec();
        // A separate thread: a large input would otherwise fill the pipe
        // while the child waits for us to read its output.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let stdout = read_in_background(child.stdout.take().expect("stdout pipe"));
    let stderr = read_in_background(child.stderr.take().expect("stderr pipe"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {timeout:?}; stderr so far: {}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The stdout of a long-running process, line by line; the process is
/// killed when this is dropped.
pub struct LineStream {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl LineStream {
    fn spawn(cmd: &mut Command) -> LineStream {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout pipe");
        let stderr = read_in_background(child.stderr.take().expect("stderr pipe"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineStream {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next line, or a panic after `timeout`.
    #[track_caller]
    pub fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                let status = self.child.wait();
                let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
                panic!(
                    "no line within {timeout:?} ({e}); process {status:?}, stderr: {}",
                    stderr.unwrap_or_default()
                );
            }
        }
    }

    /// The next `n` lines, each within `timeout`.
    #[track_caller]
    pub fn next_lines(&mut self, n: usize, timeout: Duration) -> Vec<String> {
        (0..n).map(|_| self.next_line(timeout)).collect()
    }

    /// Waits (bounded) for the process to end; returns its status and stderr.
    pub fn wait(mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("process did not end within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        (status, stderr.unwrap_or_default())
    }
}

impl Drop for LineStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The revision a write got, from `etcdctl put -w json` output.
pub fn header_revision(json: &str) -> i64 {
    let v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("not json ({e}): {json}"));
    v["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no header.revision in {json}"))
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `guest-examples/out/<name>.wasm`, building the examples once per test
/// process (the script is idempotent and quick when they are built).
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let out = BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guest-examples");
        let status = Command::new(root.join("build.sh"))
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("running guest-examples/build.sh: {e}"))?;
        if !status.success() {
            return Err(format!("guest-examples/build.sh failed: {status}"));
        }
        Ok(root.join("out"))
    });
    match out {
        Ok(dir) => dir.join(format!("{name}.wasm")),
        Err(e) => panic!("guest examples unavailable (need the wasm32-wasip1/2 targets): {e}"),
    }
}

/// A server with its node, and `hello-http` and `echo-http` pushed as
/// `hello:v1` and `echo:v1`.
pub fn node_server_with_examples() -> TestServer {
    let s = TestServer::builder().with_node().start();
    for (file, reference) in [("hello-http", "hello:v1"), ("echo-http", "echo:v1")] {
        s.wkube(&["push", guest(file).to_str().unwrap(), reference])
            .success();
    }
    s
}

/// A Deployment of one replica running `image` (port 8080, named `http`)
/// and a Service `name` on port 80 in front of it, applied with kubectl;
/// returns once the rollout is done.
pub fn deploy_app(k: &Kubectl, name: &str, image: &str) {
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
            {{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "{name}"}},
              "spec": {{"replicas": 1, "selector": {{"matchLabels": {{"app": "{name}"}}}},
                "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
                  "spec": {{"containers": [{{"name": "web", "image": "{image}",
                    "ports": [{{"containerPort": 8080, "name": "http"}}]}}]}}}}}}}},
            {{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "{name}"}},
              "spec": {{"selector": {{"app": "{name}"}},
                "ports": [{{"name": "http", "port": 80, "targetPort": "http"}}]}}}}]}}"#
    );
    k.ok_with_stdin(&["apply", "-f", "-"], &manifest);
    k.ok(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "--timeout=90s",
    ]);
}

/// `curl ARGS` (at most 10 s); (status, body). Status 0: no answer.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = run(
        {
            let mut c = Command::new("curl");
            c.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
                .args(args);
            c
        },
        None,
        Duration::from_secs(15),
    );
    let text = out.stdout;
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `curl` of `url` with a `Host` header; (status, body).
pub fn curl_host(url: &str, host: &str) -> (u16, String) {
    curl(&["-H", &format!("Host: {host}"), url])
}
