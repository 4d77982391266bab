//! `echo-http`: wkube's test companion, an HTTP pod that reports what it sees.
//!
//! Routes (any method; the tests use GET):
//!
//! | route                          | answer                                                       |
//! |--------------------------------|--------------------------------------------------------------|
//! | `/`                            | 200, this list                                               |
//! | `/env`                         | 200, the environment as a JSON object                        |
//! | `/headers`                     | 200, the request's headers as a JSON object (name → values)  |
//! | `/file/<path>`                 | 200 + the bytes of `/<path>`; a directory: its entries, one  |
//! |                                | a line (`name/` for directories); 404 if absent; 403 + a     |
//! |                                | message if unreadable or outside every preopened directory   |
//! | `/alloc/<MiB>`                 | allocates and touches that much memory, 200. Allocation      |
//! |                                | failure aborts the instance (a trap), as a real program      |
//! |                                | would; `?try=1` answers 500 instead                          |
//! | `/spin/<ms>`                   | busy-loops that long (wall clock), 200                       |
//! | `/sleep/<ms>`                  | sleeps on a `wasi:clocks` pollable, 200                      |
//! | `/status/<code>`               | answers with that status                                     |
//! | `/fetch?url=<url>[&auth=sa]`   | outgoing wasi:http GET; answers with the upstream status and |
//! |                                | body (header `x-upstream-status` too); 502 + the error text  |
//! |                                | when the request fails; `auth=sa` adds `Authorization:       |
//! |                                | Bearer <service-account token>` (500 if the token is absent) |
//!
//! Every request logs one line to stdout: `<METHOD> <path> -> <status>`.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

const SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

struct Echo;

impl Guest for Echo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = method_name(&request.method());
        let target = request.path_with_query().unwrap_or_else(|| "/".into());
        let headers = request.headers().entries();
        // The host the request was sent to: wasi-http hands it over as the
        // authority, not among the headers.
        let authority = request.authority().unwrap_or_default();
        drop(request);

        let reply = route(&target, &headers, &authority);
        println!("{method} {target} -> {}", reply.status);
        reply.send(response_out);
    }
}

wasip2::http::proxy::export!(Echo);

/// A complete response, built before anything is sent.
struct Reply {
    status: u16,
    content_type: &'static str,
    extra_headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            content_type,
            extra_headers: Vec::new(),
            body: body.into(),
        }
    }

    fn text(status: u16, body: impl Into<String>) -> Self {
        let mut body: String = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Reply::new(status, "text/plain; charset=utf-8", body)
    }

    fn send(self, response_out: ResponseOutparam) {
        // 1xx, 204 and 304 responses carry no body.
        let bodyless = self.status < 200 || self.status == 204 || self.status == 304;
        let body: &[u8] = if bodyless { &[] } else { &self.body };

        let mut list: Vec<(String, Vec<u8>)> =
            vec![("content-type".into(), self.content_type.as_bytes().to_vec())];
        if !bodyless {
            list.push(("content-length".into(), body.len().to_string().into_bytes()));
        }
        list.extend(self.extra_headers);
        let headers = Fields::from_list(&list).unwrap_or_else(|_| Fields::new());

        let response = OutgoingResponse::new(headers);
        if response.set_status_code(self.status).is_err() {
            let _ = response.set_status_code(500);
        }
        let Ok(outgoing) = response.body() else {
            return;
        };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(mut stream) = outgoing.write() {
            // A client that has gone away is not an error we can report.
            let _ = stream.write_all(body);
            let _ = stream.flush();
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

fn route(target: &str, headers: &[(String, Vec<u8>)], authority: &str) -> Reply {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let params = parse_query(query);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    if path == "/" {
        return Reply::text(200, HELP);
    }
    if path == "/env" {
        return env_json();
    }
    if path == "/headers" {
        return headers_json(headers);
    }
    if path == "/host" {
        return Reply::text(200, authority);
    }
    if path == "/fetch" {
        return match param("url") {
            Some(url) => fetch(url, param("auth") == Some("sa")),
            None => Reply::text(400, "fetch: missing ?url="),
        };
    }
    if let Some(rest) = path.strip_prefix("/file/") {
        return file(&percent_decode(rest));
    }
    if let Some(arg) = path.strip_prefix("/alloc/") {
        return match arg.parse::<u64>() {
            Ok(mib) => alloc(mib, param("try").is_some_and(|v| v != "0")),
            Err(_) => Reply::text(400, format!("alloc: {arg:?} is not a number of MiB")),
        };
    }
    if let Some(arg) = path.strip_prefix("/spin/") {
        return match arg.parse::<u64>() {
            Ok(ms) => spin(ms),
            Err(_) => Reply::text(400, format!("spin: {arg:?} is not a number of ms")),
        };
    }
    if let Some(arg) = path.strip_prefix("/sleep/") {
        return match arg.parse::<u64>() {
            Ok(ms) => {
                let ns = ms.saturating_mul(1_000_000);
                wasip2::clocks::monotonic_clock::subscribe_duration(ns).block();
                Reply::text(200, format!("slept {ms} ms"))
            }
            Err(_) => Reply::text(400, format!("sleep: {arg:?} is not a number of ms")),
        };
    }
    if let Some(arg) = path.strip_prefix("/status/") {
        return match arg.parse::<u16>() {
            Ok(code @ 100..=599) => Reply::text(code, format!("{code}")),
            _ => Reply::text(
                400,
                format!("status: {arg:?} is not an HTTP status (100-599)"),
            ),
        };
    }
    Reply::text(404, format!("no route for {path}; GET / lists them"))
}

const HELP: &str = "echo-http routes:
GET /env
GET /headers
GET /host
GET /file/<path>
GET /alloc/<MiB>[?try=1]
GET /spin/<ms>
GET /sleep/<ms>
GET /status/<code>
GET /fetch?url=<url>[&auth=sa]
";

fn env_json() -> Reply {
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.sort();
    let mut json = String::from("{");
    for (i, (k, v)) in vars.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json_string(&mut json, k);
        json.push(':');
        json_string(&mut json, v);
    }
    json.push_str("}\n");
    Reply::new(200, "application/json", json)
}

fn headers_json(headers: &[(String, Vec<u8>)]) -> Reply {
    let mut names: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut json = String::from("{");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json_string(&mut json, name);
        json.push_str(":[");
        let values = headers.iter().filter(|(k, _)| k == name);
        for (j, (_, v)) in values.enumerate() {
            if j > 0 {
                json.push(',');
            }
            json_string(&mut json, &String::from_utf8_lossy(v));
        }
        json.push(']');
    }
    json.push_str("}\n");
    Reply::new(200, "application/json", json)
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `/file/<rel>`: serves `/<rel>`, but only below a preopened directory.
fn file(rel: &str) -> Reply {
    let path = normalize(rel);

    // The host preopens the pod's volumes only; anything else is outside the
    // sandbox. Say so explicitly rather than relying on how wasi-libc
    // reports a path no preopen covers.
    let preopens: Vec<String> = wasip2::filesystem::preopens::get_directories()
        .into_iter()
        .map(|(_descriptor, name)| normalize(&name))
        .collect();
    let inside = preopens
        .iter()
        .any(|p| p == "/" || path == *p || path.starts_with(&format!("{p}/")));
    if !inside {
        return Reply::text(
            403,
            format!("{path}: outside the pod's volumes (preopened: {preopens:?})"),
        );
    }

    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Reply::text(404, format!("{path}: not found"))
        }
        Err(e) => Reply::text(403, format!("{path}: {e}")),
        Ok(meta) if meta.is_dir() => match std::fs::read_dir(&path) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(Result::ok)
                    .map(|e| {
                        let mut name = e.file_name().to_string_lossy().into_owned();
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            name.push('/');
                        }
                        name
                    })
                    .collect();
                names.sort();
                let mut body = names.join("\n");
                body.push('\n');
                Reply::text(200, body)
            }
            Err(e) => Reply::text(403, format!("{path}: {e}")),
        },
        Ok(_) => match std::fs::read(&path) {
            Ok(bytes) => Reply::new(200, "application/octet-stream", bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Reply::text(404, format!("{path}: not found"))
            }
            Err(e) => Reply::text(403, format!("{path}: {e}")),
        },
    }
}

/// Lexical normalisation to an absolute path: no `.`, `..` or empty parts.
fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

fn alloc(mib: u64, fallible: bool) -> Reply {
    let Some(bytes) = mib
        .checked_mul(1 << 20)
        .and_then(|b| usize::try_from(b).ok())
    else {
        return Reply::text(
            400,
            format!("alloc: {mib} MiB exceeds a 32-bit address space"),
        );
    };
    let mut buf: Vec<u8> = Vec::new();
    if fallible {
        if let Err(e) = buf.try_reserve_exact(bytes) {
            return Reply::text(500, format!("alloc: {mib} MiB: {e}"));
        }
    } else {
        // Infallible, like ordinary code: a refused `memory.grow` aborts
        // the instance.
        buf.reserve_exact(bytes);
    }
    buf.resize(bytes, 0);
    // Touch every page so the memory is really used, not just reserved.
    let mut sum: u64 = 0;
    for i in (0..bytes).step_by(4096) {
        buf[i] = (i >> 12) as u8 | 1;
        sum = sum.wrapping_add(u64::from(std::hint::black_box(buf[i])));
    }
    std::hint::black_box(&buf);
    Reply::text(200, format!("allocated {mib} MiB (checksum {sum})"))
}

fn spin(ms: u64) -> Reply {
    let start = Instant::now();
    let until = Duration::from_millis(ms);
    let mut x: u64 = 1;
    let mut rounds: u64 = 0;
    while start.elapsed() < until {
        for _ in 0..1_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
        rounds += 1;
    }
    std::hint::black_box(x);
    Reply::text(200, format!("spun {ms} ms ({rounds} rounds)"))
}

fn fetch(url: &str, with_sa_token: bool) -> Reply {
    let fail = |msg: String| Reply::text(502, format!("fetch {url}: {msg}"));

    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Reply::text(400, format!("fetch {url}: only http:// and https:// URLs"));
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_query) = rest.split_at(split);
    let path_query = match path_query {
        "" => "/".to_string(),
        pq if pq.starts_with('?') => format!("/{pq}"),
        pq => pq.to_string(),
    };
    if authority.is_empty() {
        return Reply::text(400, format!("fetch {url}: no host"));
    }

    let headers = Fields::new();
    if with_sa_token {
        let token = match std::fs::read_to_string(SA_TOKEN) {
            Ok(t) => t.trim().to_string(),
            Err(e) => {
                return Reply::text(500, format!("fetch {url}: cannot read {SA_TOKEN}: {e}"));
            }
        };
        if let Err(e) = headers.append("authorization", format!("Bearer {token}").as_bytes()) {
            return Reply::text(500, format!("fetch {url}: authorization header: {e:?}"));
        }
    }

    let request = OutgoingRequest::new(headers);
    let setters_ok = request.set_method(&Method::Get).is_ok()
        && request.set_scheme(Some(&scheme)).is_ok()
        && request.set_authority(Some(authority)).is_ok()
        && request.set_path_with_query(Some(&path_query)).is_ok();
    if !setters_ok {
        return Reply::text(400, format!("fetch {url}: not a valid request target"));
    }
    let Ok(request_body) = request.body() else {
        return fail("request body unavailable".into());
    };
    let future = match outgoing_handler::handle(request, None) {
        Ok(f) => f,
        Err(e) => return fail(format!("{e:?}")),
    };
    if let Err(e) = OutgoingBody::finish(request_body, None) {
        return fail(format!("{e:?}"));
    }

    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return fail(format!("{e:?}")),
        Some(Err(())) | None => return fail("response already taken".into()),
    };
    let status = response.status();
    let Ok(incoming) = response.consume() else {
        return fail("response body unavailable".into());
    };
    let mut body = Vec::new();
    {
        let Ok(mut stream) = incoming.stream() else {
            return fail("response body stream unavailable".into());
        };
        if let Err(e) = stream.read_to_end(&mut body) {
            return fail(format!("reading the response body: {e}"));
        }
    }
    drop(IncomingBody::finish(incoming));

    let mut reply = Reply::new(status, "application/octet-stream", body);
    reply
        .extra_headers
        .push(("x-upstream-status".into(), status.to_string().into_bytes()));
    reply
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(s) => return s.clone(),
    }
    .to_string()
}
