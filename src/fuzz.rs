//! Bounded fuzzing of everything that parses what a caller sends: request
//! decoders (JSON, YAML, the protobuf envelope), the four patch engines,
//! label and field selectors, quantities, cron schedules and module
//! validation. Each property holds for any input: no panic, and a refusal
//! is a 4xx, never a 5xx.
//!
//! The test command runs 256 cases of each (proptest's default). A longer
//! run, with the same properties:
//!
//! ```sh
//! PROPTEST_CASES=20000 cargo test --release --lib fuzz::
//! ```

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::api::patch::{PatchType, patched_object};
use crate::api::status::ApiError;

/// The Pod kind, whose type the patch engine follows.
fn pods() -> &'static crate::resources::Kind {
    crate::resources::by_kind("", "Pod").expect("pods are served")
}

/// Any JSON value, nested up to a few levels, with keys drawn from names
/// real objects use (so merges meet existing fields) and a few odd ones.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("metadata".to_string()),
        Just("spec".to_string()),
        Just("containers".to_string()),
        Just("name".to_string()),
        Just("labels".to_string()),
        Just("$patch".to_string()),
        Just("$retainKeys".to_string()),
        Just("$setElementOrder/containers".to_string()),
        Just("$deleteFromPrimitiveList/finalizers".to_string()),
        Just("finalizers".to_string()),
        Just("ports".to_string()),
        Just("containerPort".to_string()),
        "[a-z/$~]{0,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::String),
        Just(json!("delete")),
        Just(json!("replace")),
        Just(json!("merge")),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON pointer into an object like [`current`]'s, sometimes malformed.
fn pointer() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("metadata".to_string()),
        Just("labels".to_string()),
        Just("spec".to_string()),
        Just("containers".to_string()),
        Just("0".to_string()),
        Just("1".to_string()),
        Just("-".to_string()),
        Just("99999999999999999999".to_string()),
        Just("~1".to_string()),
        Just("~2".to_string()),
        "[a-z0-9]{0,4}",
    ];
    prop_oneof![
        prop::collection::vec(segment, 0..5).prop_map(|s| {
            s.iter().fold(String::new(), |mut acc, seg| {
                acc.push('/');
                acc.push_str(seg);
                acc
            })
        }),
        "[ -~]{0,10}",
    ]
}

/// One JSON patch operation, well-formed or not.
fn json_patch_op() -> impl Strategy<Value = Value> {
    let op = prop_oneof![
        Just("add"),
        Just("remove"),
        Just("replace"),
        Just("move"),
        Just("copy"),
        Just("test"),
        Just("bogus"),
    ];
    (op, pointer(), pointer(), json_value(), any::<u8>()).prop_map(
        |(op, path, from, value, shape)| match shape % 4 {
            0 => json!({"op": op, "path": path, "value": value}),
            1 => json!({"op": op, "path": path, "from": from}),
            2 => json!({"op": op, "path": path}),
            _ => json!({"op": op, "from": from, "value": value, "path": 7}),
        },
    )
}

/// An object such as a handler patches: a Pod-shaped base, merged with
/// arbitrary fields.
fn current() -> impl Strategy<Value = Value> {
    json_value().prop_map(|extra| {
        let mut base = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "labels": {"a": "b"},
                "finalizers": ["x", "y"]},
            "spec": {"containers": [{"name": "c", "image": "m:v1",
                "ports": [{"containerPort": 80}]}]},
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
            for (k, v) in e {
                b.entry(k).or_insert(v);
            }
        }
        base
    })
}

/// A refusal must be the caller's fault: 4xx.
fn assert_4xx(e: &ApiError, what: &str) -> Result<(), TestCaseError> {
    let code = e.code().as_u16();
    prop_assert!((400..500).contains(&code), "{what}: {code} {e:?}");
    Ok(())
}

proptest! {
    #[test]
    fn json_bodies_decode_or_are_refused_with_a_4xx(body in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = crate::api::body::decode_json(&body) {
            assert_4xx(&e, "json")?;
        }
    }

    #[test]
    fn json_shaped_bodies_decode_or_are_refused_with_a_4xx(
        body in "[\\[\\]{}\",:0-9a-z\\\\ e.-]{0,300}",
        depth in 0usize..400,
    ) {
        if let Err(e) = crate::api::body::decode_json(body.as_bytes()) {
            assert_4xx(&e, "json")?;
        }
        // Deep nesting is refused, not recursed into.
        let deep = "[".repeat(depth) + &"]".repeat(depth);
        if let Err(e) = crate::api::body::decode_json(deep.as_bytes()) {
            assert_4xx(&e, "deep json")?;
        }
    }

    #[test]
    fn yaml_bodies_decode_or_are_refused_with_a_4xx(
        body in "[a-z0-9:{}\\[\\],&*!|>'\"#?@ \n\t-]{0,300}",
        depth in 0usize..300,
    ) {
        if let Err(e) = crate::api::body::decode_yaml(body.as_bytes()) {
            assert_4xx(&e, "yaml")?;
        }
        let deep = "[".repeat(depth) + &"]".repeat(depth);
        if let Err(e) = crate::api::body::decode_yaml(deep.as_bytes()) {
            assert_4xx(&e, "deep yaml")?;
        }
        // Aliases that would expand exponentially.
        let bomb = (0..depth.min(30)).fold("a0: &a0 [x, x]\n".to_string(), |mut acc, i| {
            acc.push_str(&format!("a{}: &a{} [*a{i}, *a{i}, *a{i}]\n", i + 1, i + 1));
            acc
        });
        if let Err(e) = crate::api::body::decode_yaml(bomb.as_bytes()) {
            assert_4xx(&e, "yaml aliases")?;
        }
    }

    #[test]
    fn protobuf_envelopes_decode_or_are_refused_with_a_4xx(
        tail in prop::collection::vec(any::<u8>(), 0..256),
        kind in prop::sample::select(vec!["Pod", "ConfigMap", "Deployment", "Secret", "Node"]),
        magic in any::<bool>(),
    ) {
        let kind = crate::resources::KINDS.iter().find(|k| k.kind == kind).unwrap();
        let mut body = if magic { b"k8s\0".to_vec() } else { Vec::new() };
        body.extend_from_slice(&tail);
        if let Err(e) = crate::api::protobuf::decode(&bytes::Bytes::from(body), Some(kind)) {
            assert_4xx(&e, "protobuf")?;
        }
    }

    #[test]
    fn merge_strategic_and_apply_patches_apply_or_are_refused_with_a_4xx(
        current in current(),
        patch in json_value(),
        ty in prop::sample::select(vec![PatchType::Merge, PatchType::Strategic, PatchType::Apply]),
    ) {
        match patched_object(ty, &current, &patch, pods()) {
            Ok(v) => prop_assert!(v.get("metadata").is_none_or(Value::is_object), "{ty:?} gave {v}"),
            Err(e) => assert_4xx(&e, "patch")?,
        }
    }

    #[test]
    fn json_patches_apply_or_are_refused_with_a_4xx(
        current in current(),
        ops in prop::collection::vec(json_patch_op(), 0..12),
    ) {
        match patched_object(PatchType::Json, &current, &Value::Array(ops), pods()) {
            Ok(v) => prop_assert!(v.is_object(), "gave {v}"),
            Err(e) => assert_4xx(&e, "json patch")?,
        }
    }

    #[test]
    fn label_and_field_selectors_parse_or_are_refused_with_a_4xx(
        s in "[a-z0-9.=!,()/ _-]{0,40}|(in|notin|!|=|==|!=|,|\\(|\\)|a|b\\.c/d| ){0,12}",
    ) {
        match crate::api::selectors::LabelSelector::parse(&s) {
            Ok(sel) => {
                let _ = sel.matches(&json!({"metadata": {"labels": {"a": "b"}}}));
            }
            Err(e) => assert_4xx(&e, "label selector")?,
        }
        match crate::api::selectors::FieldSelector::parse(
            &s,
            <crate::resources::kinds::pod::Pod as crate::resources::KindSpec>::FIELD_SELECTORS,
        ) {
            Ok(sel) => {
                let _ = sel.matches(&json!({"metadata": {"name": "a"}}));
            }
            Err(e) => assert_4xx(&e, "field selector")?,
        }
    }

    #[test]
    fn quantities_parse_or_are_refused(s in "[0-9.eE+ -]{0,12}(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|n|u|)[ ]?") {
        if let Some(q) = crate::resources::quantity::parse(&s) {
            let _ = q.milli();
        }
    }

    #[test]
    fn cron_schedules_parse_or_are_refused(
        s in "([0-9*/,?LW#-]{1,6} ){0,6}[0-9*/,?LW#-]{0,6}|@(hourly|daily|weekly|monthly|yearly|annually|every [0-9a-z]{0,4}|bogus)",
    ) {
        if let Ok(sched) = crate::resources::cron::Schedule::parse(&s) {
            let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
            let _ = sched.next_after(now, &jiff::tz::TimeZone::UTC);
            let _ = sched.last_at_or_before(now, &jiff::tz::TimeZone::UTC);
        }
    }

    #[test]
    fn modules_are_inspected_or_refused(
        tail in prop::collection::vec(any::<u8>(), 0..512),
        header in prop::sample::select(vec![
            b"\0asm\x01\0\0\0".to_vec(),
            b"\0asm\x0d\0\x01\0".to_vec(),
            Vec::new(),
        ]),
    ) {
        let mut bytes = header;
        bytes.extend_from_slice(&tail);
        let _ = crate::api::modules::wasm::inspect(&bytes);
    }
}
