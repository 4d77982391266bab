//! Lease bookkeeping (in progress).
