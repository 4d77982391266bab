//! `wkube migrate --etcd-servers …`: moves a stopped server's cluster from
//! its embedded store into an etcd cluster.
//!
//! Every object is copied as stored (so UIDs, specs and sealed Secrets are
//! unchanged), and the data directory's CAs and keys are published for
//! the servers of the etcd cluster, sealed with the server token. The
//! server is then started on the same data directory with the same
//! `--etcd-*` flags: its certificates, its tokens and its nodes' trust all
//! carry over, so agents reconnect and their pods keep running.
//!
//! Revisions are etcd's own after the copy: objects get new
//! resourceVersions, and clients re-list once, as after any store restore.

use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Args;

use crate::pki::bootstrap;
use crate::server::STORE_FILE;
use crate::store::etcd::EtcdStore;
use crate::store::redb::{RedbOptions, RedbStore};
use crate::store::{Backend, KeyRange, PutRequest, RangeRequest, TxnOp, TxnRequest};

/// Keys read per page of the source.
const PAGE: i64 = 500;
/// Puts per transaction: below etcd's default `--max-txn-ops` of 128.
const TXN_OPS: usize = 100;
/// Bytes per transaction: below etcd's default request limit of 1.5 MiB.
const TXN_BYTES: usize = 1024 * 1024;

/// Flags of `wkube migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub etcd: super::etcd::EtcdArgs,

    /// The server token the etcd cluster's servers will share (made and
    /// kept in DATA/server-token when not given).
    #[arg(
        long,
        env = "WKUBE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("--etcd-servers is required")]
    NoEtcd,
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    #[error("cannot open the embedded store")]
    Source(#[source] crate::store::StoreError),
    #[error(transparent)]
    Etcd(#[from] crate::store::etcd::EtcdSetupError),
    #[error("cannot write to etcd")]
    Target(#[source] crate::store::StoreError),
    #[error(
        "etcd already holds keys under {prefix}: migrate only into an empty prefix (choose \
         another --etcd-prefix, or clear it)"
    )]
    NotEmpty { prefix: String },
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
}

/// Runs `wkube migrate`.
pub async fn run(args: &MigrateArgs, data_dir: &Path) -> ExitCode {
    match migrate(args, data_dir).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

async fn migrate(args: &MigrateArgs, data_dir: &Path) -> Result<(), MigrateError> {
    let cfg = args.etcd.config().ok_or(MigrateError::NoEtcd)?;
    // The server must be stopped: its later writes would not be copied.
    let _lock = crate::server::lock_data_dir(data_dir)?;
    let source = RedbStore::open(&data_dir.join(STORE_FILE), RedbOptions::default())
        .map_err(MigrateError::Source)?;
    let target = EtcdStore::connect(&cfg).await?;

    let everything = KeyRange::prefix("/registry/");
    let existing = target
        .range(RangeRequest {
            range: everything.clone(),
            count_only: true,
            ..Default::default()
        })
        .await
        .map_err(MigrateError::Target)?;
    if existing.count > 0 {
        return Err(MigrateError::NotEmpty { prefix: cfg.prefix });
    }

    // One consistent view: every page is read at the same revision.
    let revision = source.committed_revision();
    let mut from = everything.key.clone();
    let (mut copied, mut bytes) = (0u64, 0u64);
    loop {
        let page = source
            .range(RangeRequest {
                range: KeyRange {
                    key: from.clone(),
                    range_end: everything.range_end.clone(),
                },
                limit: PAGE,
                revision,
                ..Default::default()
            })
            .await
            .map_err(MigrateError::Source)?;
        let mut ops = Vec::new();
        let mut size = 0;
        for kv in &page.kvs {
            if !ops.is_empty() && (ops.len() >= TXN_OPS || size + kv.value.len() > TXN_BYTES) {
                commit(target.as_ref(), std::mem::take(&mut ops)).await?;
                size = 0;
            }
            size += kv.value.len();
            bytes += kv.value.len() as u64;
            copied += 1;
            // Leases do not carry over: what expires with one (an Event)
            // is kept until it is deleted like any other object.
            ops.push(TxnOp::Put(PutRequest {
                key: kv.key.clone(),
                value: kv.value.clone(),
                ..Default::default()
            }));
        }
        if !ops.is_empty() {
            commit(target.as_ref(), ops).await?;
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                let mut next = last.key.to_vec();
                next.push(0);
                from = Bytes::from(next);
            }
            _ => break,
        }
    }
    source.close();

    let token = bootstrap::server_token(data_dir, args.token.as_deref())?;
    // The prefix was empty, so this publishes the data directory's own.
    bootstrap::share(target.as_ref(), data_dir, &token, || {
        if data_dir.join("pki").join("ca.crt").exists() {
            Ok(())
        } else {
            Err("the data directory has no cluster certificates to carry over".into())
        }
    })
    .await?;

    println!(
        "Copied {copied} keys ({bytes} bytes of values, revision {revision}) into etcd under {}.",
        cfg.prefix
    );
    println!("Start the server on etcd with the same data directory:");
    println!(
        "  wkube --data-dir {} server --etcd-servers {}{}",
        data_dir.display(),
        cfg.servers.join(","),
        if cfg.prefix == "/registry" {
            String::new()
        } else {
            format!(" --etcd-prefix {}", cfg.prefix)
        }
    );
    println!(
        "More servers join with --token $(cat {}).",
        data_dir.join(bootstrap::SERVER_TOKEN_FILE).display()
    );
    Ok(())
}

async fn commit(target: &dyn Backend, ops: Vec<TxnOp>) -> Result<(), MigrateError> {
    target
        .txn(TxnRequest {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        })
        .await
        .map_err(MigrateError::Target)?;
    Ok(())
}
