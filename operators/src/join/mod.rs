//! Joins of two keyed streams: records of the same key that fall in the same window
//! ([`windowed`]), or whose event times are within an interval of each other ([`interval`]).

pub mod interval;
pub mod windowed;
