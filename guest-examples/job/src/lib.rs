//! `job`: a wkube command pod (exports `wasi:cli/run@0.2.12`).
//!
//! Prints its arguments (without argv[0]) space-separated on one line and
//! `$JOB_MESSAGE` on the next, sleeps `$SLEEP_MS` milliseconds (default 0;
//! so tests can see several pods of a Job run at once), then exits with
//! `$EXIT_CODE` (default 0).
//!
//! The exit code is reported through WASI 0.2's
//! `wasi:cli/exit.exit-with-code` (stable since WASI 0.2.12, which is the WIT
//! wasmtime 48 implements and links with the rest of `wasi:cli/exit`).
//! `std::process::exit(n)` would not do: on wasm32-wasip2 Rust's std calls
//! `wasi:cli/exit.exit(err)` for any n != 0, which the host sees as code 1.

use std::io::Write as _;

struct Job;

impl wasip2::exports::cli::run::Guest for Job {
    fn run() -> Result<(), ()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let message = std::env::var("JOB_MESSAGE").unwrap_or_default();

        let code = match std::env::var("EXIT_CODE") {
            Err(_) => 0,
            Ok(v) => match v.trim().parse::<i64>() {
                // As a POSIX shell does: the status is the low 8 bits.
                Ok(n) => (n & 0xff) as u8,
                Err(_) => {
                    eprintln!("job: EXIT_CODE={v:?} is not an integer; exiting with 2");
                    2
                }
            },
        };

        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", args.join(" "));
        let _ = writeln!(out, "{message}");
        let _ = out.flush();
        drop(out);
        let _ = std::io::stderr().flush();

        if let Some(ms) = std::env::var("SLEEP_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }

        if code != 0 {
            // Does not return: the host's `run` call ends with I32Exit(code).
            wasip2::cli::exit::exit_with_code(code);
            // Not reached under wasmtime 48; a plain failure is the best a
            // host that returned from exit-with-code could be told.
            return Err(());
        }
        Ok(())
    }
}

wasip2::cli::command::export!(Job);
