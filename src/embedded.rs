//! Files built into the binary: the dashboard's bundle and the example
//! modules, gzipped by `build.rs` (a third of their size).

use std::io::Read;

/// The gzipped bytes of an embedded file, by its file name
/// (`embedded!("app.js")`).
#[macro_export]
macro_rules! embedded {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".gz"))
    };
}

/// The file's own bytes. The input is built into the binary by
/// `build.rs`, so it always inflates.
#[must_use]
pub fn inflate(gz: &'static [u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(gz.len() * 3);
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .expect("build.rs gzipped this file");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_file_inflates_to_its_source() {
        for (gz, source) in [
            (
                embedded!("app.js") as &[u8],
                &include_bytes!("../web/dist/app.js")[..],
            ),
            (
                embedded!("hello-p1.wasm"),
                include_bytes!("../guest-examples/prebuilt/hello-p1.wasm"),
            ),
        ] {
            assert!(gz.len() < source.len());
            assert_eq!(inflate(gz), source);
        }
    }
}
