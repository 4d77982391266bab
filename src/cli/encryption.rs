//! `wkube encryption rotate`: puts a fresh key first in
//! `DATA/pki/secrets-encryption.keys`. The server seals new writes with it
//! from its next start, and at that start seals every stored Secret again
//! with it; older keys stay in the file (they still open backups) until
//! removed by hand.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::api::encryption::{KEYS_FILE, Keyring};

/// Flags of `wkube encryption`.
#[derive(Debug, Args)]
pub struct EncryptionArgs {
    #[command(subcommand)]
    pub action: EncryptionAction,
}

/// What `wkube encryption` does.
#[derive(Debug, Subcommand)]
pub enum EncryptionAction {
    /// Add a new key that seals Secrets from the server's next start on.
    Rotate,
    /// List the keys' names, the one that seals first.
    List,
}

/// Runs `wkube encryption`.
pub fn run(args: &EncryptionArgs, data_dir: &Path) -> ExitCode {
    let pki = data_dir.join("pki");
    let result = match args.action {
        EncryptionAction::Rotate => Keyring::rotate(&pki).map(|name| {
            println!(
                "{name} added first to {}; restart the server to seal every Secret with it",
                pki.join(KEYS_FILE).display()
            );
        }),
        EncryptionAction::List => Keyring::load(&pki.join(KEYS_FILE)).map(|ring| {
            for (i, name) in ring.names().into_iter().enumerate() {
                println!("{name}{}", if i == 0 { "  (seals)" } else { "" });
            }
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
