//! End-to-end tests of the endpoint: a real server on loopback over the
//! redb backend in a temp dir, driven by the `etcd-client` crate.

use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, Error, GetOptions,
    Identity, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;

use super::*;
use crate::pki::ClusterPki;
use crate::store::redb::{RedbOptions, RedbStore};

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

struct TestServer {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), GrpcError>>,
    dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(limits: Limits, tls: Option<ServerTls>) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store: Store = RedbStore::open(&dir.path().join("store.redb"), RedbOptions::default())
            .expect("open store");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let member = Member {
            name: "test".into(),
            client_urls: vec![format!("http://{addr}")],
            peer_urls: vec![],
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(store, listener, tls, limits, member, async move {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task,
            dir,
        }
    }

    async fn client(&self) -> Client {
        Client::connect([format!("http://{}", self.addr)], None)
            .await
            .expect("connect")
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("server stops in time");
        result.unwrap().unwrap();
    }
}

fn status_of(err: Error) -> (Code, String) {
    match err {
        Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

async fn next(stream: &mut etcd_client::WatchStream) -> etcd_client::WatchResponse {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("watch response in time")
        .expect("watch stream ok")
        .expect("watch stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_round_trip_with_etcd_semantics() {
    let server = TestServer::start(Limits::default(), None).await;
    let mut c = server.client().await;

    let r = c.put("a/1", "one", None).await.unwrap();
    let first_rev = r.header().unwrap().revision();
    assert!(r.header().unwrap().member_id() != 0);
    assert_eq!(r.header().unwrap().raft_term(), 1);
    c.put("a/2", "two", None).await.unwrap();
    let r = c
        .put("a/1", "uno", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(r.prev_key().unwrap().value(), b"one");

    let r = c
        .get("a/", Some(GetOptions::new().with_prefix().with_limit(1)))
        .await
        .unwrap();
    assert_eq!(r.kvs().len(), 1);
    assert_eq!(r.kvs()[0].key(), b"a/1");
    assert_eq!(r.kvs()[0].value(), b"uno");
    assert_eq!((r.count(), r.more()), (2, true));

    let r = c
        .get("a/1", Some(GetOptions::new().with_revision(first_rev)))
        .await
        .unwrap();
    assert_eq!(r.kvs()[0].value(), b"one");

    let r = c
        .get(
            "a/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!((r.count(), r.kvs().len()), (2, 0));

    let r = c
        .delete(
            "a/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(r.deleted(), 2);
    assert_eq!(r.prev_kvs().len(), 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_etcds_errors() {
    let limits = Limits {
        max_request_bytes: 64 * 1024,
        max_txn_ops: 4,
        ..Limits::default()
    };
    let server = TestServer::start(limits, None).await;
    let mut c = server.client().await;

    let err = c.put("", "x", None).await.unwrap_err();
    assert_eq!(
        status_of(err),
        (
            Code::InvalidArgument,
            "etcdserver: key is not provided".into()
        )
    );
    let err = c.get("", None).await.unwrap_err();
    assert_eq!(status_of(err).0, Code::InvalidArgument);

    let puts: Vec<TxnOp> = (0..5)
        .map(|i| TxnOp::put(format!("k{i}"), "v", None))
        .collect();
    let err = c.txn(Txn::new().and_then(puts)).await.unwrap_err();
    assert_eq!(
        status_of(err),
        (
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request".into()
        )
    );
    let dup = Txn::new().and_then([TxnOp::put("k", "1", None), TxnOp::put("k", "2", None)]);
    let err = c.txn(dup).await.unwrap_err();
    assert_eq!(
        status_of(err),
        (
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request".into()
        )
    );

    // Above max_request_bytes: etcd's own error; far above: gRPC refuses.
    let err = c
        .put("big", vec![b'x'; 100 * 1024], None)
        .await
        .unwrap_err();
    assert_eq!(
        status_of(err),
        (
            Code::InvalidArgument,
            "etcdserver: request is too large".into()
        )
    );
    let err = c
        .put("big", vec![b'x'; 1024 * 1024], None)
        .await
        .unwrap_err();
    assert_eq!(status_of(err).0, Code::ResourceExhausted);

    let r = c.put("k", "1", None).await.unwrap();
    let rev = r.header().unwrap().revision();
    c.put("k", "2", None).await.unwrap();
    c.compact(rev + 1, None).await.unwrap();
    let err = c
        .get("k", Some(GetOptions::new().with_revision(rev)))
        .await
        .unwrap_err();
    assert_eq!(
        status_of(err),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted".into()
        )
    );
    let err = c
        .get("k", Some(GetOptions::new().with_revision(rev + 100)))
        .await
        .unwrap_err();
    assert_eq!(
        status_of(err),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision".into()
        )
    );
    let err = c.lease_revoke(12345).await.unwrap_err();
    assert_eq!(
        status_of(err),
        (
            Code::NotFound,
            "etcdserver: requested lease not found".into()
        )
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_and_returns_nested_responses() {
    let server = TestServer::start(Limits::default(), None).await;
    let mut c = server.client().await;
    c.put("k", "v1", None).await.unwrap();
    let txn = Txn::new()
        .when([Compare::value("k", CompareOp::Equal, "v1")])
        .and_then([TxnOp::put("k", "v2", None), TxnOp::get("k", None)])
        .or_else([TxnOp::get("k", None)]);
    let r = c.txn(txn).await.unwrap();
    assert!(r.succeeded());
    assert_eq!(r.op_responses().len(), 2);
    let txn = Txn::new()
        .when([Compare::value("k", CompareOp::Equal, "v1")])
        .and_then([TxnOp::put("k", "v3", None)])
        .or_else([TxnOp::get("k", None)]);
    let r = c.txn(txn).await.unwrap();
    assert!(!r.succeeded());
    match &r.op_responses()[0] {
        etcd_client::TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"v2"),
        other => panic!("expected a get, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_events_cancels_and_reports_compaction() {
    let server = TestServer::start(Limits::default(), None).await;
    let mut c = server.client().await;
    let first = c.put("w/0", "x", None).await.unwrap();
    let first_rev = first.header().unwrap().revision();

    let mut stream = c
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    let created = next(&mut stream).await;
    assert!(created.created());
    let id = created.watch_id();
    assert_eq!(id, 0, "auto ids start at 0");

    c.put("w/1", "a", None).await.unwrap();
    c.put("w/1", "b", None).await.unwrap();
    c.delete("w/1", None).await.unwrap();
    let mut events = Vec::new();
    for _ in 0..3 {
        if events.len() >= 3 {
            break;
        }
        let r = next(&mut stream).await;
        assert_eq!(r.watch_id(), id);
        events.extend(r.events().iter().cloned());
    }
    assert_eq!(events.len(), 3);
    assert_eq!(events[1].prev_kv().unwrap().value(), b"a");
    assert_eq!(events[2].event_type(), etcd_client::EventType::Delete);

    // A second watch on the same stream, with a client-chosen id.
    stream
        .watch("other", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .unwrap();
    let r = next(&mut stream).await;
    assert!(r.created());
    assert_eq!(r.watch_id(), 7);

    stream.cancel(id).await.unwrap();
    let r = next(&mut stream).await;
    assert!(r.canceled());
    assert_eq!(r.watch_id(), id);

    stream.request_progress().await.unwrap();
    let r = next(&mut stream).await;
    assert_eq!(r.watch_id(), -1);
    assert!(r.events().is_empty());

    // Watching from a compacted revision: created, then canceled with the
    // compaction revision (not a stream error).
    let now = c
        .put("w/2", "c", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.compact(now, None).await.unwrap();
    stream
        .watch(
            "w/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(first_rev),
            ),
        )
        .await
        .unwrap();
    let r = next(&mut stream).await;
    assert!(r.created());
    let r = next(&mut stream).await;
    assert!(r.canceled());
    assert_eq!(r.compact_revision(), now);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_watch_with_progress_notify_gets_progress() {
    let limits = Limits {
        progress_interval: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = TestServer::start(limits, None).await;
    let mut c = server.client().await;
    let mut stream = c
        .watch("p", Some(WatchOptions::new().with_progress_notify()))
        .await
        .unwrap();
    assert!(next(&mut stream).await.created());
    let r = next(&mut stream).await;
    assert!(r.events().is_empty() && !r.canceled());
    assert_eq!(r.watch_id(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_grant_keep_alive_and_report_unknown_ones_like_etcd() {
    let server = TestServer::start(Limits::default(), None).await;
    let mut c = server.client().await;
    let g = c.lease_grant(60, None).await.unwrap();
    assert_eq!(g.ttl(), 60);
    c.put("leased", "v", Some(PutOptions::new().with_lease(g.id())))
        .await
        .unwrap();

    // The client consumes the first response itself (and checks its TTL).
    let (mut keeper, mut responses) = c.lease_keep_alive(g.id()).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let r = tokio::time::timeout(WAIT, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((r.id(), r.ttl()), (g.id(), 60));
    // An unknown lease: the server answers TTL 0 (not an error), which the
    // client turns into "lease not found".
    match c.lease_keep_alive(4242).await {
        Err(Error::LeaseKeepAliveError(msg)) => assert!(msg.contains("not found"), "{msg}"),
        other => panic!("expected lease not found, got {other:?}"),
    }

    let t = c
        .lease_time_to_live(
            g.id(),
            Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
        )
        .await
        .unwrap();
    assert_eq!(t.granted_ttl(), 60);
    assert_eq!(t.keys(), [b"leased".to_vec()]);
    let t = c.lease_time_to_live(4242, None).await.unwrap();
    assert_eq!(t.ttl(), -1);

    let leases = c.leases().await.unwrap();
    assert_eq!(leases.leases().len(), 1);
    c.lease_revoke(g.id()).await.unwrap();
    assert_eq!(c.get("leased", None).await.unwrap().count(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_member_list_and_alarms() {
    let server = TestServer::start(Limits::default(), None).await;
    let mut c = server.client().await;
    let s = c.status().await.unwrap();
    assert_eq!(s.version(), "3.5.0");
    assert_eq!(s.leader(), s.header().unwrap().member_id());
    assert_eq!(s.raft_term(), 1);
    let m = c.member_list().await.unwrap();
    assert_eq!(m.members().len(), 1);
    assert_eq!(m.members()[0].name(), "test");
    assert_eq!(m.members()[0].id(), s.header().unwrap().member_id());
    let a = c
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert!(a.alarms().is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_returns() {
    let server = TestServer::start(Limits::default(), None).await;
    let mut c = server.client().await;
    let mut stream = c.watch("x", None).await.unwrap();
    assert!(next(&mut stream).await.created());
    let started = std::time::Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "drained promptly"
    );
    let end = tokio::time::timeout(WAIT, stream.message()).await.unwrap();
    assert!(matches!(end, Err(_) | Ok(None)), "stream ended: {end:?}");
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_requires_a_client_cert_from_the_etcd_client_ca() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::load_or_create(pki_dir.path(), &[]).unwrap();
    let server = TestServer::start(Limits::default(), Some(pki.etcd_server_tls().unwrap())).await;
    let endpoint = format!("https://{}", server.addr);
    let read = |f: &str| std::fs::read_to_string(pki.path(f)).unwrap();

    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(pki.ca_cert_pem()))
        .identity(Identity::from_pem(
            read("etcd-client.crt"),
            read("etcd-client.key"),
        ))
        .domain_name("localhost");
    let mut c = Client::connect([&endpoint], Some(ConnectOptions::new().with_tls(tls)))
        .await
        .expect("mutual TLS connects");
    c.put("secure", "yes", None).await.unwrap();

    // Without a client certificate the server refuses.
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(pki.ca_cert_pem()))
        .domain_name("localhost");
    let anonymous = async {
        let mut c = Client::connect([&endpoint], Some(ConnectOptions::new().with_tls(tls))).await?;
        c.put("secure", "no", None).await
    };
    let result = tokio::time::timeout(WAIT, anonymous).await.unwrap();
    assert!(result.is_err(), "a client without a certificate got in");

    // A certificate from another CA is refused too.
    let other_dir = tempfile::tempdir().unwrap();
    let other = ClusterPki::load_or_create(other_dir.path(), &[]).unwrap();
    let foreign = std::fs::read_to_string(other.path("etcd-client.crt")).unwrap();
    let foreign_key = std::fs::read_to_string(other.path("etcd-client.key")).unwrap();
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(pki.ca_cert_pem()))
        .identity(Identity::from_pem(foreign, foreign_key))
        .domain_name("localhost");
    let intruder = async {
        let mut c = Client::connect([&endpoint], Some(ConnectOptions::new().with_tls(tls))).await?;
        c.put("secure", "no", None).await
    };
    let result = tokio::time::timeout(WAIT, intruder).await.unwrap();
    assert!(result.is_err(), "a client of another CA got in");

    // The cluster CA signs node certificates for anyone with a join token,
    // and the API server's certificate towards agents: none of them, nor an
    // admin-looking certificate from the cluster CA, opens the raw store.
    let node = pki
        .issue_node("n1", vec!["127.0.0.1".parse().unwrap()], DAY)
        .unwrap();
    let kubelet_client = pki.kubelet_client_tls().unwrap();
    let cluster_admin = pki
        .issue(&crate::pki::CertSpec {
            common_name: "wkube-admin".into(),
            organizations: vec!["system:masters".into()],
            dns_names: Vec::new(),
            ips: Vec::new(),
            server: false,
            client: true,
            validity: DAY,
        })
        .unwrap();
    for (who, cert, key) in [
        ("node", node.client.cert_pem, node.client.key_pem),
        ("node serving", node.serving.cert_pem, node.serving.key_pem),
        (
            "kubelet client",
            kubelet_client.cert_pem,
            kubelet_client.key_pem,
        ),
        (
            "cluster-CA admin",
            cluster_admin.cert_pem,
            cluster_admin.key_pem,
        ),
    ] {
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(pki.ca_cert_pem()))
            .identity(Identity::from_pem(cert, key))
            .domain_name("localhost");
        let attempt = async {
            let mut c =
                Client::connect([&endpoint], Some(ConnectOptions::new().with_tls(tls))).await?;
            c.get("secure", None).await
        };
        let result = tokio::time::timeout(WAIT, attempt).await.unwrap();
        assert!(result.is_err(), "a {who} certificate read the store");
    }
    let _ = &server.dir;
    server.shutdown().await;
}

/// Not a test: serves the endpoint on `WKUBE_GRPC_MANUAL_ADDR` (a loopback
/// address) for up to two minutes, for comparing `etcdctl` output with a
/// real etcd by hand:
/// `WKUBE_GRPC_MANUAL_ADDR=127.0.0.1:42379 cargo test --lib manual_etcdctl_server -- --ignored`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "manual: serves for etcdctl comparisons"]
async fn manual_etcdctl_server() {
    let addr: std::net::SocketAddr = std::env::var("WKUBE_GRPC_MANUAL_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:42379".into())
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback(), "loopback only");
    let dir = tempfile::tempdir().unwrap();
    let store: Store =
        RedbStore::open(&dir.path().join("store.redb"), RedbOptions::default()).unwrap();
    let listener = TcpListener::bind(addr).await.unwrap();
    let member = Member {
        name: "default".into(),
        client_urls: vec![format!("http://{addr}")],
        peer_urls: vec!["http://localhost:2380".into()],
    };
    let shutdown = tokio::time::sleep(Duration::from_secs(120));
    serve(store, listener, None, Limits::default(), member, shutdown)
        .await
        .unwrap();
}
