//! Conversion between etcd's protobuf messages and the store's types, and the
//! request validation etcd's gRPC layer does before a request reaches the
//! store. Everything that touches both worlds lives here, so the services
//! stay thin.
//!
//! Requests are converted without copying: prost hands us owned `Vec<u8>`s
//! and `Bytes::from(Vec<u8>)` takes them over. Responses must copy once into
//! the `Vec<u8>` fields of the generated messages.

use std::collections::HashSet;

use bytes::Bytes;
use etcd_client::proto::{
    PbCompare, PbDeleteRequest, PbDeleteResponse, PbEvent, PbKeyValue, PbPutRequest, PbPutResponse,
    PbRangeRequest, PbRangeResponse, PbResponseHeader, PbResponseOp, PbTargetUnion, PbTxnOpRequest,
    PbTxnOpResponse, PbTxnRequest, PbTxnRequestOp, PbTxnResponse,
};
use tonic::Status;

use super::error::{
    DUPLICATE_KEY, EMPTY_KEY, INVALID_SORT, LEASE_PROVIDED, TOO_MANY_OPS, VALUE_PROVIDED, invalid,
};
use crate::store::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventType, KeyRange, KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, Revision,
    SortOrder, SortTarget, TxnOp, TxnOpResponse, TxnRequest, TxnResponse,
};

/// Raft term we report: constant and nonzero, since there is no raft.
pub(crate) const RAFT_TERM: u64 = 1;

/// Builds response headers; the identity part is fixed at startup.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Headers {
    pub cluster_id: u64,
    pub member_id: u64,
}

impl Headers {
    /// A full header, as etcd puts on every top-level response.
    pub(crate) fn at(&self, revision: Revision) -> Option<PbResponseHeader> {
        Some(PbResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: RAFT_TERM,
        })
    }
}

/// Header of a response nested in a txn: etcd fills in only the revision.
fn nested_header(revision: Revision) -> Option<PbResponseHeader> {
    Some(PbResponseHeader {
        revision,
        ..Default::default()
    })
}

fn key_range(key: Vec<u8>, range_end: Vec<u8>) -> KeyRange {
    KeyRange {
        key: Bytes::from(key),
        range_end: Bytes::from(range_end),
    }
}

// ---- requests -------------------------------------------------------------

/// Validates and converts a range request (etcd rejects an empty key and
/// unknown sort options).
pub(crate) fn range_from_pb(pb: PbRangeRequest) -> Result<RangeRequest, Status> {
    if pb.key.is_empty() {
        return Err(invalid(EMPTY_KEY));
    }
    let sort_target = match pb.sort_target {
        0 => SortTarget::Key,
        1 => SortTarget::Version,
        2 => SortTarget::Create,
        3 => SortTarget::Mod,
        4 => SortTarget::Value,
        _ => return Err(invalid(INVALID_SORT)),
    };
    let mut sort_order = match pb.sort_order {
        0 => SortOrder::None,
        1 => SortOrder::Ascend,
        2 => SortOrder::Descend,
        _ => return Err(invalid(INVALID_SORT)),
    };
    // etcd's rule: results come in key order anyway, so an explicit target
    // other than the key without an order means ascending on that target.
    if sort_order == SortOrder::None && sort_target != SortTarget::Key {
        sort_order = SortOrder::Ascend;
    }
    Ok(RangeRequest {
        range: key_range(pb.key, pb.range_end),
        limit: pb.limit,
        revision: pb.revision,
        sort_order,
        sort_target,
        keys_only: pb.keys_only,
        count_only: pb.count_only,
        min_mod_revision: pb.min_mod_revision,
        max_mod_revision: pb.max_mod_revision,
        min_create_revision: pb.min_create_revision,
        max_create_revision: pb.max_create_revision,
    })
}

/// Validates and converts a put, with etcd's checks of the `ignore_*` flags.
pub(crate) fn put_from_pb(pb: PbPutRequest) -> Result<PutRequest, Status> {
    if pb.key.is_empty() {
        return Err(invalid(EMPTY_KEY));
    }
    if pb.ignore_value && !pb.value.is_empty() {
        return Err(invalid(VALUE_PROVIDED));
    }
    if pb.ignore_lease && pb.lease != 0 {
        return Err(invalid(LEASE_PROVIDED));
    }
    Ok(PutRequest {
        key: Bytes::from(pb.key),
        value: Bytes::from(pb.value),
        lease: pb.lease,
        prev_kv: pb.prev_kv,
        ignore_value: pb.ignore_value,
        ignore_lease: pb.ignore_lease,
    })
}

pub(crate) fn delete_from_pb(pb: PbDeleteRequest) -> Result<DeleteRangeRequest, Status> {
    if pb.key.is_empty() {
        return Err(invalid(EMPTY_KEY));
    }
    Ok(DeleteRangeRequest {
        range: key_range(pb.key, pb.range_end),
        prev_kv: pb.prev_kv,
    })
}

fn compare_from_pb(pb: PbCompare) -> Result<Compare, Status> {
    if pb.key.is_empty() {
        return Err(invalid(EMPTY_KEY));
    }
    let result = match pb.result {
        0 => CompareResult::Equal,
        1 => CompareResult::Greater,
        2 => CompareResult::Less,
        3 => CompareResult::NotEqual,
        _ => {
            return Err(Status::invalid_argument(
                "etcdserver: invalid compare result",
            ));
        }
    };
    // Like etcd, the `target` field decides what is compared; a union of
    // another kind (or none) reads as that field's zero value.
    let union = pb.target_union;
    let int = |want: fn(&PbTargetUnion) -> Option<i64>| union.as_ref().and_then(want).unwrap_or(0);
    let target = match pb.target {
        0 => CompareTarget::Version(int(|u| match u {
            PbTargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        1 => CompareTarget::Create(int(|u| match u {
            PbTargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        2 => CompareTarget::Mod(int(|u| match u {
            PbTargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        3 => CompareTarget::Value(match union {
            Some(PbTargetUnion::Value(v)) => Bytes::from(v),
            _ => Bytes::new(),
        }),
        4 => CompareTarget::Lease(int(|u| match u {
            PbTargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        _ => {
            return Err(Status::invalid_argument(
                "etcdserver: invalid compare target",
            ));
        }
    };
    Ok(Compare {
        range: key_range(pb.key, pb.range_end),
        result,
        target,
    })
}

fn op_from_pb(pb: PbTxnRequestOp, max_ops: usize) -> Result<TxnOp, Status> {
    match pb.request {
        Some(PbTxnOpRequest::RequestRange(r)) => Ok(TxnOp::Range(range_from_pb(r)?)),
        Some(PbTxnOpRequest::RequestPut(p)) => Ok(TxnOp::Put(put_from_pb(p)?)),
        Some(PbTxnOpRequest::RequestDeleteRange(d)) => Ok(TxnOp::DeleteRange(delete_from_pb(d)?)),
        Some(PbTxnOpRequest::RequestTxn(t)) => Ok(TxnOp::Txn(txn_ops_from_pb(t, max_ops)?)),
        None => Err(Status::invalid_argument(
            "etcdserver: empty request op in txn",
        )),
    }
}

fn ops_from_pb(ops: Vec<PbTxnRequestOp>, max_ops: usize) -> Result<Vec<TxnOp>, Status> {
    ops.into_iter().map(|op| op_from_pb(op, max_ops)).collect()
}

/// Converts a (possibly nested) txn, checking its size at each level the way
/// etcd does: the longest of compare/success/failure counts, not the sum.
fn txn_ops_from_pb(pb: PbTxnRequest, max_ops: usize) -> Result<TxnRequest, Status> {
    let ops = pb.compare.len().max(pb.success.len()).max(pb.failure.len());
    if ops > max_ops {
        return Err(invalid(TOO_MANY_OPS));
    }
    let compare = pb
        .compare
        .into_iter()
        .map(compare_from_pb)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TxnRequest {
        compare,
        success: ops_from_pb(pb.success, max_ops)?,
        failure: ops_from_pb(pb.failure, max_ops)?,
    })
}

/// Validates and converts a txn request: op counts, empty keys, and no key
/// written twice (or written and deleted) within one branch.
pub(crate) fn txn_from_pb(pb: PbTxnRequest, max_ops: usize) -> Result<TxnRequest, Status> {
    let txn = txn_ops_from_pb(pb, max_ops)?;
    check_duplicates(&txn.success)?;
    check_duplicates(&txn.failure)?;
    Ok(txn)
}

fn check_duplicates(ops: &[TxnOp]) -> Result<(), Status> {
    // The common Kubernetes txn (compare + one put or delete) cannot
    // conflict; skip building the sets.
    let writes = ops
        .iter()
        .filter(|op| !matches!(op, TxnOp::Range(_)))
        .count();
    if writes < 2 && !ops.iter().any(|op| matches!(op, TxnOp::Txn(_))) {
        return Ok(());
    }
    written_keys(ops).map(|_| ())
}

fn dup() -> Status {
    invalid(DUPLICATE_KEY)
}

fn deleted(dels: &[KeyRange], key: &[u8]) -> bool {
    dels.iter().any(|d| d.contains(key))
}

/// Keys put and ranges deleted by one branch, including nested txns.
/// A put may not repeat a key nor fall in a deleted range; the two
/// branches of a nested txn are exclusive, so they may put the same key.
fn written_keys(ops: &[TxnOp]) -> Result<(HashSet<Bytes>, Vec<KeyRange>), Status> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            TxnOp::DeleteRange(d) => Some(d.range.clone()),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Bytes> = HashSet::new();
    for op in ops {
        let TxnOp::Txn(t) = op else { continue };
        let (then_puts, then_dels) = written_keys(&t.success)?;
        let (else_puts, else_dels) = written_keys(&t.failure)?;
        for k in &then_puts {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(dup());
            }
            puts.insert(k.clone());
        }
        for k in else_puts {
            if (puts.contains(&k) && !then_puts.contains(&k)) || deleted(&dels, &k) {
                return Err(dup());
            }
            puts.insert(k);
        }
        dels.extend(then_dels);
        dels.extend(else_dels);
    }
    for op in ops {
        let TxnOp::Put(p) = op else { continue };
        if deleted(&dels, &p.key) || !puts.insert(p.key.clone()) {
            return Err(dup());
        }
    }
    Ok((puts, dels))
}

// ---- responses ------------------------------------------------------------

pub(crate) fn kv_to_pb(kv: &KeyValue) -> PbKeyValue {
    PbKeyValue {
        key: kv.key.to_vec(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.to_vec(),
        lease: kv.lease,
    }
}

/// One watch event; `prev_kv` only when the watcher asked for it.
pub(crate) fn event_to_pb(ev: &Event, prev_kv: bool) -> PbEvent {
    PbEvent {
        r#type: match ev.kind {
            EventType::Put => 0,
            EventType::Delete => 1,
        },
        kv: Some(kv_to_pb(&ev.kv)),
        prev_kv: if prev_kv {
            ev.prev_kv.as_deref().map(kv_to_pb)
        } else {
            None
        },
    }
}

pub(crate) fn range_to_pb(r: RangeResponse, header: Option<PbResponseHeader>) -> PbRangeResponse {
    PbRangeResponse {
        header,
        kvs: r.kvs.iter().map(|kv| kv_to_pb(kv)).collect(),
        more: r.more,
        count: r.count,
    }
}

pub(crate) fn put_to_pb(r: PutResponse, header: Option<PbResponseHeader>) -> PbPutResponse {
    PbPutResponse {
        header,
        prev_kv: r.prev_kv.as_deref().map(kv_to_pb),
    }
}

pub(crate) fn delete_to_pb(
    r: DeleteRangeResponse,
    header: Option<PbResponseHeader>,
) -> PbDeleteResponse {
    PbDeleteResponse {
        header,
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.iter().map(|kv| kv_to_pb(kv)).collect(),
    }
}

fn op_response_to_pb(r: TxnOpResponse) -> PbResponseOp {
    let response = match r {
        TxnOpResponse::Range(r) => {
            let h = nested_header(r.header.revision);
            PbTxnOpResponse::ResponseRange(range_to_pb(r, h))
        }
        TxnOpResponse::Put(r) => {
            let h = nested_header(r.header.revision);
            PbTxnOpResponse::ResponsePut(put_to_pb(r, h))
        }
        TxnOpResponse::DeleteRange(r) => {
            let h = nested_header(r.header.revision);
            PbTxnOpResponse::ResponseDeleteRange(delete_to_pb(r, h))
        }
        TxnOpResponse::Txn(r) => {
            let h = nested_header(r.header.revision);
            PbTxnOpResponse::ResponseTxn(txn_to_pb(r, h))
        }
    };
    PbResponseOp {
        response: Some(response),
    }
}

pub(crate) fn txn_to_pb(r: TxnResponse, header: Option<PbResponseHeader>) -> PbTxnResponse {
    PbTxnResponse {
        header,
        succeeded: r.succeeded,
        responses: r.responses.into_iter().map(op_response_to_pb).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tonic::Code;

    use super::*;
    use crate::store::Header;

    fn put_op(key: &str) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }
    }

    fn del_op(key: &str, end: &str) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestDeleteRange(PbDeleteRequest {
                key: key.into(),
                range_end: end.into(),
                prev_kv: false,
            })),
        }
    }

    fn txn_op(success: Vec<PbTxnRequestOp>, failure: Vec<PbTxnRequestOp>) -> PbTxnRequestOp {
        PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestTxn(PbTxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn txn(success: Vec<PbTxnRequestOp>) -> PbTxnRequest {
        PbTxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        }
    }

    fn message(r: Result<TxnRequest, Status>) -> String {
        r.err().map(|s| s.message().to_string()).unwrap_or_default()
    }

    #[test]
    fn empty_keys_are_rejected_like_etcd() {
        let err = range_from_pb(PbRangeRequest::default()).unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, EMPTY_KEY)
        );
        let err = put_from_pb(PbPutRequest::default()).unwrap_err();
        assert_eq!(err.message(), EMPTY_KEY);
        let err = delete_from_pb(PbDeleteRequest::default()).unwrap_err();
        assert_eq!(err.message(), EMPTY_KEY);
        let bad_compare = PbTxnRequest {
            compare: vec![PbCompare::default()],
            success: vec![],
            failure: vec![],
        };
        assert_eq!(message(txn_from_pb(bad_compare, 128)), EMPTY_KEY);
    }

    #[test]
    fn put_with_ignore_flags_must_not_carry_the_ignored_field() {
        let p = PbPutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(put_from_pb(p).unwrap_err().message(), VALUE_PROVIDED);
        let p = PbPutRequest {
            key: b"k".to_vec(),
            lease: 7,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(put_from_pb(p).unwrap_err().message(), LEASE_PROVIDED);
    }

    #[test]
    fn range_conversion_keeps_fields_and_defaults_sort_order() {
        let r = range_from_pb(PbRangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            limit: 5,
            revision: 9,
            sort_target: 3,
            keys_only: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.range, KeyRange::prefix(&b"a"[..]));
        assert_eq!((r.limit, r.revision, r.keys_only), (5, 9, true));
        assert_eq!(
            (r.sort_order, r.sort_target),
            (SortOrder::Ascend, SortTarget::Mod)
        );
        let bad = PbRangeRequest {
            key: b"a".to_vec(),
            sort_order: 9,
            ..Default::default()
        };
        assert_eq!(range_from_pb(bad).unwrap_err().message(), INVALID_SORT);
    }

    #[test]
    fn compare_reads_the_union_selected_by_target() {
        let c = compare_from_pb(PbCompare {
            result: 3,
            target: 2,
            key: b"k".to_vec(),
            range_end: vec![],
            target_union: Some(PbTargetUnion::ModRevision(12)),
        })
        .unwrap();
        assert_eq!(c.result, CompareResult::NotEqual);
        assert_eq!(c.target, CompareTarget::Mod(12));
        let c = compare_from_pb(PbCompare {
            result: 0,
            target: 0,
            key: b"k".to_vec(),
            range_end: vec![],
            target_union: None,
        })
        .unwrap();
        assert_eq!(c.target, CompareTarget::Version(0));
    }

    #[test]
    fn txn_op_count_is_the_longest_branch_not_the_sum() {
        let ops = |n: usize| (0..n).map(|i| put_op(&format!("k{i}"))).collect::<Vec<_>>();
        let ok = PbTxnRequest {
            compare: vec![],
            success: ops(3),
            failure: ops(3),
        };
        assert!(txn_from_pb(ok, 3).is_ok());
        assert_eq!(message(txn_from_pb(txn(ops(4)), 3)), TOO_MANY_OPS);
        let nested = txn(vec![txn_op(ops(4), vec![])]);
        assert_eq!(message(txn_from_pb(nested, 3)), TOO_MANY_OPS);
    }

    #[test]
    fn txn_rejects_a_key_written_twice_in_one_branch() {
        assert_eq!(
            message(txn_from_pb(txn(vec![put_op("a"), put_op("a")]), 128)),
            DUPLICATE_KEY
        );
        assert_eq!(
            message(txn_from_pb(txn(vec![del_op("a", "c"), put_op("b")]), 128)),
            DUPLICATE_KEY
        );
        assert_eq!(
            message(txn_from_pb(
                txn(vec![put_op("a"), txn_op(vec![put_op("a")], vec![])]),
                128
            )),
            DUPLICATE_KEY
        );
        // Deleting overlapping ranges, or putting next to a deleted range, is fine.
        assert!(
            txn_from_pb(
                txn(vec![del_op("a", "c"), del_op("b", "d"), put_op("d")]),
                128
            )
            .is_ok()
        );
        // The two branches of a nested txn are exclusive.
        assert!(txn_from_pb(txn(vec![txn_op(vec![put_op("a")], vec![put_op("a")])]), 128).is_ok());
        // The outer success and failure branches are exclusive too.
        let both = PbTxnRequest {
            compare: vec![],
            success: vec![put_op("a")],
            failure: vec![put_op("a")],
        };
        assert!(txn_from_pb(both, 128).is_ok());
    }

    #[test]
    fn responses_copy_every_field() {
        let kv = Arc::new(KeyValue {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            lease: 5,
        });
        let headers = Headers {
            cluster_id: 1,
            member_id: 2,
        };
        let r = range_to_pb(
            RangeResponse {
                header: Header { revision: 3 },
                kvs: vec![kv.clone()],
                more: true,
                count: 7,
            },
            headers.at(3),
        );
        assert_eq!(r.header.unwrap().raft_term, RAFT_TERM);
        assert_eq!(r.kvs[0].key, b"k");
        assert_eq!((r.kvs[0].create_revision, r.kvs[0].lease), (2, 5));
        assert_eq!((r.more, r.count), (true, 7));

        let ev = Event {
            kind: EventType::Delete,
            kv: kv.clone(),
            prev_kv: Some(kv.clone()),
        };
        let pe = event_to_pb(&ev, false);
        assert_eq!(pe.r#type, 1);
        assert!(pe.prev_kv.is_none());
        assert!(event_to_pb(&ev, true).prev_kv.is_some());

        let t = txn_to_pb(
            TxnResponse {
                header: Header { revision: 4 },
                succeeded: true,
                responses: vec![TxnOpResponse::Put(PutResponse {
                    header: Header { revision: 4 },
                    prev_kv: None,
                })],
            },
            headers.at(4),
        );
        let Some(PbTxnOpResponse::ResponsePut(p)) = &t.responses[0].response else {
            panic!("expected a put response");
        };
        assert_eq!(p.header, nested_header(4));
    }
}
