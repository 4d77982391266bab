//! The service-account controller: every active namespace has a `default`
//! ServiceAccount, which pods that name none run as.
//!
//! It follows namespaces and the ServiceAccounts called `default`, so a
//! deleted `default` account comes back, and a namespace created while the
//! control plane was down gets its account when it starts.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::ControllerError;

/// The account every namespace gets.
pub const DEFAULT: &str = "default";

/// What one reconcile of a namespace does.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// Create the `default` account.
    CreateDefault,
}

/// Decides the step for `ns`, knowing whether its `default` account
/// exists. A terminating namespace gets none: it is being emptied.
pub fn decide(ns: &Namespace, has_default: bool) -> Step {
    if ns.metadata.deletion_timestamp.is_some() || has_default {
        Step::Nothing
    } else {
        Step::CreateDefault
    }
}

struct Ctx {
    client: Client,
    accounts: Store<ServiceAccount>,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    use kube::runtime::{WatchStreamExt, reflector};
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    // A cache of the `default` accounts, fed by their watch; its changes
    // (a deleted account) bring their namespace back.
    let (store, writer) = reflector::store();
    let defaults = watcher(
        accounts,
        watcher::Config::default().fields(&format!("metadata.name={DEFAULT}")),
    )
    .default_backoff()
    .reflect(writer)
    .touched_objects();
    let controller = Controller::new(namespaces, watcher::Config::default())
        .watches_stream(defaults, |sa: ServiceAccount| {
            sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Ctx {
        client,
        accounts: store,
    });
    super::drive(controller, "serviceaccount", reconcile, ctx).await;
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let name = ns.name_any();
    let has_default = ctx
        .accounts
        .get(&ObjectRef::<ServiceAccount>::new(DEFAULT).within(&name))
        .is_some();
    match decide(&ns, has_default) {
        Step::Nothing => Ok(Action::await_change()),
        Step::CreateDefault => {
            let account = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(DEFAULT.into()),
                    namespace: Some(name.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
            match api.create(&PostParams::default(), &account).await {
                Ok(_) => Ok(Action::await_change()),
                // Already there (the cache was behind), or the namespace
                // started terminating meanwhile.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => {
                    Ok(Action::await_change())
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn only_an_active_namespace_without_one_gets_a_default_account() {
        let active = Namespace::default();
        let mut terminating = Namespace::default();
        terminating.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let cases = [
            (&active, false, Step::CreateDefault),
            (&active, true, Step::Nothing),
            (&terminating, false, Step::Nothing),
            (&terminating, true, Step::Nothing),
        ];
        for (i, (ns, has, want)) in cases.into_iter().enumerate() {
            assert_eq!(decide(ns, has), want, "case {i}");
        }
    }
}
