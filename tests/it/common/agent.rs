//! `wkube agent` processes joined to a [`TestServer`], as a user adds a
//! machine: the server's join token on first start, the kept node
//! credential afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{TestServer, eventually};

/// A `wkube agent` process, killed when dropped.
pub struct Agent {
    child: Child,
    /// The agent's data directory (its node credential lives here).
    pub dir: PathBuf,
    /// The agent's stdout.
    pub log: PathBuf,
    err: PathBuf,
}

impl Agent {
    /// Starts this build's `wkube agent` as node `name` on address `ip`,
    /// keeping its files under `dir`.
    pub fn start(
        server: &TestServer,
        dir: &Path,
        name: &str,
        ip: &str,
        token: Option<&str>,
    ) -> Agent {
        Self::start_with(
            Command::new(env!("CARGO_BIN_EXE_wkube")),
            server,
            dir,
            name,
            ip,
            token,
            &[],
        )
    }

    /// [`Agent::start`] with another command that runs `wkube` (another
    /// build, or one run under an emulator) and more `wkube agent` flags;
    /// the agent's arguments are appended to the command.
    pub fn start_with(
        mut cmd: Command,
        server: &TestServer,
        dir: &Path,
        name: &str,
        ip: &str,
        token: Option<&str>,
        flags: &[&str],
    ) -> Agent {
        let log = dir.join(format!("{name}.log"));
        let err = dir.join(format!("{name}.err"));
        cmd.arg("--data-dir")
            .arg(dir.join(name))
            .args(["agent", "--server", &server.api_url])
            .args(["--node-name", name, "--node-ip", ip])
            .args(["--agent-listen", &format!("{ip}:0")])
            .args(flags)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("create agent log"))
            .stderr(std::fs::File::create(&err).expect("create agent stderr"));
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        Agent {
            child: cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
            dir: dir.join(name),
            log,
            err,
        }
    }

    /// What the agent wrote to stderr so far (its log lines go there).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits (bounded) for the process to exit; its stderr.
    pub fn exit_stderr(mut self) -> String {
        let ok = eventually(Duration::from_secs(30), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(ok, "agent kept running");
        self.stderr()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The join token the server wrote to `DATA/join-token` on first start.
pub fn join_token(server: &TestServer) -> String {
    std::fs::read_to_string(server.data_dir.join("join-token"))
        .expect("the server writes DATA/join-token")
        .trim()
        .to_string()
}

/// Whether node `name` reports condition Ready=True.
pub fn node_ready(server: &TestServer, name: &str) -> bool {
    let out = server.kubectl().run(&["get", "node", name, "-o", "json"]);
    serde_json::from_str::<Value>(&out.stdout).is_ok_and(|n| {
        n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}
