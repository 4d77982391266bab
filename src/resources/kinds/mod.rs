//! One file per kind. Each file implements [`KindSpec`] once: the kind's
//! names and subresources, defaults, validation, printer columns and their
//! cells, what happens to its status, its immutable fields, its field
//! selectors, the admission steps it needs and its place in the default
//! roles. The `kinds!` list at the end of this file registers it with one
//! line.
//!
//! Every item of the trait is required, on purpose: a kind that forgets
//! its printer columns or its status rule does not compile, where a
//! `match kind { … _ => … }` would have fallen through silently.
//!
//! The API server's generic code reads a kind only through
//! [`super::Kind`] (the constants, copied into a table entry by
//! [`super::Kind::of`]) and [`KindOps`] (the functions, behind a trait
//! object), so the handlers never name a kind.

use std::marker::PhantomData;

use k8s_openapi::schemars::JsonSchema;
use k8s_openapi::schemars::generate::SchemaGenerator;
use k8s_openapi::{ListableResource, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::printer::{Column, Keep};
use super::validation::{FieldError, NameRule};
use super::{Kind, Subresource};

/// Who writes an object's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusRule {
    /// Only the `status` subresource writes it; an update of the object
    /// keeps the stored status (Deployments, Pods, …).
    Subresource,
    /// Both the object and its `status` subresource write it: a Node's
    /// agent reports through either.
    ObjectOrSubresource,
    /// The kind has no status of its own to protect (ConfigMaps, RBAC, …).
    None,
}

/// Admission steps that need cluster state, which the API server carries
/// out for the kinds that ask for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocation {
    None,
    /// A cluster IP (and node ports) from the service range.
    ServiceAddresses,
    /// A pod CIDR block for the node.
    PodCidr,
    /// The default IngressClass, for an Ingress that names none.
    IngressClass,
    /// A pod's priority from its PriorityClass (`api::priority`).
    PodPriority,
    /// At most one PriorityClass is the global default.
    SingleGlobalDefault,
}

/// How a delete proceeds for the kind, beyond the finalizers that
/// `propagationPolicy` adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Removed at once (unless a finalizer holds it).
    Immediate,
    /// Marked `Terminating`; the namespace controller empties it, then
    /// removes it. The built-in namespaces are refused.
    NamespaceLifecycle,
    /// Marked with a grace period; the node running the pod removes it
    /// once its containers have stopped.
    Graceful,
}

/// The kind's place in the default user-facing roles (`view`, `edit`,
/// `admin`). The system roles are written per component in `api::rbac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `view` reads it (with its status, scale and logs); `edit` writes it
    /// and reaches into it (proxy, exec, attach, port-forward).
    Workload,
    /// Only `edit` and above read or write it: it holds credentials.
    Sensitive,
    /// `view` reads it; only cluster administrators write it.
    ReadOnly,
    /// `admin` reads and writes it within a namespace (namespaced RBAC).
    NamespaceAdmin,
    /// Only cluster administrators and the system roles.
    ClusterAdmin,
}

/// What a kind's create-time admission may read besides the object.
#[derive(Clone, Debug)]
pub struct CreateContext<'a> {
    /// The uid just given to the object.
    pub uid: &'a str,
    /// `tolerationSeconds` of the default not-ready toleration.
    pub not_ready_toleration_seconds: i64,
    /// `tolerationSeconds` of the default unreachable toleration.
    pub unreachable_toleration_seconds: i64,
}

/// Everything one kind means. Implemented once per file in this folder.
pub trait KindSpec: 'static {
    /// The typed representation objects round-trip through.
    type Object: ObjectType;
    /// The plural, lowercase resource name used in URLs and RBAC.
    const PLURAL: &'static str;
    const SINGULAR: &'static str;
    const NAMESPACED: bool;
    const SHORT_NAMES: &'static [&'static str];
    const CATEGORIES: &'static [&'static str];
    const SUBRESOURCES: &'static [Subresource];
    /// How object names are checked.
    const NAME_RULE: NameRule;
    /// The columns `kubectl get` prints; [`KindSpec::cells`] fills them.
    const COLUMNS: &'static [Column];
    const STATUS: StatusRule;
    /// Dotted paths an update may not change, checked after defaulting.
    const IMMUTABLE: &'static [&'static str];
    /// Fields a field selector may name, besides `metadata.name` and
    /// `metadata.namespace`.
    const FIELD_SELECTORS: &'static [&'static str];
    const ALLOCATION: Allocation;
    const DELETION: Deletion;
    const ACCESS: Access;

    /// Fill in the defaults Kubernetes fills in on create and update.
    fn default(obj: &mut Value);
    /// Kind-specific validation beyond the shape.
    fn validate(obj: &Value) -> Vec<FieldError>;
    /// One table row, a cell per [`KindSpec::COLUMNS`] entry.
    fn cells(obj: &Value) -> Vec<Value>;
    /// The top-level fields besides `metadata` that [`KindSpec::cells`]
    /// reads; `None` means all of them. A Table decodes no more than this,
    /// so a kind listed in thousands declares it (and a unit test checks
    /// its cells against the whole object's).
    const CELL_FIELDS: Option<&'static [(&'static str, Keep)]> = None;
    /// The status a new object starts with; `None` keeps what was sent.
    fn initial_status(obj: &Value) -> Option<Value>;
    /// Create-time admission that needs no cluster state.
    ///
    /// # Errors
    /// The field the create may not have as sent.
    fn on_create(obj: &mut Value, ctx: &CreateContext<'_>) -> Result<(), FieldError>;
    /// Update-time admission that needs no cluster state (what the stored
    /// object keeps whatever the update says).
    ///
    /// # Errors
    /// The field the update may not change.
    fn on_update(old: &Value, new: &mut Value) -> Result<(), FieldError>;
}

/// A type objects of a kind decode into. Every `k8s-openapi` kind is one;
/// wkube's own kinds implement it by hand.
pub trait ObjectType: 'static {
    const GROUP: &'static str;
    const VERSION: &'static str;
    const KIND: &'static str;
    const LIST_KIND: &'static str;
    /// Round-trip `value` through the type: the normalized value, or the
    /// decode error.
    ///
    /// # Errors
    /// The decoder's message.
    fn normalize(value: &Value) -> Result<Value, String>;
    /// Register the type's schema; its definition name, or `None` when the
    /// OpenAPI documents write it by hand.
    fn schema(generator: &mut SchemaGenerator) -> Option<String>;
}

impl<T> ObjectType for T
where
    T: Resource + ListableResource + DeserializeOwned + Serialize + JsonSchema + 'static,
{
    const GROUP: &'static str = T::GROUP;
    const VERSION: &'static str = T::VERSION;
    const KIND: &'static str = T::KIND;
    const LIST_KIND: &'static str = T::LIST_KIND;

    fn normalize(value: &Value) -> Result<Value, String> {
        // Decoded straight from the borrowed value: no deep copy first.
        let typed = <T as serde::Deserialize>::deserialize(value).map_err(|e| e.to_string())?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }

    fn schema(generator: &mut SchemaGenerator) -> Option<String> {
        generator.subschema_for::<T>();
        Some(T::schema_name().into_owned())
    }
}

/// A kind's functions behind a trait object, so that the kinds table can
/// hold kinds of different types.
pub trait KindOps: Send + Sync {
    fn normalize(&self, value: &Value) -> Result<Value, String>;
    fn default(&self, value: &mut Value);
    fn validate(&self, value: &Value) -> Vec<FieldError>;
    fn cells(&self, value: &Value) -> Vec<Value>;
    /// See [`KindSpec::CELL_FIELDS`].
    fn cell_fields(&self) -> Option<&'static [(&'static str, Keep)]> {
        None
    }
    fn initial_status(&self, value: &Value) -> Option<Value>;
    fn on_create(&self, value: &mut Value, ctx: &CreateContext<'_>) -> Result<(), FieldError>;
    fn on_update(&self, old: &Value, new: &mut Value) -> Result<(), FieldError>;
    fn schema(&self, generator: &mut SchemaGenerator) -> Option<String>;
}

/// The [`KindOps`] of a [`KindSpec`].
pub struct Strategy<K>(PhantomData<fn() -> K>);

impl<K> Strategy<K> {
    pub const NEW: Strategy<K> = Strategy(PhantomData);
}

impl<K: KindSpec> KindOps for Strategy<K> {
    fn normalize(&self, value: &Value) -> Result<Value, String> {
        K::Object::normalize(value)
    }
    fn default(&self, value: &mut Value) {
        K::default(value);
    }
    fn validate(&self, value: &Value) -> Vec<FieldError> {
        K::validate(value)
    }
    fn cells(&self, value: &Value) -> Vec<Value> {
        K::cells(value)
    }
    fn cell_fields(&self) -> Option<&'static [(&'static str, Keep)]> {
        K::CELL_FIELDS
    }
    fn initial_status(&self, value: &Value) -> Option<Value> {
        K::initial_status(value)
    }
    fn on_create(&self, value: &mut Value, ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        K::on_create(value, ctx)
    }
    fn on_update(&self, old: &Value, new: &mut Value) -> Result<(), FieldError> {
        K::on_update(old, new)
    }
    fn schema(&self, generator: &mut SchemaGenerator) -> Option<String> {
        K::Object::schema(generator)
    }
}

/// The table entry of the kind `$k`.
macro_rules! kind {
    ($k:ty) => {
        Kind {
            group: <<$k as KindSpec>::Object as ObjectType>::GROUP,
            version: <<$k as KindSpec>::Object as ObjectType>::VERSION,
            kind: <<$k as KindSpec>::Object as ObjectType>::KIND,
            list_kind: <<$k as KindSpec>::Object as ObjectType>::LIST_KIND,
            plural: <$k as KindSpec>::PLURAL,
            singular: <$k as KindSpec>::SINGULAR,
            namespaced: <$k as KindSpec>::NAMESPACED,
            short_names: <$k as KindSpec>::SHORT_NAMES,
            categories: <$k as KindSpec>::CATEGORIES,
            subresources: <$k as KindSpec>::SUBRESOURCES,
            stored: true,
            name_rule: <$k as KindSpec>::NAME_RULE,
            columns: <$k as KindSpec>::COLUMNS,
            status: <$k as KindSpec>::STATUS,
            immutable: <$k as KindSpec>::IMMUTABLE,
            field_selectors: <$k as KindSpec>::FIELD_SELECTORS,
            allocation: <$k as KindSpec>::ALLOCATION,
            deletion: <$k as KindSpec>::DELETION,
            access: <$k as KindSpec>::ACCESS,
            ops: &Strategy::<$k>::NEW,
            custom: None,
        }
    };
}

/// Declares each kind's file and registers it in [`KINDS`]: adding a kind
/// is its file plus one line here.
macro_rules! kinds {
    ($($file:ident :: $spec:ident),* $(,)?) => {
        $(pub mod $file;)*
        /// Every stored kind wkube serves, in discovery order.
        pub static KINDS: &[Kind] = &[$(kind!($file::$spec)),*];
    };
}

kinds! {
    namespace::Namespace,
    node::Node,
    pod::Pod,
    service::Service,
    endpoints::Endpoints,
    configmap::ConfigMap,
    secret::Secret,
    serviceaccount::ServiceAccount,
    event::Event,
    replicationcontroller::ReplicationController,
    deployment::Deployment,
    replicaset::ReplicaSet,
    daemonset::DaemonSet,
    controllerrevision::ControllerRevision,
    job::Job,
    cronjob::CronJob,
    role::Role,
    clusterrole::ClusterRole,
    rolebinding::RoleBinding,
    clusterrolebinding::ClusterRoleBinding,
    lease::Lease,
    endpointslice::EndpointSlice,
    module::Module,
    horizontalpodautoscaler::HorizontalPodAutoscaler,
    ingressclass::IngressClass,
    ingress::Ingress,
    gatewayclass::GatewayClass,
    gateway::Gateway,
    httproute::HttpRoute,
    poddisruptionbudget::PodDisruptionBudget,
    customresourcedefinition::CustomResourceDefinition,
    resourcequota::ResourceQuota,
    limitrange::LimitRange,
    priorityclass::PriorityClass,
    apiservice::ApiService,
    storageclass::StorageClass,
    persistentvolume::PersistentVolume,
    persistentvolumeclaim::PersistentVolumeClaim,
    networkpolicy::NetworkPolicy,
}
