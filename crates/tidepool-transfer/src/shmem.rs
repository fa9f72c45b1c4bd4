//! Shareable host memory and passing its file descriptor to another process on the same host.
//!
//! [`SharedMemory`] is a sealed memfd mapped `MAP_SHARED`: the owner's segments
//! ([`crate::LocalSegment`]) and the buffers a thin client shares with its `tidepool node`
//! (standalone mode) are both made of it. The size is sealed (`F_SEAL_SHRINK | F_SEAL_GROW`)
//! before the fd leaves the process, so a receiver that checks the seals ([`SharedMemory::from_fd`])
//! can map it without fearing `SIGBUS` from a sender that truncates the file later.
//!
//! [`send_with_fd`] / [`recv_with_fd`] move one fd with a message over a Unix stream socket
//! (`SCM_RIGHTS`); the shm transport and the thin-client channel both use them.

use memmap2::{Advice, MmapOptions, MmapRaw};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use std::ffi::CString;
use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use tidepool_common::{Error, Result};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Page granularity shared memory is rounded up to.
pub const PAGE: u64 = 4096;

/// A memfd-backed `MAP_SHARED` mapping whose size cannot change any more.
pub struct SharedMemory {
    /// `MmapRaw` because other processes (and our peers' transfers) write through raw pointers.
    map: MmapRaw,
    file: File,
    size: u64,
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("size", &self.size)
            .finish()
    }
}

/// The seals a receiver insists on: the size is fixed, and nobody can lift the seals.
fn required_seals() -> SealFlag {
    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL
}

impl SharedMemory {
    /// Creates `size` zeroed bytes (rounded up to a page) named `name` in `/proc/*/fd`.
    pub fn create(name: &str, size: u64, prefault: bool) -> Result<Self> {
        if size == 0 {
            return Err(Error::invalid(
                "shared memory size must be positive: size=0",
            ));
        }
        let size = size
            .checked_add(PAGE - 1)
            .map(|s| s & !(PAGE - 1))
            .filter(|&s| usize::try_from(s).is_ok())
            .ok_or_else(|| Error::invalid(format!("shared memory too large: size={size}")))?;
        let cname = CString::new(name).map_err(|e| Error::invalid(e.to_string()))?;
        let fd = nix::sys::memfd::memfd_create(
            &cname,
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC
                | nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING,
        )
        .map_err(|e| Error::internal(format!("memfd_create failed: err={e}")))?;
        let file = File::from(fd);
        file.set_len(size)
            .map_err(|e| Error::internal(format!("ftruncate failed: size={size} err={e}")))?;
        fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(required_seals()))
            .map_err(|e| Error::internal(format!("sealing the memfd failed: err={e}")))?;
        Self::map(file, size, prefault, true)
    }

    /// Maps a memfd received from another process. It must carry the size seals (else a sender
    /// could shrink it under our mapping); its size is read from the file, and must equal
    /// `expect_size` when given. `prefault` populates the page tables up front.
    pub fn from_fd(fd: OwnedFd, expect_size: Option<u64>, prefault: bool) -> Result<Self> {
        let file = File::from(fd);
        let seals = fcntl(file.as_raw_fd(), FcntlArg::F_GET_SEALS)
            .map_err(|e| Error::invalid(format!("not a sealable memfd: err={e}")))?;
        let seals = SealFlag::from_bits_truncate(seals);
        if !seals.contains(required_seals()) {
            return Err(Error::invalid(format!(
                "memfd is not size-sealed: seals={seals:?}"
            )));
        }
        let size = file
            .metadata()
            .map_err(|e| Error::invalid(format!("fstat failed: err={e}")))?
            .len();
        if size == 0 || expect_size.is_some_and(|s| s != size) {
            return Err(Error::invalid(format!(
                "memfd size mismatch: size={size} expected={expect_size:?}"
            )));
        }
        Self::map(file, size, prefault, false)
    }

    /// Maps `file`; with `prefault`, the owner (`owner`: it just created the memory) populates
    /// for writing and a peer for reading.
    ///
    /// Measured here, 1 GiB: MAP_POPULATE (a read populate) leaves the pages clean, and the
    /// first write to each clean shared page still faults, in the owner and in every peer
    /// (first writes at 9 GB/s, later ones at 16). MADV_POPULATE_WRITE by the owner dirties
    /// them once; then a peer's MAP_POPULATE (read faults map 16 pages at a time) takes
    /// 0.12 s and its first writes run at full speed, while a peer's write populate would take
    /// 0.34 s (one page per fault). Kernels before 5.14 lack MADV_POPULATE_WRITE: the owner then
    /// falls back to MAP_POPULATE.
    fn map(file: File, size: u64, prefault: bool, owner: bool) -> Result<Self> {
        let len = usize::try_from(size)
            .map_err(|_| Error::invalid(format!("shared memory too large: size={size}")))?;
        let mut opts = MmapOptions::new();
        opts.len(len);
        if prefault && !owner {
            opts.populate();
        }
        let map = opts
            .map_raw(&file)
            .map_err(|e| Error::internal(format!("mmap failed: size={size} err={e}")))?;
        if prefault && owner && map.advise(Advice::PopulateWrite).is_err() {
            drop(map);
            let map = opts
                .populate()
                .map_raw(&file)
                .map_err(|e| Error::internal(format!("mmap failed: size={size} err={e}")))?;
            return Ok(Self { map, file, size });
        }
        Ok(Self { map, file, size })
    }

    /// Address of the first byte in this process.
    pub fn addr(&self) -> u64 {
        self.map.as_mut_ptr() as u64
    }

    /// Size in bytes (a multiple of the page size).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The memfd, for handing to another process.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Address of `[offset, offset+len)` in this process, or `InvalidParams` when the range
    /// leaves the mapping.
    pub fn range(&self, offset: u64, len: u64) -> Result<u64> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(self.addr() + offset),
            _ => Err(Error::invalid(format!(
                "range outside shared memory: offset={offset} len={len} size={}",
                self.size
            ))),
        }
    }

    /// Offset of `[addr, addr+len)` when it lies wholly inside this mapping.
    pub fn offset_of(&self, addr: u64, len: u64) -> Option<u64> {
        let base = self.addr();
        let end = addr.checked_add(len)?;
        (addr >= base && end <= base + self.size).then(|| addr - base)
    }
}

/// Sends `buf` with `fd` attached to its first byte.
pub async fn send_with_fd(stream: &UnixStream, buf: &[u8], fd: RawFd) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let sock = stream.as_raw_fd();
    let fds = [fd];
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            sendmsg::<()>(
                sock,
                &[IoSlice::new(buf)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        })
        .await?;
    let mut rest = &buf[sent..];
    while !rest.is_empty() {
        stream.writable().await?;
        match stream.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and at most one fd passed with them (extra fds are
/// closed).
pub async fn recv_with_fd(
    stream: &UnixStream,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<OwnedFd>)> {
    use std::os::fd::AsFd;
    stream
        .async_io(Interest::READABLE, || {
            tidepool_proto::mailbox::recv_with_fd(stream.as_fd(), buf)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shared_memory_crosses_a_socket_and_refuses_unsealed_fds() {
        let mem = SharedMemory::create("t", 5000, false).unwrap();
        assert_eq!(mem.size(), 8192);
        assert_eq!(mem.offset_of(mem.addr() + 10, 20), Some(10));
        assert_eq!(mem.offset_of(mem.addr() + 8190, 4), None);
        assert!(mem.range(8000, 193).is_err());
        // SAFETY: the range is inside the mapping and nothing else references it.
        unsafe { std::ptr::write_bytes(mem.range(100, 4).unwrap() as *mut u8, 7, 4) };

        let (a, b) = UnixStream::pair().unwrap();
        send_with_fd(&a, b"hello", mem.fd()).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, fd) = recv_with_fd(&b, &mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        let peer = SharedMemory::from_fd(fd.unwrap(), Some(8192), false).unwrap();
        // SAFETY: inside the peer mapping; read only.
        let byte = unsafe { *(peer.range(101, 1).unwrap() as *const u8) };
        assert_eq!(byte, 7);

        // A plain (unsealed) memfd is refused.
        let name = CString::new("u").unwrap();
        let fd = nix::sys::memfd::memfd_create(&name, nix::sys::memfd::MemFdCreateFlag::empty())
            .unwrap();
        File::from(fd.try_clone().unwrap()).set_len(4096).unwrap();
        assert!(SharedMemory::from_fd(fd, None, false).is_err());
    }
}
