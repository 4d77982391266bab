//! `sandbox-probe`: a wkube command pod that tries, from inside its
//! sandbox, every way out the host must refuse, and prints one line per
//! attempt: `REFUSED name: detail` or `ESCAPED name: detail`. It exits 0
//! only when every attempt was refused.
//!
//! Flags (each attempt that needs one is skipped without it):
//!
//! - `--volume DIR`: a volume of its own (traversal and symlinks out of it);
//! - `--other PATH`: a host path of another pod's volume;
//! - `--memory-mib N`: the pod's memory limit (it tries to grow past it);
//! - `--denied-url URL`: an outbound URL the pod is not allowed to reach;
//! - `--tcp HOST:PORT`: a listening socket it must not be able to open;
//! - `--api URL`: an API URL of another namespace, asked with its token.

use std::io::{Read as _, Write as _};

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};

const SA_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

struct Probe;

/// What one attempt came to.
enum Outcome {
    Refused(String),
    Escaped(String),
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn read_file(path: &str) -> Outcome {
    match std::fs::read(path) {
        Ok(bytes) => Outcome::Escaped(format!("read {} bytes of {path}", bytes.len())),
        Err(e) => Outcome::Refused(format!("{path}: {e}")),
    }
}

fn traversal(volume: &str) -> Outcome {
    for path in [
        format!("{volume}/../../../../etc/passwd"),
        "/etc/passwd".to_string(),
        "/proc/self/environ".to_string(),
    ] {
        if let Outcome::Escaped(how) = read_file(&path) {
            return Outcome::Escaped(how);
        }
    }
    Outcome::Refused("no path above the volume or outside it opened".into())
}

fn symlinks(volume: &str) -> Outcome {
    let absolute = format!("{volume}/to-etc");
    let relative = format!("{volume}/up");
    // The volume's own directory handle, as the host opened it.
    let dir = wasip2::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, path)| path == volume)
        .map(|(d, _)| d);
    let Some(dir) = dir else {
        return Outcome::Escaped(format!("{volume} is not a preopened directory"));
    };
    let made_abs = dir.symlink_at("/etc", "to-etc").is_ok();
    let made_rel = dir.symlink_at("../../../../../../etc", "up").is_ok();
    for path in [format!("{absolute}/passwd"), format!("{relative}/passwd")] {
        if let Outcome::Escaped(how) = read_file(&path) {
            return Outcome::Escaped(how);
        }
    }
    Outcome::Refused(format!(
        "links made: absolute {made_abs}, relative {made_rel}; neither was followed out"
    ))
}

fn memory(limit_mib: usize) -> Outcome {
    // Twice the limit, in 64 KiB pages, asked of the memory directly (an
    // allocation failure in Rust would abort before a report).
    let pages = limit_mib * 2 * 16;
    let got = core::arch::wasm32::memory_grow(0, pages);
    if got == usize::MAX {
        Outcome::Refused(format!("growing by {} MiB was refused", limit_mib * 2))
    } else {
        Outcome::Escaped(format!("grew by {} MiB past a {limit_mib} MiB limit", limit_mib * 2))
    }
}

fn tcp(addr: &str) -> Outcome {
    match std::net::TcpStream::connect(addr) {
        Ok(_) => Outcome::Escaped(format!("connected to {addr}")),
        Err(e) => Outcome::Refused(format!("{addr}: {e}")),
    }
}

/// GET `url`; the status, or the error code.
fn get(url: &str, token: Option<&str>) -> Result<u16, ErrorCode> {
    let (scheme, rest) = match url.strip_prefix("https://") {
        Some(rest) => (Scheme::Https, rest),
        None => (Scheme::Http, url.trim_start_matches("http://")),
    };
    let split = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let headers = Fields::new();
    if let Some(t) = token {
        let _ = headers.append("authorization", format!("Bearer {t}").as_bytes());
    }
    let request = OutgoingRequest::new(headers);
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(if path.is_empty() { "/" } else { path }));
    let body = request.body().map_err(|()| ErrorCode::InternalError(None))?;
    let future = outgoing_handler::handle(request, None)?;
    let _ = OutgoingBody::finish(body, None);
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(r)) => r?,
        _ => return Err(ErrorCode::InternalError(None)),
    };
    let status = response.status();
    if let Ok(incoming) = response.consume() {
        if let Ok(mut stream) = incoming.stream() {
            let _ = stream.read_to_end(&mut Vec::new());
        }
        drop(IncomingBody::finish(incoming));
    }
    Ok(status)
}

fn denied_url(url: &str) -> Outcome {
    match get(url, None) {
        Err(ErrorCode::HttpRequestDenied) => Outcome::Refused(format!("{url}: denied")),
        Err(e) => Outcome::Escaped(format!("{url}: left the pod and failed there: {e:?}")),
        Ok(status) => Outcome::Escaped(format!("{url}: answered {status}")),
    }
}

fn other_namespace(url: &str) -> Outcome {
    let token = match std::fs::read_to_string(SA_TOKEN) {
        Ok(t) => t.trim().to_string(),
        Err(e) => return Outcome::Escaped(format!("no token to try with: {e}")),
    };
    match get(url, Some(&token)) {
        Ok(403) => Outcome::Refused(format!("{url}: 403")),
        Ok(status) => Outcome::Escaped(format!("{url}: {status}")),
        Err(e) => Outcome::Escaped(format!("{url}: could not ask: {e:?}")),
    }
}

impl wasip2::exports::cli::run::Guest for Probe {
    fn run() -> Result<(), ()> {
        let args: Vec<String> = std::env::args().collect();
        let mut attempts: Vec<(&str, Outcome)> = Vec::new();
        if let Some(v) = flag(&args, "--volume") {
            attempts.push(("path traversal", traversal(&v)));
            attempts.push(("symlinks", symlinks(&v)));
        }
        if let Some(p) = flag(&args, "--other") {
            attempts.push(("another pod's volume", read_file(&p)));
        }
        if let Some(m) = flag(&args, "--memory-mib").and_then(|m| m.parse().ok()) {
            attempts.push(("memory past the limit", memory(m)));
        }
        if let Some(u) = flag(&args, "--denied-url") {
            attempts.push(("outbound to an unlisted host", denied_url(&u)));
        }
        if let Some(a) = flag(&args, "--tcp") {
            attempts.push(("raw socket", tcp(&a)));
        }
        if let Some(u) = flag(&args, "--api") {
            attempts.push(("token against another namespace", other_namespace(&u)));
        }
        let mut out = std::io::stdout().lock();
        let mut escaped = false;
        for (name, outcome) in &attempts {
            let _ = match outcome {
                Outcome::Refused(d) => writeln!(out, "REFUSED {name}: {d}"),
                Outcome::Escaped(d) => {
                    escaped = true;
                    writeln!(out, "ESCAPED {name}: {d}")
                }
            };
        }
        let _ = writeln!(out, "{} attempts, {}", attempts.len(), if escaped { "some escaped" } else { "all refused" });
        let _ = out.flush();
        if escaped { Err(()) } else { Ok(()) }
    }
}

wasip2::cli::command::export!(Probe);
