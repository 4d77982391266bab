//! Serving CustomResourceDefinitions: every API server follows the stored
//! CRDs and serves the kinds of those that are Established (see
//! `resources::custom`). The CRD controller decides Established; this
//! only follows it, so that every server of a cluster serves the same
//! kinds.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use crate::resources::custom;
use crate::store::follow::{self, Change, Mirror};
use crate::store::{Store, StoreError};

const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// Whether a stored CRD's status says it is Established.
pub fn established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Established" && c["status"] == "True")
}

/// The stored CRDs, by key; every change serves the Established ones.
#[derive(Default)]
pub struct Crds {
    stored: Mutex<BTreeMap<Vec<u8>, Value>>,
}

impl Crds {
    fn serve(crds: &BTreeMap<Vec<u8>, Value>) {
        let list: Vec<Value> = crds.values().filter(|c| established(c)).cloned().collect();
        custom::set(&list);
    }
}

impl Mirror for Crds {
    fn apply(&self, change: Change<'_>) {
        let mut crds = self.stored.lock();
        match change {
            Change::Loaded(_) => crds.clear(),
            Change::Events(_) => {}
            // The kinds stay served while the CRDs are loaded again.
            Change::Lost => return,
        }
        for (key, value) in change.updates() {
            match value.and_then(|v| serde_json::from_slice::<Value>(v).ok()) {
                Some(v) => {
                    crds.insert(key.to_vec(), v);
                }
                None => {
                    crds.remove(key);
                }
            }
        }
        Self::serve(&crds);
    }
}

/// Load the stored CRDs and serve their kinds, then keep following them
/// in the background (reloading after a broken watch; see
/// `store::follow`) for as long as the returned handle lives. Returns once
/// the first load is served, so that a restarted server serves custom
/// objects from its first request.
///
/// # Errors
/// The first load failed.
pub async fn start(store: Store) -> Result<Arc<Crds>, StoreError> {
    let crds = Arc::new(Crds::default());
    follow::follow(store, PREFIX, &crds).await?;
    Ok(crds)
}
