//! Serving CustomResourceDefinitions: every API server follows the stored
//! CRDs and serves the kinds of those that are Established (see
//! `resources::custom`). The CRD controller decides Established; this
//! only follows it, so that every server of a cluster serves the same
//! kinds.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::resources::custom;
use crate::store::{EventType, KeyRange, RangeRequest, Store, StoreError, WatchRequest};

const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// Whether a stored CRD's status says it is Established.
pub fn established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Established" && c["status"] == "True")
}

fn serve(crds: &BTreeMap<Vec<u8>, Value>) {
    let list: Vec<Value> = crds.values().filter(|c| established(c)).cloned().collect();
    custom::set(&list);
}

/// Load the stored CRDs and serve their kinds, then keep following them
/// in the background. Returns once the first load is served, so that a
/// restarted server serves custom objects from its first request.
///
/// # Errors
/// The first load failed.
pub async fn start(store: Store) -> Result<(), StoreError> {
    let (crds, revision) = load(&store).await?;
    serve(&crds);
    tokio::spawn(follow(store, crds, revision));
    Ok(())
}

async fn load(store: &Store) -> Result<(BTreeMap<Vec<u8>, Value>, i64), StoreError> {
    let resp = store
        .range(RangeRequest {
            range: KeyRange::prefix(PREFIX),
            ..Default::default()
        })
        .await?;
    let crds = resp
        .kvs
        .iter()
        .filter_map(|kv| Some((kv.key.to_vec(), serde_json::from_slice(&kv.value).ok()?)))
        .collect();
    Ok((crds, resp.header.revision))
}

/// Follow changes from `revision` on; after a broken watch (a compaction,
/// the external store restarting) load everything again.
async fn follow(store: Store, mut crds: BTreeMap<Vec<u8>, Value>, mut revision: i64) {
    loop {
        match store
            .watch(WatchRequest {
                range: KeyRange::prefix(PREFIX),
                start_revision: revision + 1,
                ..Default::default()
            })
            .await
        {
            Ok(mut watch) => {
                while let Some(Ok(batch)) = watch.next().await {
                    for ev in &batch.events {
                        match ev.kind {
                            EventType::Put => {
                                if let Ok(v) = serde_json::from_slice(&ev.kv.value) {
                                    crds.insert(ev.kv.key.to_vec(), v);
                                }
                            }
                            EventType::Delete => {
                                crds.remove(&ev.kv.key[..]);
                            }
                        }
                    }
                    revision = revision.max(batch.header.revision);
                    serve(&crds);
                }
            }
            Err(e) => tracing::warn!("following CustomResourceDefinitions: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        match load(&store).await {
            Ok((fresh, rev)) => {
                crds = fresh;
                revision = rev;
                serve(&crds);
            }
            Err(e) => tracing::warn!("loading CustomResourceDefinitions: {e}"),
        }
    }
}
