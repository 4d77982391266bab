//! Limits under load: hitting a limit gives a clean refusal, never a reset
//! connection, and the server keeps serving kubectl meanwhile.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Watches opened at once by one user: half again its allowance.
const WATCHES: usize = 1500;
/// `--max-long-running-per-user`'s default.
const PER_USER: usize = 1000;

fn tls_config(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(ca.expect("CA certificate")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Opens a watch and returns its status code (or what went wrong) and the
/// stream, kept open by the caller.
async fn open_watch(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    token: Arc<String>,
) -> (
    String,
    Option<BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>,
) {
    // How far a connection got, for the report of one that hangs.
    let stage = std::sync::Mutex::new("connect");
    let step = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        *stage.lock().unwrap() = "handshake";
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        *stage.lock().unwrap() = "response";
        let req = format!(
            "GET /api/v1/namespaces/default/configmaps?watch=1 HTTP/1.1\r\nHost: wkube\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        tls.write_all(req.as_bytes()).await?;
        let mut reader = BufReader::new(tls);
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        Ok::<_, std::io::Error>((line, reader))
    };
    match tokio::time::timeout(Duration::from_secs(60), step).await {
        Ok(Ok((line, reader))) => {
            let code = line.split_whitespace().nth(1).unwrap_or("EOF").to_string();
            (code, Some(reader))
        }
        Ok(Err(e)) => (format!("error: {e}"), None),
        Err(_) => (format!("timed out in {}", stage.lock().unwrap()), None),
    }
}

#[test]
fn a_user_past_its_watch_allowance_gets_429s_not_resets_and_kubectl_still_works() {
    let server = TestServer::start();
    let k = server.kubectl();
    let token = server
        .wkube(&["token", "create", "--user", "watcher"])
        .success()
        .trim()
        .to_string();
    k.ok(&[
        "create",
        "rolebinding",
        "watcher-view",
        "--clusterrole=view",
        "--user=watcher",
        "-n",
        "default",
    ]);
    let addr: std::net::SocketAddr = server
        .api_url
        .trim_start_matches("https://")
        .parse()
        .expect("API address");
    let tls = tls_config(&std::fs::read(server.pki("ca.crt")).expect("CA"));
    let token = Arc::new(token);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        // A task per connection, as separate clients would be.
        let opens: Vec<_> = (0..WATCHES)
            .map(|_| tokio::spawn(open_watch(addr, tls.clone(), token.clone())))
            .collect();
        let mut results = Vec::new();
        for open in opens {
            results.push(open.await.expect("watch task"));
        }
        results
    });
    // Every watch open: the server still answers kubectl.
    let started = std::time::Instant::now();
    k.ok(&["get", "configmaps", "-n", "default"]);
    let kubectl_took = started.elapsed();
    let mut counts = std::collections::BTreeMap::new();
    for (code, _) in &results {
        *counts.entry(code.clone()).or_insert(0usize) += 1;
    }
    eprintln!("{WATCHES} watches: {counts:?}; kubectl meanwhile {kubectl_took:?}");
    assert_eq!(counts.get("200"), Some(&PER_USER), "{counts:?}");
    assert_eq!(counts.get("429"), Some(&(WATCHES - PER_USER)), "{counts:?}");
    assert_eq!(counts.len(), 2, "refusals other than 429: {counts:?}");
    assert!(kubectl_took < Duration::from_secs(10), "{kubectl_took:?}");
    drop(results);
}
