//! An operator written with the Kubernetes client for Rust works against
//! wkube: it installs its CustomResourceDefinition (derived from its Rust
//! type), waits for it to be Established, and reconciles its own kind —
//! a ConfigMap owned by each object, and the object's status — as it
//! would on Kubernetes. Deleting the object lets the garbage collector
//! take the ConfigMap.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{conditions, wait::await_condition, watcher};
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::{TestServer, eventually};

/// What an Echo asks for: its message, repeated.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "operator.example.com",
    version = "v1",
    kind = "Echo",
    namespaced,
    status = "EchoStatus",
    printcolumn = r#"{"name":"Reply","type":"string","jsonPath":".status.reply"}"#
)]
pub struct EchoSpec {
    message: String,
    copies: u32,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EchoStatus {
    reply: String,
    observed_generation: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(#[from] kube::Error);

async fn reconcile(echo: Arc<Echo>, client: Arc<kube::Client>) -> Result<Action, Failed> {
    let ns = echo.namespace().unwrap_or_default();
    let reply = vec![echo.spec.message.as_str(); echo.spec.copies as usize].join(" ");
    let owner = echo.controller_owner_ref(&()).expect("an Echo has a uid");
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("echo-{}", echo.name_any())),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        data: Some([("reply".to_string(), reply.clone())].into()),
        ..Default::default()
    };
    let params = PatchParams::apply("echo-operator").force();
    Api::<ConfigMap>::namespaced((*client).clone(), &ns)
        .patch(&cm.name_any(), &params, &Patch::Apply(&cm))
        .await?;
    let status = json!({"status": {"reply": reply, "observedGeneration": echo.meta().generation}});
    Api::<Echo>::namespaced((*client).clone(), &ns)
        .patch_status(
            &echo.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Echo>, _: &Failed, _: Arc<kube::Client>) -> Action {
    Action::requeue(Duration::from_millis(500))
}

async fn client(server: &TestServer) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(server.admin_kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[test]
fn a_kube_rs_operator_installs_its_crd_and_reconciles_its_kind() {
    let server = TestServer::start();
    let k = server.kubectl();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(client(&server));

    // Install the CRD the derive wrote, and wait until it is served.
    let established = rt.block_on(async {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.create(&PostParams::default(), &Echo::crd())
            .await
            .unwrap();
        let established = await_condition(crds, Echo::crd_name(), conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established).await
    });
    assert!(
        matches!(established, Ok(Ok(_))),
        "the CRD is not established within 30 s: {}\n{}",
        k.ok(&["get", "crd", Echo::crd_name(), "-o", "yaml"]),
        server.log_tail(40)
    );

    // The operator runs in the background.
    let operator = {
        let client = client.clone();
        rt.spawn(async move {
            Controller::new(Api::<Echo>::all(client.clone()), watcher::Config::default())
                .owns(
                    Api::<ConfigMap>::all(client.clone()),
                    watcher::Config::default(),
                )
                .run(reconcile, error_policy, Arc::new(client))
                .for_each(|_| async {})
                .await;
        })
    };

    let echo = Echo::new(
        "hello",
        EchoSpec {
            message: "hi".into(),
            copies: 2,
        },
    );
    let echoes: Api<Echo> = Api::namespaced(client.clone(), "default");
    rt.block_on(echoes.create(&PostParams::default(), &echo))
        .unwrap();
    let status_is = |want: &str, generation: i64| {
        eventually(Duration::from_secs(30), || {
            let got = rt.block_on(echoes.get("hello")).unwrap();
            got.status
                .as_ref()
                .is_some_and(|s| s.reply == want && s.observed_generation == generation)
        })
    };
    assert!(
        status_is("hi hi", 1),
        "{:?}",
        rt.block_on(echoes.get("hello")).unwrap().status
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = rt.block_on(cms.get("echo-hello")).unwrap();
    assert_eq!(cm.data.unwrap()["reply"], "hi hi");
    assert_eq!(cm.metadata.owner_references.unwrap()[0].kind, "Echo");

    // A change of spec is followed; kubectl shows the operator's column.
    let patch = json!({"spec": {"message": "yo", "copies": 3}});
    rt.block_on(echoes.patch("hello", &PatchParams::default(), &Patch::Merge(&patch)))
        .unwrap();
    assert!(
        status_is("yo yo yo", 2),
        "{:?}",
        rt.block_on(echoes.get("hello")).unwrap().status
    );
    let out = k.ok(&["get", &Echo::plural(&())]);
    assert!(out.contains("REPLY") && out.contains("yo yo yo"), "{out}");

    // Deleting the Echo lets the garbage collector take its ConfigMap.
    rt.block_on(echoes.delete("hello", &DeleteParams::default()))
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || rt
            .block_on(cms.get_opt("echo-hello"))
            .unwrap()
            .is_none()),
        "the owned ConfigMap outlived its Echo\n{}\n{}\n{}",
        k.ok(&["get", "cm", "echo-hello", "-o", "yaml"]),
        k.ok(&["get", &Echo::plural(&()), "-o", "yaml"]),
        server.log_tail(20),
    );
    operator.abort();
}
