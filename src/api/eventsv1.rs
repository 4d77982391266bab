//! Event as `events.k8s.io/v1`: the same objects as core `v1` Events,
//! stored once under the core key (`/registry/events/NS/NAME`), seen and
//! written in the events group's shape, as Kubernetes serves both groups
//! from one storage.
//!
//! Why one store key and a view rather than a second stored kind: an
//! event written through either group must show in both at once (with
//! one resourceVersion, one watch stream, one TTL), which two stored
//! kinds could only fake by copying. The core shape is the stored one
//! because every wkube component and `kubectl describe` write and read
//! it. Requests are served through [`super::views`].
//!
//! The two shapes differ only in names:
//!
//! | core/v1                 | events.k8s.io/v1           |
//! |-------------------------|----------------------------|
//! | `involvedObject`        | `regarding`                |
//! | `message`               | `note`                     |
//! | `reportingComponent`    | `reportingController`      |
//! | `source`                | `deprecatedSource`         |
//! | `firstTimestamp`        | `deprecatedFirstTimestamp` |
//! | `lastTimestamp`         | `deprecatedLastTimestamp`  |
//! | `count`                 | `deprecatedCount`          |
//!
//! `related`, `reason`, `type`, `action`, `reportingInstance`,
//! `eventTime` and `series` are the same in both.

use serde_json::{Map, Value};

use super::views::View;

/// (core name, events.k8s.io name) of every field that is renamed.
const RENAMED: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// events.k8s.io/v1 as a view of the stored core Events.
pub const VIEW: View = View {
    view_prefix: "/apis/events.k8s.io/v1/",
    stored_prefix: "/api/v1/",
    plural: "events",
    kind: "Event",
    view_api_version: "events.k8s.io/v1",
    stored_api_version: "v1",
    stored_group: "",
    stored_version: "v1",
    to_view: to_events_v1,
    to_stored: to_core,
    selector: core_selector,
};

/// `obj` with the renamed fields renamed: core to events.k8s.io when
/// `to_events`, else back.
fn rename(obj: &Value, to_events: bool) -> Value {
    let Some(fields) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::with_capacity(fields.len());
    for (k, v) in fields {
        let name = RENAMED
            .iter()
            .map(|&(core, ev)| if to_events { (core, ev) } else { (ev, core) })
            .find(|(from, _)| from == k)
            .map_or(k.as_str(), |(_, to)| to);
        out.insert(name.to_string(), v.clone());
    }
    let api_version = if to_events { "events.k8s.io/v1" } else { "v1" };
    out.insert("apiVersion".into(), Value::from(api_version));
    Value::Object(out)
}

/// The events.k8s.io/v1 view of a core Event.
pub fn to_events_v1(core: &Value) -> Value {
    rename(core, true)
}

/// The core Event of an events.k8s.io/v1 one.
pub fn to_core(ev: &Value) -> Value {
    rename(ev, false)
}

/// A field selector over `regarding.*` (and the other renamed fields)
/// over the core names.
pub fn core_selector(selector: &str) -> String {
    selector
        .split(',')
        .map(|term| {
            let field_end = term.find(['=', '!']).unwrap_or(term.len());
            let (field, rest) = term.split_at(field_end);
            let (head, tail) = field.split_once('.').unwrap_or((field, ""));
            match RENAMED.iter().find(|(_, e)| *e == head) {
                Some((c, _)) if tail.is_empty() => format!("{c}{rest}"),
                Some((c, _)) => format!("{c}.{tail}{rest}"),
                None => term.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn core() -> Value {
        json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "d"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "d"},
            "reason": "Started", "message": "started", "type": "Normal",
            "source": {"component": "kubelet"}, "count": 2,
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:01:00Z",
            "reportingComponent": "kubelet", "reportingInstance": "node-1"})
    }

    #[test]
    fn the_events_view_renames_the_core_fields() {
        let v = to_events_v1(&core());
        assert_eq!(v["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v["regarding"]["name"], "web");
        assert_eq!(v["note"], "started");
        assert_eq!(v["reportingController"], "kubelet");
        assert_eq!(v["deprecatedSource"]["component"], "kubelet");
        assert_eq!(v["deprecatedCount"], 2);
        assert!(v.get("involvedObject").is_none() && v.get("message").is_none());
    }

    #[test]
    fn a_round_trip_loses_nothing() {
        assert_eq!(to_core(&to_events_v1(&core())), core());
    }

    #[test]
    fn selectors_over_regarding_select_the_involved_object() {
        assert_eq!(
            core_selector("regarding.name=web,type!=Normal,reportingController=kubelet"),
            "involvedObject.name=web,type!=Normal,reportingComponent=kubelet"
        );
        assert_eq!(core_selector(""), "");
    }
}
