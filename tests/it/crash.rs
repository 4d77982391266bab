//! Crash safety: SIGKILL the server in the middle of a concurrent write load,
//! restart it on the same data directory, and check that nothing that was
//! acknowledged is lost and that revisions go on without gaps or reuse.

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

fn key_of(writer: usize, counter: u64) -> String {
    format!("crash/{writer:02}/{:02}", counter % KEYS_PER_WRITER)
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
    writer: usize,
    acked: Arc<AtomicUsize>,
) -> WriterLog {
    let mut acks = Vec::new();
    // Bounded even if the kill never came.
    for counter in 0..100_000u64 {
        let key = key_of(writer, counter);
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
        writers.push(tokio::spawn(write_until_failure(client, w, acked.clone())));
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
