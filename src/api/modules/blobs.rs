//! Content-addressed blob storage in the cluster store.
//!
//! A blob of N bytes with sha256 `<hex>` is kept as
//!
//! ```text
//! /registry/wkube.dev/blobs/<hex>/chunks/000000   bytes [0, 1 MiB)
//! /registry/wkube.dev/blobs/<hex>/chunks/000001   bytes [1 MiB, 2 MiB)
//! ...
//! /registry/wkube.dev/blobs/<hex>/meta            JSON BlobMeta, written last
//! ```
//!
//! Chunks stay at most 1 MiB so that every value fits etcd's default
//! request limit (1.5 MiB) when the store is a real etcd. The meta record
//! is written only after every chunk is durable, and readers look for it
//! first, so a half-written blob is never served. Deleting a blob removes
//! its whole prefix in one transaction.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::status::ApiError;
use crate::store::{
    Compare, CompareResult, CompareTarget, KeyRange, PutRequest, RangeRequest, Revision, Store,
    TxnOp, TxnRequest,
};

/// Where blobs live in the store.
pub const BLOB_PREFIX: &str = "/registry/wkube.dev/blobs/";

/// Largest chunk value.
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// How often a store is retried when a concurrent writer or collector
/// changed a key it depends on.
const ATTEMPTS: usize = 3;

/// The record that makes a blob visible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobMeta {
    pub size: u64,
    pub chunks: u32,
    /// `component` or `module`.
    pub format: String,
    #[serde(default)]
    pub exports: Vec<String>,
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The prefix of every key of one blob (ends with `/`).
pub fn blob_prefix(hex: &str) -> String {
    format!("{BLOB_PREFIX}{hex}/")
}

fn chunks_prefix(hex: &str) -> String {
    format!("{BLOB_PREFIX}{hex}/chunks/")
}

/// The key of chunk `i`; zero-padded so keys sort in chunk order.
pub fn chunk_key(hex: &str, i: usize) -> String {
    format!("{BLOB_PREFIX}{hex}/chunks/{i:06}")
}

pub fn meta_key(hex: &str) -> String {
    format!("{BLOB_PREFIX}{hex}/meta")
}

/// Split `bytes` into chunks of at most [`CHUNK_SIZE`], without copying.
pub fn chunks(bytes: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    (0..bytes.len().div_ceil(CHUNK_SIZE))
        .map(move |i| bytes.slice(i * CHUNK_SIZE..((i + 1) * CHUNK_SIZE).min(bytes.len())))
}

/// A blob's meta record with its mod revision and the store revision it
/// was read at.
pub struct MetaAt {
    pub meta: BlobMeta,
    pub mod_revision: Revision,
    pub read_at: Revision,
}

/// Read a blob's meta record at `revision` (0: now); `None` when the blob
/// does not exist (or is still being written).
pub async fn read_meta(
    store: &Store,
    hex: &str,
    revision: Revision,
) -> Result<Option<MetaAt>, ApiError> {
    let resp = store
        .range(RangeRequest {
            range: KeyRange::single(meta_key(hex)),
            revision,
            ..Default::default()
        })
        .await?;
    let Some(kv) = resp.kvs.first() else {
        return Ok(None);
    };
    let meta = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("blob sha256:{hex}: bad meta record: {e}")))?;
    Ok(Some(MetaAt {
        meta,
        mod_revision: kv.mod_revision,
        read_at: resp.header.revision,
    }))
}

/// Store `bytes` (whose sha256 is `hex`) unless the blob already exists.
/// Returns true when it was written now.
///
/// # Guarantees
/// When this returns, the blob's chunks and meta record are durable. The
/// meta record is only written if the first chunk this call wrote is still
/// the one in the store, so a concurrent collector that removed the
/// half-written blob makes this call start over instead of publishing a
/// blob with missing chunks.
pub async fn store_blob(
    store: &Store,
    hex: &str,
    bytes: &Bytes,
    meta: &BlobMeta,
) -> Result<bool, ApiError> {
    let meta_value = Bytes::from(serde_json::to_vec(meta).map_err(ApiError::internal)?);
    for _ in 0..ATTEMPTS {
        if read_meta(store, hex, 0).await?.is_some() {
            return Ok(false);
        }
        let mut first_rev = 0;
        for (i, chunk) in chunks(bytes).enumerate() {
            let resp = store
                .put(PutRequest {
                    key: Bytes::from(chunk_key(hex, i)),
                    value: chunk,
                    ..Default::default()
                })
                .await?;
            if i == 0 {
                first_rev = resp.header.revision;
            }
        }
        let resp = store
            .txn(TxnRequest {
                compare: vec![Compare {
                    range: KeyRange::single(chunk_key(hex, 0)),
                    result: CompareResult::Equal,
                    target: CompareTarget::Mod(first_rev),
                }],
                success: vec![TxnOp::Put(PutRequest {
                    key: Bytes::from(meta_key(hex)),
                    value: meta_value.clone(),
                    ..Default::default()
                })],
                failure: vec![],
            })
            .await?;
        if resp.succeeded {
            return Ok(true);
        }
    }
    Err(ApiError::Conflict {
        group: "wkube.dev".into(),
        resource: "blobs".into(),
        name: format!("sha256:{hex}"),
        message: format!("blob sha256:{hex} kept changing while it was stored; try again"),
    })
}

/// Why a stored blob cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CorruptBlob {
    #[error("blob sha256:{hex} is corrupt: expected {want} chunks, found {found}")]
    ChunkCount {
        hex: String,
        want: u32,
        found: usize,
    },
    #[error("blob sha256:{hex} is corrupt: chunk {index} is stored under {key:?}")]
    ChunkOrder {
        hex: String,
        index: usize,
        key: String,
    },
    #[error("blob sha256:{hex} is corrupt: its bytes hash to sha256:{got} ({size} bytes)")]
    Digest { hex: String, got: String, size: u64 },
}

/// Read a whole blob as its chunks (shared, not copied), verified against
/// its digest and size. `None` when it does not exist.
///
/// # Errors
/// An internal error naming the [`CorruptBlob`] problem when the chunks do
/// not add up to the digest.
pub async fn read_blob(
    store: &Store,
    hex: &str,
) -> Result<Option<(BlobMeta, Vec<Bytes>)>, ApiError> {
    let Some(at) = read_meta(store, hex, 0).await? else {
        return Ok(None);
    };
    // The chunks are read at the revision the meta record was read at, so
    // a collector deleting the blob meanwhile cannot hand us half of it.
    let resp = store
        .range(RangeRequest {
            range: KeyRange::prefix(chunks_prefix(hex)),
            revision: at.read_at,
            ..Default::default()
        })
        .await?;
    let corrupt = |e: CorruptBlob| ApiError::internal(e);
    if resp.kvs.len() != at.meta.chunks as usize {
        return Err(corrupt(CorruptBlob::ChunkCount {
            hex: hex.into(),
            want: at.meta.chunks,
            found: resp.kvs.len(),
        }));
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut parts = Vec::with_capacity(resp.kvs.len());
    for (i, kv) in resp.kvs.iter().enumerate() {
        if kv.key[..] != *chunk_key(hex, i).as_bytes() {
            return Err(corrupt(CorruptBlob::ChunkOrder {
                hex: hex.into(),
                index: i,
                key: String::from_utf8_lossy(&kv.key).into_owned(),
            }));
        }
        hasher.update(&kv.value);
        size += kv.value.len() as u64;
        parts.push(kv.value.clone());
    }
    let got = hex::encode(hasher.finalize());
    if got != hex || size != at.meta.size {
        return Err(corrupt(CorruptBlob::Digest {
            hex: hex.into(),
            got,
            size,
        }));
    }
    Ok(Some((at.meta, parts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_at_most_one_mebibyte_and_cover_every_byte() {
        let data = Bytes::from(
            (0..(3 * CHUNK_SIZE + 17))
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let parts: Vec<Bytes> = chunks(&data).collect();
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| p.len() <= CHUNK_SIZE));
        assert_eq!(parts[3].len(), 17);
        assert_eq!(parts.concat(), data.to_vec());
    }

    #[test]
    fn an_exact_multiple_of_the_chunk_size_has_no_empty_tail() {
        let data = Bytes::from(vec![7u8; 2 * CHUNK_SIZE]);
        assert_eq!(chunks(&data).count(), 2);
    }

    #[test]
    fn chunk_keys_sort_in_chunk_order_and_before_the_meta_record() {
        let hex = "ab".repeat(32);
        let mut keys = vec![meta_key(&hex), chunk_key(&hex, 10), chunk_key(&hex, 9)];
        keys.sort();
        assert_eq!(
            keys,
            [chunk_key(&hex, 9), chunk_key(&hex, 10), meta_key(&hex)]
        );
        assert!(chunk_key(&hex, 0).ends_with("/chunks/000000"));
    }

    #[test]
    fn sha256_is_lowercase_hex_of_the_bytes() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
