//! A real etcd cluster on loopback for the external-store tests: Debian's
//! `etcd` (package `etcd-server`), with client TLS and client certificates
//! required, as a production etcd runs. Peers talk plaintext on loopback.
//! Members are killed (SIGKILL) and their files removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{ETCDCTL, eventually, run};

/// Stock etcd from Debian's `etcd-server` package.
pub const ETCD: &str = "/usr/bin/etcd";

/// Files of the cluster's PKI.
pub struct EtcdPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn make_pki(dir: &Path) -> EtcdPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test etcd CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |name: &str, sans: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf("etcd", vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_pem, client_key) = leaf("wkube-apiserver", Vec::new());
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    EtcdPki {
        ca: write("ca.crt", &ca_cert.pem()),
        server_cert: write("server.crt", &server_pem),
        server_key: write("server.key", &server_key),
        client_cert: write("client.crt", &client_pem),
        client_key: write("client.key", &client_key),
    }
}

/// A port for an etcd member, below the kernel's ephemeral range (so no
/// `bind(:0)` of another test can be handed it while etcd starts) and
/// never the same twice in this process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (std::process::id().wrapping_mul(97).wrapping_add(n) % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// An etcd cluster of one or more members.
pub struct EtcdCluster {
    root: tempfile::TempDir,
    pub pki: EtcdPki,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster answers.
    pub fn start(size: usize) -> EtcdCluster {
        let root = tempfile::Builder::new()
            .prefix("wkube-etcd-")
            .tempdir()
            .unwrap();
        let pki = make_pki(root.path());
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster { root, pki, members };
        for i in 0..size {
            cluster.start_member(i);
        }
        assert!(
            eventually(Duration::from_secs(30), || cluster.healthy()),
            "etcd did not become healthy:\n{}",
            cluster.logs()
        );
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (Re)starts member `i` on its data directory.
    pub fn start_member(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let data = self
            .root
            .path()
            .join(format!("{}.data", self.members[i].name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.root
                    .path()
                    .join(format!("{}.log", self.members[i].name)),
            )
            .unwrap();
        let m = &self.members[i];
        let client = format!("https://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(ETCD)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", "wkube-test"])
            .arg("--cert-file")
            .arg(&self.pki.server_cert)
            .arg("--key-file")
            .arg(&self.pki.server_key)
            .arg("--trusted-ca-file")
            .arg(&self.pki.ca)
            .arg("--client-cert-auth")
            // Quick elections, so a test's stop and start settle fast.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian package etcd-server)");
        self.members[i].child = Some(child);
    }

    /// SIGKILLs member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Client URLs of every member, comma-separated (`--etcd-servers`).
    pub fn servers(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("https://127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The `wkube server` flags that use this cluster.
    pub fn server_flags(&self, prefix: &str) -> Vec<String> {
        vec![
            "--etcd-servers".into(),
            self.servers(),
            "--etcd-cafile".into(),
            self.pki.ca.display().to_string(),
            "--etcd-certfile".into(),
            self.pki.client_cert.display().to_string(),
            "--etcd-keyfile".into(),
            self.pki.client_key.display().to_string(),
            "--etcd-prefix".into(),
            prefix.into(),
        ]
    }

    /// Stock etcdctl against the running members.
    pub fn etcdctl(&self, args: &[&str]) -> super::Output {
        let mut cmd = Command::new(ETCDCTL);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.servers()))
            .arg(format!("--cacert={}", self.pki.ca.display()))
            .arg(format!("--cert={}", self.pki.client_cert.display()))
            .arg(format!("--key={}", self.pki.client_key.display()))
            .arg("--command-timeout=5s")
            .args(args);
        run(cmd, None, super::COMMAND_TIMEOUT)
    }

    /// A gauge or counter from the first member's `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10"])
            .arg("--cacert")
            .arg(&self.pki.ca)
            .arg("--cert")
            .arg(&self.pki.client_cert)
            .arg("--key")
            .arg(&self.pki.client_key)
            .arg(format!(
                "https://127.0.0.1:{}/metrics",
                self.members[0].client_port
            ));
        let out = run(cmd, None, super::COMMAND_TIMEOUT);
        out.stdout
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in etcd's metrics: {}", out.stderr))
    }

    /// True when a write commits (a quorum answers).
    pub fn healthy(&self) -> bool {
        self.etcdctl(&["put", "/health-probe", "x"])
            .status
            .success()
    }

    /// Every member's log, for a failure message.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let p = self.root.path().join(format!("{}.log", m.name));
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                format!(
                    "--- {} ---\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}
