//! Compresses the files the binary carries: the dashboard's bundle
//! (`web/dist/`) and the example modules (`guest-examples/prebuilt/`).
//!
//! They are embedded gzipped: browsers take the dashboard's files as they
//! are (`Content-Encoding: gzip`), and `wkube example` inflates a module
//! when it is asked for. Compressed, they take a third of the space in the
//! binary. The gzip header carries no name or time, so the same files give
//! the same bytes on every build.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The embedded files, relative to the crate root; each becomes
/// `$OUT_DIR/<file name>.gz`.
const EMBEDDED: &[&str] = &[
    "web/dist/index.html",
    "web/dist/app.js",
    "web/dist/app.css",
    "web/dist/icon.svg",
    "guest-examples/prebuilt/hello-http.wasm",
    "guest-examples/prebuilt/echo-http.wasm",
    "guest-examples/prebuilt/job.wasm",
    "guest-examples/prebuilt/hello-p1.wasm",
];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for file in EMBEDDED {
        println!("cargo::rerun-if-changed={file}");
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        let name = Path::new(file).file_name().expect("a file name");
        let target = out.join(format!("{}.gz", name.to_string_lossy()));
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).expect("compressing in memory");
        let gz = gz.finish().expect("compressing in memory");
        std::fs::write(&target, gz).unwrap_or_else(|e| panic!("writing {}: {e}", target.display()));
    }
}
