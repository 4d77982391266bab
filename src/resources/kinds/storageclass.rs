//! StorageClass (`storage.k8s.io/v1`): a kind of volume a claim may ask
//! for. Served and validated as in Kubernetes so manifests that carry one
//! apply; no provisioner runs, as Wasm pods mount no block volumes (see
//! `persistentvolumeclaim`).

use k8s_openapi::api::storage::v1::StorageClass as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::set_default;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, s};
use crate::resources::validation::{FieldError, NameRule};

pub struct StorageClass;

const RECLAIM: &[&str] = &["Delete", "Retain"];
const BINDING: &[&str] = &["Immediate", "WaitForFirstConsumer"];

impl KindSpec for StorageClass {
    type Object = Object;
    const PLURAL: &'static str = "storageclasses";
    const SINGULAR: &'static str = "storageclass";
    const NAMESPACED: bool = false;
    const SHORT_NAMES: &'static [&'static str] = &["sc"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
        col("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class."),
        col("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound."),
        col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::None;
    const IMMUTABLE: &'static [&'static str] =
        &["provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::ClusterAdmin;

    fn default(obj: &mut Value) {
        set_default(obj, "reclaimPolicy", json!("Delete"));
        set_default(obj, "volumeBindingMode", json!("Immediate"));
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if s(obj, "/provisioner").is_empty() {
            errs.push(FieldError::required("provisioner"));
        }
        for (field, allowed) in [("reclaimPolicy", RECLAIM), ("volumeBindingMode", BINDING)] {
            if let Some(v) = obj.get(field).and_then(Value::as_str)
                && !allowed.contains(&v)
            {
                errs.push(FieldError::not_supported(field, v, allowed));
            }
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        vec![
            name(o),
            json!(s(o, "/provisioner")),
            json!(s(o, "/reclaimPolicy")),
            json!(s(o, "/volumeBindingMode")),
            json!(o.get("allowVolumeExpansion").and_then(Value::as_bool).unwrap_or(false).to_string()),
            age(o),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        None
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}
