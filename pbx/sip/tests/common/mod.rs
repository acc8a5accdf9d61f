//! Helpers shared by the integration tests of this crate.
#![allow(dead_code)]

pub mod fuzz_bodies;
