//! Big-endian primitives and a bounded reader over a byte slice.
//!
//! Every length read from a message is checked against what is actually left before it
//! is used, so a hostile length can never index out of bounds or trigger a large
//! allocation: the worst it can do is produce [`DecodeError::Truncated`].

use super::DecodeError;

/// A cursor over a byte slice that never reads past its end.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                needed: self.pos + n,
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A `u16` length prefix followed by that many bytes.
    pub(crate) fn u16_prefixed(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()? as usize;
        self.take(len)
    }
}

/// Appends a `u16` length prefix and the bytes; fails if they do not fit in a `u16`.
pub(crate) fn put_u16_prefixed(
    out: &mut Vec<u8>,
    bytes: &[u8],
    what: &'static str,
) -> Result<(), super::EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| super::EncodeError::TooLong {
        what,
        len: bytes.len(),
        max: u16::MAX as usize,
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_the_total_length_it_needs() {
        let mut r = Reader::new(&[0, 5, 1, 2]);
        assert_eq!(r.u16().unwrap(), 5);
        match r.take(5) {
            Err(DecodeError::Truncated { needed }) => assert_eq!(needed, 7),
            other => panic!("unexpected {other:?}"),
        }
        // A failed take consumes nothing.
        assert_eq!(r.remaining(), 2);
    }
}
