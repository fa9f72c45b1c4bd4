//! Frame codec shared by the master RPC and the data plane.
//!
//! ```text
//! 0      4        6      7      8          16         20      24           32
//! | magic | version | kind | flags | request id | meta len | rsvd | payload len |
//! ```
//! All integers are little-endian. `meta` (postcard) follows the header; `payload` follows meta
//! and is never copied by the codec: callers read it directly into its destination memory.
//! Lengths are bounded before anything is allocated, so a malformed or hostile frame costs a
//! clear error, never an allocation of attacker-chosen size.

use serde::{Serialize, de::DeserializeOwned};
use std::fmt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// "TPL1" little-endian.
pub const MAGIC: u32 = 0x314C_5054;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 32;
/// Largest accepted metadata section (batches of thousands of keys fit easily).
pub const MAX_META_LEN: u32 = 64 << 20;
/// Largest accepted payload of one frame.
pub const MAX_PAYLOAD_LEN: u64 = 1 << 40;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A request expecting one response with the same request id.
    Request = 1,
    /// The response to a request.
    Response = 2,
}

/// The decoded fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Sender's protocol version.
    pub version: u16,
    /// Request or response.
    pub kind: FrameKind,
    /// Reserved flag bits; zero today.
    pub flags: u8,
    /// Matches a response to its request.
    pub request_id: u64,
    /// Length of the postcard message following the header.
    pub meta_len: u32,
    /// Length of the raw payload following the message.
    pub payload_len: u64,
}

/// Why a frame was rejected.
#[derive(Debug)]
pub enum FrameError {
    /// The connection failed or closed mid-frame.
    Io(std::io::Error),
    /// The peer closed the connection cleanly between frames.
    Closed,
    /// The header does not start with [`MAGIC`]: not a Tidepool peer.
    BadMagic(u32),
    /// The sender speaks a version outside our compatible range.
    BadVersion(u16),
    /// Unknown frame kind byte.
    BadKind(u8),
    /// A length field exceeds its bound.
    TooLarge {
        /// Which field.
        what: &'static str,
        /// Its value.
        len: u64,
    },
    /// The message does not decode.
    Decode(postcard::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "frame i/o failed: {e}"),
            FrameError::Closed => write!(f, "connection closed"),
            FrameError::BadMagic(m) => write!(f, "bad frame magic: magic={m:#x}"),
            FrameError::BadVersion(v) => write!(
                f,
                "incompatible protocol version: peer={v} supported={}..={}",
                crate::MIN_COMPATIBLE_VERSION,
                crate::PROTOCOL_VERSION
            ),
            FrameError::BadKind(k) => write!(f, "bad frame kind: kind={k}"),
            FrameError::TooLarge { what, len } => write!(f, "frame {what} too large: len={len}"),
            FrameError::Decode(e) => write!(f, "malformed message: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        }
    }
}

impl FrameError {
    /// True when the stream can no longer be used (as opposed to one bad message whose bytes
    /// were fully consumed).
    pub fn is_fatal(&self) -> bool {
        !matches!(self, FrameError::Decode(_))
    }
}

impl FrameHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6] = self.kind as u8;
        b[7] = self.flags;
        b[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        b[16..20].copy_from_slice(&self.meta_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.payload_len.to_le_bytes());
        b
    }

    /// Decodes and validates a header.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, FrameError> {
        let le32 = |r: std::ops::Range<usize>| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[r]);
            u32::from_le_bytes(a)
        };
        let le64 = |r: std::ops::Range<usize>| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[r]);
            u64::from_le_bytes(a)
        };
        let magic = le32(0..4);
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let version = u16::from_le_bytes([b[4], b[5]]);
        if !(crate::MIN_COMPATIBLE_VERSION..=crate::PROTOCOL_VERSION).contains(&version) {
            return Err(FrameError::BadVersion(version));
        }
        let kind = match b[6] {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            k => return Err(FrameError::BadKind(k)),
        };
        let meta_len = le32(16..20);
        if meta_len > MAX_META_LEN {
            return Err(FrameError::TooLarge {
                what: "meta",
                len: meta_len as u64,
            });
        }
        let payload_len = le64(24..32);
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(FrameError::TooLarge {
                what: "payload",
                len: payload_len,
            });
        }
        Ok(Self {
            version,
            kind,
            flags: b[7],
            request_id: le64(8..16),
            meta_len,
            payload_len,
        })
    }
}

/// Encodes a whole frame header + message into `out` (payload bytes are written by the caller).
pub fn encode_frame<M: Serialize>(
    out: &mut Vec<u8>,
    kind: FrameKind,
    request_id: u64,
    msg: &M,
    payload_len: u64,
) -> Result<(), FrameError> {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    let out_len_before = out.len();
    let buf = std::mem::take(out);
    let mut buf = postcard::to_extend(msg, buf).map_err(FrameError::Decode)?;
    let meta_len = buf.len() - out_len_before;
    if meta_len as u64 > MAX_META_LEN as u64 {
        return Err(FrameError::TooLarge {
            what: "meta",
            len: meta_len as u64,
        });
    }
    let hdr = FrameHeader {
        version: crate::PROTOCOL_VERSION,
        kind,
        flags: 0,
        request_id,
        meta_len: meta_len as u32,
        payload_len,
    };
    buf[start..start + HEADER_LEN].copy_from_slice(&hdr.encode());
    *out = buf;
    Ok(())
}

/// Writes one frame with an optional payload taken from memory, then flushes.
pub async fn write_frame<W: AsyncWrite + Unpin, M: Serialize>(
    w: &mut W,
    scratch: &mut Vec<u8>,
    kind: FrameKind,
    request_id: u64,
    msg: &M,
    payload: &[u8],
) -> Result<(), FrameError> {
    scratch.clear();
    encode_frame(scratch, kind, request_id, msg, payload.len() as u64)?;
    // Small payloads ride in the same write as the header, saving a syscall per request.
    if payload.len() <= 16 << 10 {
        scratch.extend_from_slice(payload);
        w.write_all(scratch).await?;
    } else {
        w.write_all(scratch).await?;
        w.write_all(payload).await?;
    }
    w.flush().await?;
    Ok(())
}

/// Reads one frame's header and message. The payload (header.payload_len bytes) is left in the
/// stream for the caller to read into place or to discard with [`discard`].
pub async fn read_frame<R: AsyncRead + Unpin, M: DeserializeOwned>(
    r: &mut R,
    scratch: &mut Vec<u8>,
) -> Result<(FrameHeader, Result<M, FrameError>), FrameError> {
    let hdr = read_frame_raw(r, scratch).await?;
    let msg = postcard::from_bytes(scratch).map_err(FrameError::Decode);
    Ok((hdr, msg))
}

/// [`read_frame`] that leaves the message undecoded in `scratch` (for a receiver that decodes
/// some messages borrowing from the buffer).
pub async fn read_frame_raw<R: AsyncRead + Unpin>(
    r: &mut R,
    scratch: &mut Vec<u8>,
) -> Result<FrameHeader, FrameError> {
    let mut hb = [0u8; HEADER_LEN];
    match r.read_exact(&mut hb[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    r.read_exact(&mut hb[1..]).await?;
    let hdr = FrameHeader::decode(&hb)?;
    scratch.clear();
    scratch.resize(hdr.meta_len as usize, 0);
    r.read_exact(scratch).await?;
    Ok(hdr)
}

/// [`read_frame`] on a blocking reader (see [`crate::blocking`]).
pub fn read_frame_sync<R: std::io::Read, M: DeserializeOwned>(
    r: &mut R,
    scratch: &mut Vec<u8>,
) -> Result<(FrameHeader, Result<M, FrameError>), FrameError> {
    let hdr = read_frame_raw_sync(r, scratch)?;
    let msg = postcard::from_bytes(scratch).map_err(FrameError::Decode);
    Ok((hdr, msg))
}

/// [`read_frame_raw`] on a blocking reader.
pub fn read_frame_raw_sync<R: std::io::Read>(
    r: &mut R,
    scratch: &mut Vec<u8>,
) -> Result<FrameHeader, FrameError> {
    let mut hb = [0u8; HEADER_LEN];
    match r.read_exact(&mut hb[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    r.read_exact(&mut hb[1..])?;
    let hdr = FrameHeader::decode(&hb)?;
    scratch.clear();
    scratch.resize(hdr.meta_len as usize, 0);
    r.read_exact(scratch)?;
    Ok(hdr)
}

/// Decodes a frame's message from its meta bytes (for callers that read frames themselves).
pub fn decode_message<M: DeserializeOwned>(meta: &[u8]) -> Result<M, FrameError> {
    postcard::from_bytes(meta).map_err(FrameError::Decode)
}

/// Reads and drops `len` payload bytes, so a rejected request leaves the stream usable.
///
/// `tokio::io::copy` keeps its buffer on the heap; a stack array here would sit inside every
/// future that may discard (64 KiB per RPC call future).
pub async fn discard<R: AsyncRead + Unpin>(r: &mut R, len: u64) -> Result<(), FrameError> {
    let copied = tokio::io::copy(&mut r.take(len), &mut tokio::io::sink()).await?;
    if copied < len {
        return Err(FrameError::Closed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rejections() {
        let h = FrameHeader {
            version: crate::PROTOCOL_VERSION,
            kind: FrameKind::Response,
            flags: 0,
            request_id: 42,
            meta_len: 10,
            payload_len: 4096,
        };
        let b = h.encode();
        assert_eq!(FrameHeader::decode(&b).unwrap(), h);

        let mut bad = b;
        bad[0] = b'X';
        assert!(matches!(
            FrameHeader::decode(&bad),
            Err(FrameError::BadMagic(_))
        ));
        let mut bad = b;
        bad[4] = 99;
        assert!(matches!(
            FrameHeader::decode(&bad),
            Err(FrameError::BadVersion(99))
        ));
        let mut bad = b;
        bad[6] = 7;
        assert!(matches!(
            FrameHeader::decode(&bad),
            Err(FrameError::BadKind(7))
        ));
        let mut bad = b;
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            FrameHeader::decode(&bad),
            Err(FrameError::TooLarge { .. })
        ));
        let mut bad = b;
        bad[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            FrameHeader::decode(&bad),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn frame_round_trip_and_garbage_message() {
        let mut wire = Vec::new();
        write_frame(
            &mut wire,
            &mut Vec::new(),
            FrameKind::Request,
            7,
            &("hi", 5u32),
            b"abc",
        )
        .await
        .unwrap();
        let mut r = &wire[..];
        let (h, m) = read_frame::<_, (String, u32)>(&mut r, &mut Vec::new())
            .await
            .unwrap();
        assert_eq!(h.request_id, 7);
        assert_eq!(m.unwrap(), ("hi".to_string(), 5));
        assert_eq!(r, b"abc");

        // A well-framed but undecodable message is a per-request error, not a fatal one.
        let mut wire = Vec::new();
        write_frame(
            &mut wire,
            &mut Vec::new(),
            FrameKind::Request,
            8,
            &[0xffu8; 3],
            b"",
        )
        .await
        .unwrap();
        let mut r = &wire[..];
        let (_, m) = read_frame::<_, (String, u32)>(&mut r, &mut Vec::new())
            .await
            .unwrap();
        let err = m.unwrap_err();
        assert!(!err.is_fatal());
    }
}
