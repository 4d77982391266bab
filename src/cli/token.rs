//! `wkube token create` and `wkube kubeconfig`: credentials for the
//! Kubernetes API, minted offline with the cluster signing key in the data
//! directory (`DATA/pki/sa.key`), so they work without a running server and
//! are honoured by every server that shares the key.
//!
//! Whoever can read the data directory can mint any identity, including
//! `system:masters`; that is the same trust as reading `DATA/admin.kubeconfig`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::api::authn::{AuthnError, TokenAuthority};
use crate::server::{API_ENDPOINT_FILE, PKI_DIR};

/// The user `wkube kubeconfig` describes without `--user`, the same one
/// `DATA/admin.kubeconfig` names.
pub const ADMIN_USER: &str = "wkube-admin";
/// The admin's group, bound to `cluster-admin` by the bootstrap policy.
pub const ADMIN_GROUP: &str = "system:masters";
/// Lifetime of a minted token without `--ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The signing key's file name inside `DATA/pki`.
const SIGNING_KEY: &str = "sa.key";
/// The cluster CA certificate inside `DATA/pki`.
const CA_CERT: &str = "ca.crt";
/// Name of the cluster entry in printed kubeconfigs, as in the admin one.
const CLUSTER_NAME: &str = "wkube";

/// Flags of `wkube token create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The user name RBAC sees (a RoleBinding subject of kind User).
    #[arg(long, value_name = "USER")]
    pub user: String,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags of `wkube kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// The user the kubeconfig authenticates as [default: wkube-admin, in
    /// group system:masters, when neither --user nor --group is given]
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags shared by both commands.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// A group the user belongs to (a RoleBinding subject of kind Group);
    /// repeat for more.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,

    /// How long the token is valid, e.g. 30m, 1h, 24h, 7d or 1h30m.
    #[arg(long, default_value = "24h", value_parser = parse_ttl, value_name = "DURATION")]
    pub ttl: Duration,
}

/// Why a credential could not be made. Displayed after `Error: `.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no cluster signing key at {path}: {data_dir} holds no server state (start `wkube server` with this data directory first, or pass --data-dir)",
        data_dir = .data_dir.display(), path = .path.display()
    )]
    NoSigningKey { data_dir: PathBuf, path: PathBuf },
    #[error("cannot use the cluster signing key: {0}")]
    SigningKey(#[from] AuthnError),
    #[error(
        "cannot find the API server's address: {path} does not exist (start `wkube server` with this data directory, or pass --data-dir)",
        path = .path.display()
    )]
    NoEndpoint { path: PathBuf },
    #[error("cannot read {path}: {source}", path = .path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty; is the server still starting?", path = .path.display())]
    EmptyEndpoint { path: PathBuf },
}

/// Runs `wkube kubeconfig`; prints `Error: …` and returns 1 on failure.
pub fn run_kubeconfig(args: KubeconfigArgs, data_dir: &Path) -> ExitCode {
    report(kubeconfig(&args, data_dir))
}

pub(super) fn report<E: std::fmt::Display>(result: Result<String, E>) -> ExitCode {
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A token for `user` in `common.groups`, valid for `common.ttl`.
///
/// # Errors
/// [`TokenError::NoSigningKey`] when the data directory has never been used
/// by a server: minting with a fresh key would give tokens no server accepts.
pub fn create_token(
    user: &str,
    common: &CommonArgs,
    data_dir: &Path,
) -> Result<String, TokenError> {
    let pki = data_dir.join(PKI_DIR);
    let key = pki.join(SIGNING_KEY);
    // load_or_create would generate a key here; refuse instead.
    if !key.exists() {
        return Err(TokenError::NoSigningKey {
            data_dir: data_dir.to_path_buf(),
            path: key,
        });
    }
    let authority = TokenAuthority::load_or_create(&pki)?;
    Ok(authority.issue_user(user, &common.groups, common.ttl)?)
}

/// A kubeconfig (YAML) for the server of `data_dir`, authenticating as the
/// user the flags name.
///
/// # Errors
/// When the data directory has no signing key, no `api.endpoint` (no
/// server has published its address) or, for an HTTPS server, no CA.
pub fn kubeconfig(args: &KubeconfigArgs, data_dir: &Path) -> Result<String, TokenError> {
    let (user, groups) = match &args.user {
        Some(u) => (u.clone(), args.common.groups.clone()),
        None if args.common.groups.is_empty() => (ADMIN_USER.to_owned(), vec![ADMIN_GROUP.into()]),
        None => (ADMIN_USER.to_owned(), args.common.groups.clone()),
    };
    let common = CommonArgs {
        groups,
        ttl: args.common.ttl,
    };
    let url = api_url(data_dir)?;
    let ca = if url.starts_with("https://") {
        let path = data_dir.join(PKI_DIR).join(CA_CERT);
        Some(read(&path)?)
    } else {
        // kubectl never sends the token over plain HTTP anyway, but a CA
        // for an http URL would only confuse it.
        None
    };
    let token = create_token(&user, &common, data_dir)?;
    Ok(crate::api::kubeconfig::render(
        CLUSTER_NAME,
        &url,
        ca.as_deref(),
        &user,
        &token,
    ))
}

pub(super) fn api_url(data_dir: &Path) -> Result<String, TokenError> {
    let path = data_dir.join(API_ENDPOINT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TokenError::NoEndpoint { path });
        }
        Err(source) => return Err(TokenError::ReadFile { path, source }),
    };
    let url = text.trim();
    if url.is_empty() {
        return Err(TokenError::EmptyEndpoint { path });
    }
    Ok(url.to_owned())
}

fn read(path: &Path) -> Result<String, TokenError> {
    std::fs::read_to_string(path).map_err(|source| TokenError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Durations as Go (and so kubectl's `--duration`) writes them, plus days:
/// `90s`, `30m`, `1h30m`, `7d`. A bare number is seconds.
pub(super) fn parse_ttl(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (try 30m, 1h, 24h, 7d or 1h30m)");
    if let Ok(secs) = s.parse::<u64>() {
        return positive(Duration::from_secs(secs)).ok_or_else(bad);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(split);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        total += n * match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return Err(bad()),
        };
        rest = tail;
    }
    Duration::try_from_secs_f64(total)
        .ok()
        .and_then(positive)
        .ok_or_else(bad)
}

/// A token must outlive at least its first request.
fn positive(d: Duration) -> Option<Duration> {
    (d >= Duration::from_secs(1)).then_some(d)
}

/// Flags of `wkube token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// Verbs of `wkube token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a bearer token for a user and print it (only the token, so it
    /// can be captured: `TOKEN=$(wkube token create --user alice)`).
    Create(CreateArgs),
    /// Join tokens, with which agents join the cluster: create, list,
    /// delete (revoke). Needs the server running.
    #[command(subcommand)]
    Join(super::jointoken::JoinCommand),
}

/// Runs `wkube token ...`; prints `Error: …` and returns 1 on failure.
pub async fn run_token(args: TokenArgs, data_dir: &std::path::Path) -> std::process::ExitCode {
    match args.command {
        TokenCommand::Create(create) => {
            report(create_token(&create.user, &create.common, data_dir).map(|t| format!("{t}\n")))
        }
        TokenCommand::Join(join) => report(super::jointoken::run(join, data_dir).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(groups: &[&str]) -> CommonArgs {
        CommonArgs {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ttl: DEFAULT_TTL,
        }
    }

    #[test]
    fn durations_read_like_go_and_kubectl() {
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("24h"), Ok(DEFAULT_TTL));
        assert_eq!(parse_ttl("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        for bad in ["", "h", "5x", "1h30", "0s", "-1h", "500ms"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_data_dir_without_a_server_gives_no_token_and_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let e = create_token("alice", &common(&[]), dir.path()).unwrap_err();
        assert!(e.to_string().contains("start `wkube server`"), "{e}");
        assert!(!dir.path().join(PKI_DIR).join(SIGNING_KEY).exists());
    }

    #[test]
    fn a_minted_token_verifies_with_the_data_dirs_key_and_names_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join(PKI_DIR);
        std::fs::create_dir(&pki).unwrap();
        let authority = TokenAuthority::load_or_create(&pki).unwrap();
        let token = create_token("alice", &common(&["dev"]), dir.path()).unwrap();
        let claims = authority
            .verify(&token, crate::api::authn::API_AUDIENCE)
            .unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.groups, ["dev"]);
        assert!(claims.exp >= claims.iat + DEFAULT_TTL.as_secs());
    }

    #[test]
    fn the_default_kubeconfig_is_the_admins_and_trusts_the_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join(PKI_DIR);
        std::fs::create_dir(&pki).unwrap();
        let authority = TokenAuthority::load_or_create(&pki).unwrap();
        std::fs::write(pki.join(CA_CERT), "CA PEM").unwrap();
        std::fs::write(
            dir.path().join(API_ENDPOINT_FILE),
            "https://127.0.0.1:6443\n",
        )
        .unwrap();
        let args = KubeconfigArgs {
            user: None,
            common: common(&[]),
        };
        let doc: serde_json::Value =
            serde_yaml_ng::from_str(&kubeconfig(&args, dir.path()).unwrap()).unwrap();
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert!(doc["clusters"][0]["cluster"]["certificate-authority-data"].is_string());
        assert_eq!(doc["users"][0]["name"], ADMIN_USER);
        let token = doc["users"][0]["user"]["token"].as_str().unwrap();
        let claims = authority
            .verify(token, crate::api::authn::API_AUDIENCE)
            .unwrap();
        assert_eq!(claims.sub, ADMIN_USER);
        assert_eq!(claims.groups, [ADMIN_GROUP]);
    }

    #[test]
    fn a_kubeconfig_without_a_published_endpoint_says_no_server_runs() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join(PKI_DIR);
        std::fs::create_dir(&pki).unwrap();
        TokenAuthority::load_or_create(&pki).unwrap();
        let args = KubeconfigArgs {
            user: Some("alice".into()),
            common: common(&[]),
        };
        let e = kubeconfig(&args, dir.path()).unwrap_err();
        assert!(matches!(e, TokenError::NoEndpoint { .. }), "{e}");
    }
}
