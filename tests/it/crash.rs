//! Crash safety: SIGKILL the server in the middle of a concurrent write load,
//! restart it on the same data directory, and check that nothing that was
//! acknowledged is lost and that revisions go on without gaps or reuse.
//! Then three kills in a row under etcd puts, API creates, updates and
//! deletes and a watch that resumes after each restart from the last
//! revision it saw: every acknowledged write survives every kill, and the
//! watch delivers every acknowledged put exactly once.

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::TestServer;
use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, WatchOptions,
};

/// Concurrent writers, each with its own connection.
const WRITERS: usize = 16;
/// Keys per writer; each is overwritten many times.
const KEYS_PER_WRITER: u64 = 8;
/// Acknowledged writes to reach before the kill.
const ACKS_BEFORE_KILL: usize = 2000;
/// One request may not take longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole test.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// One acknowledged put.
#[derive(Clone, Debug)]
struct Ack {
    key: String,
    counter: u64,
    revision: i64,
}

/// What one writer did.
struct WriterLog {
    acks: Vec<Ack>,
    /// The put that got no answer (in flight at the kill), if any: it may or
    /// may not have been committed.
    in_flight: Option<(String, u64)>,
}

/// A writer's key for its `counter`th put: `PREFIX/NN`, each of its
/// [`KEYS_PER_WRITER`] keys overwritten in turn.
fn key_of(prefix: &str, counter: u64) -> String {
    format!("{prefix}/{:02}", counter % KEYS_PER_WRITER)
}

fn value_of(key: &str, counter: u64) -> String {
    format!("{key}#{counter}")
}

/// Splits "crash/03/05#117" into its key and counter.
fn parse_value(value: &str) -> Option<(&str, u64)> {
    let (key, counter) = value.rsplit_once('#')?;
    Some((key, counter.parse().ok()?))
}

async fn connect(server: &TestServer) -> Client {
    let read = |f: &str| std::fs::read(server.pki(f)).expect("read pki file");
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(
            read("etcd-client.crt"),
            read("etcd-client.key"),
        ));
    let opts = ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(REQUEST_TIMEOUT);
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        Client::connect([server.endpoint.as_str()], Some(opts)),
    )
    .await
    .expect("connect timed out")
    .expect("connect")
}

async fn write_until_failure(
    mut client: Client,
    prefix: String,
    acked: Arc<AtomicUsize>,
) -> WriterLog {
    let mut acks = Vec::new();
    // Bounded even if the kill never came.
    for counter in 0..100_000u64 {
        let key = key_of(&prefix, counter);
        let value = value_of(&key, counter);
        match tokio::time::timeout(REQUEST_TIMEOUT, client.put(key.clone(), value, None)).await {
            Ok(Ok(resp)) => {
                let revision = resp.header().expect("put response header").revision();
                acks.push(Ack {
                    key,
                    counter,
                    revision,
                });
                acked.fetch_add(1, Ordering::Relaxed);
            }
            // The server is gone: this put may or may not have committed.
            Ok(Err(_)) | Err(_) => {
                return WriterLog {
                    acks,
                    in_flight: Some((key, counter)),
                };
            }
        }
    }
    WriterLog {
        acks,
        in_flight: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_a_sigkill_and_revisions_continue_without_gaps() {
    tokio::time::timeout(TEST_TIMEOUT, crash_and_check())
        .await
        .expect("crash test took too long");
}

async fn crash_and_check() {
    let mut server = TestServer::start();
    let acked = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = connect(&server).await;
        writers.push(tokio::spawn(write_until_failure(
            client,
            format!("crash/{w:02}"),
            acked.clone(),
        )));
    }

    // Kill while every writer is busy.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < ACKS_BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "only {} writes acknowledged in 60 s",
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();

    let mut logs = Vec::new();
    for w in writers {
        logs.push(w.await.expect("writer task"));
    }
    let acks: Vec<Ack> = logs.iter().flat_map(|l| l.acks.iter().cloned()).collect();
    assert!(acks.len() >= ACKS_BEFORE_KILL);
    assert!(
        logs.iter().all(|l| l.in_flight.is_some()),
        "every writer was still writing when the server died"
    );

    // Acknowledged revisions are unique.
    let mut revisions = HashSet::new();
    for a in &acks {
        assert!(
            revisions.insert(a.revision),
            "revision {} acknowledged twice",
            a.revision
        );
    }
    let max_acked = acks.iter().map(|a| a.revision).max().expect("some acks");

    server.restart();
    let mut client = connect(&server).await;

    let resp = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.get("crash/", Some(GetOptions::new().with_prefix())),
    )
    .await
    .expect("get timed out")
    .expect("get after restart");
    let current = resp.header().expect("header").revision();
    assert!(
        current >= max_acked,
        "store revision {current} after restart is below the acknowledged {max_acked}"
    );
    let stored: HashMap<String, (String, i64)> = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().expect("utf-8 key").to_owned(),
                (
                    kv.value_str().expect("utf-8 value").to_owned(),
                    kv.mod_revision(),
                ),
            )
        })
        .collect();

    // Every key holds its last acknowledged value, or the one write of its
    // writer that was in flight at the kill.
    let mut last_ack: HashMap<&str, &Ack> = HashMap::new();
    for a in &acks {
        let e = last_ack.entry(a.key.as_str()).or_insert(a);
        if a.counter > e.counter {
            *e = a;
        }
    }
    let in_flight: HashMap<&str, u64> = logs
        .iter()
        .filter_map(|l| l.in_flight.as_ref())
        .map(|(k, c)| (k.as_str(), *c))
        .collect();
    for (key, ack) in &last_ack {
        let (value, mod_rev) = stored
            .get(*key)
            .unwrap_or_else(|| panic!("acknowledged key {key} is missing after restart"));
        let (vkey, counter) =
            parse_value(value).unwrap_or_else(|| panic!("{key} holds garbage: {value:?}"));
        assert_eq!(vkey, *key, "{key} holds another key's value");
        if counter == ack.counter {
            assert_eq!(
                *mod_rev, ack.revision,
                "{key}: value moved to another revision"
            );
        } else {
            assert_eq!(
                in_flight.get(key),
                Some(&counter),
                "{key} holds counter {counter}, acknowledged {}, which nobody wrote last",
                ack.counter
            );
            assert!(counter > ack.counter);
        }
    }
    for key in stored.keys() {
        assert!(
            last_ack.contains_key(key.as_str()) || in_flight.contains_key(key.as_str()),
            "{key} appeared from nowhere"
        );
    }

    // The history: every revision from the first write to the current one
    // holds at least one change (revisions have no gaps and are never
    // reused), the acknowledged puts sit where they were acknowledged, and
    // at most one unacknowledged write per writer committed. Other keys
    // (the API server's own objects) share the revision sequence, so the
    // watch covers the whole key space.
    let mut watch = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.watch(
            "\0",
            Some(WatchOptions::new().with_from_key().with_start_revision(1)),
        ),
    )
    .await
    .expect("watch timed out")
    .expect("watch");
    let mut revisions: BTreeMap<i64, usize> = BTreeMap::new();
    let mut history: BTreeMap<i64, (String, String)> = BTreeMap::new();
    while revisions.last_key_value().map_or(0, |(r, _)| *r) < current {
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, watch.message())
            .await
            .expect("watch stalled")
            .expect("watch failed")
            .expect("watch ended");
        assert!(
            !resp.canceled(),
            "watch cancelled: {}",
            resp.cancel_reason()
        );
        for ev in resp.events() {
            let kv = ev.kv().expect("event kv");
            *revisions.entry(kv.mod_revision()).or_default() += 1;
            let key = kv.key_str().expect("key").to_owned();
            if !key.starts_with("crash/") {
                continue;
            }
            assert_eq!(ev.event_type(), EventType::Put);
            let prior = history.insert(
                kv.mod_revision(),
                (key, kv.value_str().expect("value").to_owned()),
            );
            assert!(prior.is_none(), "revision {} reused", kv.mod_revision());
        }
    }
    let first = *revisions.keys().next().expect("history");
    assert_eq!(first, 2, "the first write of an empty store is revision 2");
    assert_eq!(
        revisions.keys().copied().collect::<Vec<_>>(),
        (first..=current).collect::<Vec<_>>(),
        "revisions have gaps"
    );
    for a in &acks {
        let (key, value) = &history[&a.revision];
        assert_eq!(key, &a.key, "revision {}", a.revision);
        assert_eq!(
            value,
            &value_of(&a.key, a.counter),
            "revision {}",
            a.revision
        );
    }
    let unacked = history.len() - acks.len();
    eprintln!(
        "crash test: {} writes acknowledged before the kill, {unacked} more committed \
         unacknowledged, revision {current} after restart",
        acks.len()
    );
    assert!(
        unacked <= WRITERS,
        "{unacked} unacknowledged writes committed, but at most {WRITERS} were in flight"
    );

    // New writes continue right after the last one.
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, client.put("crash-after", "x", None))
        .await
        .expect("put timed out")
        .expect("put after restart");
    assert_eq!(resp.header().expect("header").revision(), current + 1);
}

/// Kills in a row for the repeated-crash test.
const ROUNDS: usize = 3;
/// Acknowledged etcd puts per round before its kill.
const ACKS_PER_ROUND: usize = 400;

/// What one API writer did: ConfigMaps created, then updated, every third
/// one deleted; each step recorded once acknowledged.
#[derive(Default)]
struct ApiLog {
    created: Vec<String>,
    updated: Vec<String>,
    deleted: Vec<String>,
    /// The object whose request got no answer, if any.
    in_flight: Option<String>,
}

async fn api_client(server: &TestServer) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(server.admin_kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn api_writes_until_failure(client: kube::Client, round: usize, writer: usize) -> ApiLog {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (post, patch_params, delete) = (
        PostParams::default(),
        PatchParams::default(),
        DeleteParams::default(),
    );
    let mut log = ApiLog::default();
    for i in 0..10_000 {
        let name = format!("loop-{round}-{writer}-{i}");
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "data": {"v": "0"}}))
        .unwrap();
        log.in_flight = Some(name.clone());
        let call = tokio::time::timeout(REQUEST_TIMEOUT, api.create(&post, &cm));
        if !matches!(call.await, Ok(Ok(_))) {
            return log;
        }
        log.created.push(name.clone());
        let patch = Patch::Merge(serde_json::json!({"data": {"v": "1"}}));
        let call = tokio::time::timeout(REQUEST_TIMEOUT, api.patch(&name, &patch_params, &patch));
        if !matches!(call.await, Ok(Ok(_))) {
            return log;
        }
        log.updated.push(name.clone());
        if i % 3 == 0 {
            let call = tokio::time::timeout(REQUEST_TIMEOUT, api.delete(&name, &delete));
            if !matches!(call.await, Ok(Ok(_))) {
                return log;
            }
            log.deleted.push(name.clone());
        }
    }
    log.in_flight = None;
    log
}

/// Follows `loop/` from `from` until the server dies, recording each
/// event's revision and key.
async fn watch_until_failure(mut client: Client, from: i64) -> Vec<(i64, String)> {
    let mut seen = Vec::new();
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.watch(
            "loop/",
            Some(WatchOptions::new().with_prefix().with_start_revision(from)),
        ),
    )
    .await
    else {
        return seen;
    };
    while let Ok(Ok(Some(resp))) = tokio::time::timeout(REQUEST_TIMEOUT, stream.message()).await {
        for ev in resp.events() {
            let kv = ev.kv().expect("event kv");
            seen.push((kv.mod_revision(), kv.key_str().unwrap().to_owned()));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_kills_under_api_and_etcd_load_lose_nothing_and_watches_resume_exactly_once() {
    tokio::time::timeout(TEST_TIMEOUT, crash_loop())
        .await
        .expect("crash loop took too long");
}

async fn crash_loop() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let mut server = TestServer::start();
    let mut all_acks: Vec<Ack> = Vec::new();
    let mut api_logs: Vec<ApiLog> = Vec::new();
    // Every `loop/` event a watcher delivered, across restarts: a watch
    // resumes after the last revision it saw.
    let mut watched: Vec<(i64, String)> = Vec::new();
    let mut last_revision = 0i64;
    for round in 0..ROUNDS {
        let acked = Arc::new(AtomicUsize::new(0));
        let watcher = tokio::spawn(watch_until_failure(
            connect(&server).await,
            watched.last().map_or(1, |(r, _)| r + 1),
        ));
        let mut etcd = Vec::new();
        for w in 0..4 {
            let client = connect(&server).await;
            etcd.push(tokio::spawn(write_until_failure(
                client,
                format!("loop/{round}/{w}"),
                acked.clone(),
            )));
        }
        let mut api = Vec::new();
        for w in 0..2 {
            let client = api_client(&server).await;
            api.push(tokio::spawn(api_writes_until_failure(client, round, w)));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.load(Ordering::Relaxed) < ACKS_PER_ROUND {
            assert!(
                Instant::now() < deadline,
                "round {round}: too few writes in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill();
        for e in etcd {
            all_acks.extend(e.await.unwrap().acks);
        }
        for a in api {
            api_logs.push(a.await.unwrap());
        }
        let seen = watcher.await.unwrap();
        // Before the kill: in order, each revision once, after the resume
        // point.
        for (rev, key) in seen {
            if let Some((prev, _)) = watched.last() {
                assert!(rev > *prev, "watch went from {prev} back to {rev} ({key})");
            }
            watched.push((rev, key));
        }

        server.restart();
        let mut client = connect(&server).await;
        let resp = client
            .get("loop/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let current = resp.header().unwrap().revision();
        let max_acked = all_acks.iter().map(|a| a.revision).max().unwrap_or(0);
        assert!(
            current >= max_acked && current >= last_revision,
            "round {round}: revision {current} after restart, acknowledged up to {max_acked}, \
             before the kill {last_revision}"
        );
        last_revision = current;
        // Every key holds its last acknowledged value or a later one.
        let stored: HashMap<String, u64> = resp
            .kvs()
            .iter()
            .map(|kv| {
                let (_, c) = parse_value(kv.value_str().unwrap()).unwrap();
                (kv.key_str().unwrap().to_owned(), c)
            })
            .collect();
        let mut last_ack: HashMap<&str, u64> = HashMap::new();
        for a in &all_acks {
            let e = last_ack.entry(a.key.as_str()).or_insert(a.counter);
            *e = (*e).max(a.counter);
        }
        for (key, counter) in &last_ack {
            let got = stored
                .get(*key)
                .unwrap_or_else(|| panic!("round {round}: acknowledged {key} is gone"));
            assert!(
                got >= counter,
                "round {round}: {key} went back from {counter} to {got}"
            );
        }
        // Every acknowledged API write is there, every acknowledged delete
        // is gone.
        let cms: kube::Api<ConfigMap> = kube::Api::namespaced(api_client(&server).await, "default");
        for log in &api_logs {
            for name in &log.created {
                let got = cms.get_opt(name).await.unwrap();
                let deleted = log.deleted.contains(name);
                let maybe_deleted = log.in_flight.as_ref() == Some(name);
                match got {
                    Some(cm) => {
                        assert!(!deleted, "round {round}: deleted {name} is back");
                        let v = cm.data.unwrap_or_default().remove("v");
                        if log.updated.contains(name) {
                            assert_eq!(
                                v.as_deref(),
                                Some("1"),
                                "round {round}: {name} lost its update"
                            );
                        }
                    }
                    None => assert!(
                        deleted || maybe_deleted,
                        "round {round}: acknowledged {name} is missing"
                    ),
                }
            }
        }
    }

    // The watch, resumed after each restart from its last revision, saw
    // every acknowledged put exactly once.
    let mut by_revision: HashSet<i64> = HashSet::new();
    for (rev, _) in &watched {
        assert!(by_revision.insert(*rev), "revision {rev} delivered twice");
    }
    // The last round's watcher stopped at the kill; catch up to the end.
    let mut client = connect(&server).await;
    let mut stream = client
        .watch(
            "loop/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(watched.last().map_or(1, |(r, _)| r + 1)),
            ),
        )
        .await
        .unwrap();
    let end = all_acks.iter().map(|a| a.revision).max().unwrap();
    while watched.last().map_or(0, |(r, _)| *r) < end {
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, stream.message())
            .await
            .expect("watch stalled")
            .unwrap()
            .unwrap();
        for ev in resp.events() {
            let kv = ev.kv().unwrap();
            let rev = kv.mod_revision();
            assert!(
                by_revision.insert(rev),
                "revision {rev} delivered twice after resuming"
            );
            watched.push((rev, kv.key_str().unwrap().to_owned()));
        }
    }
    for a in &all_acks {
        assert!(
            by_revision.contains(&a.revision),
            "acknowledged put of {} at {} never reached the watch",
            a.key,
            a.revision
        );
    }
    eprintln!(
        "crash loop: {ROUNDS} kills, {} etcd puts and {} API objects acknowledged, {} watch events",
        all_acks.len(),
        api_logs.iter().map(|l| l.created.len()).sum::<usize>(),
        watched.len()
    );
}
