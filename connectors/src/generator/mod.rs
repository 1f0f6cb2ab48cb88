//! Deterministic generators: the Bid stream of benchmarks W0..W2 ([`BidGenerator`]) and the
//! clickstream sample data ([`page_views`]). Both are pure functions of their configuration, so
//! every run (and every worker count) sees the same records.

mod bids;
mod clicks;

pub use bids::{Bid, BidGenerator};
pub use clicks::{
    page_views, write_page_views, PageView, MAX_SESSION_GAP_MS, MAX_SESSION_VIEWS, MAX_VIEW_GAP_MS,
    MIN_SESSION_GAP_MS, MIN_SESSION_VIEWS, MIN_VIEW_GAP_MS,
};
