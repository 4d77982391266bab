//! Per-container log files, kept the way the kubelet keeps them: one file
//! per container attempt in the CRI log format, rotated by size, and read
//! back the way `kubectl logs` asks (tail, since, timestamps, byte limit,
//! follow).
//!
//! Layout under the pod's log directory (the caller chooses it):
//!
//! ```text
//! <dir>/<container>/<attempt>.log      the live file
//! <dir>/<container>/<attempt>.log.1    the newest rotated file
//! <dir>/<container>/<attempt>.log.N    the oldest kept (N = max_files)
//! ```
//!
//! Each line of guest output is one record:
//!
//! ```text
//! 2024-05-01T12:00:00.123456789Z stdout F hello world
//! 2024-05-01T12:00:00.123456789Z stderr P the first max_line_bytes of a long line
//! ```
//!
//! `F` ends a line; `P` is a piece of a line that goes on in the next
//! record of the same stream: a line longer than `max_line_bytes`, or the
//! unterminated tail a guest left when its attempt ended.
//!
//! Followers (`kubectl logs -f`) are woken through a `watch` channel per
//! active writer; the channel also carries a rotation count, which tells a
//! follower that the file it holds open is complete and which file comes
//! next, so a rotation neither loses nor repeats records.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::runtime::{LogSink, LogStream};

/// Length of the timestamps written, `2006-01-02T15:04:05.000000000Z`:
/// fixed width, so that they line up and sort as text.
const TS_LEN: usize = 30;
/// Room for a record's timestamp, stream and tag besides its content, when
/// bounding the records a reader accepts.
const RECORD_SLACK: usize = 1024;
/// Bytes of records gathered before a `write`: a huge chunk from the guest
/// is written in several `write`s rather than buffered whole.
const MAX_BATCH: usize = 1 << 20;
/// Output bytes in one item of a read stream.
const READ_BATCH: usize = 64 << 10;
/// Block size of the backward scan for `tail_lines`.
const SCAN_BLOCK: usize = 64 << 10;
/// Bytes of a record's start the backward scan looks at to find its tag.
const HEADER_PEEK: usize = 64;

/// Size limits of the log store. Together they bound the disk one attempt
/// uses to about `max_file_bytes * (max_files + 1)`; two attempts (the
/// current and the previous) are kept per container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLimits {
    /// The live file is rotated before a record would take it past this
    /// size (a file always takes at least one record, however long).
    pub max_file_bytes: u64,
    /// Rotated files kept per attempt besides the live one; the oldest
    /// beyond this is deleted. A follower more than this many rotations
    /// behind the writer skips the files deleted in the meantime.
    pub max_files: u32,
    /// Longest content of one record. A longer line is written as `P`
    /// records of this size and a final `F`; this also bounds the buffer of
    /// an unterminated line, per stream. Taken as at least 1.
    pub max_line_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_file_bytes: 10 << 20,
            max_files: 5,
            max_line_bytes: 16 << 10,
        }
    }
}

/// What `kubectl logs` asks for.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Read the attempt before the current one (`--previous`).
    pub previous: bool,
    /// Only the last lines (`--tail`), counted from the end of all files of
    /// the attempt. A line split into `P` records counts once.
    pub tail_lines: Option<u64>,
    /// Prefix each record with its timestamp and a space (`--timestamps`).
    pub timestamps: bool,
    /// Skip records older than this (`--since`, `--since-time`).
    pub since: Option<SystemTime>,
    /// End the stream after this many bytes of output (`--limit-bytes`).
    pub limit_bytes: Option<u64>,
    /// Keep streaming new records until the attempt's writer finishes
    /// (`--follow`). Without an active writer the stream ends at the end of
    /// the files.
    pub follow: bool,
}

/// Failures of the log store.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The container has no log for the attempt asked for. `attempt` is
    /// `None` when it has no log at all, or when the previous attempt was
    /// asked of its first one. Wording it for the user ("previous terminated
    /// container … not found") is the caller's job.
    #[error("no log of container {container:?}{}", attempt_suffix(attempt))]
    NotFound {
        container: String,
        attempt: Option<u32>,
    },
    /// The container name would not stay one directory under the pod's.
    #[error("invalid container name {0:?}")]
    InvalidName(String),
    /// A writer of this attempt is active: two would garble its rotation.
    #[error("log of container {container:?} attempt {attempt} is already open")]
    AlreadyOpen { container: String, attempt: u32 },
    #[error("opening log file {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("listing log directory {}: {source}", path.display())]
    List { path: PathBuf, source: io::Error },
    #[error("removing logs in {}: {source}", path.display())]
    Remove { path: PathBuf, source: io::Error },
}

fn attempt_suffix(attempt: &Option<u32>) -> String {
    attempt.map(|a| format!(" attempt {a}")).unwrap_or_default()
}

/// The kubelet's log files. Cheap to clone; clones share the registry of
/// active writers, which is how followers learn of new records.
#[derive(Clone, Default)]
pub struct LogStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    limits: LogLimits,
    /// Active writers by live file path. Bounded by the containers running.
    active: Mutex<HashMap<PathBuf, Arc<Shared>>>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("limits", &self.inner.limits)
            .field("active", &self.inner.active.lock().len())
            .finish()
    }
}

impl LogStore {
    /// A store applying `limits` to every file it writes.
    pub fn new(limits: LogLimits) -> LogStore {
        LogStore {
            inner: Arc::new(Inner {
                limits,
                active: Mutex::default(),
            }),
        }
    }

    /// The limits given to [`LogStore::new`].
    pub fn limits(&self) -> &LogLimits {
        &self.inner.limits
    }

    /// Starts the log of a container attempt (`attempt` is its restart
    /// count), appending to `dir/<container>/<attempt>.log` if it exists.
    /// Logs of attempts before `attempt - 1` are deleted: as in Kubernetes,
    /// only the current and the previous attempt are kept.
    ///
    /// Nothing is created here: the directories and the file appear with
    /// the attempt's first record. Most pods of a dense node print nothing,
    /// and four new inodes per pod (the pod's directory, `logs/`, the
    /// container's and the file) were a tenth of the CPU of a burst of pod
    /// starts. A reader of a live attempt without a file reads nothing yet
    /// (and, following, waits for the file).
    ///
    /// # Errors
    /// [`LogError::AlreadyOpen`] while another writer of the attempt is
    /// active; [`LogError::InvalidName`]; I/O errors looking at the file.
    pub fn open(&self, dir: &Path, container: &str, attempt: u32) -> Result<LogWriter, LogError> {
        check_name(container)?;
        let container_dir = dir.join(container);
        self.prune(&container_dir, attempt);
        let path = live_path(dir, container, attempt);
        let mut active = self.inner.active.lock();
        if active.contains_key(&path) {
            return Err(LogError::AlreadyOpen {
                container: container.to_owned(),
                attempt,
            });
        }
        // An earlier writer of this attempt (a kubelet before a restart)
        // left a file: appended to, and readers already see it, so opening
        // it is not a new file for followers. The file is held open only
        // once something is written: a dense node of quiet pods would
        // otherwise spend a descriptor on each.
        let (size, exists) = match fs::metadata(&path) {
            Ok(meta) => (meta.len(), true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, false),
            Err(source) => {
                return Err(LogError::Open {
                    path: path.clone(),
                    source,
                });
            }
        };
        let limits = &self.inner.limits;
        let shared = Arc::new(Shared {
            path: path.clone(),
            max_line_bytes: limits.max_line_bytes.max(1),
            max_files: limits.max_files,
            state: Mutex::new(WriterState {
                out: Output {
                    path: path.clone(),
                    file: None,
                    unopened: exists,
                    size,
                    generation: 0,
                    batch: Vec::new(),
                    failing: false,
                    max_file_bytes: limits.max_file_bytes,
                    max_files: limits.max_files,
                },
                partial: [Vec::new(), Vec::new()],
                finished: false,
            }),
            progress: watch::Sender::new(Progress::default()),
        });
        active.insert(path, Arc::clone(&shared));
        Ok(LogWriter {
            shared,
            store: Arc::clone(&self.inner),
        })
    }

    /// The highest attempt of `container` that has a log in `dir`, if any.
    ///
    /// # Errors
    /// [`LogError::InvalidName`]; I/O errors listing the directory.
    pub fn latest_attempt(&self, dir: &Path, container: &str) -> Result<Option<u32>, LogError> {
        check_name(container)?;
        let container_dir = dir.join(container);
        let entries = match fs::read_dir(&container_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LogError::List {
                    path: container_dir,
                    source,
                });
            }
        };
        let mut latest = None;
        for entry in entries {
            let entry = entry.map_err(|source| LogError::List {
                path: container_dir.clone(),
                source,
            })?;
            if let Some((attempt, _)) = parse_file_name(&entry.file_name()) {
                latest = latest.max(Some(attempt));
            }
        }
        Ok(latest)
    }

    /// Reads the log of the latest attempt of `container` (or the one
    /// before it with `previous`), as [`LogStore::read_at`] does. For when
    /// the caller does not know the restart count; a kubelet that does
    /// should prefer `read_at`, which a stale file of a higher attempt
    /// cannot mislead.
    ///
    /// # Errors
    /// As [`LogStore::read_at`].
    pub fn read(
        &self,
        dir: &Path,
        container: &str,
        opts: LogOptions,
    ) -> Result<impl Stream<Item = io::Result<Bytes>> + Send + use<>, LogError> {
        let latest = self
            .latest_attempt(dir, container)?
            .ok_or_else(|| LogError::NotFound {
                container: container.to_owned(),
                attempt: None,
            })?;
        self.read_at(dir, container, latest, opts)
    }

    /// Reads the log of `container` whose current attempt is `attempt`
    /// (the restart count); with `opts.previous`, of `attempt - 1`. Items
    /// hold the content of many records (with a `<timestamp> ` prefix each
    /// when `opts.timestamps`), a newline after each `F` record and none
    /// after a `P` record, as `kubectl logs` prints them.
    ///
    /// The files to read are opened here, so a rotation after this call
    /// cannot make the stream skip or repeat records.
    ///
    /// # Errors
    /// [`LogError::NotFound`] when the attempt has no file;
    /// [`LogError::InvalidName`]; I/O errors listing or opening the files.
    /// Errors while streaming are items of the stream, which then ends.
    pub fn read_at(
        &self,
        dir: &Path,
        container: &str,
        attempt: u32,
        opts: LogOptions,
    ) -> Result<impl Stream<Item = io::Result<Bytes>> + Send + use<>, LogError> {
        check_name(container)?;
        let not_found = |attempt| LogError::NotFound {
            container: container.to_owned(),
            attempt,
        };
        let attempt = if opts.previous {
            attempt.checked_sub(1).ok_or_else(|| not_found(None))?
        } else {
            attempt
        };
        let container_dir = dir.join(container);
        let live = live_path(dir, container, attempt);
        let writer = self.inner.active.lock().get(&live).cloned();
        let (files, follow) = match writer {
            Some(shared) => {
                // Under the writer's lock no rotation or write is under
                // way: the files form one consistent sequence, and the
                // live file's length ends at a record boundary.
                let state = shared.state.lock();
                let files = open_attempt_files(&container_dir, attempt)?;
                let progress = shared.progress.subscribe();
                let generation = state.out.generation;
                let finished = state.finished;
                drop(state);
                let follow = (opts.follow && !finished).then(|| Follow {
                    shared: Arc::clone(&shared),
                    progress,
                    generation,
                });
                (files, Some(follow))
            }
            None => (open_attempt_files(&container_dir, attempt)?, None),
        };
        let writer_active = follow.is_some();
        // A live attempt that has printed nothing has no file yet: it reads
        // as empty (a follower waits for its first record); any other
        // attempt without files is not known here.
        if files.is_empty() && !writer_active {
            return Err(not_found(Some(attempt)));
        }
        let max_line = self.inner.limits.max_line_bytes.max(16 << 10);
        let cursor = Cursor {
            queue: files.into(),
            current: None,
            line: Vec::new(),
            tail: opts.tail_lines,
            timestamps: opts.timestamps,
            since: opts.since.map(unix_nanos),
            remaining: opts.limit_bytes,
            max_record: max_line.saturating_add(RECORD_SLACK),
            live: writer_active,
        };
        let reader = Reader {
            cursor: Some(cursor),
            follow: follow.flatten(),
            done: false,
        };
        Ok(futures::stream::unfold(reader, |mut reader| async move {
            let item = reader.next().await?;
            Some((item, reader))
        }))
    }

    /// Deletes the logs of a pod: everything under `dir` (the directory
    /// given to [`LogStore::open`]). Active writers under it are finished
    /// first, so their followers end and later writes are dropped. Removing
    /// a directory that does not exist succeeds.
    ///
    /// # Errors
    /// [`LogError::Remove`] when the directory cannot be deleted.
    pub async fn remove_pod(&self, dir: &Path) -> Result<(), LogError> {
        let writers: Vec<Arc<Shared>> = {
            let mut active = self.inner.active.lock();
            let paths: Vec<PathBuf> = active
                .keys()
                .filter(|p| p.starts_with(dir))
                .cloned()
                .collect();
            paths.iter().filter_map(|p| active.remove(p)).collect()
        };
        for writer in writers {
            writer.finish();
        }
        let path = dir.to_path_buf();
        let removed = tokio::task::spawn_blocking({
            let path = path.clone();
            move || fs::remove_dir_all(path)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        match removed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LogError::Remove { path, source }),
        }
    }

    /// Deletes the files of attempts before `attempt - 1`. Best effort: a
    /// file that cannot be deleted is only a warning.
    fn prune(&self, container_dir: &Path, attempt: u32) {
        let Some(oldest_kept) = attempt.checked_sub(1) else {
            return;
        };
        let Ok(entries) = fs::read_dir(container_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Some((old, _)) = parse_file_name(&entry.file_name()) else {
                continue;
            };
            if old >= oldest_kept
                || self
                    .inner
                    .active
                    .lock()
                    .contains_key(&container_dir.join(format!("{old}.log")))
            {
                continue;
            }
            if let Err(e) = fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot delete old container log");
            }
        }
    }
}

/// Writes one container attempt's log. Finishes the attempt when dropped.
pub struct LogWriter {
    shared: Arc<Shared>,
    store: Arc<Inner>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl LogWriter {
    /// A sink for [`crate::runtime::PodContext::logs`]. It writes as
    /// [`LogWriter::write`] does, and drops what it is given once the
    /// attempt is finished (an instance may outlive its attempt briefly).
    pub fn sink(&self) -> LogSink {
        let shared = Arc::clone(&self.shared);
        Arc::new(move |stream, bytes: &[u8]| shared.write(stream, bytes))
    }

    /// Appends a chunk of the guest's output: complete lines become records
    /// at once (one `write` for the chunk's records, so readers see them
    /// promptly), and an unterminated tail waits for the rest of its line in
    /// a buffer of that stream. Never blocks for more than one file write
    /// (and a rotation), never panics; I/O errors are logged and the records
    /// dropped.
    pub fn write(&self, stream: LogStream, bytes: &[u8]) {
        self.shared.write(stream, bytes);
    }

    /// Ends the attempt: unterminated lines are written as `P` records,
    /// followers end once they have read everything, and later writes are
    /// dropped. Idempotent; dropping the writer does the same.
    pub fn finish(&self) {
        self.shared.finish();
        let mut active = self.store.active.lock();
        if active
            .get(&self.shared.path)
            .is_some_and(|s| Arc::ptr_eq(s, &self.shared))
        {
            active.remove(&self.shared.path);
        }
    }

    /// The live file, `dir/<container>/<attempt>.log`.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One attempt's writer state, shared by the [`LogWriter`], its sinks and
/// its followers.
struct Shared {
    /// The live file; also the registry key.
    path: PathBuf,
    max_line_bytes: usize,
    max_files: u32,
    state: Mutex<WriterState>,
    /// Sent after every write that reached the file, every rotation and
    /// the finish.
    progress: watch::Sender<Progress>,
}

struct WriterState {
    out: Output,
    /// The unterminated line of stdout and of stderr, each at most
    /// `max_line_bytes`: kept apart so the streams never mix mid-line.
    partial: [Vec<u8>; 2],
    finished: bool,
}

/// What followers of an attempt watch.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Live files replaced so far: when it moves past the one a follower
    /// read, that file is complete and the follower goes on to the next.
    generation: u64,
    finished: bool,
}

impl Shared {
    fn write(&self, stream: LogStream, mut bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if state.finished {
            return;
        }
        let before = (state.out.size, state.out.generation);
        let ts = timestamp(SystemTime::now());
        let partial = &mut state.partial[stream_index(stream)];
        loop {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let piece = &bytes[..newline.unwrap_or(bytes.len())];
            push_content(
                &mut state.out,
                partial,
                piece,
                self.max_line_bytes,
                &ts,
                stream,
            );
            let Some(at) = newline else { break };
            state.out.record(&ts, stream, true, partial);
            partial.clear();
            bytes = &bytes[at + 1..];
            if bytes.is_empty() {
                break;
            }
        }
        state.out.flush();
        let generation = state.out.generation;
        if (state.out.size, generation) != before {
            self.progress.send_modify(|p| p.generation = generation);
        }
    }

    fn finish(&self) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if state.finished {
            return;
        }
        let ts = timestamp(SystemTime::now());
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let partial = std::mem::take(&mut state.partial[stream_index(stream)]);
            if !partial.is_empty() {
                state.out.record(&ts, stream, false, &partial);
            }
        }
        state.out.flush();
        state.out.file = None;
        state.out.batch = Vec::new();
        state.finished = true;
        let generation = state.out.generation;
        self.progress.send_modify(|p| {
            p.generation = generation;
            p.finished = true;
        });
    }
}

/// Adds `data` (no newline in it) to a stream's unterminated line, writing
/// `P` records of `max` bytes while it holds more than `max`. A line of
/// exactly `max` bytes stays whole, so it can still end as one `F` record.
fn push_content(
    out: &mut Output,
    partial: &mut Vec<u8>,
    mut data: &[u8],
    max: usize,
    ts: &[u8; TS_LEN],
    stream: LogStream,
) {
    loop {
        let room = max.saturating_sub(partial.len());
        if data.len() <= room {
            partial.extend_from_slice(data);
            return;
        }
        partial.extend_from_slice(&data[..room]);
        data = &data[room..];
        out.record(ts, stream, false, partial);
        partial.clear();
    }
}

/// The live file and the records waiting for its next `write`.
struct Output {
    path: PathBuf,
    /// `None` until the first write, after the attempt finished, or when a
    /// rotation could not create the new live file (retried at the next
    /// write).
    file: Option<File>,
    /// The live file existed when the attempt's writer started but is not
    /// yet opened for writing: opening it is not a new file (no new
    /// generation). Creating a file that did not exist is one, which is
    /// how a follower that found no file learns of the first.
    unopened: bool,
    size: u64,
    /// [`Progress::generation`]: bumped each time a new live file is created,
    /// which only happens after the previous one was renamed away.
    generation: u64,
    batch: Vec<u8>,
    /// The last write failed: warn once per run of failures, not per write.
    failing: bool,
    max_file_bytes: u64,
    max_files: u32,
}

impl Output {
    fn record(&mut self, ts: &[u8; TS_LEN], stream: LogStream, full: bool, content: &[u8]) {
        let name = stream_name(stream);
        let len = (TS_LEN + name.len() + content.len() + 5) as u64;
        let pending = self.size + self.batch.len() as u64;
        if pending > 0 && pending + len > self.max_file_bytes {
            self.flush();
            self.rotate();
        }
        self.batch.extend_from_slice(ts);
        self.batch.push(b' ');
        self.batch.extend_from_slice(name);
        self.batch
            .extend_from_slice(if full { b" F " } else { b" P " });
        self.batch.extend_from_slice(content);
        self.batch.push(b'\n');
        if self.batch.len() >= MAX_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        if self.file.is_none() {
            match create_append(&self.path) {
                Ok(file) => {
                    self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Some(file);
                    if !std::mem::take(&mut self.unopened) {
                        self.generation += 1;
                    }
                }
                Err(e) => {
                    self.failed(&e);
                    self.batch.clear();
                    return;
                }
            }
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        match file.write_all(&self.batch) {
            Ok(()) => {
                self.size += self.batch.len() as u64;
                if self.failing {
                    self.failing = false;
                    tracing::info!(path = %self.path.display(), "container log writable again");
                }
            }
            Err(e) => self.failed(&e),
        }
        self.batch.clear();
        // A huge chunk grew the buffer; do not keep that much per container.
        if self.batch.capacity() > READ_BATCH {
            self.batch = Vec::new();
        }
    }

    fn failed(&mut self, error: &io::Error) {
        if !self.failing {
            self.failing = true;
            tracing::warn!(path = %self.path.display(), %error, "cannot write container log; dropping records");
        }
    }

    /// Shifts the rotated files up by one (dropping the oldest kept), moves
    /// the live file to `.1` and starts a new one.
    fn rotate(&mut self) {
        if self.file.is_none() && !self.unopened {
            // The live file is already gone; the next flush recreates it.
            return;
        }
        self.unopened = false;
        let moved = if self.max_files == 0 {
            fs::remove_file(&self.path)
        } else {
            let mut top = 0;
            while top < self.max_files && rotated_path(&self.path, top + 1).exists() {
                top += 1;
            }
            if top == self.max_files {
                remove_quietly(&rotated_path(&self.path, top));
                top -= 1;
            }
            for k in (1..=top).rev() {
                let (from, to) = (rotated_path(&self.path, k), rotated_path(&self.path, k + 1));
                if let Err(e) = fs::rename(&from, &to) {
                    tracing::warn!(path = %from.display(), error = %e, "cannot shift rotated container log");
                }
            }
            fs::rename(&self.path, rotated_path(&self.path, 1))
        };
        if let Err(e) = moved {
            // Keep appending to the live file; try again after another
            // `max_file_bytes` rather than at every record.
            tracing::warn!(path = %self.path.display(), error = %e, "cannot rotate container log");
            self.size = 0;
            return;
        }
        self.file = None;
        self.size = 0;
        match open_append(&self.path) {
            Ok(file) => {
                self.file = Some(file);
                self.generation += 1;
            }
            Err(e) => self.failed(&e),
        }
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete rotated container log");
    }
}

/// Opens the live file for appending, creating it and, for the attempt's
/// first record, the directories above it.
fn create_append(path: &Path) -> io::Result<File> {
    match open_append(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            open_append(path)
        }
        opened => opened,
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    // Logs may hold what a guest should not have printed: not world-readable.
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o640);
    }
    options.open(path)
}

fn stream_index(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

fn stream_name(stream: LogStream) -> &'static [u8] {
    match stream {
        LogStream::Stdout => b"stdout",
        LogStream::Stderr => b"stderr",
    }
}

/// Container names are DNS labels once validated by the API; this only
/// keeps a bad one from escaping the pod's directory.
fn check_name(container: &str) -> Result<(), LogError> {
    let ok = !container.is_empty()
        && container.len() <= 253
        && container != "."
        && container != ".."
        && !container.contains(['/', '\\', '\0']);
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidName(container.to_owned()))
    }
}

fn live_path(dir: &Path, container: &str, attempt: u32) -> PathBuf {
    dir.join(container).join(format!("{attempt}.log"))
}

fn rotated_path(live: &Path, k: u32) -> PathBuf {
    let mut path = live.as_os_str().to_owned();
    path.push(format!(".{k}"));
    PathBuf::from(path)
}

/// `<attempt>.log` is `(attempt, 0)`, `<attempt>.log.<k>` is `(attempt, k)`;
/// anything else is not a log file of ours.
fn parse_file_name(name: &OsStr) -> Option<(u32, u32)> {
    fn number(s: &str) -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
    let (attempt, rest) = name.to_str()?.split_once(".log")?;
    let attempt = number(attempt)?;
    if rest.is_empty() {
        return Some((attempt, 0));
    }
    let k = number(rest.strip_prefix('.')?)?;
    (k > 0).then_some((attempt, k))
}

/// A file of the attempt, opened when the read started.
struct Snap {
    path: PathBuf,
    file: File,
    /// Its length then: where the backward scan of `tail_lines` starts.
    len: u64,
}

/// Opens the files of one attempt, oldest first (the live file last).
fn open_attempt_files(container_dir: &Path, attempt: u32) -> Result<Vec<Snap>, LogError> {
    let list_error = |source| LogError::List {
        path: container_dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(container_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(list_error(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(list_error)?;
        if let Some((a, k)) = parse_file_name(&entry.file_name())
            && a == attempt
        {
            found.push((k, entry.path()));
        }
    }
    found.sort_by_key(|(k, _)| std::cmp::Reverse(*k));
    let mut files = Vec::with_capacity(found.len());
    for (_, path) in found {
        let file = match File::open(&path) {
            Ok(file) => file,
            // Deleted since it was listed (a prune): nothing to read there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(LogError::Open { path, source }),
        };
        let len = file
            .metadata()
            .map_err(|source| LogError::Open {
                path: path.clone(),
                source,
            })?
            .len();
        files.push(Snap { path, file, len });
    }
    Ok(files)
}

/// The async half of a read: runs the [`Cursor`] on the blocking pool and,
/// when following, waits for the writer between batches.
struct Reader {
    /// `None` only while a batch runs on the blocking pool.
    cursor: Option<Cursor>,
    follow: Option<Follow>,
    done: bool,
}

struct Follow {
    shared: Arc<Shared>,
    progress: watch::Receiver<Progress>,
    /// The generation in which the file being read was the live one.
    generation: u64,
}

impl Reader {
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if self.done {
                return None;
            }
            // Taken before reading: if the read then reaches the end, every
            // record written before this point has been read.
            let seen = self
                .follow
                .as_mut()
                .map(|f| *f.progress.borrow_and_update());
            let mut cursor = self.cursor.take()?;
            let joined = tokio::task::spawn_blocking(move || {
                let filled = cursor.fill();
                (cursor, filled)
            })
            .await;
            let (cursor, filled) = match joined {
                Ok(joined) => joined,
                Err(e) => {
                    self.done = true;
                    return Some(Err(io::Error::other(e)));
                }
            };
            self.done = cursor.remaining == Some(0);
            self.cursor = Some(cursor);
            let (out, at_end) = match filled {
                Ok(filled) => filled,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if !out.is_empty() {
                return Some(Ok(Bytes::from(out)));
            }
            if self.done || !at_end {
                continue;
            }
            let (Some(follow), Some(seen)) = (self.follow.as_mut(), seen) else {
                self.done = true;
                continue;
            };
            if seen.generation != follow.generation {
                // The file read to its end was replaced before `seen`, so
                // it is complete.
                if let Err(e) = self.next_file() {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            }
            if seen.finished {
                self.done = true;
                continue;
            }
            if follow.progress.changed().await.is_err() {
                // The writer cannot go away while we hold it; should it,
                // read what is left and stop.
                self.follow = None;
            }
        }
    }

    /// Moves to the file that became live after the one just read. Under
    /// the writer's lock, so that no rotation renames it meanwhile.
    fn next_file(&mut self) -> io::Result<()> {
        let (Some(follow), Some(cursor)) = (self.follow.as_mut(), self.cursor.as_mut()) else {
            return Ok(());
        };
        let shared = &follow.shared;
        let state = shared.state.lock();
        let now = state.out.generation;
        let kept = u64::from(shared.max_files);
        let mut target = follow.generation + 1;
        if now.saturating_sub(target) > kept {
            tracing::warn!(
                path = %shared.path.display(),
                files = now - target - kept,
                "log follower fell behind rotation; skipping deleted files"
            );
            target = now - kept;
        }
        let back = now.saturating_sub(target);
        let path = if back == 0 {
            shared.path.clone()
        } else {
            rotated_path(&shared.path, u32::try_from(back).unwrap_or(u32::MAX))
        };
        let file = File::open(&path).map_err(|e| annotate(e, "opening", &path))?;
        drop(state);
        follow.generation = target;
        cursor.switch_to(path, file);
        Ok(())
    }
}

/// The synchronous half of a read: the files, the position in them and the
/// filters. Moved to the blocking pool for each batch.
struct Cursor {
    /// Files not started yet, oldest first.
    queue: VecDeque<Snap>,
    current: Option<(PathBuf, BufReader<File>)>,
    /// The record being read; at the end of the live file, the part of a
    /// record whose `write` is still under way.
    line: Vec<u8>,
    /// `tail_lines`, applied at the first batch.
    tail: Option<u64>,
    timestamps: bool,
    /// `since`, in nanoseconds since the Unix epoch.
    since: Option<i128>,
    /// Output bytes left under `limit_bytes`.
    remaining: Option<u64>,
    /// Longer records are cut to this (bounds `line`).
    max_record: usize,
    /// A writer was active when the read started, so an unterminated record
    /// at the end of the last file is being written, not a crash remnant.
    live: bool,
}

impl Cursor {
    /// Reads records into one batch of output; `true` with it when the end
    /// of the files (or of `limit_bytes`) was reached.
    fn fill(&mut self) -> io::Result<(Vec<u8>, bool)> {
        if let Some(n) = self.tail.take() {
            self.apply_tail(n)?;
        }
        let mut out = Vec::new();
        loop {
            if self.remaining == Some(0) {
                return Ok((out, true));
            }
            if out.len() >= READ_BATCH {
                return Ok((out, false));
            }
            if self.current.is_none() {
                let Some(next) = self.queue.pop_front() else {
                    return Ok((out, true));
                };
                self.current = Some((next.path, BufReader::with_capacity(READ_BATCH, next.file)));
            }
            let Some((path, reader)) = self.current.as_mut() else {
                continue;
            };
            let complete = read_record(reader, &mut self.line, self.max_record)
                .map_err(|e| annotate(e, "reading", path))?;
            if complete {
                self.emit(&mut out);
            } else if !self.queue.is_empty() {
                // The end of a rotated file, which is complete: a record
                // without its newline is what a crash left.
                self.emit(&mut out);
                self.current = None;
            } else {
                if !self.live {
                    self.emit(&mut out);
                }
                return Ok((out, true));
            }
        }
    }

    /// Formats the record in `line` into `out` if it passes the filters.
    fn emit(&mut self, out: &mut Vec<u8>) {
        let line = std::mem::take(&mut self.line);
        if let Some(record) = Record::parse(&line) {
            let recent = match self.since {
                None => true,
                Some(since) => parse_timestamp(record.timestamp).is_some_and(|t| t >= since),
            };
            if recent {
                let start = out.len();
                if self.timestamps {
                    out.extend_from_slice(record.timestamp);
                    out.push(b' ');
                }
                out.extend_from_slice(record.content);
                if record.full {
                    out.push(b'\n');
                }
                if let Some(remaining) = self.remaining.as_mut() {
                    let written = (out.len() - start) as u64;
                    if written > *remaining {
                        out.truncate(start + *remaining as usize);
                        *remaining = 0;
                    } else {
                        *remaining -= written;
                    }
                }
            }
        } else if !line.is_empty() {
            tracing::debug!("skipping malformed container log record");
        }
        self.line = line;
        self.line.clear();
    }

    fn switch_to(&mut self, path: PathBuf, file: File) {
        if !self.line.is_empty() {
            tracing::debug!(path = %path.display(), "dropping unterminated record of a rotated log");
            self.line.clear();
        }
        self.queue.clear();
        self.current = Some((path, BufReader::with_capacity(READ_BATCH, file)));
    }

    /// Skips the queued files to where the last `n` lines start.
    fn apply_tail(&mut self, n: u64) -> io::Result<()> {
        let files = self.queue.make_contiguous();
        let (index, offset) = tail_start(files, n)?;
        self.queue.drain(..index);
        // The scan moved the files it read; each is read from its start
        // again, but the first from where the lines start.
        for (i, snap) in self.queue.iter_mut().enumerate() {
            let at = if i == 0 { offset } else { 0 };
            snap.file
                .seek(SeekFrom::Start(at))
                .map_err(|e| annotate(e, "seeking", &snap.path))?;
        }
        Ok(())
    }
}

/// Reads up to the next newline into `line` (without it), keeping at most
/// `cap` bytes of it. `false` when the file ended first; what was read stays
/// in `line`, and the next call goes on from there.
fn read_record(reader: &mut BufReader<File>, line: &mut Vec<u8>, cap: usize) -> io::Result<bool> {
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(false);
        }
        let newline = buf.iter().position(|&b| b == b'\n');
        let take = newline.unwrap_or(buf.len());
        let keep = take.min(cap.saturating_sub(line.len()));
        line.extend_from_slice(&buf[..keep]);
        reader.consume(take + usize::from(newline.is_some()));
        if newline.is_some() {
            return Ok(true);
        }
    }
}

/// Where the last `n` lines of `files` start: an index into `files` and an
/// offset in that file. Scans backwards from each file's length at the
/// start of the read, looking only at record starts, so a short tail of a
/// large log reads little of it.
fn tail_start(files: &mut [Snap], n: u64) -> io::Result<(usize, u64)> {
    let Some(last) = files.len().checked_sub(1) else {
        return Ok((0, 0));
    };
    let mut counter = TailCounter {
        n,
        line_ends: 0,
        newest: true,
        cut: (last, files[last].len),
    };
    let mut block = vec![0u8; SCAN_BLOCK];
    for index in (0..files.len()).rev() {
        let snap = &mut files[index];
        let len = snap.len;
        if len == 0 {
            continue;
        }
        // The first bytes after the current block, for a record whose start
        // is in the block but whose tag is past it.
        let mut after: Vec<u8> = Vec::with_capacity(HEADER_PEEK);
        let mut end = len;
        while end > 0 {
            let start = end.saturating_sub(SCAN_BLOCK as u64);
            let size = (end - start) as usize;
            let bytes = &mut block[..size];
            snap.file
                .seek(SeekFrom::Start(start))
                .and_then(|_| snap.file.read_exact(bytes))
                .map_err(|e| annotate(e, "reading", &snap.path))?;
            let mut header = [0u8; HEADER_PEEK];
            let mut search = size;
            while let Some(newline) = bytes[..search].iter().rposition(|&b| b == b'\n') {
                search = newline;
                let record = start + newline as u64 + 1;
                if record < len {
                    let h = peek(bytes, newline + 1, &after, &mut header);
                    if let Some(cut) = counter.visit(index, record, h) {
                        return Ok(cut);
                    }
                }
            }
            let h = peek(bytes, 0, &after, &mut header).to_vec();
            if start == 0
                && let Some(cut) = counter.visit(index, 0, &h)
            {
                return Ok(cut);
            }
            after = h;
            end = start;
        }
    }
    Ok((0, 0))
}

/// The first [`HEADER_PEEK`] bytes of `block[from..]` followed by `after`.
fn peek<'a>(
    block: &[u8],
    from: usize,
    after: &[u8],
    header: &'a mut [u8; HEADER_PEEK],
) -> &'a [u8] {
    let head = &block[from..];
    let a = head.len().min(HEADER_PEEK);
    header[..a].copy_from_slice(&head[..a]);
    let b = after.len().min(HEADER_PEEK - a);
    header[a..a + b].copy_from_slice(&after[..b]);
    &header[..a + b]
}

/// Counts lines while record starts are visited newest first. A record ends
/// a line if it is an `F` record, or the newest record (a line still being
/// written counts as one).
struct TailCounter {
    n: u64,
    line_ends: u64,
    newest: bool,
    /// The start of the record visited last: where the output starts when
    /// the record visited now ends the line before the wanted ones.
    cut: (usize, u64),
}

impl TailCounter {
    fn visit(&mut self, index: usize, offset: u64, header: &[u8]) -> Option<(usize, u64)> {
        let header = header.split(|&b| b == b'\n').next().unwrap_or_default();
        let ends_line = self.newest || Record::parse(header).is_none_or(|r| r.full);
        self.newest = false;
        if ends_line {
            self.line_ends += 1;
            if self.line_ends > self.n {
                return Some(self.cut);
            }
        }
        self.cut = (index, offset);
        None
    }
}

/// One parsed record, `<timestamp> <stream> <tag> <content>`.
struct Record<'a> {
    timestamp: &'a [u8],
    full: bool,
    content: &'a [u8],
}

impl<'a> Record<'a> {
    fn parse(line: &'a [u8]) -> Option<Record<'a>> {
        let mut fields = line.splitn(4, |&b| b == b' ');
        let timestamp = fields.next().filter(|t| !t.is_empty())?;
        let _stream = fields.next()?;
        // Tags may gain `:`-separated attributes, as in the CRI.
        let tag = fields.next()?;
        let full = tag.split(|&b| b == b':').next() != Some(b"P");
        Some(Record {
            timestamp,
            full,
            content: fields.next().unwrap_or_default(),
        })
    }
}

fn annotate(error: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{doing} {}: {error}", path.display()))
}

fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => i128::try_from(e.duration().as_nanos()).map_or(i128::MIN, |n| -n),
    }
}

/// `t` in UTC as `2006-01-02T15:04:05.000000000Z`: RFC 3339 with a fixed
/// nine-digit fraction, as the kubelet prints timestamps.
fn timestamp(t: SystemTime) -> [u8; TS_LEN] {
    let t = jiff::tz::Offset::UTC.to_datetime(
        jiff::Timestamp::from_nanosecond(unix_nanos(t)).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    );
    let mut buf = [b'0'; TS_LEN];
    let mut w = &mut buf[..];
    // Cannot fail for years 0..=9999; later ones are cut short.
    let _ = write!(
        w,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.subsec_nanosecond()
    );
    buf
}

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`)
/// into nanoseconds since the Unix epoch.
fn parse_timestamp(ts: &[u8]) -> Option<i128> {
    let s = std::str::from_utf8(ts).ok()?;
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_nanosecond)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::{StreamExt, TryStreamExt};
    use tempfile::TempDir;

    use super::*;

    const OUT: LogStream = LogStream::Stdout;
    const ERR: LogStream = LogStream::Stderr;

    fn store_with(max_file_bytes: u64, max_files: u32, max_line_bytes: usize) -> LogStore {
        LogStore::new(LogLimits {
            max_file_bytes,
            max_files,
            max_line_bytes,
        })
    }

    /// Everything a read returns, as text.
    async fn read_text(store: &LogStore, dir: &Path, opts: LogOptions) -> String {
        let stream = store.read(dir, "c", opts).expect("log exists");
        collect(stream).await
    }

    async fn collect(stream: impl Stream<Item = io::Result<Bytes>>) -> String {
        let chunks: Vec<Bytes> =
            tokio::time::timeout(Duration::from_secs(10), stream.try_collect())
                .await
                .expect("stream ends")
                .expect("no read error");
        String::from_utf8(chunks.concat()).expect("utf-8")
    }

    /// Reads a follow stream until `expected` bytes came.
    async fn next_text(
        stream: &mut (impl Stream<Item = io::Result<Bytes>> + Unpin),
        expected: usize,
    ) -> String {
        let mut text = Vec::new();
        while text.len() < expected {
            let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("more output in time")
                .expect("stream still open")
                .expect("no read error");
            text.extend_from_slice(&chunk);
        }
        String::from_utf8(text).expect("utf-8")
    }

    /// The records of one file: (stream, tag, content).
    fn records(path: &Path) -> Vec<(String, String, String)> {
        let text = fs::read_to_string(path).expect("log file");
        text.lines()
            .map(|line| {
                let mut f = line.splitn(4, ' ');
                let ts = f.next().unwrap();
                assert_eq!(ts.len(), TS_LEN, "timestamp {ts:?}");
                assert!(parse_timestamp(ts.as_bytes()).is_some(), "timestamp {ts:?}");
                (
                    f.next().unwrap().to_owned(),
                    f.next().unwrap().to_owned(),
                    f.next().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    fn rec(stream: &str, tag: &str, content: &str) -> (String, String, String) {
        (stream.into(), tag.into(), content.into())
    }

    fn line_path(dir: &Path, attempt: u32, k: u32) -> PathBuf {
        let live = live_path(dir, "c", attempt);
        if k == 0 { live } else { rotated_path(&live, k) }
    }

    fn numbered_lines(range: std::ops::Range<u32>) -> String {
        range.map(|i| format!("line-{i:02}\n")).collect()
    }

    #[tokio::test]
    async fn lines_split_across_chunks_are_joined() {
        let tmp = TempDir::new().unwrap();
        let store = LogStore::default();
        let w = store.open(tmp.path(), "c", 0).unwrap();
        let sink = w.sink();
        sink(OUT, b"hel");
        sink(OUT, b"lo\nwor");
        sink(OUT, b"ld\n\nlast");
        w.finish();
        assert_eq!(
            records(w.path()),
            vec![
                rec("stdout", "F", "hello"),
                rec("stdout", "F", "world"),
                rec("stdout", "F", ""),
                rec("stdout", "P", "last"),
            ]
        );
        assert_eq!(
            read_text(&store, tmp.path(), LogOptions::default()).await,
            "hello\nworld\n\nlast"
        );
    }

    #[tokio::test]
    async fn stdout_and_stderr_lines_never_mix_mid_line() {
        let tmp = TempDir::new().unwrap();
        let store = LogStore::default();
        let w = store.open(tmp.path(), "c", 0).unwrap();
        w.write(OUT, b"out begins");
        w.write(ERR, b"err one\nerr ");
        w.write(OUT, b" and ends\n");
        w.write(ERR, b"two\n");
        drop(w);
        assert_eq!(
            records(&line_path(tmp.path(), 0, 0)),
            vec![
                rec("stderr", "F", "err one"),
                rec("stdout", "F", "out begins and ends"),
                rec("stderr", "F", "err two"),
            ]
        );
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_becomes_partial_records() {
        let tmp = TempDir::new().unwrap();
        let store = store_with(1 << 20, 5, 8);
        let w = store.open(tmp.path(), "c", 0).unwrap();
        w.write(OUT, b"abcdefghijkl");
        w.write(OUT, b"mnopqrst\n12345678\nshort\n");
        w.finish();
        assert_eq!(
            records(w.path()),
            vec![
                rec("stdout", "P", "abcdefgh"),
                rec("stdout", "P", "ijklmnop"),
                rec("stdout", "F", "qrst"),
                rec("stdout", "F", "12345678"),
                rec("stdout", "F", "short"),
            ]
        );
        let all = read_text(&store, tmp.path(), LogOptions::default()).await;
        assert_eq!(all, "abcdefghijklmnopqrst\n12345678\nshort\n");
        let tail = LogOptions {
            tail_lines: Some(3),
            ..Default::default()
        };
        assert_eq!(
            read_text(&store, tmp.path(), tail).await,
            all,
            "a split line counts once"
        );
    }

    #[tokio::test]
    async fn rotation_keeps_max_files_and_drops_the_oldest() {
        let tmp = TempDir::new().unwrap();
        // Each record of "line-NN" is 48 bytes: two per file.
        let store = store_with(100, 2, 1024);
        let w = store.open(tmp.path(), "c", 0).unwrap();
        for i in 0..10 {
            w.write(OUT, format!("line-{i:02}\n").as_bytes());
        }
        w.finish();
        let contents = |k| -> Vec<String> {
            records(&line_path(tmp.path(), 0, k))
                .into_iter()
                .map(|r| r.2)
                .collect()
        };
        assert_eq!(contents(2), ["line-04", "line-05"]);
        assert_eq!(contents(1), ["line-06", "line-07"]);
        assert_eq!(contents(0), ["line-08", "line-09"]);
        assert!(!line_path(tmp.path(), 0, 3).exists());
        assert_eq!(
            read_text(&store, tmp.path(), LogOptions::default()).await,
            numbered_lines(4..10)
        );
    }

    #[tokio::test]
    async fn tail_counts_lines_from_the_end_across_rotated_files() {
        let tmp = TempDir::new().unwrap();
        let store = store_with(100, 10, 1024);
        let w = store.open(tmp.path(), "c", 0).unwrap();
        for i in 0..10 {
            w.write(OUT, format!("line-{i:02}\n").as_bytes());
        }
        w.finish();
        let tail = |n| LogOptions {
            tail_lines: Some(n),
            ..Default::default()
        };
        assert_eq!(
            read_text(&store, tmp.path(), tail(3)).await,
            numbered_lines(7..10)
        );
        assert_eq!(
            read_text(&store, tmp.path(), tail(5)).await,
            numbered_lines(5..10)
        );
        assert_eq!(read_text(&store, tmp.path(), tail(0)).await, "");
        assert_eq!(
            read_text(&store, tmp.path(), tail(100)).await,
            numbered_lines(0..10)
        );
    }

    #[tokio::test]
    async fn tail_finds_record_starts_across_scan_blocks() {
        let tmp = TempDir::new().unwrap();
        let store = store_with(1 << 30, 1, 300);
        let w = store.open(tmp.path(), "c", 0).unwrap();
        // Lines of varied length so that record starts and tags fall on
        // every side of the 64 KiB scan blocks.
        let lines: Vec<String> = (0..2000)
            .map(|i| format!("{i:05}-{}", "x".repeat(i * 7 % 200)))
            .collect();
        for line in &lines {
            w.write(OUT, format!("{line}\n").as_bytes());
        }
        w.finish();
        for n in [1, 2, 17, 500, 1999, 2000, 2001] {
            let want: String = lines[lines.len().saturating_sub(n)..]
                .iter()
                .map(|l| format!("{l}\n"))
                .collect();
            let opts = LogOptions {
                tail_lines: Some(n as u64),
                ..Default::default()
            };
            assert_eq!(read_text(&store, tmp.path(), opts).await, want, "tail {n}");
        }
    }

    #[tokio::test]
    async fn timestamps_prefix_each_record_only_when_asked() {
        let tmp = TempDir::new().unwrap();
        let store = store_with(1 << 20, 5, 4);
        let before = unix_nanos(SystemTime::now());
        let w = store.open(tmp.path(), "c", 0).unwrap();
        w.write(OUT, b"one\nlonger\n");
        w.finish();
        let after = unix_nanos(SystemTime::now());
        assert_eq!(
            read_text(&store, tmp.path(), LogOptions::default()).await,
            "one\nlonger\n"
        );
        let stamped = read_text(
            &store,
            tmp.path(),
            LogOptions {
                timestamps: true,
                ..Default::default()
            },
        )
        .await;
        // As the kubelet does, every record gets its timestamp, the pieces
        // of a split line too.
        let mut rest = stamped.as_str();
        for content in ["one\n", "long", "er\n"] {
            let (ts, after_ts) = rest.split_at(TS_LEN);
            let t = parse_timestamp(ts.as_bytes()).expect("RFC 3339");
            assert!(before <= t && t <= after, "{ts} within the test");
            let after_space = after_ts
                .strip_prefix(' ')
                .expect("space after the timestamp");
            assert!(after_space.starts_with(content), "{stamped:?}");
            rest = &after_space[content.len()..];
        }
        assert_eq!(rest, "");
    }

    #[test]
    fn timestamps_round_trip_and_accept_other_rfc3339_forms() {
        let t = UNIX_EPOCH + Duration::new(1_714_564_800, 123_456_789);
        let ts = timestamp(t);
        assert_eq!(&ts, b"2024-05-01T12:00:00.123456789Z");
        assert_eq!(parse_timestamp(&ts), Some(unix_nanos(t)));
        assert_eq!(
            parse_timestamp(b"2024-05-01T14:00:00.5+02:00"),
            Some(unix_nanos(
                UNIX_EPOCH + Duration::new(1_714_564_800, 500_000_000)
            ))
        );
        assert_eq!(
            parse_timestamp(b"2024-05-01T12:00:00Z"),
            Some(unix_nanos(UNIX_EPOCH + Duration::from_secs(1_714_564_800)))
        );
        assert_eq!(parse_timestamp(b"2024-13-01T12:00:00Z"), None);
        assert_eq!(parse_timestamp(b"yesterday"), None);
    }

    #[tokio::test]
    async fn since_skips_older_records() {
        let tmp = TempDir::new().unwrap();
        let store = LogStore::default();
        let w = store.open(tmp.path(), "c", 0).unwrap();
        w.write(OUT, b"old\n");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let since = SystemTime::now();
        w.write(OUT, b"new\n");
        w.finish();
        let opts = LogOptions {
            since: Some(since),
            ..Default::default()
        };
        assert_eq!(read_text(&store, tmp.path(), opts).await, "new\n");
    }

    #[tokio::test]
    async fn previous_reads_the_attempt_before_the_latest() {
        let tmp = TempDir::new().unwrap();
        let store = LogStore::default();
        let first = store.open(tmp.path(), "c", 0).unwrap();
        first.write(OUT, b"first run\n");
        drop(first);
        let second = store.open(tmp.path(), "c", 1).unwrap();
        second.write(OUT, b"second run\n");
        drop(second);
        let previous = LogOptions {
            previous: true,
            ..Default::default()
        };
        assert_eq!(store.latest_attempt(tmp.path(), "c").unwrap(), Some(1));
        assert_eq!(
            read_text(&store, tmp.path(), LogOptions::default()).await,
            "second run\n"
        );
        assert_eq!(
            read_text(&store, tmp.path(), previous.clone()).await,
            "first run\n"
        );
        // Following an attempt no one writes ends at its end.
        let following = LogOptions {
            follow: true,
            ..previous.clone()
        };
        assert_eq!(
            read_text(&store, tmp.path(), following).await,
            "first run\n"
        );
        let explicit = store.read_at(tmp.path(), "c", 1, previous.clone()).unwrap();
        assert_eq!(collect(explicit).await, "first run\n");
        assert!(matches!(
            store.read_at(tmp.path(), "c", 0, previous),
            Err(LogError::NotFound { attempt: None, .. })
        ));
    }

    #[tokio::test]
    async fn a_container_without_logs_is_not_found() {
        let tmp = TempDir::new().unwrap();
        let store = LogStore::default();
        let err = store
            .read(tmp.path(), "c", LogOptions::default())
            .err()
            .expect("no log");
        assert!(
            matches!(err, LogError::NotFound { attempt: None, .. }),
            "{err}"
        );
        drop(store.open(tmp.path(), "c", 0).unwrap());
        let err = store
            .read_at(tmp.path(), "c", 3, LogOptions::default())
            .err()
            .expect("no log");
        assert_eq!(err.to_string(), r#"no log of container "c" attempt 3"#);
        assert!(matches!(
            store.read(tmp.path(), "../c", LogOptions::default()),
            Err(LogError::InvalidName(_))
        ));
    }

    #[tokio::test]
    async fn opening_an_attempt_prunes_all_but_the_previous_one() {
        let tmp = TempDir::new().unwrap();
        let store = LogStore::default();
        for attempt in 0..3 {
            let w = store.open(tmp.path(), "c", attempt).unwrap();
            w.write(OUT, b"x\n");
        }
        assert!(!line_path(tmp.path(), 0, 0).exists());
        assert!(line_path(tmp.path(), 1, 0).exists());
        assert!(line_path(tmp.path(), 2, 0).exists());
    }

    #[tokio::test]
    async fn an_attempt_cannot_have_two_writers_at_once() {
        let tmp = TempDir::new().unwrap();
        let store = LogStore::default();
        let w = store.open(tmp.path(), "c", 0).unwrap();
        assert!(matches!(
            store.open(tmp.path(), "c", 0),
            Err(LogError::AlreadyOpen { attempt: 0, .. })
        ));
        w.write(OUT, b"before restart\n");
        drop(w);
        // A writer reopened after the first finished appends.
        let w = store.open(tmp.path(), "c", 0).unwrap();
        w.write(OUT, b"after restart\n");
        drop(w);
        assert_eq!(
            read_text(&store, tmp.path(), LogOptions::default()).await,
            "before restart\nafter restart\n"
        );
    }

    #[tokio::test]
    async fn limit_bytes_cuts_the_stream() {
        let tmp = TempDir::new().unwrap();
        let store = LogStore::default();
        let w = store.open(tmp.path(), "c", 0).unwrap();
        w.write(OUT, b"aaaa\nbbbb\ncccc\n");
        let limited = LogOptions {
            limit_bytes: Some(7),
            follow: true,
            ..Default::default()
        };
        // Ends at the limit even while following an active writer.
        assert_eq!(read_text(&store, tmp.path(), limited).await, "aaaa\nbb");
        let exact = LogOptions {
            limit_bytes: Some(10),
            ..Default::default()
        };
        assert_eq!(read_text(&store, tmp.path(), exact).await, "aaaa\nbbbb\n");
    }

    #[tokio::test]
    async fn a_quiet_attempt_creates_nothing_and_its_live_log_reads_empty() {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("pod").join("logs");
        let store = LogStore::default();
        let w = store.open(&dir, "c", 0).unwrap();
        assert!(!tmp.path().join("pod").exists(), "nothing created at open");
        let plain = store.read_at(&dir, "c", 0, LogOptions::default()).unwrap();
        assert_eq!(collect(plain).await, "");
        // A follower that found no file gets the first record once the
        // writer creates the file, directories included.
        let follow = LogOptions {
            follow: true,
            ..Default::default()
        };
        let mut stream = Box::pin(store.read_at(&dir, "c", 0, follow).unwrap());
        let waiting = tokio::spawn(async move {
            let text = next_text(&mut stream, 6).await;
            (text, stream)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.write(OUT, b"first\n");
        let (text, mut stream) = waiting.await.unwrap();
        assert_eq!(text, "first\n");
        assert!(line_path(&dir, 0, 0).exists());
        w.finish();
        assert_eq!(collect(&mut stream).await, "");
        // A finished attempt that never printed has no file: not found
        // here, and the kubelet, knowing it ran, answers an empty log.
        drop(store.open(&dir, "c", 1).unwrap());
        assert!(matches!(
            store.read_at(&dir, "c", 1, LogOptions::default()),
            Err(LogError::NotFound {
                attempt: Some(1),
                ..
            })
        ));
    }

    #[tokio::test]
    async fn follow_receives_lines_written_after_it_started_and_ends_when_the_writer_finishes() {
        let tmp = TempDir::new().unwrap();
        let store = LogStore::default();
        let w = store.open(tmp.path(), "c", 0).unwrap();
        w.write(OUT, b"before\n");
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let mut stream = Box::pin(store.read(tmp.path(), "c", opts).unwrap());
        assert_eq!(next_text(&mut stream, 7).await, "before\n");
        let waiting = tokio::spawn(async move {
            let text = next_text(&mut stream, 6).await;
            (text, stream)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        w.write(OUT, b"after\nunfinished");
        let (text, mut stream) = waiting.await.unwrap();
        assert_eq!(text, "after\n");
        w.finish();
        assert_eq!(collect(&mut stream).await, "unfinished");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn follow_continues_across_rotations_without_loss_or_duplicates() {
        let tmp = TempDir::new().unwrap();
        // About two records per file: a rotation every other line.
        let store = store_with(100, 500, 1024);
        let w = store.open(tmp.path(), "c", 0).unwrap();
        w.write(OUT, b"line-00\n");
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let stream = store.read(tmp.path(), "c", opts).unwrap();
        let follower = tokio::spawn(collect(stream));
        for i in 1..300 {
            w.write(OUT, format!("line-{i:02}\n").as_bytes());
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        w.finish();
        assert_eq!(follower.await.unwrap(), numbered_lines(0..300));
    }

    #[tokio::test]
    async fn a_follower_behind_more_than_max_files_rotations_skips_to_the_oldest_kept_file() {
        let tmp = TempDir::new().unwrap();
        let store = store_with(100, 2, 1024);
        let w = store.open(tmp.path(), "c", 0).unwrap();
        w.write(OUT, b"line-00\n");
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        // The files are opened now; nothing is read before the first poll.
        let stream = store.read(tmp.path(), "c", opts).unwrap();
        for i in 1..20 {
            w.write(OUT, format!("line-{i:02}\n").as_bytes());
        }
        w.finish();
        // The file open at the start holds lines 0 and 1; of the rest only
        // the live file and two rotated ones are left.
        let want = numbered_lines(0..2) + &numbered_lines(14..20);
        assert_eq!(collect(stream).await, want);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_do_not_corrupt_records() {
        let tmp = TempDir::new().unwrap();
        let store = store_with(4096, 1000, 1024);
        let w = store.open(tmp.path(), "c", 0).unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let sink = w.sink();
                tokio::spawn(async move {
                    let stream = if t % 2 == 0 { OUT } else { ERR };
                    for i in 0..200 {
                        sink(
                            stream,
                            format!("task-{t:02} line-{i:03} {}\n", "y".repeat(i % 50)).as_bytes(),
                        );
                        if i % 10 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        w.finish();
        let text = read_text(&store, tmp.path(), LogOptions::default()).await;
        let mut seen: Vec<Vec<usize>> = vec![Vec::new(); 16];
        for line in text.lines() {
            let (task, rest) = line
                .strip_prefix("task-")
                .and_then(|l| l.split_once(" line-"))
                .unwrap_or_else(|| panic!("garbled line {line:?}"));
            let (i, pad) = rest.split_once(' ').expect("padding");
            let (t, i): (usize, usize) = (task.parse().unwrap(), i.parse().unwrap());
            assert_eq!(pad, "y".repeat(i % 50), "line {line:?}");
            seen[t].push(i);
        }
        for (t, lines) in seen.iter().enumerate() {
            assert_eq!(
                *lines,
                (0..200).collect::<Vec<_>>(),
                "task {t} in order, once each"
            );
        }
        let mut k = 0;
        while line_path(tmp.path(), 0, k + 1).exists() {
            k += 1;
        }
        for file in 0..=k {
            for (stream, tag, _) in records(&line_path(tmp.path(), 0, file)) {
                assert!(stream == "stdout" || stream == "stderr");
                assert_eq!(tag, "F");
            }
        }
    }

    #[tokio::test]
    async fn removing_a_pod_deletes_its_logs_and_ends_followers() {
        let tmp = TempDir::new().unwrap();
        let pod = tmp.path().join("ns_web_uid");
        let store = LogStore::default();
        let w = store.open(&pod, "c", 0).unwrap();
        w.write(OUT, b"bye\n");
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let stream = store.read(&pod, "c", opts).unwrap();
        store.remove_pod(&pod).await.unwrap();
        assert!(!pod.exists());
        assert_eq!(collect(stream).await, "bye\n");
        // Writes after the removal are dropped, not errors or panics.
        w.write(OUT, b"too late\n");
        assert!(!pod.exists());
        store.remove_pod(&pod).await.unwrap();
    }
}
