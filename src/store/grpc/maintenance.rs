//! The Maintenance service (status, snapshots and an always-empty alarm
//! list) and the Cluster service of a single-member cluster. Everything
//! else answers `Unimplemented`.

use std::pin::Pin;
use std::sync::Arc;

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbClusterService, PbDefragmentRequest, PbDefragmentResponse,
    PbDowngradeRequest, PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest,
    PbHashResponse, PbMaintenanceService, PbMember, PbMemberAddRequest, PbMemberAddResponse,
    PbMemberListRequest, PbMemberListResponse, PbMemberPromoteRequest, PbMemberPromoteResponse,
    PbMemberRemoveRequest, PbMemberRemoveResponse, PbMemberUpdateRequest, PbMemberUpdateResponse,
    PbMoveLeaderRequest, PbMoveLeaderResponse, PbResponseHeader, PbSnapshotRequest,
    PbSnapshotResponse, PbStatusRequest, PbStatusResponse,
};
use futures::Stream;
use sha2::Digest as _;
use tonic::{Request, Response, Status};

use super::Ctx;
use super::convert::RAFT_TERM;
use super::error::to_status;

/// The etcd API version we implement, reported by `endpoint status`.
pub(crate) const ETCD_API_VERSION: &str = "3.5.0";

/// `AlarmRequest.action` value for listing alarms.
const ALARM_GET: i32 = 0;
/// `AlarmRequest.action` value for clearing an alarm.
const ALARM_DEACTIVATE: i32 = 2;

pub(crate) struct MaintenanceService {
    ctx: Arc<Ctx>,
}

impl MaintenanceService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        MaintenanceService { ctx }
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not supported by wkube's etcd endpoint"))
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<PbSnapshotResponse, Status>> + Send>>;

/// Bytes per snapshot message.
const SNAPSHOT_CHUNK: usize = 64 * 1024;

/// A snapshot being streamed: the copy (removed with `_dir` when the
/// stream ends or the client goes), and the hash of what was sent.
struct SnapshotState {
    _dir: tempfile::TempDir,
    file: std::fs::File,
    /// `None` once the trailer went out.
    hasher: Option<sha2::Sha256>,
    remaining: u64,
    header: Option<PbResponseHeader>,
}

impl SnapshotState {
    /// The next message: a chunk of the copy, then the hash, then the end.
    fn next_chunk(&mut self) -> Option<Result<PbSnapshotResponse, Status>> {
        use sha2::Digest;
        use std::io::Read;
        let hasher = self.hasher.as_mut()?;
        let mut blob = vec![0u8; SNAPSHOT_CHUNK];
        let n = match self.file.read(&mut blob) {
            Ok(n) => n,
            Err(e) => return Some(Err(Status::internal(format!("snapshot: {e}")))),
        };
        if n == 0 {
            blob = self.hasher.take()?.finalize().to_vec();
        } else {
            blob.truncate(n);
            hasher.update(&blob);
        }
        self.remaining = self.remaining.saturating_sub(blob.len() as u64);
        Some(Ok(PbSnapshotResponse {
            header: self.header,
            remaining_bytes: self.remaining,
            blob,
            version: ETCD_API_VERSION.to_string(),
        }))
    }
}

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        // There is no space quota or corruption check, so no alarm is ever
        // raised: listing gives nothing and disarming has nothing to do.
        // etcd itself leaves the header out of alarm responses.
        match request.into_inner().action {
            ALARM_GET | ALARM_DEACTIVATE => Ok(Response::new(PbAlarmResponse {
                header: None,
                alarms: Vec::new(),
            })),
            _ => Err(unimplemented("raising alarms")),
        }
    }

    async fn status(
        &self,
        _request: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        let s = self.ctx.store.status().await.map_err(to_status)?;
        Ok(Response::new(PbStatusResponse {
            header: self.ctx.headers.at(s.header.revision),
            version: ETCD_API_VERSION.to_string(),
            db_size: s.db_size,
            leader: self.ctx.headers.member_id,
            raft_index: s.raft_index,
            raft_term: RAFT_TERM,
            raft_applied_index: s.raft_index,
            errors: Vec::new(),
            db_size_in_use: s.db_size_in_use,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: None,
        }))
    }

    async fn defragment(
        &self,
        _request: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        Err(unimplemented("Defragment"))
    }

    async fn hash(
        &self,
        _request: Request<PbHashRequest>,
    ) -> Result<Response<PbHashResponse>, Status> {
        Err(unimplemented("Hash"))
    }

    async fn hash_kv(
        &self,
        _request: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        Err(unimplemented("HashKV"))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        // The store copies itself between two commits into a private
        // temporary file; the copy is streamed, then its SHA-256, as etcd
        // streams its database and hash.
        let dir = tempfile::Builder::new()
            .prefix("wkube-snapshot-")
            .tempdir()
            .map_err(|e| Status::internal(format!("snapshot: {e}")))?;
        let path = dir.path().join("snapshot.db");
        let at = self.ctx.store.snapshot(&path).await.map_err(to_status)?;
        let file =
            std::fs::File::open(&path).map_err(|e| Status::internal(format!("snapshot: {e}")))?;
        let total = file
            .metadata()
            .map_err(|e| Status::internal(format!("snapshot: {e}")))?
            .len();
        let header = self.ctx.headers.at(at.revision);
        let state = SnapshotState {
            _dir: dir,
            file,
            hasher: Some(sha2::Sha256::new()),
            remaining: total + crate::store::snapshot::HASH_LEN as u64,
            header,
        };
        // Reads of one chunk from a local file: short enough to do inline.
        let stream = futures::stream::unfold(state, |mut st| async move {
            st.next_chunk().map(|item| (item, st))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn move_leader(
        &self,
        _request: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        Err(unimplemented("MoveLeader"))
    }

    async fn downgrade(
        &self,
        _request: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}

pub(crate) struct ClusterService {
    ctx: Arc<Ctx>,
}

impl ClusterService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        ClusterService { ctx }
    }

    /// etcd's cluster responses carry no revision.
    fn header(&self) -> Option<PbResponseHeader> {
        self.ctx.headers.at(0)
    }
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        _request: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        Err(unimplemented("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _request: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        Err(unimplemented("MemberRemove"))
    }

    async fn member_update(
        &self,
        _request: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        Err(unimplemented("MemberUpdate"))
    }

    async fn member_list(
        &self,
        _request: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        let m = &self.ctx.member;
        Ok(Response::new(PbMemberListResponse {
            header: self.header(),
            members: vec![PbMember {
                id: self.ctx.headers.member_id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: m.client_urls.clone(),
                is_learner: false,
            }],
        }))
    }

    async fn member_promote(
        &self,
        _request: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        Err(unimplemented("MemberPromote"))
    }
}
