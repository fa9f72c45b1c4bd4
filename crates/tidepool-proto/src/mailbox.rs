//! Master mailboxes: the requests and answers of a same-host client's dedicated master
//! connection, passed through shared memory instead of the socket.
//!
//! Why: on the 2-vCPU VM this project is measured on, one round trip over a Unix socket costs
//! 8–10 µs even with both ends polling for it (a `send` and a `recv` each way, and the send
//! wakes a waiter when there is one); through a shared page it costs 1–2 µs. A 4 KiB put is two
//! round trips to the master and an exist one, so that difference is most of their latency.
//!
//! The socket stays: it carries the set-up (the client passes the memfd with `SCM_RIGHTS`),
//! any message too large for the mailbox (its slot in the mailbox then says "on the socket"),
//! and liveness: a waiting end checks the socket for a hang-up between sleeps, so a dead peer
//! is noticed within one sleep slice.
//!
//! One request at a time (the client's connection is held for the whole call). Layout (all
//! little-endian, offsets in bytes): a 4 KiB header — magic at 0; the request's sequence number
//! (`u32`) at 64 and its length (`u64`) at 72; the answer's at 128 and 136; the master's
//! "sleeping" flag (`u32`) at 192 and the client's at 256 — then the request area and the
//! answer area, equal halves of the rest. A sender writes the bytes, then the length, then the
//! sequence number (release); a receiver polls the sequence number for a while, yielding the
//! core, then sets its sleeping flag and sleeps on the sequence word with `futex(2)` (the memfd
//! is shared, so the futex is too); a sender that sees the flag set wakes it. Both sides store
//! and load the flag and the sequence word in sequentially consistent order, so either the
//! sender sees the flag or the sleeper sees the new sequence number before it sleeps.
//!
//! The client is not trusted: the master checks the memfd's size seals (a shrink under the
//! mapping would kill it with `SIGBUS`), its size and magic, copies every request out of the
//! shared memory before reading it, and checks every length.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

const MAGIC: u64 = u64::from_le_bytes(*b"TPMBOX01");
/// Bytes of the header page.
const HEADER: usize = 4096;
const REQ_SEQ: usize = 64;
const REQ_LEN: usize = 72;
const ANS_SEQ: usize = 128;
const ANS_LEN: usize = 136;
const MASTER_SLEEPING: usize = 192;
const CLIENT_SLEEPING: usize = 256;
/// A length that says: this message comes over the socket.
const ON_SOCKET: u64 = u64::MAX;
/// Default bytes of each area: a batch of a thousand puts with 100-byte keys fits.
pub const DEFAULT_AREA: usize = 512 << 10;
/// Smallest and largest area a master accepts.
const MIN_AREA: usize = 4096;
const MAX_AREA: usize = 16 << 20;
/// The name the memfd shows in `/proc/<pid>/maps`.
pub const MEMFD_NAME: &str = "tidepool-mailbox";

/// Which way a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Client to master.
    Request,
    /// Master to client.
    Answer,
}

impl Dir {
    fn seq(self) -> usize {
        match self {
            Dir::Request => REQ_SEQ,
            Dir::Answer => ANS_SEQ,
        }
    }
    fn len(self) -> usize {
        match self {
            Dir::Request => REQ_LEN,
            Dir::Answer => ANS_LEN,
        }
    }
    /// The flag of the side that waits for messages going this way.
    fn sleeping(self) -> usize {
        match self {
            Dir::Request => MASTER_SLEEPING,
            Dir::Answer => CLIENT_SLEEPING,
        }
    }
}

/// One mapping of a mailbox (the client's or the master's).
pub struct Mailbox {
    map: memmap2::MmapRaw,
    area: usize,
    _file: File,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox").field("area", &self.area).finish()
    }
}

fn required_seals() -> nix::fcntl::SealFlag {
    use nix::fcntl::SealFlag;
    SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Mailbox {
    /// Creates a mailbox with `area` bytes each way (the client's side) and returns the fd to
    /// pass to the master.
    pub fn create(area: usize) -> std::io::Result<(Self, OwnedFd)> {
        use nix::fcntl::{FcntlArg, fcntl};
        use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
        let area = area.clamp(MIN_AREA, MAX_AREA).next_multiple_of(4096);
        let name = std::ffi::CString::new(MEMFD_NAME).map_err(io_err)?;
        let fd = memfd_create(
            &name,
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )
        .map_err(std::io::Error::from)?;
        let file = File::from(fd);
        file.set_len((HEADER + 2 * area) as u64)?;
        fcntl(file.as_raw_fd(), FcntlArg::F_ADD_SEALS(required_seals()))
            .map_err(std::io::Error::from)?;
        let send = file.as_fd().try_clone_to_owned()?;
        let mb = Self::map(file, area)?;
        mb.word64(0).store(MAGIC, Ordering::Release);
        Ok((mb, send))
    }

    /// Maps a mailbox a client passed (the master's side): it must be size-sealed, of a size
    /// that makes two areas of an accepted size, and carry the magic.
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<Self> {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        let file = File::from(fd);
        let seals = fcntl(file.as_raw_fd(), FcntlArg::F_GET_SEALS)
            .map_err(|e| io_err(format!("not a sealable memfd: {e}")))?;
        if !SealFlag::from_bits_truncate(seals).contains(required_seals()) {
            return Err(io_err("mailbox memfd is not size-sealed"));
        }
        let size = usize::try_from(file.metadata()?.len()).map_err(io_err)?;
        let area = size.saturating_sub(HEADER) / 2;
        if size != HEADER + 2 * area || !(MIN_AREA..=MAX_AREA).contains(&area) {
            return Err(io_err(format!("mailbox size not accepted: size={size}")));
        }
        let mb = Self::map(file, area)?;
        if mb.word64(0).load(Ordering::Acquire) != MAGIC {
            return Err(io_err("mailbox magic missing"));
        }
        Ok(mb)
    }

    fn map(file: File, area: usize) -> std::io::Result<Self> {
        let map = memmap2::MmapOptions::new()
            .len(HEADER + 2 * area)
            .map_raw(&file)?;
        Ok(Self {
            map,
            area,
            _file: file,
        })
    }

    /// Bytes each way.
    pub fn area(&self) -> usize {
        self.area
    }

    fn word64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= HEADER);
        // SAFETY: `off` is an 8-aligned offset inside the header page of a live, page-aligned
        // mapping that `self` keeps; other processes touch these words only atomically.
        unsafe { &*self.map.as_mut_ptr().add(off).cast::<AtomicU64>() }
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= HEADER);
        // SAFETY: as `word64`, 4-aligned.
        unsafe { &*self.map.as_mut_ptr().add(off).cast::<AtomicU32>() }
    }

    fn area_ptr(&self, dir: Dir) -> *mut u8 {
        let off = match dir {
            Dir::Request => HEADER,
            Dir::Answer => HEADER + self.area,
        };
        // SAFETY: both areas lie inside the mapping (its length is HEADER + 2 * area).
        unsafe { self.map.as_mut_ptr().add(off) }
    }

    /// Whether a message of `len` bytes fits in an area.
    pub fn fits(&self, len: usize) -> bool {
        len <= self.area
    }

    /// The sequence number last posted going `dir`.
    pub fn seq(&self, dir: Dir) -> u32 {
        self.word32(dir.seq()).load(Ordering::Acquire)
    }

    /// Posts message `seq` going `dir`: `Some(bytes)` (which must fit) in the area, `None` to
    /// say that it comes over the socket. Wakes the receiver if it sleeps.
    pub fn post(&self, dir: Dir, seq: u32, bytes: Option<&[u8]>) {
        let len = match bytes {
            Some(b) => {
                assert!(b.len() <= self.area, "message larger than the mailbox");
                // SAFETY: the area holds `self.area >= b.len()` bytes; the receiver reads it
                // only after the sequence number below, and never while we may write.
                unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), self.area_ptr(dir), b.len()) };
                b.len() as u64
            }
            None => ON_SOCKET,
        };
        self.word64(dir.len()).store(len, Ordering::Relaxed);
        self.word32(dir.seq()).store(seq, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.word32(dir.sleeping()).load(Ordering::SeqCst) != 0 {
            futex_wake(self.word32(dir.seq()));
        }
    }

    /// Copies the message last posted going `dir` into `out`: true, or false when it comes
    /// over the socket. A length larger than the area is an error (the peer broke the rules).
    pub fn take(&self, dir: Dir, out: &mut Vec<u8>) -> std::io::Result<bool> {
        let len = self.word64(dir.len()).load(Ordering::Acquire);
        if len == ON_SOCKET {
            return Ok(false);
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.area)
            .ok_or_else(|| io_err(format!("mailbox message length out of range: {len}")))?;
        out.clear();
        out.reserve(len);
        // SAFETY: `len <= area` bytes of the area are readable, and `out` has room for them.
        // The peer may scribble on the area meanwhile: we only ever parse our copy, where that
        // shows as a malformed message.
        unsafe {
            std::ptr::copy_nonoverlapping(self.area_ptr(dir), out.as_mut_ptr(), len);
            out.set_len(len);
        }
        Ok(true)
    }

    /// Waits until the sequence number going `dir` is no longer `last`, and returns it. Polls
    /// for up to `spin` (yielding the core), then sleeps in slices of `slice`; after each
    /// slice `alive` says whether to go on (false: `BrokenPipe`). Past `deadline`: `TimedOut`.
    pub fn wait(
        &self,
        dir: Dir,
        last: u32,
        spin: Duration,
        slice: Duration,
        deadline: Option<Instant>,
        mut alive: impl FnMut() -> bool,
    ) -> std::io::Result<u32> {
        let word = self.word32(dir.seq());
        let started = Instant::now();
        loop {
            for _ in 0..16 {
                let s = word.load(Ordering::Acquire);
                if s != last {
                    return Ok(s);
                }
                std::hint::spin_loop();
            }
            if started.elapsed() >= spin {
                break;
            }
            std::thread::yield_now();
        }
        let flag = self.word32(dir.sleeping());
        loop {
            let mut left = slice;
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                left = left.min(d - now);
            }
            flag.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let s = word.load(Ordering::SeqCst);
            if s == last {
                futex_wait(word, last, left);
            }
            flag.store(0, Ordering::SeqCst);
            let s = word.load(Ordering::Acquire);
            if s != last {
                return Ok(s);
            }
            if !alive() {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
        }
    }
}

/// Whether the socket's peer is still there (no hang-up, no error), without blocking.
pub fn peer_alive(fd: BorrowedFd<'_>) -> bool {
    // `POLLRDHUP` (a peer that shut its end down) is Linux-only and not in nix's flags.
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid `pollfd` for the length of the call; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n <= 0 || p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP) == 0
}

/// Sleeps while `word` holds `expected`, for at most `timeout` (or until woken).
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned u32 in a shared mapping; FUTEX_WAIT (not private: the
    // word is shared between processes) only reads it, and `ts` outlives the call. Every
    // outcome (woken, timed out, value changed, interrupted) is handled by the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes one sleeper on `word`.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not touch memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            1i32,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Sends one byte with `fd` attached over a connected Unix socket (the mailbox hand-over).
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let fds = [fd.as_raw_fd()];
    let started = Instant::now();
    loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[std::io::IoSlice::new(&[1u8])],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(io_err("mailbox hand-over: nothing sent")),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR)
                if started.elapsed() < Duration::from_secs(1) =>
            {
                std::thread::yield_now()
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives the one byte and fd of [`send_fd`] (blocking, under the socket's read timeout).
pub fn recv_fd(sock: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let (n, fd) = recv_with_fd(sock, &mut byte)?;
    if n != 1 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    fd.ok_or_else(|| io_err("mailbox hand-over without an fd"))
}

/// One `recvmsg` on a Unix socket: up to `buf.len()` bytes and at most one fd passed with
/// them (extra fds are closed). End of file is `UnexpectedEof`; a non-blocking socket with
/// nothing to read gives `WouldBlock`.
pub fn recv_with_fd(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::FromRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fd = None;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel just installed `raw` in our fd table for us; we are its
                // only owner, and wrapping it closes it if unused.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    if msg.bytes == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok((msg.bytes, fd))
}

/// Whether same-host clients offer their master connections a mailbox:
/// `TIDEPOOL_MASTER_MAILBOX=0` turns it off (for comparisons), anything else leaves it on.
pub fn enabled() -> bool {
    std::env::var("TIDEPOOL_MASTER_MAILBOX").map_or(true, |v| v.trim() != "0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    const NO_SPIN: Duration = Duration::ZERO;

    #[test]
    fn messages_cross_both_ways_including_sleeping_receivers_and_socket_markers() {
        let (client, fd) = Mailbox::create(8192).unwrap();
        let master = Mailbox::from_fd(fd).unwrap();
        assert_eq!(master.area(), 8192);
        let t = std::thread::spawn(move || {
            let mut last = 0;
            let mut buf = Vec::new();
            for _ in 0..200 {
                let s = master
                    .wait(
                        Dir::Request,
                        last,
                        NO_SPIN,
                        Duration::from_millis(50),
                        None,
                        || true,
                    )
                    .unwrap();
                last = s;
                if master.take(Dir::Request, &mut buf).unwrap() {
                    buf.reverse();
                    master.post(Dir::Answer, s, Some(&buf));
                } else {
                    master.post(Dir::Answer, s, None);
                }
            }
        });
        let mut out = Vec::new();
        for i in 1..=200u32 {
            // Every tenth message waits long enough for the master to be asleep in the futex.
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            if i % 50 == 0 {
                client.post(Dir::Request, i, None);
            } else {
                client.post(Dir::Request, i, Some(&i.to_le_bytes()));
            }
            let s = client
                .wait(
                    Dir::Answer,
                    i - 1,
                    Duration::from_micros(20),
                    Duration::from_millis(50),
                    None,
                    || true,
                )
                .unwrap();
            assert_eq!(s, i);
            if i % 50 == 0 {
                assert!(!client.take(Dir::Answer, &mut out).unwrap());
            } else {
                assert!(client.take(Dir::Answer, &mut out).unwrap());
                let mut want = i.to_le_bytes().to_vec();
                want.reverse();
                assert_eq!(out, want);
            }
        }
        t.join().unwrap();
    }

    #[test]
    fn waits_end_on_deadline_and_on_a_dead_peer() {
        let (client, _fd) = Mailbox::create(4096).unwrap();
        let t0 = Instant::now();
        let r = client.wait(
            Dir::Answer,
            0,
            NO_SPIN,
            Duration::from_millis(10),
            Some(Instant::now() + Duration::from_millis(30)),
            || true,
        );
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(t0.elapsed() >= Duration::from_millis(30));
        let (a, b) = UnixStream::pair().unwrap();
        assert!(peer_alive(a.as_fd()));
        drop(b);
        assert!(!peer_alive(a.as_fd()));
        let r = client.wait(
            Dir::Answer,
            0,
            NO_SPIN,
            Duration::from_millis(5),
            None,
            || peer_alive(a.as_fd()),
        );
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn the_master_refuses_unsealed_wrong_sized_or_foreign_memfds_and_bad_lengths() {
        use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
        let name = std::ffi::CString::new("t").unwrap();
        // A memfd of `len` bytes, sealed or not.
        let memfd = |len: u64, sealed: bool| {
            let fd = memfd_create(&name, MemFdCreateFlag::MFD_ALLOW_SEALING).unwrap();
            File::from(fd.try_clone().unwrap()).set_len(len).unwrap();
            if sealed {
                let seals = nix::fcntl::FcntlArg::F_ADD_SEALS(required_seals());
                nix::fcntl::fcntl(fd.as_raw_fd(), seals).unwrap();
            }
            fd
        };
        let refusal = |fd| Mailbox::from_fd(fd).unwrap_err().to_string();
        let good = (HEADER + 2 * 4096) as u64;
        assert!(refusal(memfd(good, false)).contains("size-sealed"));
        assert!(refusal(memfd(good, true)).contains("magic"));
        assert!(refusal(memfd(HEADER as u64 + 100, true)).contains("size"));
        // A client that writes a length beyond the area.
        let (client, fd) = Mailbox::create(4096).unwrap();
        let master = Mailbox::from_fd(fd).unwrap();
        client.word64(REQ_LEN).store(1 << 20, Ordering::SeqCst);
        client.word32(REQ_SEQ).store(1, Ordering::SeqCst);
        assert!(master.take(Dir::Request, &mut Vec::new()).is_err());
    }

    #[test]
    fn an_fd_crosses_a_unix_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let (client, fd) = Mailbox::create(4096).unwrap();
        send_fd(a.as_fd(), fd.as_fd()).unwrap();
        let got = recv_fd(b.as_fd()).unwrap();
        let master = Mailbox::from_fd(got).unwrap();
        client.post(Dir::Request, 7, Some(b"hello"));
        let mut out = Vec::new();
        assert_eq!(master.seq(Dir::Request), 7);
        assert!(master.take(Dir::Request, &mut out).unwrap());
        assert_eq!(out, b"hello");
    }
}
