//! PersistentVolume (core `v1`): a piece of storage an administrator
//! offers. Served and validated as in Kubernetes; nothing binds it, as Wasm
//! pods mount no block volumes (see `persistentvolumeclaim`).

use k8s_openapi::api::core::v1::PersistentVolume as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::set_default;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, s};
use crate::resources::validation::{FieldError, NameRule};

pub struct PersistentVolume;

/// The access modes a volume or claim may name.
pub const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

const RECLAIM: &[&str] = &["Delete", "Recycle", "Retain"];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];

/// `RWO,ROX`: access modes as kubectl prints them.
pub fn access_modes_short(modes: Option<&Value>) -> String {
    modes
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .map(|m| match m {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The access modes and volume mode of a volume's or claim's spec.
pub fn validate_modes(spec: Option<&Value>, errs: &mut Vec<FieldError>) {
    let modes = spec
        .and_then(|s| s.get("accessModes"))
        .and_then(Value::as_array);
    match modes {
        Some(m) if !m.is_empty() => {
            for (i, mode) in m.iter().enumerate() {
                let mode = mode.as_str().unwrap_or("");
                if !ACCESS_MODES.contains(&mode) {
                    errs.push(FieldError::not_supported(
                        format!("spec.accessModes[{i}]"),
                        mode,
                        ACCESS_MODES,
                    ));
                }
            }
        }
        _ => errs.push(FieldError {
            detail: "at least 1 access mode is required".into(),
            ..FieldError::required("spec.accessModes")
        }),
    }
    if let Some(v) = spec
        .and_then(|s| s.get("volumeMode"))
        .and_then(Value::as_str)
        && !VOLUME_MODES.contains(&v)
    {
        errs.push(FieldError::not_supported("spec.volumeMode", v, VOLUME_MODES));
    }
}

/// Volume sources Kubernetes knows (one must be named).
const SOURCES: &[&str] = &[
    "hostPath", "local", "nfs", "csi", "iscsi", "fc", "awsElasticBlockStore", "gcePersistentDisk",
    "azureDisk", "azureFile", "cephfs", "rbd", "cinder", "flexVolume", "flocker", "glusterfs",
    "photonPersistentDisk", "portworxVolume", "quobyte", "scaleIO", "storageos", "vsphereVolume",
];

impl KindSpec for PersistentVolume {
    type Object = Object;
    const PLURAL: &'static str = "persistentvolumes";
    const SINGULAR: &'static str = "persistentvolume";
    const NAMESPACED: bool = false;
    const SHORT_NAMES: &'static [&'static str] = &["pv"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
        col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
        col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
        col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
        col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
        col("StorageClass", "string", "storageClassName is the name of StorageClass to which this persistent volume belongs."),
        col("VolumeAttributesClass", "string", "Name of VolumeAttributesClass to which this persistent volume belongs."),
        col("Reason", "string", "reason is a brief CamelCase string that describes any failure."),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::ClusterAdmin;

    fn default(obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) {
            set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            set_default(spec, "volumeMode", json!("Filesystem"));
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = obj.get("spec");
        validate_modes(spec, &mut errs);
        if obj.pointer("/spec/capacity/storage").is_none() {
            errs.push(FieldError::required("spec.capacity"));
        }
        let sources = SOURCES
            .iter()
            .filter(|k| spec.and_then(|s| s.get(**k)).is_some_and(|v| !v.is_null()))
            .count();
        if sources == 0 {
            errs.push(FieldError {
                detail: "must specify a volume type".into(),
                ..FieldError::required("spec")
            });
        }
        if let Some(p) = obj
            .pointer("/spec/persistentVolumeReclaimPolicy")
            .and_then(Value::as_str)
            && !RECLAIM.contains(&p)
        {
            errs.push(FieldError::not_supported(
                "spec.persistentVolumeReclaimPolicy",
                p,
                RECLAIM,
            ));
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let claim = match (s(o, "/spec/claimRef/namespace"), s(o, "/spec/claimRef/name")) {
            (_, "") => String::new(),
            (ns, n) => format!("{ns}/{n}"),
        };
        vec![
            name(o),
            json!(s(o, "/spec/capacity/storage")),
            json!(access_modes_short(o.pointer("/spec/accessModes"))),
            json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
            json!(s(o, "/status/phase")),
            json!(claim),
            json!(s(o, "/spec/storageClassName")),
            json!(match s(o, "/spec/volumeAttributesClassName") {
                "" => "<unset>",
                v => v,
            }),
            json!(s(o, "/status/reason")),
            age(o),
        ]
    }

    /// Nothing binds a volume here, so a new one stays available.
    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Available"}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}
