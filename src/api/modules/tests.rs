use bytes::Bytes;
use serde_json::json;

use super::blobs::{self, BlobMeta, CHUNK_SIZE};
use super::*;
use crate::store::redb::{RedbOptions, RedbStore};
use crate::store::{DeleteRangeRequest, KeyRange, PutRequest, Store};

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store: Store =
        RedbStore::open(&dir.path().join("store.redb"), RedbOptions::default()).unwrap();
    (dir, store)
}

fn meta_for(bytes: &[u8]) -> BlobMeta {
    BlobMeta {
        size: bytes.len() as u64,
        chunks: bytes.len().div_ceil(CHUNK_SIZE) as u32,
        format: "module".into(),
        exports: vec![],
    }
}

async fn put_blob(store: &Store, bytes: &[u8]) -> String {
    let hex = blobs::sha256_hex(bytes);
    let data = Bytes::copy_from_slice(bytes);
    assert!(
        blobs::store_blob(store, &hex, &data, &meta_for(bytes))
            .await
            .unwrap()
    );
    hex
}

async fn put_json(store: &Store, key: &str, v: serde_json::Value) {
    store
        .put(PutRequest {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(serde_json::to_vec(&v).unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn exists(store: &Store, hex: &str) -> bool {
    blobs::read_meta(store, hex, 0).await.unwrap().is_some()
}

#[tokio::test]
async fn a_blob_of_three_and_a_half_mebibytes_round_trips_in_four_chunks() {
    let (_dir, store) = temp_store();
    let bytes: Vec<u8> = (0..(3 * CHUNK_SIZE + CHUNK_SIZE / 2))
        .map(|i| (i * 7) as u8)
        .collect();
    let hex = put_blob(&store, &bytes).await;
    let (meta, parts) = blobs::read_blob(&store, &hex).await.unwrap().unwrap();
    assert_eq!(meta.chunks, 4);
    assert_eq!(parts.len(), 4);
    assert_eq!(parts.concat(), bytes);
}

#[tokio::test]
async fn storing_an_existing_blob_again_writes_nothing() {
    let (_dir, store) = temp_store();
    let bytes = b"\0asm\x01\0\0\0".to_vec();
    let hex = put_blob(&store, &bytes).await;
    let again = blobs::store_blob(&store, &hex, &Bytes::from(bytes.clone()), &meta_for(&bytes))
        .await
        .unwrap();
    assert!(!again);
}

#[tokio::test]
async fn chunks_without_a_meta_record_are_not_a_blob() {
    let (_dir, store) = temp_store();
    let hex = "cd".repeat(32);
    put_json(&store, &blobs::chunk_key(&hex, 0), json!("partial")).await;
    assert!(blobs::read_blob(&store, &hex).await.unwrap().is_none());
    // The sweep removes such leftovers once they are older than the
    // previous sweep.
    let now = store
        .range(crate::store::RangeRequest {
            range: KeyRange::single("/"),
            ..Default::default()
        })
        .await
        .unwrap()
        .header
        .revision;
    gc::sweep(&store, now + 1).await.unwrap();
    let left = store
        .range(crate::store::RangeRequest {
            range: KeyRange::prefix(blobs::blob_prefix(&hex)),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(left.count, 0);
}

#[tokio::test]
async fn a_blob_whose_chunk_changed_is_reported_corrupt() {
    let (_dir, store) = temp_store();
    let hex = put_blob(&store, b"\0asm\x01\0\0\0").await;
    store
        .put(PutRequest {
            key: Bytes::from(blobs::chunk_key(&hex, 0)),
            value: Bytes::from_static(b"\0asm\x01\0\0\x01"),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = blobs::read_blob(&store, &hex).await.unwrap_err();
    assert!(e.to_string().contains("corrupt"), "{e}");
}

#[tokio::test]
async fn collection_keeps_tagged_and_pod_referenced_blobs_and_deletes_the_rest() {
    let (_dir, store) = temp_store();
    let tagged = put_blob(&store, b"\0asm\x01\0\0\0").await;
    let by_pod = put_blob(&store, b"\0asm\x0d\0\x01\0").await;
    let by_status = put_blob(&store, &wasm::tests::core_module_with_start()).await;
    let orphan = put_blob(
        &store,
        &wasm::tests::component_exporting("wasi:cli/run@0.2.0"),
    )
    .await;
    put_json(
        &store,
        "/registry/wkube.dev/modules/hello",
        json!({"apiVersion": "wkube.dev/v1", "kind": "Module", "metadata": {"name": "hello"},
               "spec": {"tags": {"v1": format!("sha256:{tagged}")}}}),
    )
    .await;
    put_json(
        &store,
        "/registry/pods/default/web",
        json!({"metadata": {"name": "web"},
               "spec": {"containers": [{"name": "c", "image": format!("sha256:{by_pod}")}]},
               "status": {"containerStatuses": [{"imageID": format!("sha256:{by_status}")}]}}),
    )
    .await;
    let all = vec![
        tagged.clone(),
        by_pod.clone(),
        by_status.clone(),
        orphan.clone(),
    ];
    let deleted = gc::collect(&store, &all).await.unwrap();
    assert_eq!(deleted, vec![orphan.clone()]);
    assert!(exists(&store, &tagged).await);
    assert!(exists(&store, &by_pod).await);
    assert!(exists(&store, &by_status).await);
    assert!(!exists(&store, &orphan).await);
    // Nothing of the orphan is left, chunks included.
    let left = store
        .range(crate::store::RangeRequest {
            range: KeyRange::prefix(blobs::blob_prefix(&orphan)),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(left.count, 0);
    // Once the pod is gone, its blobs go too.
    store
        .delete_range(DeleteRangeRequest {
            range: KeyRange::single("/registry/pods/default/web"),
            prev_kv: false,
        })
        .await
        .unwrap();
    let mut deleted = gc::collect(&store, &all).await.unwrap();
    deleted.sort();
    let mut want = vec![by_pod, by_status];
    want.sort();
    assert_eq!(deleted, want);
    assert!(exists(&store, &tagged).await);
}

#[tokio::test]
async fn images_resolve_through_tags_and_digests() {
    let (_dir, store) = temp_store();
    let registry = Registry::new(store.clone());
    let hex = put_blob(&store, b"\0asm\x01\0\0\0").await;
    let digest = format!("sha256:{hex}");
    put_json(
        &store,
        "/registry/wkube.dev/modules/hello",
        json!({"apiVersion": "wkube.dev/v1", "kind": "Module", "metadata": {"name": "hello"},
               "spec": {"tags": {"latest": digest, "v1": digest}}}),
    )
    .await;
    for image in [
        "hello",
        "hello:latest",
        "hello:v1",
        digest.as_str(),
        &format!("hello@{digest}"),
    ] {
        assert_eq!(
            resolve_image(&registry, image).await.unwrap(),
            digest,
            "{image}"
        );
    }
    assert!(matches!(
        resolve_image(&registry, "hello:v2").await,
        Err(ApiError::NotFound { .. })
    ));
    assert!(matches!(
        resolve_image(&registry, "nope:v1").await,
        Err(ApiError::NotFound { .. })
    ));
    let missing = format!("sha256:{}", "0".repeat(64));
    assert!(matches!(
        resolve_image(&registry, &missing).await,
        Err(ApiError::NotFound { .. })
    ));
    assert!(matches!(
        resolve_image(&registry, "ghcr.io/x/y:1").await,
        Err(ApiError::BadRequest { .. })
    ));
}

#[test]
fn image_references_parse_with_latest_as_the_default_tag() {
    assert_eq!(
        parse_image("hello").unwrap(),
        ImageRef::Tagged {
            name: "hello".into(),
            tag: "latest".into()
        }
    );
    assert_eq!(
        parse_image("hello:v1.2").unwrap(),
        ImageRef::Tagged {
            name: "hello".into(),
            tag: "v1.2".into()
        }
    );
    assert!(parse_image("sha256:abc").is_err());
    assert!(parse_image("Hello:v1").is_err());
    assert!(parse_image("hello:").is_err());
}

#[test]
fn tagging_moves_the_tag_and_keeps_status_only_for_tagged_digests() {
    let a = format!("sha256:{}", "a".repeat(64));
    let b = format!("sha256:{}", "b".repeat(64));
    let info = json!({"size": 8, "format": "module"});
    let m = json!({"metadata": {"name": "m", "generation": 1},
                   "spec": {"tags": {"v1": a}}, "status": {"blobs": {a.clone(): info}}});
    let (m, before) = with_tag(m, "v1", &b, &info).unwrap();
    assert_eq!(before.as_deref(), Some(a.as_str()));
    assert_eq!(m["spec"]["tags"]["v1"], json!(b));
    assert!(m["status"]["blobs"].get(&a).is_none());
    assert_eq!(m["status"]["blobs"][&b]["format"], "module");
    assert_eq!(m["metadata"]["generation"], 2);
}

#[test]
fn a_module_being_deleted_is_not_tagged() {
    let m = json!({"metadata": {"name": "m", "deletionTimestamp": "2024-01-01T00:00:00Z"}});
    let d = format!("sha256:{}", "a".repeat(64));
    assert!(matches!(
        with_tag(m, "v1", &d, &json!({})),
        Err(ApiError::Conflict { .. })
    ));
}
