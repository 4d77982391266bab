//! PersistentVolumeClaim (core `v1`): a request for storage. Served and
//! validated as in Kubernetes, so that charts carrying claims apply, but a
//! claim is never bound: a wkube pod is a WebAssembly component whose
//! volumes are preopened directories (ConfigMap, Secret, emptyDir), and
//! it mounts no block or network volumes. A claim therefore stays
//! `Pending`, and its status condition says why.

use k8s_openapi::api::core::v1::PersistentVolumeClaim as Object;
use serde_json::{Value, json};

use super::persistentvolume::{access_modes_short, validate_modes};
use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::set_default;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, s};
use crate::resources::validation::{FieldError, NameRule};

pub struct PersistentVolumeClaim;

/// Why a claim stays pending, as its status condition says.
pub const UNSUPPORTED: &str = "wkube pods are WebAssembly components and mount no block or network volumes; this claim stays Pending (use an emptyDir, ConfigMap or Secret volume)";

impl KindSpec for PersistentVolumeClaim {
    type Object = Object;
    const PLURAL: &'static str = "persistentvolumeclaims";
    const SINGULAR: &'static str = "persistentvolumeclaim";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["pvc"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
        col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
        col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
        col("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has."),
        col("StorageClass", "string", "storageClassName is the name of the StorageClass required by the claim."),
        col("VolumeAttributesClass", "string", "volumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim."),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) {
            set_default(spec, "volumeMode", json!("Filesystem"));
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_modes(obj.get("spec"), &mut errs);
        if obj.pointer("/spec/resources/requests/storage").is_none() {
            errs.push(FieldError::required("spec.resources[storage]"));
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        vec![
            name(o),
            json!(s(o, "/status/phase")),
            json!(s(o, "/spec/volumeName")),
            json!(s(o, "/status/capacity/storage")),
            json!(access_modes_short(o.pointer("/status/accessModes"))),
            json!(s(o, "/spec/storageClassName")),
            json!(match s(o, "/spec/volumeAttributesClassName") {
                "" => "<unset>",
                v => v,
            }),
            age(o),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending", "conditions": [{
            "type": "Bound", "status": "False", "reason": "VolumesNotSupported",
            "message": UNSUPPORTED,
        }]}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}
