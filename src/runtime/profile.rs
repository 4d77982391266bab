//! What an engine compiles for, and the fingerprint that names it.
//!
//! Native code from wasmtime runs only in an engine built with the same
//! code-shaping settings (target architecture, memory layout, wasmtime
//! version, Wasm features). An [`EngineProfile`] writes those down in a form
//! an agent can send to the API server, which compiles a module once per
//! profile and keeps the artifact under the profile's [`fingerprint`]
//! (`EngineProfile::fingerprint`). Every setting that shapes generated code
//! is applied by [`apply_codegen`], used both by the node's own engine
//! (`engine.rs`) and by the API server's compiling engines (`precompile.rs`),
//! so the two cannot drift apart.
//!
//! The fingerprint is computed from the profile, not from wasmtime's
//! `Engine::precompile_compatibility_hash`: that hash exists only in builds
//! with a compiler, and it covers the compiling host's CPU features, which
//! an agent without a compiler cannot know. Should the fingerprint ever
//! miss a setting, nothing unsafe follows: wasmtime checks an artifact's
//! version, target, flags and tunables against the engine before it maps
//! any code, and refuses a mismatch.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The wasmtime release this binary embeds (checked against `Cargo.lock` by
/// a test). Artifacts of another release never load, so it is part of the
/// fingerprint.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Bumped whenever [`apply_codegen`] changes what code it produces, so
/// artifacts of the old settings are never asked for again.
const CODEGEN_REVISION: u32 = 1;

/// Targets the API server compiles for: the architectures wkube agents run
/// on (the `compiler` feature builds exactly these two cranelift backends).
pub const SUPPORTED_TARGETS: &[&str] = &["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

/// How guest memories are laid out, which decides how compiled code checks
/// bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MemoryLayout {
    /// wasmtime's large reservations with guard pages (pooled or on demand):
    /// bounds checks are mostly left to the guard pages.
    Guarded,
    /// Each memory reserves only what it uses (`--wasm-memory small`):
    /// explicit bounds checks in the code.
    Small,
}

impl MemoryLayout {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryLayout::Guarded => "guarded",
            MemoryLayout::Small => "small",
        }
    }

    pub fn parse(s: &str) -> Option<MemoryLayout> {
        match s {
            "guarded" => Some(MemoryLayout::Guarded),
            "small" => Some(MemoryLayout::Small),
            _ => None,
        }
    }
}

/// The code-shaping configuration of an engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineProfile {
    /// Target triple, as wasmtime and rustc name it.
    pub target: String,
    pub memory: MemoryLayout,
    /// The wasmtime release.
    pub wasmtime: String,
}

/// Why a profile cannot be compiled for here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("unsupported target {0:?}: this cluster compiles for {targets}", targets = SUPPORTED_TARGETS.join(", "))]
    UnsupportedTarget(String),
    #[error("unknown memory layout {0:?}: expected guarded or small")]
    UnknownMemory(String),
    #[error(
        "the engine runs wasmtime {0}, this server compiles with wasmtime {WASMTIME_VERSION}: their code is not compatible"
    )]
    OtherWasmtime(String),
    #[error("fingerprint {given:?} does not match the profile (its fingerprint is {actual})")]
    FingerprintMismatch { given: String, actual: String },
}

impl EngineProfile {
    /// The profile of an engine of this binary on this host.
    pub fn host(memory: MemoryLayout) -> EngineProfile {
        EngineProfile {
            target: target_lexicon::Triple::host().to_string(),
            memory,
            wasmtime: WASMTIME_VERSION.to_string(),
        }
    }

    /// A profile from its wire form (query parameters), checked to be one
    /// this binary can compile for; `fingerprint`, when given, must be the
    /// profile's.
    ///
    /// # Errors
    /// A [`ProfileError`] naming the first field that is wrong.
    pub fn parse(
        target: &str,
        memory: &str,
        wasmtime: &str,
        fingerprint: Option<&str>,
    ) -> Result<EngineProfile, ProfileError> {
        if !SUPPORTED_TARGETS.contains(&target) {
            return Err(ProfileError::UnsupportedTarget(target.to_string()));
        }
        let memory = MemoryLayout::parse(memory)
            .ok_or_else(|| ProfileError::UnknownMemory(memory.into()))?;
        if wasmtime != WASMTIME_VERSION {
            return Err(ProfileError::OtherWasmtime(wasmtime.to_string()));
        }
        let profile = EngineProfile {
            target: target.to_string(),
            memory,
            wasmtime: wasmtime.to_string(),
        };
        if let Some(given) = fingerprint {
            let actual = profile.fingerprint();
            if given != actual {
                return Err(ProfileError::FingerprintMismatch {
                    given: given.to_string(),
                    actual,
                });
            }
        }
        Ok(profile)
    }

    /// 32 lowercase hex digits naming this profile: the first 128 bits of
    /// the sha256 of its fields and the codegen revision. Equal
    /// fingerprints mean interchangeable artifacts.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!(
            "wkube-engine/{CODEGEN_REVISION}\n{}\n{}\n{}\n",
            self.target,
            self.memory.as_str(),
            self.wasmtime
        ));
        hex::encode(&h.finalize()[..16])
    }

    /// The query string the agent asks for artifacts with.
    pub fn to_query(&self) -> String {
        serde_urlencoded::to_string([
            ("target", self.target.as_str()),
            ("memory", self.memory.as_str()),
            ("wasmtime", self.wasmtime.as_str()),
            ("fingerprint", self.fingerprint().as_str()),
        ])
        .unwrap_or_default()
    }
}

/// Applies every setting that shapes generated code for `memory`. Settings
/// that only matter at run time (stack size, instance allocation) are the
/// caller's.
pub(crate) fn apply_codegen(c: &mut wasmtime::Config, memory: MemoryLayout) {
    c.wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true);
    #[cfg(feature = "compiler")]
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if memory == MemoryLayout::Small {
        // Each memory maps only what it uses plus a little room and moves
        // when it grows; bounds are checked explicitly instead of by guard
        // pages. Slower guest code, but it fits a small address space.
        c.memory_reservation(0)
            .memory_guard_size(64 << 10)
            .memory_reservation_for_growth(1 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wasmtime_version_is_the_one_in_the_lock_file() {
        let lock = include_str!("../../Cargo.lock");
        let entry = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"wasmtime\"\n"))
            .expect("wasmtime in Cargo.lock");
        assert!(
            entry.contains(&format!("\nversion = \"{WASMTIME_VERSION}\"\n")),
            "{entry}"
        );
    }

    #[test]
    fn fingerprints_differ_by_target_memory_and_wasmtime_and_are_stable() {
        let base = EngineProfile::parse(
            "x86_64-unknown-linux-gnu",
            "guarded",
            WASMTIME_VERSION,
            None,
        )
        .unwrap();
        let fp = base.fingerprint();
        assert_eq!(fp.len(), 32);
        assert!(
            fp.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(fp, base.clone().fingerprint());
        let arm = EngineProfile {
            target: "aarch64-unknown-linux-gnu".into(),
            ..base.clone()
        };
        let small = EngineProfile {
            memory: MemoryLayout::Small,
            ..base.clone()
        };
        let other = EngineProfile {
            wasmtime: "47.0.0".into(),
            ..base.clone()
        };
        let all = [
            fp.clone(),
            arm.fingerprint(),
            small.fingerprint(),
            other.fingerprint(),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn a_profile_round_trips_through_its_query_and_bogus_ones_are_refused() {
        let p = EngineProfile::host(MemoryLayout::Small);
        let q: std::collections::HashMap<String, String> =
            serde_urlencoded::from_str(&p.to_query()).unwrap();
        let back = EngineProfile::parse(
            &q["target"],
            &q["memory"],
            &q["wasmtime"],
            Some(&q["fingerprint"]),
        )
        .unwrap();
        assert_eq!(back, p);

        let v = WASMTIME_VERSION;
        let err = |t, m, w, f| EngineProfile::parse(t, m, w, f).unwrap_err();
        assert!(matches!(
            err("mips-unknown-linux-gnu", "guarded", v, None),
            ProfileError::UnsupportedTarget(_)
        ));
        assert!(matches!(
            err("x86_64-unknown-linux-gnu", "huge", v, None),
            ProfileError::UnknownMemory(_)
        ));
        assert!(matches!(
            err("x86_64-unknown-linux-gnu", "guarded", "1.0.0", None),
            ProfileError::OtherWasmtime(_)
        ));
        assert!(matches!(
            err("x86_64-unknown-linux-gnu", "guarded", v, Some("00")),
            ProfileError::FingerprintMismatch { .. }
        ));
    }
}
