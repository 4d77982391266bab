//! Embedded redb backend (in progress).
