//! `wkube server`.
