//! The CRD controller: accepts a CustomResourceDefinition's names and
//! marks it Established, after which every API server serves its kinds;
//! and, once a CRD is deleted, deletes its objects before letting it go.
//!
//! Names are accepted unless another CRD of the same group already holds
//! the plural, a short name or the kind; the older CRD keeps them, as in
//! Kubernetes, and the newer one waits with `NamesAccepted=False`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::ControllerError;
use crate::resources::kinds::customresourcedefinition::CLEANUP_FINALIZER;

struct Ctx {
    client: Client,
    crds: Store<CustomResourceDefinition>,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let controller = Controller::new(
        Api::<CustomResourceDefinition>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Ctx {
        client,
        crds: controller.store(),
    });
    super::drive(controller, "customresourcedefinition", reconcile, ctx).await;
}

/// The names of `crd` another, older CRD of its group already holds.
fn conflict(
    crd: &CustomResourceDefinition,
    others: &[Arc<CustomResourceDefinition>],
) -> Option<String> {
    let names = &crd.spec.names;
    let mine: Vec<&str> = std::iter::once(names.plural.as_str())
        .chain(names.short_names.iter().flatten().map(String::as_str))
        .chain(names.singular.as_deref())
        .collect();
    let created = crd.metadata.creation_timestamp.as_ref().map(|t| t.0);
    for other in others {
        if other.name_any() == crd.name_any() || other.spec.group != crd.spec.group {
            continue;
        }
        // The older holder keeps its names (ties go to the name).
        let other_created = other.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if (other_created, other.name_any()) > (created, crd.name_any()) {
            continue;
        }
        let theirs = &other.spec.names;
        let held: Vec<&str> = std::iter::once(theirs.plural.as_str())
            .chain(theirs.short_names.iter().flatten().map(String::as_str))
            .chain(theirs.singular.as_deref())
            .collect();
        if let Some(n) = mine.iter().find(|n| held.contains(n)) {
            return Some(format!("\"{n}\" is already in use"));
        }
        if theirs.kind == names.kind {
            return Some(format!("\"{}\" is already in use", names.kind));
        }
    }
    None
}

fn code_is(e: &kube::Error, codes: &[u16]) -> bool {
    matches!(e, kube::Error::Api(s) if codes.contains(&s.code))
}

fn condition(existing: &[Value], ty: &str, status: &str, reason: &str, message: &str) -> Value {
    // The transition time moves only when the status does.
    let since = existing
        .iter()
        .find(|c| c["type"] == ty && c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(crate::api::objects::now_rfc3339()));
    json!({"type": ty, "status": status, "lastTransitionTime": since, "reason": reason, "message": message})
}

async fn reconcile(
    crd: Arc<CustomResourceDefinition>,
    ctx: Arc<Ctx>,
) -> Result<Action, ControllerError> {
    let api: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let name = crd.name_any();
    let status = serde_json::to_value(&crd.status).unwrap_or(Value::Null);
    let existing: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    if crd.metadata.deletion_timestamp.is_some() {
        return cleanup(&crd, &api, &ctx.client, &existing).await;
    }
    let others = ctx.crds.state();
    let mut conditions = Vec::new();
    let mut accepted = status["acceptedNames"].clone();
    match conflict(&crd, &others) {
        Some(msg) => {
            conditions.push(condition(
                &existing,
                "NamesAccepted",
                "False",
                "NameConflict",
                &msg,
            ));
            let was = existing
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            conditions.push(if was {
                condition(
                    &existing,
                    "Established",
                    "True",
                    "InitialNamesAccepted",
                    "the initial names have been accepted",
                )
            } else {
                condition(
                    &existing,
                    "Established",
                    "False",
                    "NotAccepted",
                    "not all names are accepted",
                )
            });
        }
        None => {
            accepted = serde_json::to_value(&crd.spec.names).unwrap_or(Value::Null);
            conditions.push(condition(
                &existing,
                "NamesAccepted",
                "True",
                "NoConflicts",
                "no conflicts found",
            ));
            conditions.push(condition(
                &existing,
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ));
        }
    }
    let mut stored: Vec<Value> = status["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(v) = crd.spec.versions.iter().find(|v| v.storage)
        && !stored.iter().any(|s| s == v.name.as_str())
    {
        stored.push(json!(v.name));
    }
    let want =
        json!({"conditions": conditions, "acceptedNames": accepted, "storedVersions": stored});
    if want["conditions"] == status["conditions"]
        && want["acceptedNames"] == status["acceptedNames"]
        && want["storedVersions"] == status["storedVersions"]
    {
        // A conflict may clear when the other CRD goes: look again later.
        return Ok(if conditions[0]["status"] == "False" {
            Action::requeue(Duration::from_secs(5))
        } else {
            Action::await_change()
        });
    }
    match api
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": want})),
        )
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if code_is(&e, &[404]) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// Delete every object of a deleted CRD, then drop its finalizer.
async fn cleanup(
    crd: &CustomResourceDefinition,
    api: &Api<CustomResourceDefinition>,
    client: &Client,
    existing: &[Value],
) -> Result<Action, ControllerError> {
    let finalizers = crd.metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = crd.name_any();
    let terminating = condition(
        existing,
        "Terminating",
        "True",
        "InstanceDeletionInProgress",
        "CustomResource deletion is in progress",
    );
    if !existing.iter().any(|c| c["type"] == "Terminating") {
        let mut conditions = existing.to_vec();
        conditions.push(terminating);
        let _ = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"conditions": conditions}})),
            )
            .await;
    }
    let served = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .or_else(|| crd.spec.versions.iter().find(|v| v.served));
    if let Some(version) = served {
        let resource = ApiResource {
            group: crd.spec.group.clone(),
            version: version.name.clone(),
            api_version: format!("{}/{}", crd.spec.group, version.name),
            kind: crd.spec.names.kind.clone(),
            plural: crd.spec.names.plural.clone(),
        };
        let objects: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        match objects.list_metadata(&ListParams::default()).await {
            Ok(list) => {
                if !list.items.is_empty() {
                    for obj in &list.items {
                        let ns = obj.metadata.namespace.clone();
                        let one: Api<DynamicObject> = match ns.as_deref() {
                            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                            None => Api::all_with(client.clone(), &resource),
                        };
                        match one.delete(&obj.name_any(), &DeleteParams::default()).await {
                            Ok(_) => {}
                            Err(e) if code_is(&e, &[404]) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    // Objects with finalizers of their own go when those
                    // are done: look again shortly.
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
            }
            // Not served (never established): nothing can exist.
            Err(e) if code_is(&e, &[404]) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let remaining: Vec<String> = finalizers
        .into_iter()
        .filter(|f| f != CLEANUP_FINALIZER)
        .collect();
    let patch =
        json!({"metadata": {"finalizers": remaining, "resourceVersion": crd.resource_version()}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        // Gone, or changed meanwhile (the change brings another pass).
        Err(e) if code_is(&e, &[404, 409]) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(name: &str, plural: &str, kind: &str, created: &str) -> Arc<CustomResourceDefinition> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "creationTimestamp": created},
                "spec": {"group": "example.com", "scope": "Namespaced",
                         "names": {"plural": plural, "kind": kind, "shortNames": ["sh"]},
                         "versions": []},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_older_crd_keeps_a_contested_name() {
        let old = crd(
            "widgets.example.com",
            "widgets",
            "Widget",
            "2026-01-01T00:00:00Z",
        );
        let new = crd(
            "gadgets.example.com",
            "gadgets",
            "Widget",
            "2026-01-02T00:00:00Z",
        );
        let all = vec![old.clone(), new.clone()];
        assert_eq!(conflict(&old, &all), None);
        assert_eq!(
            conflict(&new, &all).as_deref(),
            Some("\"sh\" is already in use")
        );
        let other = crd(
            "things.example.com",
            "things",
            "Thing",
            "2026-01-02T00:00:00Z",
        );
        let mut other = (*other).clone();
        other.spec.names.short_names = None;
        assert_eq!(conflict(&other, &all), None);
    }
}
