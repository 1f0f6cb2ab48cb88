//! A plain little-endian encoding for the hot path of incremental checkpoints.
//!
//! An operator that tracks its changes ([`crate::EpochLogic::tracks_changes`]) has them taken
//! at the end of every epoch between two checkpoints, on the worker's thread. For states that
//! grow with every record (a gigabyte of changes per worker every 10 s in Nexmark's q18-q20),
//! the encoding is most of that cost. [`Put`] writes fixed-width little-endian integers and
//! strings as a LEB128 length (one byte below 128, where bincode writes eight) then their
//! bytes; [`Wire`] reads them back, and its errors name what was being read, where, and in
//! what. In the `changes` group of `benches/benches/micro.rs` it writes Nexmark bids read in
//! memory order (as q18 writes its added rows) in 0-19% less time than bincode over five
//! runs, and read in a scattered order in 17% less to 38% more, where cache misses take half
//! the time or more (BENCHMARKS.md, sessions 26 and 27).
//!
//! ```
//! use runnel_engine::wire::{Put, Wire};
//! let mut out = Vec::new();
//! out.put_u64(7);
//! out.put_str("seven");
//! let mut w = Wire::new("an example", &out);
//! assert_eq!(w.u64("a count").unwrap(), 7);
//! assert_eq!(w.str("a name").unwrap(), "seven");
//! w.end().unwrap();
//! ```

use crate::error::{Error, Result};

/// Writes values onto the end of a buffer (see the [module docs](self)).
pub trait Put {
    /// A byte.
    fn put_u8(&mut self, v: u8);
    /// A `u32`, 4 bytes little endian.
    fn put_u32(&mut self, v: u32);
    /// A `u64`, 8 bytes little endian.
    fn put_u64(&mut self, v: u64);
    /// An `i64`, 8 bytes little endian.
    fn put_i64(&mut self, v: i64);
    /// A length or count: LEB128 (7 bits a byte, the low ones first; one byte below 128).
    fn put_len(&mut self, v: usize);
    /// A string: its length in bytes ([`Put::put_len`]), then its UTF-8 bytes.
    fn put_str(&mut self, s: &str);
}

impl Put for Vec<u8> {
    #[inline]
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }

    #[inline]
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    fn put_i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    fn put_len(&mut self, v: usize) {
        let mut v = v as u64;
        while v >= 0x80 {
            self.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }

    #[inline]
    fn put_str(&mut self, s: &str) {
        self.put_len(s.len());
        self.extend_from_slice(s.as_bytes());
    }
}

/// Reads what [`Put`] wrote, in the same order. `of` names the bytes in errors (e.g. "q19's
/// changes"), and each read names the value it expects.
#[derive(Debug)]
pub struct Wire<'a> {
    of: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Wire<'a> {
    /// Reads `bytes` from their start; `of` says what they are, for errors.
    pub fn new(of: &'a str, bytes: &'a [u8]) -> Self {
        Wire { of, bytes, at: 0 }
    }

    /// The error for a value `what` that cannot be read at the current place.
    pub fn error(&self, what: &str, why: &str) -> Error {
        Error::Runtime(format!(
            "{} are unreadable: {what} at byte {} of {}: {why}",
            self.of,
            self.at,
            self.bytes.len()
        ))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self.bytes.get(self.at..).and_then(|rest| rest.get(..n)) {
            Some(b) => {
                self.at += n;
                Ok(b)
            }
            None => Err(self.error(
                what,
                &format!("needs {n} bytes, {} are left", self.bytes.len() - self.at),
            )),
        }
    }

    /// A byte.
    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    /// A `u32` ([`Put::put_u32`]).
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// A `u64` ([`Put::put_u64`]).
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// An `i64` ([`Put::put_i64`]).
    pub fn i64(&mut self, what: &str) -> Result<i64> {
        let b = self.take(8, what)?;
        Ok(i64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    /// A length or count ([`Put::put_len`]). It must fit in what is left (every counted item
    /// takes a byte at least), so a damaged count cannot ask for a huge allocation.
    pub fn len(&mut self, what: &str) -> Result<usize> {
        let start = self.at;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                let left = (self.bytes.len() - self.at) as u64;
                if v > left {
                    self.at = start;
                    return Err(
                        self.error(what, &format!("{v} is more than the {left} bytes left"))
                    );
                }
                return Ok(v as usize);
            }
        }
        self.at = start;
        Err(self.error(what, "its length runs over 10 bytes"))
    }

    /// A string ([`Put::put_str`]), borrowed from the bytes.
    pub fn str(&mut self, what: &str) -> Result<&'a str> {
        let n = self.len(what)?;
        let at = self.at;
        let b = self.take(n, what)?;
        std::str::from_utf8(b).map_err(|e| {
            self.at = at;
            self.error(what, &format!("not UTF-8 ({e})"))
        })
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// Checks that every byte has been read.
    pub fn end(self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.error(
                "their end",
                &format!("{} bytes are left over", self.bytes.len() - self.at),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum V {
        U8(u8),
        U32(u32),
        U64(u64),
        I64(i64),
        Len(usize),
        Str(String),
    }

    fn value() -> impl Strategy<Value = V> {
        prop_oneof![
            any::<u8>().prop_map(V::U8),
            any::<u32>().prop_map(V::U32),
            any::<u64>().prop_map(V::U64),
            any::<i64>().prop_map(V::I64),
            // Lengths must fit in what follows: small ones only (see `Wire::len`).
            (0usize..3).prop_map(V::Len),
            ".{0,40}".prop_map(V::Str),
        ]
    }

    /// Every value comes back as written, each with the size computed here by hand.
    #[test]
    fn values_round_trip() {
        proptest!(|(vs in proptest::collection::vec(value(), 0..40))| {
            let mut out = Vec::new();
            let mut size = 0;
            for v in &vs {
                match v {
                    V::U8(x) => { out.put_u8(*x); size += 1; }
                    V::U32(x) => { out.put_u32(*x); size += 4; }
                    V::U64(x) => { out.put_u64(*x); size += 8; }
                    V::I64(x) => { out.put_i64(*x); size += 8; }
                    V::Len(x) => { out.put_len(*x); size += 1; }
                    V::Str(s) => {
                        out.put_str(s);
                        size += s.len() + if s.len() < 128 { 1 } else { 2 };
                    }
                }
            }
            // Lengths written last must have their bytes after them.
            out.extend_from_slice(&[0, 0]);
            prop_assert_eq!(out.len(), size + 2);
            let mut w = Wire::new("test bytes", &out);
            for v in &vs {
                match v {
                    V::U8(x) => prop_assert_eq!(w.u8("u8").unwrap(), *x),
                    V::U32(x) => prop_assert_eq!(w.u32("u32").unwrap(), *x),
                    V::U64(x) => prop_assert_eq!(w.u64("u64").unwrap(), *x),
                    V::I64(x) => prop_assert_eq!(w.i64("i64").unwrap(), *x),
                    V::Len(x) => prop_assert_eq!(w.len("len").unwrap(), *x),
                    V::Str(s) => prop_assert_eq!(w.str("str").unwrap(), s.as_str()),
                }
            }
            prop_assert_eq!(w.u8("pad").unwrap(), 0);
            prop_assert_eq!(w.u8("pad").unwrap(), 0);
            w.end().unwrap();
        });
    }

    /// LEB128 by hand: 300 is 0b10_0101100, so 0xac (low 7 bits, more follow), then 0x02.
    #[test]
    fn lengths_are_leb128() {
        let mut out = Vec::new();
        out.put_len(300);
        assert_eq!(out, [0xac, 0x02]);
        out.put_len(127);
        assert_eq!(out[2..], [0x7f]);
    }

    #[test]
    fn damage_is_named() {
        let mut out = Vec::new();
        out.put_u64(1);
        out.put_str("abc");
        // Cut short.
        let mut w = Wire::new("q0's changes", &out[..5]);
        let e = w.u64("the count").unwrap_err().to_string();
        assert!(
            e.contains(
                "q0's changes are unreadable: the count at byte 0 of 5: needs 8 bytes, 5 are left"
            ),
            "{e}"
        );
        // A length past the end.
        let mut w = Wire::new("q0's changes", &out[..10]);
        w.u64("the count").unwrap();
        let e = w.str("a name").unwrap_err().to_string();
        assert!(
            e.contains("a name at byte 8 of 10: 3 is more than the 1 bytes left"),
            "{e}"
        );
        // Not UTF-8.
        let mut bad = Vec::new();
        bad.put_len(2);
        bad.extend_from_slice(&[0xff, 0xfe]);
        let e = Wire::new("x", &bad).str("a name").unwrap_err().to_string();
        assert!(e.contains("a name at byte 1 of 3: not UTF-8"), "{e}");
        // Bytes left over.
        let w = Wire::new("x", &out);
        let e = w.end().unwrap_err().to_string();
        assert!(
            e.contains("their end at byte 0 of 12: 12 bytes are left over"),
            "{e}"
        );
        // A length that never ends.
        let e = Wire::new("x", &[0xff; 12])
            .len("a count")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a count at byte 0 of 12: its length runs over 10 bytes"),
            "{e}"
        );
    }
}
