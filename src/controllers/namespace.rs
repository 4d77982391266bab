//! The namespace controller: empties a terminating namespace, then lets it
//! go.
//!
//! Deleting a namespace only marks it (`Terminating`, a deletion
//! timestamp, the `kubernetes` finalizer still in `spec.finalizers`). This
//! controller deletes every namespaced object in it, kind by kind, waits
//! while any remain (pods stopping within their grace period, objects
//! whose own finalizers have not run), then clears the `kubernetes`
//! finalizer, and the API server removes the namespace. Because the work
//! is driven by the namespace's stored state, a control plane that
//! restarts half way through picks it up where it stopped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::ControllerError;
use crate::resources::Kind;

/// The finalizer in `spec.finalizers` that stands for this controller's
/// work.
pub const FINALIZER: &str = "kubernetes";

/// How soon a namespace whose contents are still going is looked at again.
const RECHECK: Duration = Duration::from_millis(500);

/// What one reconcile of a namespace does.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Active, or already finalized: nothing to do.
    Nothing,
    /// Delete every object of these kinds in the namespace, then look
    /// again.
    DeleteContents(Vec<&'static str>),
    /// Empty: clear the `kubernetes` finalizer (writing an empty list even
    /// when a namespace stored before it carried one has none), and the
    /// API server removes the namespace.
    Finalize,
}

/// Decides the step for `ns`, given the kinds (by plural) that still have
/// objects in it.
pub fn decide(ns: &Namespace, remaining: &[&'static str]) -> Step {
    if ns.metadata.deletion_timestamp.is_none() {
        return Step::Nothing;
    }
    if !remaining.is_empty() {
        return Step::DeleteContents(remaining.to_vec());
    }
    let ours = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER));
    let theirs = ns
        .metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| !f.is_empty());
    if ours || !theirs {
        Step::Finalize
    } else {
        // Only others' finalizers hold it: it goes when they clear them.
        Step::Nothing
    }
}

struct Ctx {
    client: Client,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let controller =
        Controller::new(namespaces, watcher::Config::default()).graceful_shutdown_on(shutdown);
    super::drive(controller, "namespace", reconcile, Arc::new(Ctx { client })).await;
}

/// The namespaced kinds the controller empties a namespace of.
fn namespaced_kinds() -> impl Iterator<Item = &'static Kind> {
    crate::resources::all_kinds()
        .into_iter()
        .filter(|k| k.namespaced && k.stored)
}

fn api_in(client: &Client, ns: &str, kind: &Kind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &super::api_resource(kind))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    // What is left, one object per kind: enough to know the kind is not
    // empty yet.
    let mut remaining = Vec::new();
    for kind in namespaced_kinds() {
        let left = api_in(&ctx.client, &name, kind)
            .list_metadata(&ListParams::default().limit(1))
            .await?;
        if !left.items.is_empty() {
            remaining.push(kind.plural);
        }
    }
    match decide(&ns, &remaining) {
        Step::Nothing => Ok(Action::await_change()),
        Step::DeleteContents(plurals) => {
            for kind in namespaced_kinds().filter(|k| plurals.contains(&k.plural)) {
                match api_in(&ctx.client, &name, kind)
                    .delete_collection(&DeleteParams::background(), &ListParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(Action::requeue(RECHECK))
        }
        Step::Finalize => {
            let mut next = (*ns).clone();
            let spec = next.spec.get_or_insert_with(Default::default);
            spec.finalizers = Some(
                spec.finalizers
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|f| f != FINALIZER)
                    .collect(),
            );
            let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
            match namespaces
                .replace(&name, &PostParams::default(), &next)
                .await
            {
                Ok(_) => Ok(Action::await_change()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ns(terminating: bool, finalizers: &[&str]) -> Namespace {
        let mut n = Namespace::default();
        n.metadata.name = Some("n".into());
        if terminating {
            n.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        }
        n.spec = Some(NamespaceSpec {
            finalizers: Some(finalizers.iter().map(|f| f.to_string()).collect()),
        });
        n
    }

    #[test]
    fn a_terminating_namespace_is_emptied_then_finalized() {
        let cases: &[(Namespace, &[&'static str], Step)] = &[
            (ns(false, &[FINALIZER]), &["pods"], Step::Nothing),
            (
                ns(true, &[FINALIZER]),
                &["pods", "configmaps"],
                Step::DeleteContents(vec!["pods", "configmaps"]),
            ),
            (ns(true, &[FINALIZER]), &[], Step::Finalize),
            (ns(true, &[]), &[], Step::Finalize),
            (
                {
                    let mut n = ns(true, &[]);
                    n.metadata.finalizers = Some(vec!["example.com/hold".into()]);
                    n
                },
                &[],
                Step::Nothing,
            ),
            (
                ns(true, &[]),
                &["secrets"],
                Step::DeleteContents(vec!["secrets"]),
            ),
        ];
        for (i, (ns, remaining, want)) in cases.iter().enumerate() {
            assert_eq!(&decide(ns, remaining), want, "case {i}");
        }
    }
}
