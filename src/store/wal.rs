//! The redb backend's write-ahead log: where a write becomes durable before
//! redb holds it.
//!
//! A durable redb commit writes back every B-tree page the batch touched
//! and the allocator's state, scattered over the file (36 KiB for a single
//! small put), and syncs them all. The log instead appends one record per
//! batch where its last record ended and syncs only that (`fdatasync`).
//! The file is filled with zeros ahead of the records, a mebibyte at a
//! time, so an append overwrites blocks the file already has: the sync
//! writes the record's pages and no metadata, and the file system's
//! journal is not committed on every write.
//!
//! The redb backend's checkpointer applies logged batches to redb in bulk,
//! one durable commit per interval, and notes in that commit the sequence
//! number of the last record it holds (`wal_seq`). Once redb holds every
//! record, the writer starts the log over from the top.
//!
//! # Record
//! `[len u32][crc32 u32][seq u64][body: len bytes]`, little-endian; the
//! checksum covers `seq` and the body. The body is the batch's revision
//! after it (`i64`), the number of changes (`u32`) and each change: a tag
//! byte, then its fields (see [`encode_change`]).
//!
//! # Recovery
//! Records are read from the top while each is whole (its checksum holds)
//! and follows the one before it (`seq` one more). A torn last append ends
//! the log there; so do records left from before the log last started
//! over, whose sequence numbers are lower. The store applies the records
//! newer than redb's `wal_seq` to redb before it serves anything.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::mvcc::Change;
use super::{EventType, KeyValue, Revision, StoreError};

/// The file is filled with zeros this far ahead of the records at a time...
const ZERO_CHUNK: usize = 1 << 20;
/// ...a page at a time.
const PAGE: usize = 4096;
/// Header of a record: length, checksum, sequence number.
const HEADER: usize = 4 + 4 + 8;

/// The log's file, next to the store's: `store.redb` → `store.redb.wal`.
pub fn path_for(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(".wal");
    store.with_file_name(name)
}

/// One batch as logged: the changes it made and the revision after it.
#[derive(Debug)]
pub struct Logged {
    pub seq: u64,
    pub current: Revision,
    pub changes: Vec<Change>,
}

/// The open log, written by the store's writer thread alone.
pub struct Wal {
    file: File,
    /// Where the next record goes.
    end: u64,
    /// How far the file holds zeros or old records (its length).
    filled: u64,
    /// The next record's sequence number.
    next_seq: u64,
    buf: Vec<u8>,
}

impl Wal {
    /// Opens (or creates) the log at `path` and reads the records it holds,
    /// oldest first. Appending starts over from the top, so the caller must
    /// make every returned record durable elsewhere before it appends.
    ///
    /// # Errors
    /// The file cannot be opened, read or created durably, or a whole
    /// record in it does not decode.
    pub fn open(path: &Path) -> Result<(Wal, Vec<Logged>), StoreError> {
        let io = |what: &'static str| {
            move |e: io::Error| StoreError::Storage(format!("{what} {}: {e}", path.display()))
        };
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io("opening"))?;
        if !existed {
            // The file's name must survive a crash as surely as the
            // records that will be acknowledged from it.
            file.sync_all().map_err(io("syncing"))?;
            if let Some(dir) = path.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io("syncing the directory of"))?;
            }
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("reading"))?;
        // Reading may have cached the file in large folios; appends must
        // find it uncached (see `append`), so the clean pages go.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        let records = read_records(&bytes)?;
        let next_seq = records.last().map_or(1, |r| r.seq + 1);
        Ok((
            Wal {
                file,
                end: 0,
                filled: bytes.len() as u64,
                next_seq,
                buf: Vec::with_capacity(4096),
            },
            records,
        ))
    }

    /// Numbers the next record after `seq` at least (redb's `wal_seq`, when
    /// the log holds nothing newer).
    pub fn continue_after(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// Bytes of records since the log last started over.
    pub fn logged_bytes(&self) -> u64 {
        self.end
    }

    /// Appends one batch and syncs it; returns its sequence number.
    ///
    /// # Errors
    /// The write or the sync failed; the record may or may not be whole
    /// on disk, so the store must stop (a later record would follow a torn
    /// one, and recovery would stop before it).
    pub fn append(&mut self, changes: &[Change], current: Revision) -> io::Result<u64> {
        let seq = self.next_seq;
        self.buf.clear();
        self.buf.extend_from_slice(&[0; HEADER]);
        self.buf.extend_from_slice(&current.to_le_bytes());
        let count = u32::try_from(changes.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.buf.extend_from_slice(&count.to_le_bytes());
        for change in changes {
            encode_change(change, &mut self.buf);
        }
        let len =
            u32::try_from(self.buf.len() - HEADER).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[8..16].copy_from_slice(&seq.to_le_bytes());
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());

        let new_end = self.end + self.buf.len() as u64;
        if new_end > self.filled {
            // Zeros past the record, so the next appends overwrite. One
            // page per write: the page cache sizes a file's folios by the
            // writes that create them, and a small record dirtying a page
            // of a 1 MiB folio would send the whole folio to disk at every
            // sync (measured: 1 MiB written per put).
            let target = new_end.next_multiple_of(ZERO_CHUNK as u64);
            let page = [0u8; PAGE];
            for at in (self.filled..target).step_by(PAGE) {
                self.file.write_all_at(&page, at)?;
            }
            self.filled = target;
        }
        self.file.write_all_at(&self.buf, self.end)?;
        self.file.sync_data()?;
        self.end = new_end;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Starts over from the top. Only once redb holds every record
    /// appended so far: the old records stay in the file until they are
    /// overwritten, and recovery skips them by their sequence numbers.
    pub fn start_over(&mut self) {
        self.end = 0;
    }
}

/// The records of a log file's contents, oldest first.
fn read_records(bytes: &[u8]) -> Result<Vec<Logged>, StoreError> {
    let mut records = Vec::new();
    let mut at = 0usize;
    let mut expected: Option<u64> = None;
    while bytes.len() - at >= HEADER {
        let word = |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap());
        let len = word(0) as usize;
        let crc = word(4);
        let Some(end) = (at + HEADER).checked_add(len).filter(|e| *e <= bytes.len()) else {
            break;
        };
        if len == 0 || crc32fast::hash(&bytes[at + 8..end]) != crc {
            break;
        }
        let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        if expected.is_some_and(|e| e != seq) {
            break;
        }
        records.push(decode_body(seq, &bytes[at + HEADER..end])?);
        expected = Some(seq + 1);
        at = end;
    }
    Ok(records)
}

// ----- changes ------------------------------------------------------------------

const TAG_RECORD: u8 = 0;
const TAG_FORGET: u8 = 1;
const TAG_COMPACTED: u8 = 2;
const TAG_LEASE_GRANTED: u8 = 3;
const TAG_LEASE_REVOKED: u8 = 4;

/// A change as the log holds it: the tag, then
/// - record: revision `i64`, sub `u32`, length `u32`, [`encode_record`];
/// - forget: revision `i64`, sub `u32`;
/// - compacted: revision `i64`;
/// - lease granted: id `i64`, TTL `i64`;
/// - lease revoked: id `i64`.
fn encode_change(change: &Change, out: &mut Vec<u8>) {
    match change {
        Change::Record { rev, sub, kind, kv } => {
            out.push(TAG_RECORD);
            out.extend_from_slice(&rev.to_le_bytes());
            out.extend_from_slice(&sub.to_le_bytes());
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            append_record(*kind, kv, out);
            let len = (out.len() - len_at - 4) as u32;
            out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
        }
        Change::Forget { rev, sub } => {
            out.push(TAG_FORGET);
            out.extend_from_slice(&rev.to_le_bytes());
            out.extend_from_slice(&sub.to_le_bytes());
        }
        Change::Compacted(rev) => {
            out.push(TAG_COMPACTED);
            out.extend_from_slice(&rev.to_le_bytes());
        }
        Change::LeaseGranted { id, ttl } => {
            out.push(TAG_LEASE_GRANTED);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&ttl.to_le_bytes());
        }
        Change::LeaseRevoked(id) => {
            out.push(TAG_LEASE_REVOKED);
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
}

/// Reads fields off the front of a record's body.
struct Cursor<'a> {
    buf: &'a [u8],
    seq: u64,
}

impl<'a> Cursor<'a> {
    fn corrupt(&self) -> StoreError {
        StoreError::Storage(format!("corrupt write-ahead log record {}", self.seq))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(self.corrupt());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
}

fn decode_body(seq: u64, body: &[u8]) -> Result<Logged, StoreError> {
    let mut c = Cursor { buf: body, seq };
    let current = c.i64()?;
    let count = c.u32()? as usize;
    // Each change takes at least nine bytes: bounds the allocation by the
    // record's size, not by a count a damaged record claims.
    let mut changes = Vec::with_capacity(count.min(body.len() / 9));
    for _ in 0..count {
        let tag = c.take(1)?[0];
        changes.push(match tag {
            TAG_RECORD => {
                let rev = c.i64()?;
                let sub = c.u32()?;
                let len = c.u32()? as usize;
                let (kind, kv) = decode_record(rev, c.take(len)?)?;
                Change::Record {
                    rev,
                    sub,
                    kind,
                    kv: Arc::new(kv),
                }
            }
            TAG_FORGET => Change::Forget {
                rev: c.i64()?,
                sub: c.u32()?,
            },
            TAG_COMPACTED => Change::Compacted(c.i64()?),
            TAG_LEASE_GRANTED => Change::LeaseGranted {
                id: c.i64()?,
                ttl: c.i64()?,
            },
            TAG_LEASE_REVOKED => Change::LeaseRevoked(c.i64()?),
            _ => return Err(c.corrupt()),
        });
    }
    if !c.buf.is_empty() {
        return Err(c.corrupt());
    }
    Ok(Logged {
        seq,
        current,
        changes,
    })
}

// ----- one key's record ------------------------------------------------------------

/// One version of a key as both the log and redb's `revs` table hold it:
/// `[kind u8][create i64][version i64][lease i64][key_len u32][key][value]`,
/// little-endian. The mod revision is the record's own revision.
pub fn encode_record(kind: EventType, kv: &KeyValue, out: &mut Vec<u8>) {
    out.clear();
    append_record(kind, kv, out);
}

fn append_record(kind: EventType, kv: &KeyValue, out: &mut Vec<u8>) {
    out.push(match kind {
        EventType::Put => 0,
        EventType::Delete => 1,
    });
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.to_le_bytes());
    out.extend_from_slice(&(kv.key.len() as u32).to_le_bytes());
    out.extend_from_slice(&kv.key);
    out.extend_from_slice(&kv.value);
}

/// Decodes [`encode_record`]'s bytes for the record at `rev`.
pub fn decode_record(rev: Revision, buf: &[u8]) -> Result<(EventType, KeyValue), StoreError> {
    let corrupt = || StoreError::Storage(format!("corrupt record at revision {rev}"));
    if buf.len() < 29 {
        return Err(corrupt());
    }
    let kind = match buf[0] {
        0 => EventType::Put,
        1 => EventType::Delete,
        _ => return Err(corrupt()),
    };
    let int = |at: usize| i64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
    let key_len = u32::from_le_bytes(buf[25..29].try_into().unwrap()) as usize;
    let key_end = 29usize
        .checked_add(key_len)
        .filter(|e| *e <= buf.len())
        .ok_or_else(corrupt)?;
    Ok((
        kind,
        KeyValue {
            key: Bytes::copy_from_slice(&buf[29..key_end]),
            value: Bytes::copy_from_slice(&buf[key_end..]),
            create_revision: int(1),
            version: int(9),
            lease: int(17),
            mod_revision: rev,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, rev: Revision) -> Arc<KeyValue> {
        Arc::new(KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 7,
        })
    }

    fn put(rev: Revision, key: &str) -> Change {
        Change::Record {
            rev,
            sub: 0,
            kind: EventType::Put,
            kv: kv(key, "v", rev),
        }
    }

    fn seqs(records: &[Logged]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn every_kind_of_change_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("store.redb"));
        assert!(path.ends_with("store.redb.wal"));
        let changes = vec![
            put(5, "a"),
            Change::Record {
                rev: 6,
                sub: 2,
                kind: EventType::Delete,
                kv: Arc::new(KeyValue {
                    value: Bytes::new(),
                    version: 0,
                    ..(*kv("b", "", 6)).clone()
                }),
            },
            Change::Forget { rev: 3, sub: 1 },
            Change::Compacted(4),
            Change::LeaseGranted { id: 9, ttl: 60 },
            Change::LeaseRevoked(8),
        ];
        {
            let (mut wal, old) = Wal::open(&path).unwrap();
            assert!(old.is_empty());
            assert_eq!(wal.append(&changes, 6).unwrap(), 1);
            assert_eq!(wal.append(&[put(7, "c")], 7).unwrap(), 2);
        }
        let (_, records) = Wal::open(&path).unwrap();
        assert_eq!(seqs(&records), [1, 2]);
        assert_eq!(records[0].current, 6);
        assert_eq!(format!("{:?}", records[0].changes), format!("{changes:?}"));
        // Zero-filled ahead: appends overwrite, the file does not grow.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), ZERO_CHUNK as u64);
    }

    #[test]
    fn a_torn_append_ends_the_log_and_started_over_records_hide_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb.wal");
        let (mut wal, _) = Wal::open(&path).unwrap();
        for rev in 1..=3 {
            wal.append(&[put(rev, "k")], rev).unwrap();
        }
        // Started over after a checkpoint: one new record over the first
        // old one; records 2 and 3 are still in the file behind it.
        wal.start_over();
        wal.append(&[put(4, "k")], 4).unwrap();
        let (_, records) = Wal::open(&path).unwrap();
        assert_eq!(
            seqs(&records),
            [4],
            "older records after it are not replayed"
        );

        // A torn append: the checksum fails, the log ends before it.
        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.continue_after(4);
        wal.append(&[put(5, "k")], 5).unwrap();
        let end = wal.logged_bytes();
        wal.append(&[put(6, "long value that gets torn")], 6)
            .unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"\xff\xff", end + HEADER as u64 + 10)
            .unwrap();
        let (_, records) = Wal::open(&path).unwrap();
        assert_eq!(seqs(&records), [5]);
    }

    #[test]
    fn garbage_never_panics_and_a_claimed_length_beyond_the_file_ends_the_log() {
        assert!(read_records(&[]).unwrap().is_empty());
        assert!(read_records(&[0xff; 64]).unwrap().is_empty());
        // A whole record (checksum right) whose body lies about its count.
        let mut rec = vec![0u8; HEADER];
        rec.extend_from_slice(&1i64.to_le_bytes());
        rec.extend_from_slice(&u32::MAX.to_le_bytes());
        let len = (rec.len() - HEADER) as u32;
        rec[0..4].copy_from_slice(&len.to_le_bytes());
        rec[8..16].copy_from_slice(&1u64.to_le_bytes());
        let crc = crc32fast::hash(&rec[8..]);
        rec[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(read_records(&rec), Err(StoreError::Storage(_))));
    }

    #[test]
    fn records_round_trip() {
        let kv = KeyValue {
            key: Bytes::from("key"),
            value: Bytes::from("value"),
            create_revision: 3,
            mod_revision: 9,
            version: 4,
            lease: 77,
        };
        let mut buf = Vec::new();
        encode_record(EventType::Put, &kv, &mut buf);
        let (kind, back) = decode_record(9, &buf).unwrap();
        assert_eq!(kind, EventType::Put);
        assert_eq!(back, kv);
        assert!(decode_record(9, &buf[..10]).is_err());
    }
}
