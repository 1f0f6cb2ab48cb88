//! runnel's cross-crate tests live in `tests/`; this library only compiles the README's example
//! as a doc test, so the README cannot drift from the API.

#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
