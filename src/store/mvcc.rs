//! In-memory MVCC index (in progress).
