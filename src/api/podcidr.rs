//! Pod address ranges of nodes: the cluster range (`--cluster-cidr`, a
//! loopback /9 by default) cut into blocks of `--node-cidr-mask-size` (/18),
//! one per Node, the way Kubernetes' node IPAM hands out `spec.podCIDR`.
//!
//! Each allocated block is one key under [`PREFIX`] whose value is the name
//! of the node holding it, claimed with a create-if-absent transaction — the
//! same record the ClusterIP and NodePort allocators keep. A node is handed
//! the lowest free block unless it asks for a free one itself.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use bytes::Bytes;

use crate::cluster::Cidr;
use crate::store::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, PutRequest, RangeRequest,
    Store, StoreError, TxnOp, TxnOpResponse, TxnRequest,
};

/// Store keys of the allocated blocks: `PREFIX` + `a.b.c.d/n`.
pub const PREFIX: &str = "/registry/allocations/podcidrs/";

/// Most blocks a cluster range may be cut into (Kubernetes' limit too: at
/// most 16 bits between the cluster and the node mask).
const MAX_BLOCK_BITS: u8 = 16;

/// How often an allocation re-reads the taken blocks after losing a race
/// for the lowest free one.
const CLAIM_ATTEMPTS: usize = 16;

/// The blocks of the cluster range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeCidrs {
    cluster: Cidr,
    mask: u8,
}

/// Why a node gets no pod CIDR.
#[derive(Debug, thiserror::Error)]
pub enum PodCidrError {
    #[error(
        "must be a /{mask} block of the cluster range {cluster} (--cluster-cidr, --node-cidr-mask-size), such as {example}"
    )]
    NotABlock {
        cluster: Cidr,
        mask: u8,
        example: Cidr,
    },
    #[error("failed to allocate pod CIDR {cidr}: it is already allocated to node {owner:?}")]
    Taken { cidr: Cidr, owner: String },
    #[error(
        "failed to allocate a pod CIDR: all {count} blocks of /{mask} in the cluster range {cluster} are allocated (delete unused nodes, or widen --cluster-cidr)"
    )]
    Exhausted { cluster: Cidr, mask: u8, count: u32 },
    #[error("failed to allocate a pod CIDR: too many concurrent allocations, try again")]
    Contended,
    #[error("pod CIDR allocation: {0}")]
    Store(#[from] StoreError),
}

impl NodeCidrs {
    /// Blocks of `/mask` in `cluster`.
    ///
    /// # Errors
    /// A mask that is not longer than the cluster prefix, longer than /30,
    /// or that would cut the range into more than 65536 blocks.
    pub fn new(cluster: Cidr, mask: u8) -> Result<Self, String> {
        if mask <= cluster.prefix || mask > 30 {
            return Err(format!(
                "--node-cidr-mask-size {mask} must be longer than the cluster range's prefix /{} and at most 30",
                cluster.prefix
            ));
        }
        if mask - cluster.prefix > MAX_BLOCK_BITS {
            return Err(format!(
                "--node-cidr-mask-size {mask} cuts {cluster} into more than {} blocks; use a mask of at most /{}",
                1u32 << MAX_BLOCK_BITS,
                cluster.prefix + MAX_BLOCK_BITS
            ));
        }
        Ok(NodeCidrs { cluster, mask })
    }

    /// The cluster range.
    pub fn cluster(&self) -> Cidr {
        self.cluster
    }

    /// How many blocks there are.
    pub fn count(&self) -> u32 {
        1u32 << (self.mask - self.cluster.prefix)
    }

    /// The `i`-th block, counted from the bottom of the range.
    pub fn block(&self, i: u32) -> Cidr {
        Cidr {
            base: self.cluster.base + (i << (32 - self.mask)),
            prefix: self.mask,
        }
    }

    /// The index of `cidr` when it is exactly one of the blocks.
    pub fn index_of(&self, cidr: Cidr) -> Option<u32> {
        (cidr.prefix == self.mask && self.cluster.contains(Ipv4Addr::from(cidr.base)))
            .then(|| (cidr.base - self.cluster.base) >> (32 - self.mask))
    }

    /// The lowest block not in `taken`.
    pub fn lowest_free(&self, taken: &BTreeSet<u32>) -> Option<u32> {
        (0..self.count()).find(|i| !taken.contains(i))
    }

    /// Parse a requested CIDR; it must be written exactly as one of the
    /// blocks (network address, this mask).
    ///
    /// # Errors
    /// [`PodCidrError::NotABlock`] otherwise.
    pub fn parse_block(&self, requested: &str) -> Result<Cidr, PodCidrError> {
        let not_a_block = || PodCidrError::NotABlock {
            cluster: self.cluster,
            mask: self.mask,
            example: self.block(0),
        };
        let cidr = Cidr::parse(requested).map_err(|_| not_a_block())?;
        if cidr.to_string() != requested.trim() || self.index_of(cidr).is_none() {
            return Err(not_a_block());
        }
        Ok(cidr)
    }

    /// The blocks recorded as taken (those of this range; records outside
    /// it, left from an earlier `--cluster-cidr`, only block themselves).
    async fn taken(&self, store: &Store) -> Result<BTreeSet<u32>, StoreError> {
        let resp = store
            .range(RangeRequest {
                range: KeyRange::prefix(PREFIX),
                keys_only: true,
                ..Default::default()
            })
            .await?;
        Ok(resp
            .kvs
            .iter()
            .filter_map(|kv| std::str::from_utf8(&kv.key).ok()?.strip_prefix(PREFIX))
            .filter_map(|c| Cidr::parse(c).ok())
            .filter_map(|c| self.index_of(c))
            .collect())
    }

    /// Give `owner` (a node name) a block: `requested` when it is a free
    /// block of the range (or already recorded for this owner), else the
    /// lowest free one.
    ///
    /// # Errors
    /// A requested CIDR that is not a block of the range or is taken, an
    /// exhausted range, store failures.
    pub async fn allocate(
        &self,
        store: &Store,
        owner: &str,
        requested: Option<&str>,
    ) -> Result<Cidr, PodCidrError> {
        if let Some(requested) = requested {
            let cidr = self.parse_block(requested)?;
            return match claim(store, cidr, owner).await? {
                Claim::Ours => Ok(cidr),
                Claim::Theirs(owner) => Err(PodCidrError::Taken { cidr, owner }),
            };
        }
        for _ in 0..CLAIM_ATTEMPTS {
            let taken = self.taken(store).await?;
            let Some(i) = self.lowest_free(&taken) else {
                return Err(PodCidrError::Exhausted {
                    cluster: self.cluster,
                    mask: self.mask,
                    count: self.count(),
                });
            };
            let cidr = self.block(i);
            if let Claim::Ours = claim(store, cidr, owner).await? {
                return Ok(cidr);
            }
            // Another node took it between the read and the claim.
        }
        Err(PodCidrError::Contended)
    }
}

/// The store key of a block.
pub fn key(cidr: Cidr) -> String {
    format!("{PREFIX}{cidr}")
}

enum Claim {
    Ours,
    Theirs(String),
}

/// Record `cidr` for `owner` unless someone else holds it.
async fn claim(store: &Store, cidr: Cidr, owner: &str) -> Result<Claim, StoreError> {
    let key = Bytes::from(key(cidr));
    for _ in 0..CLAIM_ATTEMPTS {
        match try_claim(store, &key, owner).await? {
            // Released between the compare and the read: try again.
            None => continue,
            Some(c) => return Ok(c),
        }
    }
    Ok(Claim::Theirs(String::new()))
}

async fn try_claim(store: &Store, key: &Bytes, owner: &str) -> Result<Option<Claim>, StoreError> {
    let key = key.clone();
    let resp = store
        .txn(TxnRequest {
            compare: vec![Compare {
                range: KeyRange::single(key.clone()),
                result: CompareResult::Equal,
                target: CompareTarget::Create(0),
            }],
            success: vec![TxnOp::Put(PutRequest {
                key: key.clone(),
                value: Bytes::from(owner.to_string()),
                ..Default::default()
            })],
            failure: vec![TxnOp::Range(RangeRequest {
                range: KeyRange::single(key),
                ..Default::default()
            })],
        })
        .await?;
    if resp.succeeded {
        return Ok(Some(Claim::Ours));
    }
    let holder = match resp.responses.first() {
        Some(TxnOpResponse::Range(r)) => r
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
        _ => None,
    };
    Ok(holder.map(|h| {
        if h == owner {
            // Left by an earlier node of the same name (a crash between
            // its delete and the release): names are unique, so it is
            // this one's.
            Claim::Ours
        } else {
            Claim::Theirs(h)
        }
    }))
}

/// Free `cidr` if `owner` still holds it.
///
/// # Errors
/// Store failures.
pub async fn release(store: &Store, cidr: Cidr, owner: &str) -> Result<(), StoreError> {
    let key = Bytes::from(key(cidr));
    store
        .txn(TxnRequest {
            compare: vec![Compare {
                range: KeyRange::single(key.clone()),
                result: CompareResult::Equal,
                target: CompareTarget::Value(Bytes::from(owner.to_string())),
            }],
            success: vec![TxnOp::DeleteRange(DeleteRangeRequest {
                range: KeyRange::single(key),
                prev_kv: false,
            })],
            failure: vec![],
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_blocks() -> NodeCidrs {
        NodeCidrs::new(Cidr::parse("127.128.0.0/9").unwrap(), 18).unwrap()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::redb::RedbStore::open(
            &dir.path().join("store.redb"),
            crate::store::redb::RedbOptions::default(),
        )
        .unwrap();
        (dir, store)
    }

    #[test]
    fn the_first_block_is_127_128_0_0_18_and_the_next_127_128_64_0_18() {
        let b = default_blocks();
        assert_eq!(b.count(), 512);
        assert_eq!(b.block(0).to_string(), "127.128.0.0/18");
        assert_eq!(b.block(1).to_string(), "127.128.64.0/18");
        assert_eq!(b.block(511).to_string(), "127.255.192.0/18");
        assert_eq!(b.index_of(Cidr::parse("127.128.64.0/18").unwrap()), Some(1));
    }

    #[test]
    fn only_exact_blocks_of_the_range_may_be_requested() {
        let b = default_blocks();
        assert!(b.parse_block("127.129.0.0/18").is_ok());
        for bad in [
            "10.0.0.0/18",
            "127.128.0.0/24",
            "127.128.1.0/18",
            "127.0.0.0/18",
            "nonsense",
        ] {
            let e = b.parse_block(bad).unwrap_err();
            assert!(
                e.to_string()
                    .contains("block of the cluster range 127.128.0.0/9"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn masks_must_fit_the_range() {
        let cluster = Cidr::parse("127.128.0.0/9").unwrap();
        assert!(NodeCidrs::new(cluster, 9).is_err());
        assert!(NodeCidrs::new(cluster, 31).is_err());
        assert!(NodeCidrs::new(cluster, 26).is_err());
        assert!(NodeCidrs::new(cluster, 25).is_ok());
    }

    #[test]
    fn the_lowest_free_block_fills_holes_first() {
        let b = default_blocks();
        assert_eq!(b.lowest_free(&BTreeSet::new()), Some(0));
        assert_eq!(b.lowest_free(&[0, 1, 3].into_iter().collect()), Some(2));
        let all: BTreeSet<u32> = (0..b.count()).collect();
        assert_eq!(b.lowest_free(&all), None);
    }

    #[tokio::test]
    async fn nodes_get_consecutive_blocks_and_a_released_one_is_reused() {
        let (_dir, store) = store();
        let b = default_blocks();
        let a = b.allocate(&store, "a", None).await.unwrap();
        let c = b.allocate(&store, "b", None).await.unwrap();
        assert_eq!(a.to_string(), "127.128.0.0/18");
        assert_eq!(c.to_string(), "127.128.64.0/18");
        release(&store, a, "a").await.unwrap();
        let again = b.allocate(&store, "c", None).await.unwrap();
        assert_eq!(again.to_string(), "127.128.0.0/18");
    }

    #[tokio::test]
    async fn a_release_by_another_owner_leaves_the_block_taken() {
        let (_dir, store) = store();
        let b = default_blocks();
        let a = b.allocate(&store, "a", None).await.unwrap();
        release(&store, a, "someone-else").await.unwrap();
        let next = b.allocate(&store, "b", None).await.unwrap();
        assert_ne!(next, a);
    }

    #[tokio::test]
    async fn a_requested_block_is_granted_when_free_and_refused_when_taken() {
        let (_dir, store) = store();
        let b = default_blocks();
        let got = b
            .allocate(&store, "a", Some("127.129.0.0/18"))
            .await
            .unwrap();
        assert_eq!(got.to_string(), "127.129.0.0/18");
        // The same node asking again (a re-registration) keeps it.
        b.allocate(&store, "a", Some("127.129.0.0/18"))
            .await
            .unwrap();
        let e = b
            .allocate(&store, "b", Some("127.129.0.0/18"))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "failed to allocate pod CIDR 127.129.0.0/18: it is already allocated to node \"a\""
        );
        // Automatic allocation skips it.
        let next = b.allocate(&store, "c", None).await.unwrap();
        assert_eq!(next.to_string(), "127.128.0.0/18");
    }

    #[tokio::test]
    async fn an_exhausted_range_says_so() {
        let (_dir, store) = store();
        let b = NodeCidrs::new(Cidr::parse("127.128.0.0/16").unwrap(), 18).unwrap();
        for n in 0..4 {
            b.allocate(&store, &format!("n{n}"), None).await.unwrap();
        }
        let e = b.allocate(&store, "n4", None).await.unwrap_err();
        assert!(matches!(e, PodCidrError::Exhausted { count: 4, .. }), "{e}");
        assert!(
            e.to_string()
                .contains("all 4 blocks of /18 in the cluster range 127.128.0.0/16"),
            "{e}"
        );
    }
}
