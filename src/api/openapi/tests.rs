use super::*;

fn built() -> &'static Documents {
    DOCUMENTS.get_or_init(Documents::build)
}

fn parsed(path: &str) -> Value {
    let doc = built()
        .by_path
        .get(path)
        .unwrap_or_else(|| panic!("no document {path}"));
    serde_json::from_slice(&doc.body).expect("documents are JSON")
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["components"]["schemas"]
        .get(name)
        .unwrap_or_else(|| panic!("no schema {name}"))
}

fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn index_lists_every_group_version_with_its_hash() {
    let index: Value = serde_json::from_slice(&built().index.body).unwrap();
    for (path, doc) in [("api/v1", "api/v1"), ("apis/apps/v1", "apis/apps/v1")] {
        let url = index["paths"][path]["serverRelativeURL"].as_str().unwrap();
        assert_eq!(
            url,
            format!("/openapi/v3/{doc}?hash={}", built().by_path[doc].hash)
        );
    }
    for path in [
        "apis/authorization.k8s.io/v1",
        "apis/authentication.k8s.io/v1",
        "apis/wkube.dev/v1",
    ] {
        assert!(
            index["paths"].get(path).is_some(),
            "{path} missing from the index"
        );
    }
    assert_eq!(
        index["paths"].as_object().unwrap().len(),
        group_versions().len()
    );
}

#[test]
fn deployment_patch_offers_field_validation_and_strategic_merge() {
    let doc = parsed("apis/apps/v1");
    assert_eq!(doc["openapi"], "3.0.0");
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "version": "v1", "kind": "Deployment"})
    );
    assert_eq!(patch["x-kubernetes-action"], "patch");
    let params = patch["parameters"].as_array().unwrap();
    assert!(
        params
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
    );
    let body = &patch["requestBody"]["content"];
    for ct in [
        "application/strategic-merge-patch+json",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
    ] {
        assert!(body.get(ct).is_some(), "{ct} missing");
    }
    let deployment = schema(&doc, "io.k8s.api.apps.v1.Deployment");
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
    );
    // The scale subresource speaks autoscaling/v1 Scale.
    let scale =
        &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
    schema(&doc, "io.k8s.api.autoscaling.v1.Scale");
    // Switching strategy type drops the other type's parameters.
    assert_eq!(
        schema(&doc, "io.k8s.api.apps.v1.DeploymentSpec")["properties"]["strategy"]["x-kubernetes-patch-strategy"],
        "retainKeys"
    );
}

#[test]
fn pod_lists_carry_merge_keys_and_descriptions() {
    for path in ["api/v1", "apis/apps/v1", "apis/batch/v1"] {
        let doc = parsed(path);
        assert!(
            schema(&doc, "io.k8s.api.core.v1.Container")["properties"]["image"]["description"]
                .is_string()
        );
        let spec = &schema(&doc, "io.k8s.api.core.v1.PodSpec")["properties"];
        for (field, key) in [
            ("containers", "name"),
            ("initContainers", "name"),
            ("ephemeralContainers", "name"),
            ("volumes", "name"),
            ("imagePullSecrets", "name"),
            ("hostAliases", "ip"),
            ("topologySpreadConstraints", "topologyKey"),
        ] {
            assert_eq!(
                spec[field]["x-kubernetes-patch-merge-key"], key,
                "{path} PodSpec.{field}"
            );
            assert!(
                spec[field]["x-kubernetes-patch-strategy"]
                    .as_str()
                    .unwrap()
                    .starts_with("merge"),
                "{path} PodSpec.{field}"
            );
        }
        assert_eq!(spec["containers"]["x-kubernetes-list-type"], "map");
        assert_eq!(
            spec["containers"]["x-kubernetes-list-map-keys"],
            json!(["name"])
        );
        assert!(spec["containers"]["description"].is_string());
        assert_eq!(
            spec["containers"]["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        let container = &schema(&doc, "io.k8s.api.core.v1.Container")["properties"];
        assert_eq!(container["env"]["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(
            container["volumeMounts"]["x-kubernetes-patch-merge-key"],
            "mountPath"
        );
        assert_eq!(
            container["ports"]["x-kubernetes-patch-merge-key"],
            "containerPort"
        );
        let meta = &schema(&doc, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")["properties"];
        assert_eq!(
            meta["ownerReferences"]["x-kubernetes-patch-merge-key"],
            "uid"
        );
        assert_eq!(meta["finalizers"]["x-kubernetes-patch-strategy"], "merge");
    }
    let core = parsed("api/v1");
    assert_eq!(
        schema(&core, "io.k8s.api.core.v1.ServiceSpec")["properties"]["ports"]["x-kubernetes-patch-merge-key"],
        "port"
    );
    assert_eq!(
        schema(&core, "io.k8s.api.core.v1.PodStatus")["properties"]["conditions"]["x-kubernetes-patch-merge-key"],
        "type"
    );
    let apps = parsed("apis/apps/v1");
    assert_eq!(
        schema(&apps, "io.k8s.api.apps.v1.DeploymentStatus")["properties"]["conditions"]["x-kubernetes-patch-merge-key"],
        "type"
    );
}

#[test]
fn every_ref_resolves_within_its_document() {
    for path in built().by_path.keys() {
        let doc = parsed(path);
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let name = r
                .strip_prefix(schemas::REF_PREFIX)
                .unwrap_or_else(|| panic!("{path}: foreign $ref {r}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{path}: dangling $ref {r}"
            );
        }
    }
}

/// kubectl's field-validation check takes the first PATCH tagged with
/// the kind; if a served kind had none it would fall back to
/// `/openapi/v2` and fail.
#[test]
fn every_served_kind_has_a_schema_and_validating_patches() {
    for kind in crate::resources::KINDS {
        let doc = parsed(&doc_path(kind.group, kind.version));
        let gvk = json!({"group": kind.group, "version": kind.version, "kind": kind.kind});
        let tagged = doc["components"]["schemas"]
            .as_object()
            .unwrap()
            .values()
            .filter(|s| s["x-kubernetes-group-version-kind"] == json!([gvk.clone()]))
            .count();
        assert_eq!(tagged, 1, "{kind:?}: schemas tagged");
        let mut patches = 0;
        for item in doc["paths"].as_object().unwrap().values() {
            let Some(patch) = item.get("patch") else {
                continue;
            };
            if patch["x-kubernetes-group-version-kind"] != gvk {
                continue;
            }
            patches += 1;
            let params = patch["parameters"].as_array().unwrap();
            assert!(
                params.iter().any(|p| p["name"] == "fieldValidation"),
                "{kind:?}"
            );
        }
        assert!(patches >= 1, "{kind:?}: no PATCH");
    }
    for v in VIRTUAL.iter().filter(|v| v.is_review()) {
        let doc = parsed(&doc_path(v.group, v.version));
        let ns = if v.namespaced {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let path = format!("/apis/{}/{}/{ns}{}", v.group, v.version, v.plural);
        assert_eq!(
            doc["paths"][&path]["post"]["x-kubernetes-group-version-kind"]["kind"],
            v.kind
        );
    }
}

#[test]
fn module_has_a_hand_written_schema_and_no_strategic_merge() {
    let doc = parsed("apis/wkube.dev/v1");
    let module = schema(&doc, "dev.wkube.v1.Module");
    assert_eq!(
        module["x-kubernetes-group-version-kind"],
        json!([{"group": "wkube.dev", "version": "v1", "kind": "Module"}])
    );
    assert_eq!(
        module["properties"]["spec"]["properties"]["tags"]["type"],
        "object"
    );
    schema(&doc, "dev.wkube.v1.ModuleList");
    let patch = &doc["paths"]["/apis/wkube.dev/v1/modules/{name}"]["patch"];
    assert!(
        patch["requestBody"]["content"]
            .get("application/merge-patch+json")
            .is_some()
    );
    // Like a custom resource: kubectl then computes a JSON merge patch.
    assert!(
        patch["requestBody"]["content"]
            .get("application/strategic-merge-patch+json")
            .is_none()
    );
}

#[test]
fn core_paths_cover_namespaced_cluster_and_subresources() {
    let doc = parsed("api/v1");
    let paths = &doc["paths"];
    for p in [
        "/api/v1/",
        "/api/v1/namespaces",
        "/api/v1/namespaces/{name}",
        "/api/v1/namespaces/{name}/status",
        "/api/v1/namespaces/{namespace}/pods",
        "/api/v1/namespaces/{namespace}/pods/{name}",
        "/api/v1/namespaces/{namespace}/pods/{name}/status",
        "/api/v1/namespaces/{namespace}/pods/{name}/log",
        "/api/v1/namespaces/{namespace}/pods/{name}/binding",
        "/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        "/api/v1/pods",
    ] {
        assert!(paths.get(p).is_some(), "{p} missing");
    }
    let list = &paths["/api/v1/namespaces/{namespace}/pods"]["get"];
    assert_eq!(list["x-kubernetes-action"], "list");
    assert!(
        list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "watch")
    );
    assert_eq!(
        paths["/api/v1/namespaces/{namespace}/pods"]["delete"]["x-kubernetes-action"],
        "deletecollection"
    );
    assert_eq!(
        schema(&doc, "io.k8s.api.core.v1.PodList")["x-kubernetes-group-version-kind"],
        json!([{"group": "", "version": "v1", "kind": "PodList"}])
    );
    schema(&doc, "io.k8s.api.authentication.v1.TokenRequest");
}

#[tokio::test]
async fn documents_are_served_as_json_with_cache_headers() {
    let resp = v3_index(HeaderMap::new()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");

    let hash = built().by_path["apis/apps/v1"].hash.clone();
    let mut accept = HeaderMap::new();
    accept.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/com.github.proto-openapi.spec.v3@v1.0+protobuf"),
    );
    let resp = v3_document(
        Path("apis/apps/v1".into()),
        RawQuery(Some(format!("hash={hash}"))),
        accept,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    assert!(
        resp.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let etag = resp.headers()[header::ETAG].clone();
    assert_eq!(etag.to_str().unwrap(), format!("\"{hash}\""));

    let resp = v3_document(
        Path("apis/apps/v1".into()),
        RawQuery(Some("hash=stale".into())),
        HeaderMap::new(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache, private");

    let mut conditional = HeaderMap::new();
    conditional.insert(header::IF_NONE_MATCH, etag);
    let resp = v3_document(Path("apis/apps/v1".into()), RawQuery(None), conditional).await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);

    let resp = v3_document(
        Path("apis/nope/v1".into()),
        RawQuery(None),
        HeaderMap::new(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn v2_serves_definitions_as_protobuf_or_json() {
    let mut pb = HeaderMap::new();
    pb.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/com.github.proto-openapi.spec.v2@v1.0+protobuf"),
    );
    let resp = v2(pb).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], V2_PROTOBUF);

    let json_doc: Value = serde_json::from_slice(&built().v2_json.body).unwrap();
    assert_eq!(json_doc["swagger"], "2.0");
    let defs = json_doc["definitions"].as_object().unwrap();
    let ssar = &defs["io.k8s.api.authorization.v1.SelfSubjectAccessReview"];
    assert_eq!(
        ssar["required"],
        json!(["spec"]),
        "metadata is never required"
    );
    assert!(!defs.contains_key("dev.wkube.v1.Module"));
    let containers = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    let mut refs = Vec::new();
    collect_refs(&json_doc, &mut refs);
    for r in refs {
        let name = r
            .strip_prefix("#/definitions/")
            .unwrap_or_else(|| panic!("foreign $ref {r}"));
        assert!(defs.contains_key(name), "dangling $ref {r}");
    }
}

#[test]
fn documents_stay_small() {
    let total: usize = built().by_path.values().map(|d| d.body.len()).sum();
    // Kubernetes' own core/v1 document is about 1.5 MB; ours serves fewer kinds.
    assert!(total < 8 * 1024 * 1024, "{total} bytes");
}
