//! The frame both the peer transport and the client protocol use:
//! `body_len u32 LE · crc32c(body) u32 LE · body`. The length is checked
//! against the caller's limit before anything is buffered, and the CRC before
//! the body is parsed, so a corrupt or hostile stream is refused early.

/// Bytes before a frame's body.
pub const FRAME_HEADER_BYTES: usize = 8;

/// The result of decoding from a buffer that may hold a partial frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A decoded value and the bytes of the buffer it used.
    Frame(T, usize),
    /// The buffer ends before the frame does.
    NeedMore,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame checksum {actual:#010x} does not match {expected:#010x}")]
    Checksum { expected: u32, actual: u32 },
}

/// Reserves a frame header at the end of `out`; returns where the frame starts.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    start
}

/// Fills in the header of the frame that `begin_frame` started at `start`,
/// its body being everything written after the header.
pub fn finish_frame(out: &mut [u8], start: usize) {
    let body = &out[start + FRAME_HEADER_BYTES..];
    let len = u32::try_from(body.len()).expect("frame bodies are limited far below 4 GiB");
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The body of the first frame in `buf` (checked against its CRC) and the
/// bytes the frame takes, or `NeedMore`.
pub fn take_frame(buf: &[u8], max_body_bytes: usize) -> Result<Decoded<&[u8]>, FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(Decoded::NeedMore);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if len > max_body_bytes {
        return Err(FrameError::TooLarge { len, max: max_body_bytes });
    }
    let end = FRAME_HEADER_BYTES + len;
    if buf.len() < end {
        return Ok(Decoded::NeedMore);
    }
    let expected = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let body = &buf[FRAME_HEADER_BYTES..end];
    let actual = crc32c::crc32c(body);
    if actual != expected {
        return Err(FrameError::Checksum { expected, actual });
    }
    Ok(Decoded::Frame(body, end))
}

/// Reads little-endian fields from a frame body, failing instead of panicking
/// when the body ends early.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A body ended before a field it declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("body ends at byte {at}, a field needs {need} more")]
pub struct Truncated {
    pub at: usize,
    pub need: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let rest = self.buf.len() - self.pos;
        if n > rest {
            return Err(Truncated { at: self.pos, need: n - rest });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Truncated> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().expect("2 bytes")))
    }

    pub fn u32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self) -> Result<u64, Truncated> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8 bytes")))
    }

    /// A `u32` length followed by that many bytes.
    pub fn blob(&mut self) -> Result<&'a [u8], Truncated> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }

    /// A presence flag (`0` or `1`) and, when present, a blob.
    pub fn opt_blob(&mut self) -> Result<Option<&'a [u8]>, FieldError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.blob()?)),
            flag => Err(FieldError::Flag(flag)),
        }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// An optional field that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error(transparent)]
    Truncated(#[from] Truncated),
    #[error("presence flag {0} is neither 0 nor 1")]
    Flag(u8),
}

/// Appends a presence flag and, when present, the blob (see `Reader::opt_blob`).
pub fn put_opt_blob(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put_blob(out, b);
        }
    }
}

/// Appends a `u32` length and `bytes`.
pub fn put_blob(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("blobs are limited far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Gives back the memory a large frame made a connection's buffer grow by,
/// once no more than half of `kept_bytes_max` is in use (`buf[..in_use]`,
/// kept): a rare large frame does not hold its size for the connection's
/// life.
pub fn trim_buffer(buf: &mut Vec<u8>, in_use: usize, kept_bytes_max: usize) {
    if buf.capacity() > kept_bytes_max && in_use <= kept_bytes_max / 2 {
        buf.truncate(in_use);
        buf.shrink_to(kept_bytes_max / 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let start = begin_frame(&mut out);
        out.extend_from_slice(body);
        finish_frame(&mut out, start);
        out
    }

    #[test]
    fn round_trip_and_partial_input() {
        let f = frame(b"hello");
        for cut in 0..f.len() {
            assert_eq!(take_frame(&f[..cut], 64), Ok(Decoded::NeedMore));
        }
        assert_eq!(take_frame(&f, 64), Ok(Decoded::Frame(&b"hello"[..], f.len())));
    }

    #[test]
    fn refuses_oversized_and_corrupt_frames() {
        let f = frame(&[7; 100]);
        assert_eq!(take_frame(&f[..8], 99), Err(FrameError::TooLarge { len: 100, max: 99 }));
        let mut bad = f.clone();
        bad[50] ^= 1;
        assert!(matches!(take_frame(&bad, 100), Err(FrameError::Checksum { .. })));
    }

    #[test]
    fn reader_reports_truncation() {
        let mut r = Reader::new(&[1, 0, 0]);
        assert_eq!(r.u16(), Ok(1));
        assert_eq!(r.u32(), Err(Truncated { at: 2, need: 3 }));
    }

    #[test]
    fn a_buffer_grown_by_a_large_frame_is_trimmed_once_drained() {
        let kept = 1 << 20;
        let mut buf = vec![7u8; 64 << 20];
        trim_buffer(&mut buf, 10, kept);
        assert!(buf.capacity() <= kept, "{} bytes kept", buf.capacity());
        assert_eq!(buf, [7u8; 10], "the bytes in use were lost");

        // Still in use: nothing is given back.
        let mut busy = vec![1u8; 2 * kept];
        trim_buffer(&mut busy, kept, kept);
        assert_eq!(busy.len(), 2 * kept);
        // Small buffers keep their room for the next frames.
        let mut small = Vec::with_capacity(kept / 2);
        small.resize(kept / 4, 0);
        trim_buffer(&mut small, 0, kept);
        assert_eq!(small.len(), kept / 4);
    }
}
