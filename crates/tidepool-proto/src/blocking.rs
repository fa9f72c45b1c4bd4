//! Blocking sockets for calls a caller drives from a thread of its own.
//!
//! A tokio socket wakes the runtime's I/O thread when its peer answers, and that thread then
//! wakes the task's thread: on the 2-vCPU machines this project is measured on, that second
//! wake-up costs 12–17 µs of every round trip. A caller that runs a call itself
//! ([`on_caller_thread`]: the Python binding does for every call it makes with the GIL
//! released) can instead wait on a socket of its own, which the kernel wakes directly. The
//! master RPC pool (`tidepool-client`) and the data-plane lanes (`tidepool-transfer`) both use
//! this for small requests; large transfers stay on the runtime, where many lanes overlap.
//!
//! Never block a runtime worker: [`is_caller_thread`] is false there, and
//! [`off_caller_thread`] keeps it false while one call fans out to several peers at once (a
//! blocking request would serialize the fan-out).

use std::cell::Cell;
use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

thread_local! {
    /// Set while this thread runs a caller's call itself (see [`on_caller_thread`]).
    static CALLER_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Restores the flag on drop, so a panic cannot leave it set.
struct Restore(bool);

impl Drop for Restore {
    fn drop(&mut self) {
        CALLER_THREAD.with(|c| c.set(self.0));
    }
}

/// Runs `f` (typically `runtime.block_on(...)` from a thread that is not a runtime worker)
/// with small requests made on this thread going over blocking sockets. Never use it on a
/// runtime worker: a blocking call would stall every task of that worker.
pub fn on_caller_thread<R>(f: impl FnOnce() -> R) -> R {
    let _restore = Restore(CALLER_THREAD.with(|c| c.replace(true)));
    f()
}

/// Whether requests made now may block this thread (see [`on_caller_thread`]).
pub fn is_caller_thread() -> bool {
    CALLER_THREAD.with(|c| c.get())
}

/// Polls `fut` with the caller-thread flag cleared, so requests it makes (several at once,
/// typically) stay asynchronous and overlap instead of blocking one after the other.
pub fn off_caller_thread<F: Future>(fut: F) -> OffCallerThread<F> {
    OffCallerThread { fut: Box::pin(fut) }
}

/// The future of [`off_caller_thread`].
pub struct OffCallerThread<F> {
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for OffCallerThread<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Cleared around each poll only: the future may move between threads between polls.
        let _restore = Restore(CALLER_THREAD.with(|c| c.replace(false)));
        self.fut.as_mut().poll(cx)
    }
}

/// A stream socket a [`SpinStream`] can drive: TCP, or a Unix socket to a same-host peer.
pub trait Socket: Read + Write + std::os::fd::AsFd + Sized {
    /// `set_nonblocking` of the std socket.
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()>;
    /// `try_clone` of the std socket.
    fn try_clone(&self) -> std::io::Result<Self>;
    /// `set_read_timeout` of the std socket.
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
    /// Whether file descriptors can cross this socket (`crate::mailbox::recv_fd`).
    fn passes_fds() -> bool {
        false
    }
}

impl Socket for std::net::TcpStream {
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        std::net::TcpStream::set_nonblocking(self, on)
    }
    fn try_clone(&self) -> std::io::Result<Self> {
        std::net::TcpStream::try_clone(self)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, t)
    }
}

impl Socket for std::os::unix::net::UnixStream {
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::set_nonblocking(self, on)
    }
    fn try_clone(&self) -> std::io::Result<Self> {
        std::os::unix::net::UnixStream::try_clone(self)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, t)
    }
    fn passes_fds() -> bool {
        true
    }
}

/// The abstract Unix socket name (Linux; scoped to the network namespace, like loopback) on
/// which a master listening on TCP `addr` also accepts same-host connections: a Unix socket
/// round trip costs about 4 µs less than a loopback TCP one on the 2-vCPU VM (12.7 against
/// 16.5 µs). A master bound to every address (`0.0.0.0`, `::`) is `*:port`. The kernel lets
/// one TCP listener own an address and port, so a name points at exactly one master.
pub fn local_socket_name(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("tidepool-master/*:{}", addr.port())
    } else {
        format!("tidepool-master/{addr}")
    }
}

/// Whether same-host master connections may use the abstract Unix socket
/// (`TIDEPOOL_MASTER_UNIX=0` turns it off, on either side).
pub fn local_socket_enabled() -> bool {
    std::env::var("TIDEPOOL_MASTER_UNIX").map_or(true, |v| v.trim() != "0")
}

/// Connects to the master at `addr` (`host:port`) over its abstract Unix socket when one is
/// listening in this network namespace: the one named for the resolved address, else the
/// one of a master bound to every address on that port. `None` when there is none (or the
/// feature is off): the caller uses TCP.
pub fn connect_local(addr: &str) -> Option<std::os::unix::net::UnixStream> {
    use std::net::ToSocketAddrs;
    use std::os::linux::net::SocketAddrExt;
    if !local_socket_enabled() {
        return None;
    }
    for a in addr.to_socket_addrs().ok()? {
        let any = std::net::SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), a.port());
        for name in [local_socket_name(a), local_socket_name(any)] {
            let Ok(sa) = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) else {
                continue;
            };
            if let Ok(s) = std::os::unix::net::UnixStream::connect_addr(&sa) {
                return Some(s);
            }
        }
    }
    None
}

/// A non-blocking socket read and written as a blocking one: an operation that would block
/// first polls the socket for up to `spin` (see `crate::wait::caller_spin_window`), yielding
/// the core between polls, then sleeps in `poll(2)` until the socket is ready or `timeout` has
/// passed (`ErrorKind::TimedOut`).
pub struct SpinStream<S: Socket = std::net::TcpStream> {
    stream: S,
    spin: Duration,
    timeout: Duration,
}

impl<S: Socket> SpinStream<S> {
    /// Wraps a connected stream (switched to non-blocking mode; set `TCP_NODELAY` on a TCP
    /// stream before).
    pub fn new(stream: S, spin: Duration, timeout: Duration) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            spin,
            timeout,
        })
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Changes how long an operation may wait from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// A second handle on the same socket (one reads while the other writes).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            stream: self.stream.try_clone()?,
            spin: self.spin,
            timeout: self.timeout,
        })
    }

    fn wait(&self, started: Instant, out: bool) -> std::io::Result<()> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        if started.elapsed() < self.spin {
            std::thread::yield_now();
            return Ok(());
        }
        let left = self.timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        let flags = if out {
            PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        };
        let mut fds = [PollFd::new(self.stream.as_fd(), flags)];
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl<S: Socket> Read for SpinStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let started = Instant::now();
        loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.wait(started, false)?
                }
                r => return r,
            }
        }
    }
}

impl<S: Socket> Write for SpinStream<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let started = Instant::now();
        loop {
            match self.stream.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.wait(started, true)?,
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Polls `fd` for readability for up to `window`, yielding the core between polls; true when
/// it became readable (data, end of file or an error to read), false when the window passed
/// (a zero window polls once).
pub fn spin_until_readable(fd: std::os::fd::BorrowedFd<'_>, window: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let start = Instant::now();
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        if matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return true;
        }
        if start.elapsed() >= window {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Connects to `addr` (`host:port`, resolved here) within `timeout`, trying each address;
/// `TCP_NODELAY` is set (small requests must not wait for Nagle's algorithm).
pub fn connect(addr: &str, timeout: Duration) -> std::io::Result<std::net::TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_is_scoped_and_cleared_for_fan_out() {
        assert!(!is_caller_thread());
        on_caller_thread(|| {
            assert!(is_caller_thread());
            let inner = std::future::poll_fn(|_| Poll::Ready(is_caller_thread()));
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            let mut f = std::pin::pin!(off_caller_thread(inner));
            assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(false));
            assert!(is_caller_thread());
        });
        assert!(!is_caller_thread());
    }

    #[test]
    fn spin_stream_round_trip_and_timeout() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let c = connect(&addr, Duration::from_secs(1)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut c =
            SpinStream::new(c, Duration::from_micros(50), Duration::from_millis(50)).unwrap();
        c.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"pong").unwrap();
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"pong");
        // Nothing more comes: the read gives up after the timeout instead of hanging.
        let t = Instant::now();
        let e = c.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(50));
    }
}
