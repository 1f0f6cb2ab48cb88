//! A plain little-endian encoding for the hot path of incremental checkpoints.
//!
//! An operator that tracks its changes ([`crate::EpochLogic::tracks_changes`]) has them taken
//! at the end of every epoch between two checkpoints, on the worker's thread. For states that
//! grow with every record (a gigabyte of changes per worker every 10 s in Nexmark's q18-q20),
//! the encoding is most of that cost. [`Put`] writes fixed-width little-endian integers,
//! LEB128 varints (7 bits a byte: an id or a price below 2^21 in 3 bytes instead of 8; signed
//! ones zigzag-encoded, for differences such as an event time less the one before it), and
//! strings as a LEB128 length (one byte below 128, where bincode writes eight) then their
//! bytes; [`Wire`] reads them back, and its errors name what was being read, where, and in
//! what. Since session 31 the Nexmark states write their ids, prices and times as varints:
//! 26-28% fewer bytes of changes for q19 and q20, 10% for q18, whose bids keep their urls.
//! The `changes` group of `benches/benches/micro.rs` times Nexmark bids written both ways and
//! through bincode (BENCHMARKS.md, sessions 26, 27 and 31).
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
    /// A `u64` in LEB128, as [`Put::put_len`]: 1 byte below 2^7, 3 below 2^21, 10 at most. For
    /// ids, prices and indexes, which are mostly far below 2^64.
    fn put_var_u64(&mut self, v: u64);
    /// An `i64` zigzag-encoded (0, -1, 1, -2, ... as 0, 1, 2, 3, ...) then in LEB128: small
    /// magnitudes of either sign take few bytes. For differences, such as an event time less
    /// the one written before it.
    fn put_var_i64(&mut self, v: i64);
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
        self.put_var_u64(v as u64);
    }

    #[inline]
    fn put_var_u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.push(v as u8);
    }

    #[inline]
    fn put_var_i64(&mut self, v: i64) {
        self.put_var_u64(((v << 1) ^ (v >> 63)) as u64);
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
        let v = self.var_u64(what)?;
        let left = (self.bytes.len() - self.at) as u64;
        if v > left {
            self.at = start;
            return Err(self.error(what, &format!("{v} is more than the {left} bytes left")));
        }
        Ok(v as usize)
    }

    /// A `u64` in LEB128 ([`Put::put_var_u64`]). Ten bytes at most, the tenth 0 or 1 (a larger
    /// value would not fit in 64 bits).
    #[inline]
    pub fn var_u64(&mut self, what: &str) -> Result<u64> {
        let start = self.at;
        let mut v: u64 = 0;
        for shift in (0..=63).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                self.at = start;
                return Err(self.error(what, "its bytes end before its last"));
            };
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 && (shift < 63 || b <= 1) {
                return Ok(v);
            }
        }
        self.at = start;
        Err(self.error(what, "it runs over 64 bits"))
    }

    /// An `i64` zigzag-encoded in LEB128 ([`Put::put_var_i64`]).
    #[inline]
    pub fn var_i64(&mut self, what: &str) -> Result<i64> {
        let z = self.var_u64(what)?;
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
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
        VarU64(u64),
        VarI64(i64),
    }

    /// The bytes of `n` in LEB128, counted another way: 7 bits a byte, at least one.
    fn leb128_size(n: u128) -> usize {
        let bits = 128 - n.leading_zeros() as usize;
        bits.div_ceil(7).max(1)
    }

    /// Zigzag by its definition: 0, -1, 1, -2, 2, ... to 0, 1, 2, 3, 4, ...
    fn zigzag(v: i64) -> u128 {
        let v = i128::from(v);
        (if v >= 0 { 2 * v } else { -2 * v - 1 }) as u128
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
            any::<u64>().prop_map(V::VarU64),
            // Small magnitudes (differences of times) as well as any.
            (0u32..64).prop_flat_map(|bits| (0..=(u64::MAX >> (63 - bits))).prop_map(V::VarU64)),
            any::<i64>().prop_map(V::VarI64),
            (-1000i64..1000).prop_map(V::VarI64),
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
                    V::VarU64(x) => { out.put_var_u64(*x); size += leb128_size(u128::from(*x)); }
                    V::VarI64(x) => { out.put_var_i64(*x); size += leb128_size(zigzag(*x)); }
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
                    V::VarU64(x) => prop_assert_eq!(w.var_u64("var u64").unwrap(), *x),
                    V::VarI64(x) => prop_assert_eq!(w.var_i64("var i64").unwrap(), *x),
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
        // Zigzag: -1 is 1, 1 is 2, -64 is 127 (one byte), 64 is 128 (two).
        let mut z = Vec::new();
        for v in [0, -1, 1, -64, 64] {
            z.put_var_i64(v);
        }
        assert_eq!(z, [0, 1, 2, 0x7f, 0x80, 0x01]);
        // The largest values: ten bytes, the tenth 1.
        let mut m = Vec::new();
        m.put_var_u64(u64::MAX);
        assert_eq!(
            m,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(Wire::new("x", &m).var_u64("max").unwrap(), u64::MAX);
        let mut m = Vec::new();
        m.put_var_i64(i64::MIN);
        assert_eq!(Wire::new("x", &m).var_i64("min").unwrap(), i64::MIN);
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
            e.contains("a count at byte 0 of 12: it runs over 64 bits"),
            "{e}"
        );
        // A tenth byte of 2 would be bit 64; a value cut short names its place.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        let e = Wire::new("x", &over)
            .var_u64("a price")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a price at byte 0 of 10: it runs over 64 bits"),
            "{e}"
        );
        let mut w = Wire::new("x", &[0x05, 0x80, 0x80]);
        assert_eq!(w.var_u64("a bidder").unwrap(), 5);
        let e = w.var_i64("a time").unwrap_err().to_string();
        assert!(
            e.contains("a time at byte 1 of 3: its bytes end before its last"),
            "{e}"
        );
    }
}
