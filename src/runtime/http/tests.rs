use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};

use super::*;
use crate::runtime::cache::digest_of;
use crate::runtime::testutil::{guest, runtime_in};
use crate::runtime::{Preopen, Runtime};

fn service(rt: &Runtime, name: &str, ctx: PodContext, limits: PodLimits) -> HttpService {
    let bytes = guest(name);
    let loaded = rt.load(&digest_of(&bytes), &bytes).expect("load");
    HttpService::new(loaded, ctx, limits).expect("http service")
}

fn request(path: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(path)
        .body(Empty::new())
        .expect("request")
}

async fn get(svc: &HttpService, path: &str) -> (StatusCode, String) {
    let resp = svc.handle(request(path)).await;
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn hello_http_answers_hello_from_wkube() {
    let (rt, _dir) = runtime_in();
    let svc = service(
        &rt,
        "hello-http",
        PodContext::default(),
        PodLimits::default(),
    );
    assert_eq!(
        get(&svc, "/").await,
        (StatusCode::OK, "Hello from wkube!\n".to_string())
    );
}

#[tokio::test]
async fn hello_http_answers_its_greeting_when_set() {
    let (rt, _dir) = runtime_in();
    let ctx = PodContext {
        env: env(&[("GREETING", "Bonjour")]),
        ..PodContext::default()
    };
    let svc = service(&rt, "hello-http", ctx, PodLimits::default());
    assert_eq!(
        get(&svc, "/any").await,
        (StatusCode::OK, "Bonjour\n".to_string())
    );
}

#[tokio::test]
async fn echo_http_sees_only_its_preopened_dir_and_its_env() {
    let (rt, dir) = runtime_in();
    let vol = dir.path().join("config");
    std::fs::create_dir(&vol).expect("mkdir");
    std::fs::write(vol.join("greeting"), "hi from a volume").expect("write");
    let logged = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let l = logged.clone();
    let ctx = PodContext {
        env: env(&[("POD_NAME", "echo-1")]),
        preopens: vec![Preopen {
            host_path: vol,
            guest_path: "/etc/config".into(),
            read_only: true,
        }],
        logs: Some(Arc::new(move |_, b: &[u8]| l.lock().extend_from_slice(b))),
        ..PodContext::default()
    };
    let svc = service(&rt, "echo-http", ctx, PodLimits::default());

    let (status, body) = get(&svc, "/file/etc/config/greeting").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "hi from a volume")
    );
    let (status, _) = get(&svc, "/file/etc/passwd").await;
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
        "/etc/passwd must not be readable, got {status}"
    );
    let (status, _) = get(&svc, "/file/etc/config/../../etc/passwd").await;
    assert!(status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND);

    let (status, body) = get(&svc, "/env").await;
    assert_eq!(status, StatusCode::OK);
    let seen: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(seen, serde_json::json!({"POD_NAME": "echo-1"}));

    let log = String::from_utf8_lossy(&logged.lock()).into_owned();
    assert!(log.contains("GET /env -> 200"), "per-request log: {log:?}");
}

#[tokio::test]
async fn alloc_past_the_limit_fails_that_request_and_the_next_one_succeeds() {
    let (rt, _dir) = runtime_in();
    let limits = PodLimits {
        memory_bytes: Some(32 << 20),
        ..PodLimits::default()
    };
    let svc = service(&rt, "echo-http", PodContext::default(), limits);

    assert_eq!(get(&svc, "/alloc/4").await.0, StatusCode::OK);
    let err = svc.try_handle(request("/alloc/64")).await.unwrap_err();
    assert!(err.is_oom(), "expected an OOM, got {err}");
    assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(get(&svc, "/status/200").await.0, StatusCode::OK);
    assert_eq!(get(&svc, "/alloc/4").await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_meter_counts_live_instances_memory_and_keeps_the_peak() {
    let (rt, _dir) = runtime_in();
    let meter = Arc::new(crate::runtime::MemoryMeter::default());
    let limits = PodLimits {
        meter: Some(meter.clone()),
        ..PodLimits::default()
    };
    let svc = service(&rt, "echo-http", PodContext::default(), limits);
    assert_eq!(get(&svc, "/status/200").await.0, StatusCode::OK);
    let small = meter.peak();
    assert!(small > 0, "an instance holds some linear memory");
    // The instance goes soon after it answered (its store is dropped
    // once the response is done with it): then nothing is held.
    released(&meter).await;
    assert_eq!(get(&svc, "/alloc/8").await.0, StatusCode::OK);
    assert!(
        meter.peak() >= small + (8 << 20),
        "peak {} after an 8 MiB allocation (before {small})",
        meter.peak()
    );
    released(&meter).await;
}

/// Waits (bounded) until `meter` counts nothing held.
async fn released(meter: &crate::runtime::MemoryMeter) {
    for _ in 0..200 {
        if meter.in_use() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} bytes still counted", meter.in_use());
}

#[tokio::test]
async fn a_request_past_its_deadline_answers_504() {
    let (rt, _dir) = runtime_in();
    let limits = PodLimits {
        request_timeout: Duration::from_millis(200),
        ..PodLimits::default()
    };
    let svc = service(&rt, "echo-http", PodContext::default(), limits);
    let start = Instant::now();
    assert_eq!(get(&svc, "/spin/5000").await.0, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        get(&svc, "/sleep/5000").await.0,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(get(&svc, "/status/204").await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn outgoing_requests_are_denied_unless_the_policy_allows_them() {
    let (rt, _dir) = runtime_in();
    let svc = service(
        &rt,
        "echo-http",
        PodContext::default(),
        PodLimits::default(),
    );
    let (status, body) = get(&svc, "/fetch?url=http://127.0.0.1:9/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("HttpRequestDenied"), "{body}");

    // Allowed host: the request is attempted (nothing listens on port 9, so
    // it fails differently).
    let ctx = PodContext {
        outbound: Some(Arc::new(|uri: &hyper::Uri| uri.host() == Some("127.0.0.1"))),
        ..PodContext::default()
    };
    let svc = service(&rt, "echo-http", ctx, PodLimits::default());
    let (status, body) = get(&svc, "/fetch?url=http://127.0.0.1:9/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(!body.contains("HttpRequestDenied"), "{body}");
    let (_, body) = get(&svc, "/fetch?url=http://example.invalid/").await;
    assert!(body.contains("HttpRequestDenied"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_spinning_requests_do_not_stop_hello_http_from_answering() {
    let (rt, _dir) = runtime_in();
    let echo = Arc::new(service(
        &rt,
        "echo-http",
        PodContext::default(),
        PodLimits::default(),
    ));
    let hello = Arc::new(service(
        &rt,
        "hello-http",
        PodContext::default(),
        PodLimits::default(),
    ));
    get(&hello, "/").await; // warm up

    let spinners: Vec<_> = (0..10)
        .map(|_| {
            let echo = echo.clone();
            tokio::spawn(async move { get(&echo, "/spin/2000").await.0 })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut worst = Duration::ZERO;
    let mut lat = Vec::new();
    for _ in 0..20 {
        // Sent from a worker thread, as the kubelet's connection tasks do
        // (a task spawned from outside the runtime waits in the global
        // queue, which workers poll only every few dozen tasks).
        let h = hello.clone();
        let (status, d) = tokio::spawn(async move {
            let start = Instant::now();
            let (status, _) = get(&h, "/").await;
            (status, start.elapsed())
        })
        .await
        .expect("request task");
        assert_eq!(status, StatusCode::OK);
        worst = worst.max(d);
        lat.push(d);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lat.sort();
    println!(
        "hello-http under 10 x /spin/2000: p50 {:?}, max {:?}",
        lat[lat.len() / 2],
        worst
    );
    assert!(
        worst < Duration::from_millis(500),
        "worst latency {worst:?}"
    );
    for s in spinners {
        assert_eq!(s.await.expect("spinner"), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_instantiation_overhead_is_measured() {
    let (rt, _dir) = runtime_in();
    let hello = service(
        &rt,
        "hello-http",
        PodContext::default(),
        PodLimits::default(),
    );
    for _ in 0..50 {
        hello.probe_instantiation().await.expect("instantiate");
    }
    let mut inst: Vec<Duration> = Vec::new();
    for _ in 0..1000 {
        inst.push(hello.probe_instantiation().await.expect("instantiate"));
    }
    inst.sort();
    let mut full: Vec<Duration> = Vec::new();
    for _ in 0..1000 {
        let start = Instant::now();
        let (status, _) = get(&hello, "/").await;
        full.push(start.elapsed());
        assert_eq!(status, StatusCode::OK);
    }
    full.sort();
    println!(
        "pooling={} store+instantiate: p50 {:?} p99 {:?}; full request: p50 {:?} p99 {:?}",
        rt.pooling(),
        inst[500],
        inst[990],
        full[500],
        full[990]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_over_its_cpu_limit_is_throttled_and_still_answers() {
    let (rt, _dir) = runtime_in();
    let quota = Arc::new(crate::runtime::CpuQuota::new(100));
    let limits = PodLimits {
        cpu: Some(quota.clone()),
        ..PodLimits::default()
    };
    let svc = service(&rt, "echo-http", PodContext::default(), limits);
    let start = Instant::now();
    assert_eq!(get(&svc, "/spin/500").await.0, StatusCode::OK);
    let throttled = quota.throttled_windows();
    println!(
        "100m pod spinning 500 ms: {throttled} throttled windows, {:?}",
        start.elapsed()
    );
    // 500 ms of wall time is five windows; at 10 ms of CPU per window the
    // guest hits its quota in (nearly) every one.
    assert!(throttled >= 3, "throttled {throttled} windows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_pods_memory_budget_are_refused_with_503() {
    let (rt, _dir) = runtime_in();
    // A Rust instance starts at about 1.1 MiB: three fit in 4 MiB, not ten.
    let limits = PodLimits {
        memory_bytes: Some(4 << 20),
        ..PodLimits::default()
    };
    let svc = Arc::new(service(&rt, "echo-http", PodContext::default(), limits));
    assert_eq!(get(&svc, "/status/200").await.0, StatusCode::OK);
    let sleepers: Vec<_> = (0..10)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { get(&svc, "/sleep/300").await.0 })
        })
        .collect();
    let mut statuses = Vec::new();
    for s in sleepers {
        statuses.push(s.await.expect("request"));
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    println!("10 concurrent requests in a 4 MiB pod: {ok} served, {refused} refused");
    assert!(
        ok >= 1 && refused >= 1 && ok + refused == 10,
        "{statuses:?}"
    );
    // Memory is given back when instances end.
    assert_eq!(get(&svc, "/status/200").await.0, StatusCode::OK);
}

/// Concurrent requests to `svc` at `path`: each one's status and
/// `Retry-After`.
async fn concurrently(
    svc: &Arc<HttpService>,
    path: &str,
    n: usize,
) -> Vec<(StatusCode, Option<String>)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (svc, path) = (svc.clone(), path.to_string());
            tokio::spawn(async move {
                let resp = svc.handle(request(&path)).await;
                let retry = resp
                    .headers()
                    .get(hyper::header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap_or("?").to_string());
                (resp.status(), retry)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("request"));
    }
    out
}

/// Waits until the service serves again after a burst it refused part of.
/// An instance ends a moment after its response is sent (the guest task
/// still unwinds and its store drops on another worker), so what it held
/// comes back shortly after the burst's answers, not with them.
async fn until_served(svc: &HttpService) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, body) = get(svc, "/status/200").await;
        if status == StatusCode::OK {
            return;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "what the burst held did not come back within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_pods_memory_budget_says_when_to_retry() {
    let (rt, _dir) = runtime_in();
    let limits = PodLimits {
        memory_bytes: Some(4 << 20),
        ..PodLimits::default()
    };
    let svc = Arc::new(service(&rt, "echo-http", PodContext::default(), limits));
    // One instance first, as the kubelet's start probe does: the budget
    // learns what an instance takes.
    assert_eq!(get(&svc, "/status/200").await.0, StatusCode::OK);
    let answers = concurrently(&svc, "/sleep/300", 10).await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(!refused.is_empty(), "{answers:?}");
    assert!(
        refused.iter().all(|(_, r)| r.as_deref() == Some("1")),
        "{answers:?}"
    );
    // A guest's own failure is no matter of load: no Retry-After.
    until_served(&svc).await;
    let resp = svc.handle(request("/alloc/64")).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!resp.headers().contains_key(hyper::header::RETRY_AFTER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_nodes_instance_pool_get_503_with_retry_after_not_500() {
    const SLOTS: u32 = 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::new(crate::runtime::RuntimeConfig {
        cache_dir: dir.path().join("cache"),
        pooling: crate::runtime::PoolingMode::Always,
        pool_instances: SLOTS,
        ..crate::runtime::testutil::config()
    })
    .expect("a runtime with the pooling allocator");
    assert!(rt.pooling());
    // No memory limit: only the pool bounds the pod's instances.
    let svc = Arc::new(service(
        &rt,
        "echo-http",
        PodContext::default(),
        PodLimits::default(),
    ));
    let first = get(&svc, "/status/200").await;
    assert_eq!(first.0, StatusCode::OK, "{first:?}");
    let answers = concurrently(&svc, "/sleep/300", 8).await;
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    println!("8 concurrent requests, a pool of {SLOTS}: {ok} served, {answers:?}");
    assert!(ok >= 1 && ok <= SLOTS as usize, "{answers:?}");
    assert_eq!(ok + refused.len(), answers.len(), "{answers:?}");
    assert!(
        refused.iter().all(|(_, r)| r.as_deref() == Some("1")),
        "{answers:?}"
    );
    // The slots are given back when the instances end.
    until_served(&svc).await;
}
