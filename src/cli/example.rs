//! `wkube example [NAME]`: the example pods, built into the binary so a new
//! user has a `.wasm` to deploy before building anything.
//!
//! The bytes are the checked-in outputs of `guest-examples/build.sh`
//! (`guest-examples/prebuilt/`), so `cargo run -- run hello --example
//! hello-http` works on a machine without the wasm targets. A unit test
//! rebuilds the examples from source and fails when a checked-in file is
//! stale.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// One example pod.
#[derive(Debug, Clone, Copy)]
pub struct Example {
    /// The name users type (`hello-http`), also the file's stem.
    pub name: &'static str,
    /// What it is and what it does, one line.
    pub summary: &'static str,
    /// The module, gzipped (see [`crate::embedded`]).
    pub gz: &'static [u8],
}

impl Example {
    /// The module's bytes.
    #[must_use]
    pub fn wasm(&self) -> Vec<u8> {
        crate::embedded::inflate(self.gz)
    }
}

/// Every example, in the order `wkube example` lists them.
pub const EXAMPLES: &[Example] = &[
    Example {
        name: "hello-http",
        summary: "HTTP component: answers every request with \"Hello from wkube!\"",
        gz: crate::embedded!("hello-http.wasm"),
    },
    Example {
        name: "echo-http",
        summary: "HTTP component: echoes the request; /env, /file/PATH, /spin/MS, /sleep/MS",
        gz: crate::embedded!("echo-http.wasm"),
    },
    Example {
        name: "job",
        summary: "command component (wasi:cli/run): prints its arguments and exits",
        gz: crate::embedded!("job.wasm"),
    },
    Example {
        name: "hello-p1",
        summary: "core module (WASI preview 1, _start): prints a greeting and exits",
        gz: crate::embedded!("hello-p1.wasm"),
    },
];

/// The example called `name`.
#[must_use]
pub fn find(name: &str) -> Option<&'static Example> {
    EXAMPLES.iter().find(|e| e.name == name)
}

/// The names, for error messages.
#[must_use]
pub fn names() -> String {
    EXAMPLES
        .iter()
        .map(|e| e.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Flags of `wkube example`.
#[derive(Debug, Args)]
pub struct ExampleArgs {
    /// The example to write; without it, the examples are listed.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,

    /// Write the module here instead of to standard output.
    #[arg(long, short = 'o', value_name = "FILE.wasm")]
    pub output: Option<PathBuf>,
}

/// Why `wkube example` failed.
#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    #[error("no example {name:?}; the examples are: {all}")]
    Unknown { name: String, all: String },
    #[error("refusing to write a binary module to a terminal; use -o FILE.wasm or redirect")]
    Terminal,
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing to standard output: {0}")]
    Stdout(std::io::Error),
}

/// Runs `wkube example`.
pub fn run(args: &ExampleArgs) -> ExitCode {
    match write(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(args: &ExampleArgs) -> Result<(), ExampleError> {
    let Some(name) = &args.name else {
        for e in EXAMPLES {
            println!("{:<12} {:>7} bytes  {}", e.name, e.wasm().len(), e.summary);
        }
        return Ok(());
    };
    let example = find(name).ok_or_else(|| ExampleError::Unknown {
        name: name.clone(),
        all: names(),
    })?;
    match &args.output {
        Some(path) => std::fs::write(path, example.wasm()).map_err(|source| ExampleError::Write {
            path: path.clone(),
            source,
        }),
        None => {
            let mut out = std::io::stdout().lock();
            if out.is_terminal() {
                return Err(ExampleError::Terminal);
            }
            out.write_all(&example.wasm())
                .and_then(|()| out.flush())
                .map_err(ExampleError::Stdout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded bytes are what the sources build to today. When this
    /// fails, run `guest-examples/build.sh --update-prebuilt` and commit.
    #[test]
    fn embedded_examples_are_a_fresh_build_of_their_sources() {
        for e in EXAMPLES {
            let fresh = crate::runtime::testutil::guest(e.name);
            assert!(
                fresh == e.wasm(),
                "guest-examples/prebuilt/{}.wasm is stale ({} bytes; a fresh build has {}): \
                 run guest-examples/build.sh --update-prebuilt and commit the result",
                e.name,
                e.wasm().len(),
                fresh.len()
            );
        }
    }

    #[test]
    fn every_example_is_a_module_wkube_accepts() {
        for e in EXAMPLES {
            let kind = crate::api::modules::wasm::inspect(&e.wasm());
            assert!(kind.is_ok(), "{}: {kind:?}", e.name);
        }
    }

    #[test]
    fn unknown_names_list_the_examples() {
        let err = write(&ExampleArgs {
            name: Some("nope".into()),
            output: None,
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no example \"nope\"; the examples are: hello-http, echo-http, job, hello-p1"
        );
    }
}
