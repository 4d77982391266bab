//! The one place where store errors and request validation failures become
//! gRPC statuses, with the codes and messages etcd uses (clients such as
//! `etcdctl` and `clientv3` match on the message text).

use tonic::{Code, Status};

use crate::store::StoreError;

pub(crate) const EMPTY_KEY: &str = "etcdserver: key is not provided";
pub(crate) const KEY_NOT_FOUND: &str = "etcdserver: key not found";
pub(crate) const VALUE_PROVIDED: &str = "etcdserver: value is provided";
pub(crate) const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
pub(crate) const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
pub(crate) const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
pub(crate) const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
pub(crate) const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
pub(crate) const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
pub(crate) const LEASE_EXISTS: &str = "etcdserver: lease already exists";
pub(crate) const LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
pub(crate) const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
pub(crate) const TOO_MANY_WATCHERS: &str = "etcdserver: too many watchers";
pub(crate) const STOPPED: &str = "etcdserver: server stopped";
pub(crate) const INVALID_SORT: &str = "etcdserver: invalid sort option";
pub(crate) const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// Shorthand for a validation failure.
pub(crate) fn invalid(msg: &'static str) -> Status {
    Status::invalid_argument(msg)
}

/// Maps a store error to the status etcd returns for the same failure.
pub(crate) fn to_status(err: StoreError) -> Status {
    let (code, msg): (Code, &str) = match &err {
        StoreError::EmptyKey => (Code::InvalidArgument, EMPTY_KEY),
        StoreError::Compacted { .. } => (Code::OutOfRange, COMPACTED),
        StoreError::FutureRevision => (Code::OutOfRange, FUTURE_REV),
        StoreError::KeyNotFound => (Code::InvalidArgument, KEY_NOT_FOUND),
        StoreError::LeaseNotFound => (Code::NotFound, LEASE_NOT_FOUND),
        StoreError::LeaseExists => (Code::FailedPrecondition, LEASE_EXISTS),
        StoreError::TooManyTxnOps => (Code::InvalidArgument, TOO_MANY_OPS),
        StoreError::DuplicateKey => (Code::InvalidArgument, DUPLICATE_KEY),
        StoreError::RequestTooLarge => (Code::InvalidArgument, REQUEST_TOO_LARGE),
        // etcd has no such error; the closest code a client backs off on.
        StoreError::TooManyWatchers => (Code::ResourceExhausted, TOO_MANY_WATCHERS),
        StoreError::Stopped => (Code::Unavailable, STOPPED),
        StoreError::Storage(_) => return Status::internal(err.to_string()),
        StoreError::Unavailable(_) => return Status::unavailable(err.to_string()),
        StoreError::Unsupported(_) => return Status::unimplemented(err.to_string()),
    };
    Status::new(code, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_etcd_codes_and_messages() {
        let cases = [
            (StoreError::EmptyKey, Code::InvalidArgument, EMPTY_KEY),
            (
                StoreError::Compacted {
                    compact_revision: 3,
                },
                Code::OutOfRange,
                COMPACTED,
            ),
            (StoreError::FutureRevision, Code::OutOfRange, FUTURE_REV),
            (
                StoreError::KeyNotFound,
                Code::InvalidArgument,
                KEY_NOT_FOUND,
            ),
            (StoreError::LeaseNotFound, Code::NotFound, LEASE_NOT_FOUND),
            (
                StoreError::LeaseExists,
                Code::FailedPrecondition,
                LEASE_EXISTS,
            ),
            (
                StoreError::TooManyTxnOps,
                Code::InvalidArgument,
                TOO_MANY_OPS,
            ),
            (
                StoreError::DuplicateKey,
                Code::InvalidArgument,
                DUPLICATE_KEY,
            ),
            (
                StoreError::RequestTooLarge,
                Code::InvalidArgument,
                REQUEST_TOO_LARGE,
            ),
            (StoreError::Stopped, Code::Unavailable, STOPPED),
        ];
        for (err, code, msg) in cases {
            let status = to_status(err);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), msg);
        }
        let status = to_status(StoreError::Storage("disk on fire".into()));
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().contains("disk on fire"));
    }
}
