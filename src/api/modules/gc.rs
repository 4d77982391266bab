//! Blob garbage collection: a blob is removed only when no Module tag and
//! no pod refers to it.
//!
//! The decision is made on one snapshot of the store (every Module, every
//! pod, the blob's meta record, all read at one revision) and carried out
//! by a transaction that holds only if that snapshot is still true for
//! what matters: no Module changed, no pod was created and the blob was not
//! rewritten since. A push that tags the blob, or a pod that names it,
//! therefore either lands before the snapshot (and keeps the blob) or makes
//! the delete fail. Pods are matched on their raw JSON containing the
//! digest's hex, which covers `image: sha256:<hex>`, `NAME@sha256:<hex>`
//! and `status.containerStatuses[].imageID` at once and errs on keeping.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::blobs::{self, BLOB_PREFIX};
use crate::api::ApiState;
use crate::api::status::ApiError;
use crate::resources::Kind;
use crate::store::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, RangeRequest, Revision,
    Store, TxnOp, TxnRequest,
};

const MODULES_PREFIX: &str = "/registry/wkube.dev/modules/";
const PODS_PREFIX: &str = "/registry/pods/";

/// How often a collection starts over when Modules or pods changed under it.
const ATTEMPTS: usize = 5;

/// How often the background sweep looks for unreferenced and half-written
/// blobs that no event pointed at (a pod deleted long after its tag moved,
/// a push that crashed between chunks and meta).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// The sha256 hex digests every Module tag names, from raw Module values.
fn tagged(kvs: &[Arc<crate::store::KeyValue>]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for kv in kvs {
        let Ok(m) = serde_json::from_slice::<Value>(&kv.value) else {
            continue;
        };
        if let Some(tags) = m.pointer("/spec/tags").and_then(Value::as_object) {
            for d in tags.values().filter_map(Value::as_str) {
                if let Some(hex) = d.strip_prefix("sha256:") {
                    out.insert(hex.to_string());
                }
            }
        }
    }
    out
}

/// Delete those of `candidates` (sha256 hex) that nothing refers to.
/// Returns the ones deleted.
///
/// # Errors
/// Store errors; a collection that keeps losing races gives up quietly
/// (the blobs stay until the next sweep).
pub async fn collect(store: &Store, candidates: &[String]) -> Result<Vec<String>, ApiError> {
    let mut pending: BTreeSet<String> = candidates.iter().cloned().collect();
    let mut deleted = Vec::new();
    for _ in 0..ATTEMPTS {
        if pending.is_empty() {
            break;
        }
        let modules = store
            .range(RangeRequest {
                range: KeyRange::prefix(MODULES_PREFIX),
                ..Default::default()
            })
            .await?;
        let at: Revision = modules.header.revision;
        let tags = tagged(&modules.kvs);
        pending.retain(|hex| !tags.contains(hex));
        if pending.is_empty() {
            break;
        }
        let pods = store
            .range(RangeRequest {
                range: KeyRange::prefix(PODS_PREFIX),
                revision: at,
                ..Default::default()
            })
            .await?;
        pending.retain(|hex| {
            !pods
                .kvs
                .iter()
                .any(|kv| std::str::from_utf8(&kv.value).is_ok_and(|s| s.contains(hex.as_str())))
        });
        let mut lost_race = false;
        for hex in std::mem::take(&mut pending) {
            let Some(meta) = blobs::read_meta(store, &hex, at).await? else {
                continue;
            };
            let resp = store
                .txn(TxnRequest {
                    compare: vec![
                        Compare {
                            range: KeyRange::single(blobs::meta_key(&hex)),
                            result: CompareResult::Equal,
                            target: CompareTarget::Mod(meta.mod_revision),
                        },
                        // No Module was created or changed since the snapshot…
                        Compare {
                            range: KeyRange::prefix(MODULES_PREFIX),
                            result: CompareResult::Less,
                            target: CompareTarget::Mod(at + 1),
                        },
                        // …and no pod was created (a pod's images are fixed
                        // at creation; imageID only ever names an image
                        // the spec already did).
                        Compare {
                            range: KeyRange::prefix(PODS_PREFIX),
                            result: CompareResult::Less,
                            target: CompareTarget::Create(at + 1),
                        },
                    ],
                    success: vec![TxnOp::DeleteRange(DeleteRangeRequest {
                        range: KeyRange::prefix(blobs::blob_prefix(&hex)),
                        prev_kv: false,
                    })],
                    failure: vec![],
                })
                .await?;
            if resp.succeeded {
                tracing::info!(digest = %format!("sha256:{hex}"), "deleted unreferenced module blob");
                deleted.push(hex);
            } else {
                lost_race = true;
                pending.insert(hex);
            }
        }
        if !lost_race {
            break;
        }
    }
    Ok(deleted)
}

/// Look at every blob: delete the unreferenced ones, and the chunks of
/// half-written ones whose newest chunk is older than `orphaned_before`
/// (the revision of the previous sweep, so a push in progress is never hit).
///
/// # Errors
/// Store errors.
pub async fn sweep(store: &Store, orphaned_before: Revision) -> Result<Vec<String>, ApiError> {
    let resp = store
        .range(RangeRequest {
            range: KeyRange::prefix(BLOB_PREFIX),
            keys_only: true,
            ..Default::default()
        })
        .await?;
    let mut complete = BTreeSet::new();
    // hex → newest chunk revision, for blobs without a meta record.
    let mut partial: std::collections::BTreeMap<String, Revision> = Default::default();
    for kv in &resp.kvs {
        let key = String::from_utf8_lossy(&kv.key);
        let Some(rest) = key.strip_prefix(BLOB_PREFIX) else {
            continue;
        };
        let Some((hex, tail)) = rest.split_once('/') else {
            continue;
        };
        if tail == "meta" {
            complete.insert(hex.to_string());
        } else {
            let newest = partial.entry(hex.to_string()).or_default();
            *newest = (*newest).max(kv.mod_revision);
        }
    }
    for (hex, newest) in partial {
        if complete.contains(&hex) || newest >= orphaned_before {
            continue;
        }
        // Only while the blob is still without a meta record: a push that
        // finished meanwhile owns these chunks.
        store
            .txn(TxnRequest {
                compare: vec![Compare {
                    range: KeyRange::single(blobs::meta_key(&hex)),
                    result: CompareResult::Equal,
                    target: CompareTarget::Create(0),
                }],
                success: vec![TxnOp::DeleteRange(DeleteRangeRequest {
                    range: KeyRange::prefix(blobs::blob_prefix(&hex)),
                    prev_kv: false,
                })],
                failure: vec![],
            })
            .await?;
    }
    collect(store, &complete.into_iter().collect::<Vec<_>>()).await
}

/// Run [`sweep`] every [`SWEEP_INTERVAL`] for as long as the process runs.
pub fn spawn_sweeper(state: Arc<ApiState>) {
    let store = state.registry.store().clone();
    tokio::spawn(async move {
        let mut previous: Revision = 0;
        loop {
            tokio::time::sleep(SWEEP_INTERVAL).await;
            let now = match state.registry.revision().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "module blob sweep");
                    continue;
                }
            };
            if let Err(e) = sweep(&store, previous).await {
                tracing::warn!(error = %e, "module blob sweep");
            }
            previous = now;
        }
    });
}

/// Digests (hex) a Module's tags name.
pub fn digests_of_module(obj: &Value) -> Vec<String> {
    obj.pointer("/spec/tags")
        .and_then(Value::as_object)
        .map(|t| {
            t.values()
                .filter_map(Value::as_str)
                .filter_map(|d| d.strip_prefix("sha256:"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Digests (hex) a pod names in its images or image IDs.
pub fn digests_of_pod(obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |s: &str| {
        if let Some((_, rest)) = s.rsplit_once("sha256:")
            && rest.len() == 64
            && rest.bytes().all(|b| b.is_ascii_hexdigit())
        {
            out.push(rest.to_ascii_lowercase());
        }
    };
    for list in ["/spec/containers", "/spec/initContainers"] {
        for c in obj
            .pointer(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(i) = c.get("image").and_then(Value::as_str) {
                add(i);
            }
        }
    }
    for list in ["/status/containerStatuses", "/status/initContainerStatuses"] {
        for c in obj
            .pointer(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(i) = c.get("imageID").and_then(Value::as_str) {
                add(i);
            }
        }
    }
    out
}

/// Collect `candidates` in the background, logging failures.
pub fn spawn_collect(store: Store, candidates: Vec<String>) {
    if candidates.is_empty() {
        return;
    }
    tokio::spawn(async move {
        if let Err(e) = collect(&store, &candidates).await {
            tracing::warn!(error = %e, "collecting module blobs");
        }
    });
}

/// After a Module or pod is gone: its blobs may now be unreferenced.
pub fn after_delete(state: &ApiState, kind: &Kind, obj: &Value) {
    let candidates = match (kind.group, kind.kind) {
        ("wkube.dev", "Module") => digests_of_module(obj),
        ("", "Pod") => digests_of_pod(obj),
        _ => return,
    };
    spawn_collect(state.registry.store().clone(), candidates);
}

/// Before a Module update is stored: digests whose tags it removes may
/// become unreferenced once it lands. The check waits until the Module's
/// resourceVersion moved (or a few seconds passed — if the update failed,
/// the check finds the tags still there and keeps everything).
pub fn before_update(state: &ApiState, kind: &Kind, old: &Value, new: &Value) {
    if (kind.group, kind.kind) != ("wkube.dev", "Module") {
        return;
    }
    let kept: BTreeSet<String> = digests_of_module(new).into_iter().collect();
    let dropped: Vec<String> = digests_of_module(old)
        .into_iter()
        .filter(|d| !kept.contains(d))
        .collect();
    if dropped.is_empty() {
        return;
    }
    let key = Bytes::from(kind.key(None, crate::api::objects::name_of(old)));
    let old_rv = crate::api::objects::rv_of(old)
        .and_then(|r| r.parse::<Revision>().ok())
        .unwrap_or(0);
    let store = state.registry.store().clone();
    tokio::spawn(async move {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let moved = store
                .range(RangeRequest {
                    range: KeyRange::single(key.clone()),
                    keys_only: true,
                    ..Default::default()
                })
                .await
                .map(|r| r.kvs.first().map(|kv| kv.mod_revision) != Some(old_rv))
                .unwrap_or(false);
            if moved {
                break;
            }
        }
        if let Err(e) = collect(&store, &dropped).await {
            tracing::warn!(error = %e, "collecting module blobs");
        }
    });
}
