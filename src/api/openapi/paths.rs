//! `paths` of one group-version document: the REST operations of each
//! kind, tagged the way kubectl looks them up (`x-kubernetes-action`,
//! `x-kubernetes-group-version-kind`, the `fieldValidation` parameter on
//! writes, the patch content types).

use serde_json::{Map, Value, json};

use super::Gvk;
use super::schemas::{API_RESOURCE_LIST, Collector, DELETE_OPTIONS, PATCH, STATUS, reference};
use crate::api::discovery::VirtualKind;
use crate::resources::{Kind, Subresource};

const JSON: &str = "application/json";
const YAML: &str = "application/yaml";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
const JSON_WATCH: &str = "application/json;stream=watch";
const APPLY_PATCH: &str = "application/apply-patch+yaml";
const JSON_PATCH: &str = "application/json-patch+json";
const MERGE_PATCH: &str = "application/merge-patch+json";
/// Its presence on a PATCH tells kubectl it may send strategic merge
/// patches; without it kubectl falls back to JSON merge patch (as for
/// custom resources).
const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";

/// What the operations of one kind need to know.
struct Ctx<'a> {
    gvk: Gvk,
    schema: &'a str,
    list_schema: String,
    /// Kinds built into Kubernetes speak protobuf and strategic merge
    /// patch; wkube's own kinds, like custom resources, do neither.
    builtin: bool,
    tag: String,
    /// `CoreV1`, `AppsV1`, … as in Kubernetes' operation ids.
    id_infix: String,
}

impl Ctx<'_> {
    fn object_types(&self) -> &'static [&'static str] {
        if self.builtin {
            &[JSON, YAML, PROTOBUF]
        } else {
            &[JSON, YAML]
        }
    }

    fn patch_types(&self) -> &'static [&'static str] {
        if self.builtin {
            &[APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH]
        } else {
            &[APPLY_PATCH, JSON_PATCH, MERGE_PATCH]
        }
    }

    fn op(&self, action: &'static str, id: String, description: String, gvk: Gvk) -> Operation {
        Operation {
            value: json!({
                "tags": [self.tag],
                "description": description,
                "operationId": id,
                "x-kubernetes-action": action,
                // Operations carry one GVK object, schemas an array of them.
                "x-kubernetes-group-version-kind": gvk.to_json(),
            }),
            params: Vec::new(),
        }
    }
}

/// An operation under construction.
struct Operation {
    value: Value,
    params: Vec<Value>,
}

impl Operation {
    fn params(mut self, params: Vec<Value>) -> Self {
        self.params.extend(params);
        self
    }

    fn body(mut self, schema: &Value, types: &[&str], required: bool) -> Self {
        self.value["requestBody"] =
            json!({ "content": content(schema, types), "required": required });
        self
    }

    fn responds(mut self, codes: &[&str], schema: &Value, types: &[&str]) -> Self {
        let mut responses = Map::new();
        for code in codes {
            responses.insert(
                (*code).into(),
                json!({ "description": describe_code(code), "content": content(schema, types) }),
            );
        }
        responses.insert("401".into(), json!({ "description": "Unauthorized" }));
        self.value["responses"] = Value::Object(responses);
        self
    }

    fn done(mut self) -> Value {
        self.value["parameters"] = Value::Array(self.params);
        self.value
    }
}

fn describe_code(code: &str) -> &'static str {
    match code {
        "200" => "OK",
        "201" => "Created",
        "202" => "Accepted",
        _ => "",
    }
}

fn content(schema: &Value, types: &[&str]) -> Value {
    let mut m = Map::new();
    for t in types {
        m.insert((*t).into(), json!({ "schema": schema }));
    }
    Value::Object(m)
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": { "type": ty } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn pretty() -> Value {
    query("pretty", "string", "If 'true', the output is indented.")
}

fn list_params(watch: bool) -> Vec<Value> {
    let mut p = vec![
        query(
            "allowWatchBookmarks",
            "boolean",
            "Ask for BOOKMARK events in a watch; servers may ignore the request.",
        ),
        query(
            "continue",
            "string",
            "The continue token of the previous page of a paginated list.",
        ),
        query(
            "fieldSelector",
            "string",
            "Restrict the result to objects whose fields match, e.g. metadata.name=web.",
        ),
        query(
            "labelSelector",
            "string",
            "Restrict the result to objects whose labels match.",
        ),
        query(
            "limit",
            "integer",
            "Most objects in one page of a list; the reply's metadata.continue fetches the next page.",
        ),
        query(
            "resourceVersion",
            "string",
            "Which version of the collection to list, or to watch changes after.",
        ),
        query(
            "resourceVersionMatch",
            "string",
            "How resourceVersion applies to a list: Exact or NotOlderThan.",
        ),
        query(
            "sendInitialEvents",
            "boolean",
            "Start a watch with synthetic ADDED events for the current state.",
        ),
        query(
            "timeoutSeconds",
            "integer",
            "Longest duration of the list or watch call.",
        ),
    ];
    if watch {
        p.push(query(
            "watch",
            "boolean",
            "Watch for changes instead of listing: a stream of ADDED, MODIFIED and DELETED events.",
        ));
    }
    p
}

/// Parameters of create, replace and patch. kubectl checks that PATCH
/// lists `fieldValidation` before it asks the server to validate fields.
fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        query(
            "dryRun",
            "string",
            "When All, run every stage of the request but persist nothing.",
        ),
        query(
            "fieldManager",
            "string",
            "Name of the actor making the change, recorded in managedFields.",
        ),
        query(
            "fieldValidation",
            "string",
            "What to do with unknown or duplicate fields in the object: Ignore drops them, Warn drops them with a warning, Strict fails the request.",
        ),
    ];
    if patch {
        p.push(query(
            "force",
            "boolean",
            "Make an apply request take ownership of fields other managers own.",
        ));
    }
    p
}

fn delete_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "string",
            "When All, run every stage of the request but persist nothing.",
        ),
        query(
            "gracePeriodSeconds",
            "integer",
            "Seconds before the object is deleted; 0 deletes at once.",
        ),
        query(
            "orphanDependents",
            "boolean",
            "Deprecated: use propagationPolicy.",
        ),
        query(
            "propagationPolicy",
            "string",
            "What happens to dependents: Orphan, Background or Foreground.",
        ),
    ]
}

/// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`, `WkubeDevV1`.
fn id_infix(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.strip_suffix(".k8s.io").unwrap_or(group)
    };
    let mut out = String::new();
    for part in group.split('.').chain([version]) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// `core_v1`, `apps_v1`, `rbacAuthorization_v1`.
fn tag(group: &str, version: &str) -> String {
    let infix = id_infix(group, version);
    let group_part = &infix[..infix.len() - version.len()];
    let mut chars = group_part.chars();
    let mut out: String = chars
        .next()
        .map(|c| c.to_lowercase().collect())
        .unwrap_or_default();
    out.push_str(chars.as_str());
    format!("{out}_{version}")
}

fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

fn insert(
    paths: &mut Map<String, Value>,
    path: String,
    path_params: Vec<Value>,
    ops: Vec<(&str, Value)>,
) {
    let mut item = Map::new();
    for (method, op) in ops {
        item.insert(method.into(), op);
    }
    item.insert("parameters".into(), Value::Array(path_params));
    paths.insert(path, Value::Object(item));
}

/// `GET /api/v1/` or `/apis/GROUP/VERSION/`: the resource list.
pub fn add_discovery(paths: &mut Map<String, Value>, group: &str, version: &str) {
    let infix = id_infix(group, version);
    let op = json!({
        "tags": [tag(group, version)],
        "description": "get available resources",
        "operationId": format!("get{infix}APIResources"),
        "responses": {
            "200": { "description": "OK", "content": content(&reference(API_RESOURCE_LIST), &[JSON, YAML, PROTOBUF]) },
            "401": { "description": "Unauthorized" },
        },
    });
    paths.insert(format!("{}/", prefix(group, version)), json!({ "get": op }));
}

/// The operations of a stored kind and its subresources.
pub fn add_kind(paths: &mut Map<String, Value>, c: &mut Collector, kind: &Kind, schema: &str) {
    let gvk = Gvk {
        group: kind.group,
        version: kind.version,
        kind: kind.kind,
    };
    let ctx = Ctx {
        gvk,
        schema,
        list_schema: format!("{schema}List"),
        builtin: !kind.group.ends_with("wkube.dev") && kind.custom.is_none(),
        tag: tag(kind.group, kind.version),
        id_infix: id_infix(kind.group, kind.version),
    };
    let k = kind.kind;
    let scope = if kind.namespaced { "Namespaced" } else { "" };
    let ns_params = if kind.namespaced {
        vec![path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        )]
    } else {
        vec![]
    };
    let collection = if kind.namespaced {
        format!(
            "{}/namespaces/{{namespace}}/{}",
            prefix(kind.group, kind.version),
            kind.plural
        )
    } else {
        format!("{}/{}", prefix(kind.group, kind.version), kind.plural)
    };
    let item = format!("{collection}/{{name}}");
    let object = reference(schema);
    let list = reference(&ctx.list_schema);
    let infix = &ctx.id_infix;

    let list_types = [JSON, YAML, PROTOBUF, JSON_WATCH];
    let list_types: &[&str] = if ctx.builtin {
        &list_types
    } else {
        &[JSON, YAML, JSON_WATCH]
    };
    let mut collection_params = ns_params.clone();
    collection_params.push(pretty());
    insert(
        paths,
        collection.clone(),
        collection_params.clone(),
        vec![
            (
                "get",
                ctx.op(
                    "list",
                    format!("list{infix}{scope}{k}"),
                    format!("list or watch objects of kind {k}"),
                    gvk,
                )
                .params(list_params(true))
                .responds(&["200"], &list, list_types)
                .done(),
            ),
            (
                "post",
                ctx.op(
                    "post",
                    format!("create{infix}{scope}{k}"),
                    format!("create a {k}"),
                    gvk,
                )
                .params(write_params(false))
                .body(&object, ctx.object_types(), true)
                .responds(&["200", "201", "202"], &object, ctx.object_types())
                .done(),
            ),
            (
                "delete",
                ctx.op(
                    "deletecollection",
                    format!("deletecollection{infix}{scope}{k}"),
                    format!("delete collection of {k}"),
                    gvk,
                )
                .params(list_params(false))
                .params(delete_params())
                .body(&reference(DELETE_OPTIONS), &[JSON], false)
                .responds(&["200"], &reference(STATUS), ctx.object_types())
                .done(),
            ),
        ],
    );

    let mut item_params = vec![path_param("name", &format!("name of the {k}"))];
    item_params.extend(ns_params.clone());
    item_params.push(pretty());
    insert(
        paths,
        item.clone(),
        item_params.clone(),
        vec![
            (
                "get",
                ctx.op(
                    "get",
                    format!("read{infix}{scope}{k}"),
                    format!("read the specified {k}"),
                    gvk,
                )
                .responds(&["200"], &object, ctx.object_types())
                .done(),
            ),
            (
                "put",
                ctx.op(
                    "put",
                    format!("replace{infix}{scope}{k}"),
                    format!("replace the specified {k}"),
                    gvk,
                )
                .params(write_params(false))
                .body(&object, ctx.object_types(), true)
                .responds(&["200", "201"], &object, ctx.object_types())
                .done(),
            ),
            (
                "patch",
                patch_op(
                    &ctx,
                    format!("patch{infix}{scope}{k}"),
                    format!("partially update the specified {k}"),
                    gvk,
                    &object,
                ),
            ),
            (
                "delete",
                ctx.op(
                    "delete",
                    format!("delete{infix}{scope}{k}"),
                    format!("delete a {k}"),
                    gvk,
                )
                .params(delete_params())
                .body(&reference(DELETE_OPTIONS), &[JSON], false)
                .responds(&["200", "202"], &object, ctx.object_types())
                .done(),
            ),
        ],
    );

    if kind.namespaced {
        insert(
            paths,
            format!("{}/{}", prefix(kind.group, kind.version), kind.plural),
            vec![pretty()],
            vec![(
                "get",
                ctx.op(
                    "list",
                    format!("list{infix}{k}ForAllNamespaces"),
                    format!("list or watch objects of kind {k}"),
                    gvk,
                )
                .params(list_params(true))
                .responds(&["200"], &list, list_types)
                .done(),
            )],
        );
    }

    for sub in kind.subresources {
        add_subresource(paths, c, &ctx, *sub, &item, &item_params, scope);
    }
}

fn patch_op(ctx: &Ctx, id: String, description: String, gvk: Gvk, response: &Value) -> Value {
    ctx.op("patch", id, description, gvk)
        .params(write_params(true))
        .body(&reference(PATCH), ctx.patch_types(), true)
        .responds(&["200", "201"], response, ctx.object_types())
        .done()
}

fn add_subresource(
    paths: &mut Map<String, Value>,
    c: &mut Collector,
    ctx: &Ctx,
    sub: Subresource,
    item: &str,
    item_params: &[Value],
    scope: &str,
) {
    let k = ctx.gvk.kind;
    let infix = &ctx.id_infix;
    let path = format!("{item}/{}", sub.name());
    // get/put/patch of a part of the object (status) or of a view of it (scale).
    let read_write =
        |paths: &mut Map<String, Value>, gvk: Gvk, schema: &Value, suffix: &str, what: &str| {
            insert(
                paths,
                path.clone(),
                item_params.to_vec(),
                vec![
                    (
                        "get",
                        ctx.op(
                            "get",
                            format!("read{infix}{scope}{k}{suffix}"),
                            format!("read {what} of the specified {k}"),
                            gvk,
                        )
                        .responds(&["200"], schema, ctx.object_types())
                        .done(),
                    ),
                    (
                        "put",
                        ctx.op(
                            "put",
                            format!("replace{infix}{scope}{k}{suffix}"),
                            format!("replace {what} of the specified {k}"),
                            gvk,
                        )
                        .params(write_params(false))
                        .body(schema, ctx.object_types(), true)
                        .responds(&["200", "201"], schema, ctx.object_types())
                        .done(),
                    ),
                    (
                        "patch",
                        patch_op(
                            ctx,
                            format!("patch{infix}{scope}{k}{suffix}"),
                            format!("partially update {what} of the specified {k}"),
                            gvk,
                            schema,
                        ),
                    ),
                ],
            );
        };
    match sub {
        Subresource::Status => {
            read_write(paths, ctx.gvk, &reference(ctx.schema), "Status", "status")
        }
        Subresource::Scale => {
            let gvk = Gvk {
                group: "autoscaling",
                version: "v1",
                kind: "Scale",
            };
            if let Some(scale) = c.add_kind(gvk, None) {
                read_write(paths, gvk, &reference(&scale), "Scale", "scale");
            }
        }
        Subresource::Binding => {
            let gvk = Gvk {
                group: "",
                version: "v1",
                kind: "Binding",
            };
            if let Some(binding) = c.add_kind(gvk, None) {
                let schema = reference(&binding);
                let op = ctx
                    .op(
                        "post",
                        format!("create{infix}{scope}{k}Binding"),
                        format!("create binding of a {k}"),
                        gvk,
                    )
                    .params(write_params(false))
                    .body(&schema, ctx.object_types(), true)
                    .responds(&["200", "201", "202"], &schema, ctx.object_types())
                    .done();
                insert(paths, path, item_params.to_vec(), vec![("post", op)]);
            }
        }
        Subresource::Token => {
            let gvk = Gvk {
                group: "authentication.k8s.io",
                version: "v1",
                kind: "TokenRequest",
            };
            if let Some(token) = c.add_kind(gvk, None) {
                let schema = reference(&token);
                let op = ctx
                    .op(
                        "post",
                        format!("create{infix}{scope}{k}Token"),
                        format!("create token of a {k}"),
                        gvk,
                    )
                    .params(write_params(false))
                    .body(&schema, ctx.object_types(), true)
                    .responds(&["200", "201", "202"], &schema, ctx.object_types())
                    .done();
                insert(paths, path, item_params.to_vec(), vec![("post", op)]);
            }
        }
        Subresource::Eviction => {
            let gvk = Gvk {
                group: "policy",
                version: "v1",
                kind: "Eviction",
            };
            if let Some(eviction) = c.add_kind(gvk, None) {
                let schema = reference(&eviction);
                let op = ctx
                    .op(
                        "post",
                        format!("create{infix}{scope}{k}Eviction"),
                        format!("create eviction of a {k}"),
                        gvk,
                    )
                    .params(write_params(false))
                    .body(&schema, ctx.object_types(), true)
                    .responds(&["200", "201", "202"], &schema, ctx.object_types())
                    .done();
                insert(paths, path, item_params.to_vec(), vec![("post", op)]);
            }
        }
        Subresource::Log => {
            let op = ctx
                .op("get", format!("read{infix}{scope}{k}Log"), format!("read log of the specified {k}"), ctx.gvk)
                .params(vec![
                    query("container", "string", "The container whose log to read; may be omitted when the pod has one container."),
                    query("follow", "boolean", "Stream the log as it is written."),
                    query("limitBytes", "integer", "Most bytes of log to return."),
                    query("previous", "boolean", "Read the log of the previous, terminated run of the container."),
                    query("sinceSeconds", "integer", "Only lines newer than this many seconds."),
                    query("sinceTime", "string", "Only lines written at or after this RFC 3339 time."),
                    query("tailLines", "integer", "Only this many lines from the end of the log."),
                    query("timestamps", "boolean", "Prefix every line with its RFC 3339 timestamp."),
                ])
                .responds(&["200"], &json!({ "type": "string" }), &["text/plain", JSON, YAML])
                .done();
            insert(paths, path, item_params.to_vec(), vec![("get", op)]);
        }
        // Proxying and streaming are connections, not documents; kubectl
        // reads nothing about them from OpenAPI.
        Subresource::Proxy | Subresource::Exec | Subresource::Attach | Subresource::PortForward => {
        }
    }
}

/// A review kind: only created, cluster-wide.
pub fn add_virtual(paths: &mut Map<String, Value>, v: &VirtualKind, schema: &str) {
    let gvk = Gvk {
        group: v.group,
        version: v.version,
        kind: v.kind,
    };
    let ctx = Ctx {
        gvk,
        schema,
        list_schema: String::new(),
        builtin: true,
        tag: tag(v.group, v.version),
        id_infix: id_infix(v.group, v.version),
    };
    let object = reference(schema);
    let scope = if v.namespaced { "Namespaced" } else { "" };
    let op = ctx
        .op(
            "post",
            format!("create{}{scope}{}", ctx.id_infix, v.kind),
            format!("create a {}", v.kind),
            gvk,
        )
        .params(write_params(false))
        .body(&object, ctx.object_types(), true)
        .responds(&["200", "201", "202"], &object, ctx.object_types())
        .done();
    // LocalSubjectAccessReview is created in a namespace.
    let (path, mut params) = if v.namespaced {
        (
            format!(
                "{}/namespaces/{{namespace}}/{}",
                prefix(v.group, v.version),
                v.plural
            ),
            vec![path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            )],
        )
    } else {
        (
            format!("{}/{}", prefix(v.group, v.version), v.plural),
            vec![],
        )
    };
    params.push(pretty());
    insert(paths, path, params, vec![("post", op)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_follow_kubernetes_naming() {
        assert_eq!(id_infix("", "v1"), "CoreV1");
        assert_eq!(
            id_infix("rbac.authorization.k8s.io", "v1"),
            "RbacAuthorizationV1"
        );
        assert_eq!(id_infix("wkube.dev", "v1"), "WkubeDevV1");
        assert_eq!(tag("", "v1"), "core_v1");
        assert_eq!(
            tag("rbac.authorization.k8s.io", "v1"),
            "rbacAuthorization_v1"
        );
    }
}
