//! The wire behind a virtio-net card: what carries Ethernet frames
//! between [`super::net::VirtioNet`] and the host, without the device
//! model knowing which it is.
//!
//! A backend moves whole Ethernet frames (no `virtio_net_hdr`: the device
//! writes and strips that, virtio 1.2 §5.1.6). Every call returns at once:
//! [`NetBackend::send`] either takes the whole frame or refuses it (the
//! device counts it dropped, as a full NIC queue would), and
//! [`NetBackend::recv`] returns a frame, or nothing when none waits. The
//! receive thread sleeps in `poll(2)` on [`NetBackend::poll_fd`] (readable,
//! and writable while [`NetBackend::wants_write`]), and calls
//! [`NetBackend::flush`] when it may write again.
//!
//! Two backends exist: [`TapBackend`] here (a TAP descriptor, or anything
//! where one `read`/`write` is one frame with a 12-byte header in front),
//! and [`crate::passt::PasstStream`] (passt's UNIX stream socket, where
//! each frame is preceded by its 32-bit big-endian length).

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::tap::VNET_HDR_LEN;

/// A host-side carrier of Ethernet frames for a virtio-net card.
pub trait NetBackend: Send + Sync + std::fmt::Debug {
    /// Queues or sends one frame without blocking. An error means the
    /// frame was not taken (`WouldBlock`: the host side is full; any
    /// other: the backend is broken, and every later frame will be
    /// refused too).
    fn send(&self, frame: &[u8]) -> std::io::Result<()>;

    /// Reads one frame into `buf` (at least [`super::net::MAX_FRAME_LEN`]
    /// bytes) without blocking: `Ok(Some(len))` is a frame (`len` may be 0
    /// for a runt to ignore), `Ok(None)` means none waits. An error
    /// (including the host side closing) ends receiving.
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>>;

    /// The descriptor the receive thread polls.
    fn poll_fd(&self) -> RawFd;

    /// What it is, for the inspector (`tap`, `passt`).
    fn kind(&self) -> &'static str;

    /// Whether bytes of taken frames still wait to be written (the
    /// receive thread then polls for `POLLOUT` and calls
    /// [`NetBackend::flush`]).
    fn wants_write(&self) -> bool {
        false
    }

    /// Writes what waits, as far as the host takes it without blocking.
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A packet descriptor where each `read` returns one frame and each
/// `write` sends one, both with the 12-byte `virtio_net_hdr_v1` in front:
/// a TAP opened by [`crate::tap::Tap`] (with `IFF_VNET_HDR`); a datagram
/// socketpair stands in for it in tests. Received headers are discarded
/// (no offloads are negotiated); sent ones are all zeros.
#[derive(Debug)]
pub struct TapBackend {
    fd: OwnedFd,
}

impl TapBackend {
    /// Wraps `fd`, making it non-blocking.
    pub fn new(fd: OwnedFd) -> std::io::Result<Self> {
        set_nonblocking(&fd)?;
        Ok(TapBackend { fd })
    }
}

impl NetBackend for TapBackend {
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let header = [0u8; VNET_HDR_LEN];
        let iov = [IoSlice::new(&header), IoSlice::new(frame)];
        // SAFETY: `IoSlice` has the layout of `struct iovec`, and both
        // buffers are valid for reads of their lengths during the call.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr().cast(), 2) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n as usize != VNET_HDR_LEN + frame.len() {
            return Err(std::io::Error::other("short write"));
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        let mut header = [0u8; VNET_HDR_LEN];
        let iov = [
            libc::iovec {
                iov_base: header.as_mut_ptr().cast(),
                iov_len: VNET_HDR_LEN,
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            },
        ];
        // SAFETY: both iovecs describe buffers valid for writes of their
        // lengths for the duration of the call.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the TAP closed",
            ));
        }
        Ok(Some((n as usize).saturating_sub(VNET_HDR_LEN)))
    }

    fn poll_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn kind(&self) -> &'static str {
        "tap"
    }
}

/// Sets `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: &impl AsRawFd) -> std::io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL take and return plain integers.
    let rc = unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
