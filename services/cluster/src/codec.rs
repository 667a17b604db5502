//! A tiny length-prefixed binary codec for the values this crate stores in Redis.
//!
//! Values are a version byte followed by fields; strings carry a one-byte length (node ids and
//! addresses are short), integers are little-endian or LEB128 varints. Decoding never panics:
//! every read checks the remaining length.

use crate::error::{ClusterError, Result};

pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Writer(Vec::with_capacity(n))
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A string of at most 255 bytes; callers validate lengths before encoding.
    pub(crate) fn str8(&mut self, s: &str) -> Result<&mut Self> {
        let len = u8::try_from(s.len())
            .map_err(|_| ClusterError::Config(format!("field longer than 255 bytes: {s}")))?;
        self.0.push(len);
        self.0.extend_from_slice(s.as_bytes());
        Ok(self)
    }

    pub(crate) fn varint(&mut self, mut v: u64) -> &mut Self {
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(low);
                return self;
            }
            self.0.push(low | 0x80);
        }
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn corrupt(&self, why: &str) -> ClusterError {
        ClusterError::Corrupt(format!("{}: {why}", self.what))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        let b = self.take(1)?;
        b.first().copied().ok_or_else(|| self.corrupt("truncated"))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        let arr: [u8; 4] = b.try_into().map_err(|_| self.corrupt("truncated"))?;
        Ok(u32::from_le_bytes(arr))
    }

    pub(crate) fn str8(&mut self) -> Result<&'a str> {
        let len = usize::from(self.u8()?);
        let b = self.take(len)?;
        std::str::from_utf8(b).map_err(|_| self.corrupt("invalid utf-8"))
    }

    pub(crate) fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            if shift == 63 && low > 1 {
                return Err(self.corrupt("varint overflow"));
            }
            v |= low << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupt("varint too long"))
    }

    pub(crate) fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn varint_round_trips_edges() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut w = Writer::with_capacity(10);
            w.varint(v);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes, "test");
            assert_eq!(r.varint().unwrap(), v);
            r.finish().unwrap();
        }
        let mut w = Writer::with_capacity(1);
        w.varint(127);
        assert_eq!(w.into_bytes().len(), 1);
    }

    #[test]
    fn reader_rejects_truncated_and_overlong_input() {
        assert!(Reader::new(&[0x80, 0x80], "t").varint().is_err());
        assert!(Reader::new(&[0xff; 11], "t").varint().is_err());
        // Ten bytes whose last carries more than the one bit left for u64.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert!(Reader::new(&over, "t").varint().is_err());
        assert!(Reader::new(&[3, b'a'], "t").str8().is_err());
        assert!(Reader::new(&[1, 0xff], "t").str8().is_err());
        assert!(Reader::new(&[1, 2, 3], "t").u32().is_err());
        let r = Reader::new(&[1], "t");
        assert!(r.finish().is_err());
    }
}
