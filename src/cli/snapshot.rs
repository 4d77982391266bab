//! `wkube snapshot save FILE` and `wkube snapshot restore FILE`: backups of
//! a stopped server's embedded store. A running server is backed up with
//! `etcdctl snapshot save` against its etcd endpoint; both write the same
//! file, and `restore` takes either.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::server::STORE_FILE;
use crate::store::snapshot;

/// Flags of `wkube snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub action: SnapshotAction,
}

/// What `wkube snapshot` does.
#[derive(Debug, Subcommand)]
pub enum SnapshotAction {
    /// Write the store of the (stopped) data directory to FILE.
    Save { file: PathBuf },
    /// Replace the store of the (stopped) data directory with FILE's; the
    /// store it replaces is kept as store.redb.before-restore.
    Restore { file: PathBuf },
}

/// Runs `wkube snapshot`.
pub async fn run(args: &SnapshotArgs, data_dir: &Path) -> ExitCode {
    // A running server would go on writing the store behind our back.
    let _lock = match crate::server::lock_data_dir(data_dir) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let store = data_dir.join(STORE_FILE);
    let result = match &args.action {
        SnapshotAction::Save { file } => snapshot::save_stopped(&store, file)
            .await
            .map(|size| println!("Snapshot saved at {} ({size} bytes)", file.display())),
        SnapshotAction::Restore { file } => snapshot::restore(file, &store).await.map(|revision| {
            println!(
                "Restored {} into {} (revision {revision}); start the server to serve it",
                file.display(),
                store.display()
            )
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
