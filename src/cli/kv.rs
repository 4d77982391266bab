//! `wkube kv put|get|del|watch`: etcdctl's verbs, flags and output, over the
//! etcd v3 API, so that scripts written for etcdctl read ours unchanged.
//!
//! Without `--endpoints` the client reads DATA/etcd.endpoint, which the
//! running server writes, and authenticates with the admin client
//! certificate in DATA/pki; so `wkube server` in one terminal and
//! `wkube kv get foo` in another just work.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use etcd_client::{
    Certificate, Client, ConnectOptions, DeleteOptions, EventType, GetOptions, Identity, KeyValue,
    PutOptions, ResponseHeader, TlsOptions, WatchOptions,
};
use serde::Serialize;

use crate::server::{ENDPOINT_FILE, PKI_DIR};

/// Flags shared by every `kv` verb; like etcdctl's, they may stand before or
/// after the verb.
#[derive(Debug, Args)]
pub struct KvArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    #[command(subcommand)]
    pub verb: KvVerb,
}

/// How to reach the server (etcdctl's global flags).
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// gRPC endpoints, comma separated [default: the URL in DATA/etcd.endpoint]
    #[arg(long, global = true, value_delimiter = ',', value_name = "URLS")]
    pub endpoints: Vec<String>,
    /// Verify the server with this CA bundle [default: DATA/pki/ca.crt]
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Identify with this client certificate [default: DATA/pki/etcd-client.crt]
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Key of the client certificate [default: DATA/pki/etcd-client.key]
    // `id` differs from the name: the verbs have a positional `key`.
    #[arg(long = "key", id = "key_file", global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Dial endpoints without a scheme in plaintext (etcdctl's default) unless
    /// TLS files are given; `--insecure-transport=false` dials them with TLS.
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub insecure_transport: bool,
    /// Timeout for establishing a connection.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub dial_timeout: Duration,
    /// Timeout for a short-running command (not watch).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub command_timeout: Duration,
    /// Output format.
    #[arg(short = 'w', long, global = true, value_enum, default_value_t = OutputFormat::Simple)]
    pub write_out: OutputFormat,
}

/// `-w` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Simple,
    Json,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum KvVerb {
    /// Put the given key into the store; the value comes from stdin when it
    /// is not given (`wkube kv put key < file`).
    Put {
        key: String,
        value: Option<String>,
        /// Lease ID (in hexadecimal) to attach to the key.
        #[arg(long, default_value = "0", value_parser = parse_lease_id)]
        lease: i64,
        /// Print the previous key-value pair.
        #[arg(long)]
        prev_kv: bool,
        /// Update the key using its current value.
        #[arg(long)]
        ignore_value: bool,
        /// Update the key using its current lease.
        #[arg(long)]
        ignore_lease: bool,
    },
    /// Get the key or a range of keys.
    Get {
        key: String,
        range_end: Option<String>,
        /// Get keys with matching prefix.
        #[arg(long)]
        prefix: bool,
        /// Get keys that are greater than or equal to the given key.
        #[arg(long)]
        from_key: bool,
        /// Get only the keys.
        #[arg(long)]
        keys_only: bool,
        /// Only write values when using the "simple" output format.
        #[arg(long)]
        print_value_only: bool,
        /// Read at this revision (0: the latest).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Maximum number of results (0: no limit).
        #[arg(long, default_value_t = 0)]
        limit: i64,
    },
    /// Remove the key or a range of keys; prints how many were deleted.
    Del {
        key: String,
        range_end: Option<String>,
        /// Delete keys with matching prefix.
        #[arg(long)]
        prefix: bool,
        /// Delete keys that are greater than or equal to the given key.
        #[arg(long)]
        from_key: bool,
        /// Print the deleted key-value pairs.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Print every change of the key or range until interrupted.
    Watch {
        key: String,
        range_end: Option<String>,
        /// Watch on a prefix.
        #[arg(long)]
        prefix: bool,
        /// Revision to start watching from (0: from now).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Print the previous key-value pair before each event.
        #[arg(long)]
        prev_kv: bool,
    },
}

/// Every way a `kv` command fails. Displayed after `Error: `, as etcdctl does.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error(
        "cannot find a running server: {path} does not exist (start `wkube server`, or pass --endpoints)"
    )]
    NoEndpoint { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--cert and --key must be given together")]
    HalfIdentity,
    #[error("reading the value from stdin: {0}")]
    Stdin(#[source] std::io::Error),
    /// The server answered with an error status: its message is what etcdctl
    /// shows (`etcdserver: key is not provided`).
    #[error("{0}")]
    Server(String),
    #[error("context deadline exceeded")]
    Timeout,
    #[error("server unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Client(String),
    #[error("watch is canceled by the server")]
    WatchCanceled,
    #[error("-w json is not supported for watch")]
    JsonWatch,
    #[error("writing output: {0}")]
    Output(#[source] std::io::Error),
}

impl From<etcd_client::Error> for KvError {
    fn from(e: etcd_client::Error) -> Self {
        match e {
            etcd_client::Error::GRpcStatus(status) => {
                if status.code() == tonic::Code::DeadlineExceeded {
                    KvError::Timeout
                } else if status.code() == tonic::Code::Unavailable {
                    // Transport trouble (refused, TLS handshake): the status
                    // message alone ("tcp connect error") hides the cause.
                    let mut msg = status.message().to_owned();
                    if let Some(source) = std::error::Error::source(&status) {
                        append_chain(&mut msg, source);
                    }
                    KvError::Unavailable(msg)
                } else if status.message().is_empty() {
                    KvError::Server(status.code().description().to_owned())
                } else {
                    KvError::Server(status.message().to_owned())
                }
            }
            other => KvError::Client(error_chain(&other)),
        }
    }
}

/// Transport errors hide their cause (TLS, refused connection) in the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    if let Some(source) = e.source() {
        append_chain(&mut msg, source);
    }
    msg
}

fn append_chain(msg: &mut String, first: &(dyn std::error::Error + 'static)) {
    let mut cur = Some(first);
    while let Some(e) = cur {
        let text = e.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cur = e.source();
    }
}

/// Runs one `kv` command; prints `Error: …` and returns exit code 1 on
/// failure, as etcdctl does.
pub async fn run(args: KvArgs, data_dir: &Path) -> ExitCode {
    match execute(args, data_dir).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            if matches!(e, KvError::WatchCanceled) {
                // etcdctl's ExitInterrupted.
                ExitCode::from(5)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn execute(args: KvArgs, data_dir: &Path) -> Result<(), KvError> {
    let conn = &args.conn;
    // Read stdin before dialing, so that a slow producer cannot run into the
    // command timeout.
    let stdin_value = match &args.verb {
        KvVerb::Put {
            value: None,
            ignore_value: false,
            ..
        } => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(KvError::Stdin)?;
            Some(buf)
        }
        _ => None,
    };
    let mut client = connect(conn, data_dir).await?;
    let timeout = conn.command_timeout;
    let json = conn.write_out == OutputFormat::Json;
    let mut out = std::io::stdout().lock();
    match args.verb {
        KvVerb::Put {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => stdin_value.unwrap_or_default(),
            };
            let mut opts = PutOptions::new().with_lease(lease);
            if prev_kv {
                opts = opts.with_prev_key();
            }
            if ignore_value {
                opts = opts.with_ignore_value();
            }
            if ignore_lease {
                opts = opts.with_ignore_lease();
            }
            let resp = bounded(timeout, client.put(key, value, Some(opts))).await?;
            if json {
                let j = JsonPut {
                    header: resp.header().map(JsonHeader::from),
                    prev_kv: resp.prev_key().map(JsonKv::from),
                };
                print_json(&mut out, &j)?;
            } else {
                writeln!(out, "OK").map_err(KvError::Output)?;
                if let Some(kv) = resp.prev_key() {
                    print_kv(&mut out, kv, false)?;
                }
            }
        }
        KvVerb::Get {
            key,
            range_end,
            prefix,
            from_key,
            keys_only,
            print_value_only,
            rev,
            limit,
        } => {
            let mut opts = GetOptions::new().with_revision(rev).with_limit(limit);
            if let Some(end) = range_end {
                opts = opts.with_range(end);
            } else if prefix {
                opts = opts.with_prefix();
            } else if from_key {
                opts = opts.with_from_key();
            }
            if keys_only {
                opts = opts.with_keys_only();
            }
            let resp = bounded(timeout, client.get(key, Some(opts))).await?;
            if json {
                let j = JsonRange {
                    header: resp.header().map(JsonHeader::from),
                    kvs: resp.kvs().iter().map(JsonKv::from).collect(),
                    more: resp.more(),
                    count: resp.count(),
                };
                print_json(&mut out, &j)?;
            } else {
                for kv in resp.kvs() {
                    print_kv(&mut out, kv, print_value_only)?;
                }
            }
        }
        KvVerb::Del {
            key,
            range_end,
            prefix,
            from_key,
            prev_kv,
        } => {
            let mut opts = DeleteOptions::new();
            if let Some(end) = range_end {
                opts = opts.with_range(end);
            } else if prefix {
                opts = opts.with_prefix();
            } else if from_key {
                opts = opts.with_from_key();
            }
            if prev_kv {
                opts = opts.with_prev_key();
            }
            let resp = bounded(timeout, client.delete(key, Some(opts))).await?;
            if json {
                let j = JsonDelete {
                    header: resp.header().map(JsonHeader::from),
                    deleted: resp.deleted(),
                    prev_kvs: resp.prev_kvs().iter().map(JsonKv::from).collect(),
                };
                print_json(&mut out, &j)?;
            } else {
                writeln!(out, "{}", resp.deleted()).map_err(KvError::Output)?;
                for kv in resp.prev_kvs() {
                    print_kv(&mut out, kv, false)?;
                }
            }
        }
        KvVerb::Watch {
            key,
            range_end,
            prefix,
            rev,
            prev_kv,
        } => {
            if json {
                return Err(KvError::JsonWatch);
            }
            drop(out);
            let mut opts = WatchOptions::new().with_start_revision(rev);
            if let Some(end) = range_end {
                opts = opts.with_range(end);
            } else if prefix {
                opts = opts.with_prefix();
            }
            if prev_kv {
                opts = opts.with_prev_key();
            }
            tokio::select! {
                r = watch(&mut client, key, opts, timeout) => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    }
    Ok(())
}

async fn watch(
    client: &mut Client,
    key: String,
    opts: WatchOptions,
    timeout: Duration,
) -> Result<(), KvError> {
    let mut stream = bounded(timeout, client.watch(key, Some(opts))).await?;
    loop {
        let Some(resp) = stream.message().await? else {
            return Err(KvError::WatchCanceled);
        };
        // Each batch is written and flushed whole, so a reader of a pipe sees
        // events as they happen.
        let mut out = std::io::stdout().lock();
        if resp.canceled() {
            // The reason as etcd's client library derives it.
            let reason = if resp.compact_revision() != 0 {
                "etcdserver: mvcc: required revision has been compacted"
            } else if !resp.cancel_reason().is_empty() {
                resp.cancel_reason()
            } else {
                "etcdserver: mvcc: required revision is a future revision"
            };
            // etcdctl writes this line to stderr, before its `Error:` line.
            eprintln!("watch was canceled ({reason})");
            return Err(KvError::WatchCanceled);
        }
        for ev in resp.events() {
            let kind = match ev.event_type() {
                EventType::Put => "PUT",
                EventType::Delete => "DELETE",
            };
            writeln!(out, "{kind}").map_err(KvError::Output)?;
            if let Some(prev) = ev.prev_kv() {
                print_kv(&mut out, prev, false)?;
            }
            if let Some(kv) = ev.kv() {
                print_kv(&mut out, kv, false)?;
            }
        }
        out.flush().map_err(KvError::Output)?;
    }
}

/// Applies `--command-timeout` to one request.
async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, KvError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(KvError::from),
        Err(_) => Err(KvError::Timeout),
    }
}

/// Where to connect and with which certificates.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    endpoints: Vec<String>,
    tls: Option<TlsFiles>,
}

#[derive(Debug, PartialEq, Eq)]
struct TlsFiles {
    cacert: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
}

/// Decides endpoints and TLS material from the flags and the data dir.
fn resolve_target(conn: &ConnectionArgs, data_dir: &Path) -> Result<Target, KvError> {
    let endpoints = if conn.endpoints.is_empty() {
        let path = data_dir.join(ENDPOINT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(s) => s
                .split([',', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KvError::NoEndpoint { path });
            }
            Err(source) => return Err(KvError::ReadFile { path, source }),
        }
    } else {
        conn.endpoints.clone()
    };

    let flags_given = conn.cacert.is_some() || conn.cert.is_some() || conn.key.is_some();
    let any_https = endpoints.iter().any(|e| e.starts_with("https://"));
    let any_bare = endpoints.iter().any(|e| !e.contains("://"));
    let want_tls = any_https || (any_bare && (flags_given || !conn.insecure_transport));
    if !want_tls {
        return Ok(Target {
            endpoints,
            tls: None,
        });
    }
    let files = if flags_given {
        let identity = match (&conn.cert, &conn.key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => return Err(KvError::HalfIdentity),
        };
        TlsFiles {
            cacert: conn.cacert.clone(),
            identity,
        }
    } else {
        // No flags: the data dir's admin credentials, as far as they exist.
        let pki = data_dir.join(PKI_DIR);
        let existing = |name: &str| Some(pki.join(name)).filter(|p| p.exists());
        TlsFiles {
            cacert: existing("ca.crt"),
            identity: existing("etcd-client.crt").zip(existing("etcd-client.key")),
        }
    };
    Ok(Target {
        endpoints,
        tls: Some(files),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, KvError> {
    std::fs::read(path).map_err(|source| KvError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

async fn connect(conn: &ConnectionArgs, data_dir: &Path) -> Result<Client, KvError> {
    let target = resolve_target(conn, data_dir)?;
    let mut opts = ConnectOptions::new().with_connect_timeout(conn.dial_timeout);
    if let Some(files) = &target.tls {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &files.cacert {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let Some((cert, key)) = &files.identity {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        opts = opts.with_tls(tls);
    }
    bounded(
        conn.dial_timeout,
        Client::connect(&target.endpoints, Some(opts)),
    )
    .await
}

/// etcdctl's simple printer: the key line (unless value-only), then the value.
fn print_kv(out: &mut impl Write, kv: &KeyValue, value_only: bool) -> Result<(), KvError> {
    if !value_only {
        out.write_all(kv.key()).map_err(KvError::Output)?;
        out.write_all(b"\n").map_err(KvError::Output)?;
    }
    out.write_all(kv.value()).map_err(KvError::Output)?;
    out.write_all(b"\n").map_err(KvError::Output)
}

fn print_json(out: &mut impl Write, value: &impl Serialize) -> Result<(), KvError> {
    let s = serde_json::to_string(value).map_err(|e| KvError::Output(e.into()))?;
    writeln!(out, "{s}").map_err(KvError::Output)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (try 5s, 500ms, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn parse_lease_id(s: &str) -> Result<i64, String> {
    // Lease IDs are printed as unsigned hex; large ones have the top bit set.
    u64::from_str_radix(s, 16)
        .map(|v| v as i64)
        .map_err(|_| format!("bad lease ID ({s}), expecting ID in Hex"))
}

// etcdctl's `-w json` is Go's encoding/json over the protobuf structs: byte
// fields in standard base64, zero values omitted, fields in proto order.

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

#[derive(Serialize)]
struct JsonHeader {
    #[serde(skip_serializing_if = "is_zero_u64")]
    cluster_id: u64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    member_id: u64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    revision: i64,
    #[serde(skip_serializing_if = "is_zero_u64")]
    raft_term: u64,
}

impl From<&ResponseHeader> for JsonHeader {
    fn from(h: &ResponseHeader) -> Self {
        JsonHeader {
            cluster_id: h.cluster_id(),
            member_id: h.member_id(),
            revision: h.revision(),
            raft_term: h.raft_term(),
        }
    }
}

#[derive(Serialize)]
struct JsonKv {
    #[serde(skip_serializing_if = "String::is_empty")]
    key: String,
    #[serde(skip_serializing_if = "is_zero_i64")]
    create_revision: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    mod_revision: i64,
    #[serde(skip_serializing_if = "is_zero_i64")]
    version: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    value: String,
    #[serde(skip_serializing_if = "is_zero_i64")]
    lease: i64,
}

impl From<&KeyValue> for JsonKv {
    fn from(kv: &KeyValue) -> Self {
        JsonKv {
            key: base64(kv.key()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            value: base64(kv.value()),
            lease: kv.lease(),
        }
    }
}

#[derive(Serialize)]
struct JsonPut {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<JsonHeader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_kv: Option<JsonKv>,
}

#[derive(Serialize)]
struct JsonRange {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<JsonHeader>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kvs: Vec<JsonKv>,
    #[serde(skip_serializing_if = "is_false")]
    more: bool,
    #[serde(skip_serializing_if = "is_zero_i64")]
    count: i64,
}

#[derive(Serialize)]
struct JsonDelete {
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<JsonHeader>,
    #[serde(skip_serializing_if = "is_zero_i64")]
    deleted: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    prev_kvs: Vec<JsonKv>,
}

/// Standard base64 with padding, as Go encodes `[]byte` in JSON.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        kv: KvArgs,
    }

    fn conn(args: &[&str]) -> ConnectionArgs {
        let mut argv = vec!["kv"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["get", "k"]);
        Harness::parse_from(argv).kv.conn
    }

    #[test]
    fn base64_matches_go_encoding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foo/a"), "Zm9vL2E=");
        assert_eq!(base64(b"1"), "MQ==");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn durations_read_like_etcdctl_flags() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn lease_ids_are_hexadecimal() {
        assert_eq!(parse_lease_id("694d7b"), Ok(0x694d7b));
        assert_eq!(parse_lease_id("ffffffffffffffff"), Ok(-1));
        assert!(parse_lease_id("xyz").is_err());
    }

    #[test]
    fn without_flags_the_data_dir_gives_endpoint_and_admin_certificates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ENDPOINT_FILE), "https://127.0.0.1:4000\n").unwrap();
        std::fs::create_dir(dir.path().join(PKI_DIR)).unwrap();
        for f in ["ca.crt", "etcd-client.crt", "etcd-client.key"] {
            std::fs::write(dir.path().join(PKI_DIR).join(f), "x").unwrap();
        }
        let t = resolve_target(&conn(&[]), dir.path()).unwrap();
        assert_eq!(t.endpoints, ["https://127.0.0.1:4000"]);
        let pki = dir.path().join(PKI_DIR);
        assert_eq!(
            t.tls,
            Some(TlsFiles {
                cacert: Some(pki.join("ca.crt")),
                identity: Some((pki.join("etcd-client.crt"), pki.join("etcd-client.key"))),
            })
        );
    }

    #[test]
    fn a_plain_endpoint_without_tls_flags_is_dialed_in_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let t = resolve_target(
            &conn(&["--endpoints", "127.0.0.1:1,http://x:2"]),
            dir.path(),
        )
        .unwrap();
        assert_eq!(t.endpoints, ["127.0.0.1:1", "http://x:2"]);
        assert_eq!(t.tls, None);
        let t = resolve_target(
            &conn(&["--endpoints", "127.0.0.1:1", "--insecure-transport=false"]),
            dir.path(),
        )
        .unwrap();
        assert!(t.tls.is_some());
    }

    #[test]
    fn explicit_tls_flags_are_used_alone() {
        let dir = tempfile::tempdir().unwrap();
        let t = resolve_target(
            &conn(&["--endpoints", "https://h:1", "--cacert", "/ca"]),
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            t.tls,
            Some(TlsFiles {
                cacert: Some("/ca".into()),
                identity: None
            })
        );
        let e = resolve_target(
            &conn(&["--endpoints", "https://h:1", "--cert", "/c"]),
            dir.path(),
        );
        assert!(matches!(e, Err(KvError::HalfIdentity)));
    }

    #[test]
    fn a_missing_endpoint_file_says_no_server_runs() {
        let dir = tempfile::tempdir().unwrap();
        let e = resolve_target(&conn(&[]), dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("cannot find a running server"),
            "{e}"
        );
    }
}
