//! `wkube server`: opens the store under the data directory, sets up the
//! cluster PKI and serves the etcd v3 API until asked to stop.
//!
//! Data directory layout (everything the server owns):
//!
//! ```text
//! DATA/server.lock     held (flock) while a server runs: one server per data dir
//! DATA/store.redb      the embedded store
//! DATA/etcd.endpoint   URL of the etcd v3 API of the running server
//! DATA/pki/            ca.crt ca.key etcd-server.{crt,key} etcd-client.{crt,key}
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::pki::{ClusterPki, PkiError};
use crate::store::grpc::{self, GrpcError, Limits, Member};
use crate::store::redb::{RedbOptions, RedbStore};
use crate::store::{Store, StoreError};

/// File names under the data directory.
pub const STORE_FILE: &str = "store.redb";
/// Holds the URL clients use to reach the etcd v3 API.
pub const ENDPOINT_FILE: &str = "etcd.endpoint";
/// Locked while a server uses the data directory.
pub const LOCK_FILE: &str = "server.lock";
/// Folder of the cluster certificates.
pub const PKI_DIR: &str = "pki";

/// Which backend holds the cluster state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// Embedded redb under the data directory.
    Redb,
}

/// Transport security of the etcd v3 endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS with certificates from DATA/pki (created on first start); clients
    /// must present a certificate signed by the cluster CA.
    Auto,
    /// Plaintext; only for local tests.
    Off,
}

/// Everything `wkube server` needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// State, certificates and the endpoint file live here.
    pub data_dir: PathBuf,
    /// Where the etcd v3 API listens; port 0 picks a free one.
    pub etcd_listen: SocketAddr,
    pub tls: TlsMode,
    /// Extra names for the serving certificate.
    pub tls_sans: Vec<String>,
    pub store: StoreSpec,
    /// Bounds on what one etcd client may ask for.
    pub limits: Limits,
    /// Name reported by the Cluster API (`etcdctl member list`).
    pub member_name: String,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create data directory {path}")]
    CreateDataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another wkube server is already running with data directory {data_dir}{holder} \
         (only one server may use a data directory; stop it or pass another --data-dir)"
    )]
    AlreadyRunning { data_dir: PathBuf, holder: String },
    #[error("cannot open the store {path}")]
    OpenStore {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("cannot set up the cluster certificates in {path}")]
    Pki {
        path: PathBuf,
        #[source]
        source: PkiError,
    },
    #[error("cannot listen on {addr} for the etcd v3 API")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    WriteEndpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd v3 API failed")]
    Grpc(#[from] GrpcError),
}

/// Runs the server until `shutdown` resolves, then drains in-flight requests
/// and returns.
///
/// # Errors
/// Any failure to set up the data directory, store, certificates or
/// listener, and a fatal error of the etcd endpoint.
pub async fn run(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let data_dir = cfg.data_dir.clone();
    create_private_dir(&data_dir).map_err(|source| ServerError::CreateDataDir {
        path: data_dir.clone(),
        source,
    })?;
    // Held until `run` returns; the OS drops the lock if the process dies.
    let _lock = lock_data_dir(&data_dir)?;

    let store: Store = match cfg.store {
        StoreSpec::Redb => {
            let path = data_dir.join(STORE_FILE);
            RedbStore::open(&path, RedbOptions::default())
                .map_err(|source| ServerError::OpenStore { path, source })?
        }
    };

    let tls = match cfg.tls {
        TlsMode::Off => None,
        TlsMode::Auto => {
            let mut sans = cfg.tls_sans.clone();
            if !cfg.etcd_listen.ip().is_unspecified() {
                sans.push(cfg.etcd_listen.ip().to_string());
            }
            let pki_err = |source| ServerError::Pki {
                path: data_dir.join(PKI_DIR),
                source,
            };
            let pki = ClusterPki::load_or_create(&data_dir, &sans).map_err(pki_err)?;
            Some((pki.etcd_server_tls().map_err(pki_err)?, pki))
        }
    };

    let listener = tokio::net::TcpListener::bind(cfg.etcd_listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.etcd_listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: cfg.etcd_listen,
        source,
    })?;
    let url = endpoint_url(local, tls.is_some());
    let endpoint_path = data_dir.join(ENDPOINT_FILE);
    write_atomically(&endpoint_path, format!("{url}\n").as_bytes()).map_err(|source| {
        ServerError::WriteEndpoint {
            path: endpoint_path.clone(),
            source,
        }
    })?;

    tracing::info!(%url, data_dir = %data_dir.display(), "etcd v3 API listening");
    print_usage(&url, &data_dir, tls.as_ref().map(|(_, pki)| pki));

    let member = Member {
        name: cfg.member_name.clone(),
        client_urls: vec![url.clone()],
        peer_urls: Vec::new(),
    };
    let result = grpc::serve(
        store,
        listener,
        tls.map(|(server_tls, _)| server_tls),
        cfg.limits.clone(),
        member,
        shutdown,
    )
    .await;

    // Clients that find the file would only get "connection refused"; a
    // missing file tells them plainly that no server runs.
    if std::fs::read_to_string(&endpoint_path).is_ok_and(|s| s.trim() == url) {
        let _ = std::fs::remove_file(&endpoint_path);
    }
    tracing::info!("server stopped");
    result.map_err(ServerError::from)
}

/// Resolves on the first SIGINT or SIGTERM. A second one ends the process at
/// once, for when draining hangs.
pub async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutting down (send the signal again to exit at once)");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    // Without handlers a signal kills the process the default way, which is
    // still a clean enough stop; so failing to install one is only logged.
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// The URL clients dial: an unspecified listen address is reached on loopback.
fn endpoint_url(local: SocketAddr, tls: bool) -> String {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, local.port()))
}

fn print_usage(url: &str, data_dir: &Path, pki: Option<&ClusterPki>) {
    let default_dir = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".wkube"));
    let dir_flag = if default_dir.as_deref() == Some(data_dir) {
        String::new()
    } else {
        format!(" --data-dir {}", data_dir.display())
    };
    println!("etcd v3 API listening on {url}");
    println!();
    println!("Use it with etcdctl:");
    match pki {
        Some(pki) => println!(
            "  ETCDCTL_API=3 etcdctl --endpoints {url} --cacert {} --cert {} --key {} get foo",
            pki.path("ca.crt").display(),
            pki.path("etcd-client.crt").display(),
            pki.path("etcd-client.key").display(),
        ),
        None => println!("  ETCDCTL_API=3 etcdctl --endpoints {url} get foo"),
    }
    println!("or with wkube (it finds the endpoint and certificates in the data dir):");
    println!("  wkube{dir_flag} kv put foo bar");
    println!("  wkube{dir_flag} kv get foo");
}

/// The data directory holds private keys: readable by its owner only.
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Takes the data directory's exclusive lock and records our pid in it, so
/// that a second server can say who holds it.
fn lock_data_dir(data_dir: &Path) -> Result<File, ServerError> {
    let path = data_dir.join(LOCK_FILE);
    let lock_err = |source| ServerError::Lock {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(lock_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            return Err(ServerError::AlreadyRunning {
                data_dir: data_dir.to_path_buf(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
    }
    file.set_len(0).map_err(lock_err)?;
    writeln!(file, "{}", std::process::id()).map_err(lock_err)?;
    Ok(file)
}

/// Readers never see a half-written file.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_address_is_advertised_as_loopback() {
        let url = endpoint_url("0.0.0.0:2379".parse().unwrap(), true);
        assert_eq!(url, "https://127.0.0.1:2379");
        let url = endpoint_url("[::]:80".parse().unwrap(), false);
        assert_eq!(url, "http://[::1]:80");
    }

    #[test]
    fn a_second_lock_on_the_data_dir_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_data_dir(dir.path()).unwrap();
        match lock_data_dir(dir.path()) {
            Err(ServerError::AlreadyRunning { holder, .. }) => {
                assert_eq!(holder, format!(" (pid {})", std::process::id()));
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
    }
}
