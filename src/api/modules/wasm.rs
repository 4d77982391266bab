//! What the registry checks and learns about uploaded bytes: that they are
//! a valid WebAssembly component or core module, which of the two, and
//! what they export (the kubelet picks how to run a pod from the exports).

use wasmparser::{Encoding, ExternalKind, Parser, Payload, Validator};

/// Most export names recorded per blob: enough for every WASI world, small
/// enough that a core module exporting thousands of functions does not
/// bloat the Module's status.
const MAX_EXPORTS: usize = 32;

/// The two kinds of Wasm binary the registry accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Component,
    /// A core WebAssembly module.
    Module,
}

impl Format {
    /// As recorded in `status.blobs[].format`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Component => "component",
            Format::Module => "module",
        }
    }
}

/// What [`inspect`] found in a valid binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspected {
    pub format: Format,
    /// Top-level export names: interface names such as
    /// `wasi:http/incoming-handler@0.2.0` for a component, exported
    /// function names such as `_start` for a core module.
    pub exports: Vec<String>,
}

/// Why bytes are not an acceptable Wasm binary. The messages are what the
/// uploader reads in the 422 `Status`, so they say what is wrong.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WasmError {
    #[error("the body is empty; send the bytes of a .wasm file")]
    Empty,
    #[error(
        "not a WebAssembly binary: it does not start with the magic bytes \\0asm (found {found}){hint}"
    )]
    BadMagic { found: String, hint: &'static str },
    #[error(
        "not a valid WebAssembly component or module: fails validation at offset {offset}: {message}"
    )]
    Invalid { offset: usize, message: String },
}

/// Validate `bytes` as a component or core module and list its exports.
///
/// # Errors
/// [`WasmError`] saying what is wrong: empty, bad magic, or the validator's
/// first error with its byte offset.
pub fn inspect(bytes: &[u8]) -> Result<Inspected, WasmError> {
    if bytes.is_empty() {
        return Err(WasmError::Empty);
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(bad_magic(bytes));
    }
    Validator::new()
        .validate_all(bytes)
        .map_err(|e| WasmError::Invalid {
            offset: e.offset(),
            message: e.message().to_string(),
        })?;
    let mut format = Format::Module;
    let mut exports = Vec::new();
    // Nested modules and components have exports of their own; only the
    // outermost binary's exports say how it runs.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        // The validator has read every byte already; a parse error here
        // would be a wasmparser bug, so report it rather than panic.
        let payload = payload.map_err(|e| WasmError::Invalid {
            offset: e.offset(),
            message: e.message().to_string(),
        })?;
        match payload {
            Payload::Version { encoding, .. } if depth == 0 => {
                format = match encoding {
                    Encoding::Component => Format::Component,
                    Encoding::Module => Format::Module,
                };
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader.into_iter().flatten() {
                    push_bounded(&mut exports, export.name.name);
                }
            }
            Payload::ExportSection(reader) if depth == 0 => {
                for export in reader.into_iter().flatten() {
                    if export.kind == ExternalKind::Func {
                        push_bounded(&mut exports, export.name);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Inspected { format, exports })
}

fn push_bounded(exports: &mut Vec<String>, name: &str) {
    if exports.len() < MAX_EXPORTS {
        exports.push(name.to_string());
    }
}

fn bad_magic(bytes: &[u8]) -> WasmError {
    let head = &bytes[..bytes.len().min(4)];
    let found = if head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(head))
    } else {
        format!("0x{}", hex::encode(head))
    };
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]);
    let trimmed = text.trim_start();
    let hint = if trimmed.starts_with("(module") || trimmed.starts_with("(component") {
        "; this looks like WebAssembly text (.wat): compile it to a binary .wasm first"
    } else if bytes.starts_with(b"\x1f\x8b") {
        "; this looks gzip-compressed: upload the uncompressed .wasm"
    } else {
        ""
    };
    WasmError::BadMagic { found, hint }
}

/// A human summary for messages: `component exporting wasi:cli/run@0.2.0`.
pub fn describe(format: &str, exports: &[String]) -> String {
    if exports.is_empty() {
        format!("{format} with no exports")
    } else {
        format!("{format} exporting {}", exports.join(", "))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use wasm_encoder::{
        CodeSection, Component, ComponentExportKind, ComponentExportSection,
        ComponentInstanceSection, ExportKind, ExportSection, Function, FunctionSection, Module,
        TypeSection,
    };

    /// A core module exporting a `_start` function that does nothing.
    pub fn core_module_with_start() -> Vec<u8> {
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        let mut exports = ExportSection::new();
        exports.export("_start", ExportKind::Func, 0);
        m.section(&exports);
        let mut code = CodeSection::new();
        let mut f = Function::new([]);
        f.instructions().end();
        code.function(&f);
        m.section(&code);
        m.finish()
    }

    /// A component exporting an (empty) instance under an interface name.
    pub fn component_exporting(name: &str) -> Vec<u8> {
        let mut c = Component::new();
        let mut instances = ComponentInstanceSection::new();
        instances.export_items(Vec::<(&str, ComponentExportKind, u32)>::new());
        c.section(&instances);
        let mut exports = ComponentExportSection::new();
        exports.export(name, ComponentExportKind::Instance, 0, None);
        c.section(&exports);
        c.finish()
    }

    #[test]
    fn the_smallest_core_module_is_a_module_without_exports() {
        let got = inspect(b"\0asm\x01\0\0\0").unwrap();
        assert_eq!(got.format, Format::Module);
        assert!(got.exports.is_empty());
    }

    #[test]
    fn the_smallest_component_is_a_component() {
        let got = inspect(b"\0asm\x0d\0\x01\0").unwrap();
        assert_eq!(got.format, Format::Component);
    }

    #[test]
    fn a_core_module_lists_its_start_function() {
        let got = inspect(&core_module_with_start()).unwrap();
        assert_eq!(got.exports, ["_start"]);
        assert_eq!(
            describe(got.format.as_str(), &got.exports),
            "module exporting _start"
        );
    }

    #[test]
    fn a_component_lists_its_exported_interfaces() {
        let bytes = component_exporting("wasi:http/incoming-handler@0.2.0");
        let got = inspect(&bytes).unwrap();
        assert_eq!(got.format, Format::Component);
        assert_eq!(got.exports, ["wasi:http/incoming-handler@0.2.0"]);
    }

    #[test]
    fn an_empty_body_says_so() {
        assert_eq!(inspect(b""), Err(WasmError::Empty));
    }

    #[test]
    fn text_is_refused_for_its_magic_with_a_hint_about_wat() {
        let e = inspect(b"(module)").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("does not start with the magic bytes"), "{msg}");
        assert!(msg.contains("\"(mod\""), "{msg}");
        assert!(msg.contains(".wat"), "{msg}");
    }

    #[test]
    fn binary_garbage_shows_its_first_bytes_in_hex() {
        let msg = inspect(&[0xde, 0xad, 0xbe, 0xef, 0])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("0xdeadbeef"), "{msg}");
    }

    #[test]
    fn a_truncated_module_fails_validation_at_an_offset() {
        let mut bytes = core_module_with_start();
        bytes.truncate(bytes.len() - 3);
        match inspect(&bytes) {
            Err(WasmError::Invalid { offset, message }) => {
                assert!(offset > 8, "offset {offset}");
                assert!(!message.is_empty());
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_version_fails_validation() {
        let e = inspect(b"\0asm\x02\0\0\0").unwrap_err();
        assert!(e.to_string().contains("fails validation at offset"), "{e}");
    }
}
