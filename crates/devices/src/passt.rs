//! passt's frame stream: the wire between a virtio-net card and passt, the
//! user-mode network stack QEMU, libvirt and Podman use (passt(1),
//! "qemu mode").
//!
//! passt listens on a UNIX stream socket; over the connection each
//! Ethernet frame, in either direction, is a 32-bit big-endian length
//! followed by that many bytes of frame (no virtio header, no padding).
//! [`PasstStream`] speaks this on a non-blocking socket and is a
//! [`NetBackend`]:
//!
//! - **Receive** reads what the socket has into a buffer and cuts frames
//!   out of it ([`FrameDecoder`]): a length or a frame split over reads
//!   waits for the rest. A length above [`MAX_FRAME_LEN`] means the peer
//!   is broken or hostile: the connection is shut down with one log line
//!   and receiving ends, as it does when passt closes the stream.
//! - **Transmit** appends length and frame to a bounded queue
//!   ([`TX_QUEUE_BYTES`]) and writes as much of it as the socket takes
//!   without blocking; the rest is written when the receive thread sees
//!   the socket writable ([`NetBackend::flush`]). A frame that does not fit
//!   the queue is refused whole (counted dropped by the device, as a full
//!   NIC queue would drop it), so the stream never holds half a frame of
//!   ours. A dead connection refuses every frame.
//!
//! Nothing here blocks or panics on what the peer sends; the worst a
//! hostile passt can do is end the card's connection.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::virtio::net::MAX_FRAME_LEN;
use crate::virtio::net_backend::{set_nonblocking, NetBackend};

/// Bytes of the length in front of every frame.
pub const LEN_BYTES: usize = 4;
/// The most bytes of queued frames (lengths included) waiting for the
/// socket; a frame beyond it is refused.
pub const TX_QUEUE_BYTES: usize = 1 << 20;
/// How much one `read` asks for.
const READ_CHUNK: usize = 16 * 1024;

/// Why the stream is broken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A length above [`MAX_FRAME_LEN`].
    #[error("passt announced a frame of {0} bytes, more than the maximum {MAX_FRAME_LEN}")]
    TooLong(u32),
}

/// Cuts length-prefixed frames out of a byte stream that arrives in
/// pieces of any size.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// The first byte not yet consumed.
    start: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        FrameDecoder {
            buf: Vec::with_capacity(LEN_BYTES + MAX_FRAME_LEN + READ_CHUNK),
            start: 0,
        }
    }

    /// Takes the next complete frame, if the bytes so far hold one.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        let have = &self.buf[self.start..];
        let Some(len) = have.get(..LEN_BYTES) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        if len as usize > MAX_FRAME_LEN {
            return Err(FramingError::TooLong(len));
        }
        let end = LEN_BYTES + len as usize;
        if have.len() < end {
            return Ok(None);
        }
        let from = self.start + LEN_BYTES;
        self.start += end;
        Ok(Some(&self.buf[from..self.start]))
    }

    /// Adds bytes that arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet make a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Drops consumed bytes from the front.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// A connection to passt, carrying frames for one virtio-net card.
#[derive(Debug)]
pub struct PasstStream {
    fd: OwnedFd,
    rx: Mutex<FrameDecoder>,
    tx: Mutex<VecDeque<u8>>,
    dead: AtomicBool,
}

impl PasstStream {
    /// Speaks passt's framing on `fd`, a connected UNIX stream socket
    /// (made non-blocking here).
    pub fn new(fd: OwnedFd) -> std::io::Result<Self> {
        set_nonblocking(&fd)?;
        Ok(PasstStream {
            fd,
            rx: Mutex::new(FrameDecoder::new()),
            tx: Mutex::new(VecDeque::new()),
            dead: AtomicBool::new(false),
        })
    }

    /// Ends the connection quietly (the VM stopped): passt sees the end
    /// and waits for its next client.
    pub fn close(&self) {
        if !self.dead.swap(true, Ordering::SeqCst) {
            // SAFETY: shutdown(2) takes no pointers; the descriptor is ours.
            unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    /// Ends the connection (both ways) once, with one log line.
    fn kill(&self, why: &dyn std::fmt::Display) {
        if !self.dead.swap(true, Ordering::SeqCst) {
            tracing::warn!("virtio-net: the passt connection is dropped: {why}");
            // SAFETY: shutdown(2) takes no pointers; the descriptor is ours.
            unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    fn broken() -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "the passt connection is closed",
        )
    }

    /// Writes queued bytes until the queue is empty or the socket full.
    fn write_queued(&self, queue: &mut VecDeque<u8>) -> std::io::Result<()> {
        while !queue.is_empty() {
            let (front, _) = queue.as_slices();
            // SAFETY: `front` is valid for reads of its length; MSG_NOSIGNAL
            // turns a closed peer into EPIPE instead of SIGPIPE.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    front.as_ptr().cast(),
                    front.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.kind() {
                    std::io::ErrorKind::WouldBlock => Ok(()),
                    std::io::ErrorKind::Interrupted => continue,
                    _ => {
                        self.kill(&e);
                        Err(e)
                    }
                };
            }
            queue.drain(..n as usize);
        }
        Ok(())
    }

    /// Reads what the socket has into the decoder: `Ok(true)` if bytes
    /// came, `Ok(false)` if none wait.
    fn fill(&self, decoder: &mut FrameDecoder) -> std::io::Result<bool> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut got = false;
        // Bounded: at most a frame's worth per call, so a fast peer
        // cannot keep the thread here.
        while decoder.buffered() < LEN_BYTES + MAX_FRAME_LEN {
            // SAFETY: `chunk` is valid for writes of its length.
            let n =
                unsafe { libc::read(self.fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::WouldBlock => return Ok(got),
                    std::io::ErrorKind::Interrupted => continue,
                    _ => {
                        self.kill(&e);
                        return Err(e);
                    }
                }
            }
            if n == 0 {
                let why = if decoder.buffered() > 0 {
                    "passt closed the connection in the middle of a frame"
                } else {
                    "passt closed the connection"
                };
                self.kill(&why);
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, why));
            }
            decoder.push(&chunk[..n as usize]);
            got = true;
        }
        Ok(got)
    }
}

impl NetBackend for PasstStream {
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(Self::broken());
        }
        if frame.len() > MAX_FRAME_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "frame too long",
            ));
        }
        let mut queue = alcazar_core::bus::lock(&self.tx);
        if queue.len() + LEN_BYTES + frame.len() > TX_QUEUE_BYTES {
            // Make room first; refuse the frame if there still is none.
            self.write_queued(&mut queue)?;
            if queue.len() + LEN_BYTES + frame.len() > TX_QUEUE_BYTES {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
        }
        queue.extend((frame.len() as u32).to_be_bytes());
        queue.extend(frame);
        self.write_queued(&mut queue)
    }

    fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(Self::broken());
        }
        let mut decoder = alcazar_core::bus::lock(&self.rx);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let n = frame.len().min(buf.len());
                    buf[..n].copy_from_slice(&frame[..n]);
                    return Ok(Some(n));
                }
                Ok(None) => {}
                Err(e) => {
                    self.kill(&e);
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
            }
            if !self.fill(&mut decoder)? {
                return Ok(None);
            }
        }
    }

    fn poll_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn kind(&self) -> &'static str {
        "passt"
    }

    fn wants_write(&self) -> bool {
        !self.dead.load(Ordering::SeqCst) && !alcazar_core::bus::lock(&self.tx).is_empty()
    }

    fn flush(&self) -> std::io::Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(Self::broken());
        }
        let mut queue = alcazar_core::bus::lock(&self.tx);
        self.write_queued(&mut queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    fn framed(frame: &[u8]) -> Vec<u8> {
        let mut v = (frame.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(frame);
        v
    }

    fn pair() -> (PasstStream, UnixStream) {
        let (ours, peer) = UnixStream::pair().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (PasstStream::new(OwnedFd::from(ours)).unwrap(), peer)
    }

    #[test]
    fn frames_split_at_every_byte_are_reassembled() {
        let frames: Vec<Vec<u8>> = (1..5).map(|n| vec![n as u8; n * 37]).collect();
        let wire: Vec<u8> = frames.iter().flat_map(|f| framed(f)).collect();
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f.to_vec());
            }
        }
        assert_eq!(got, frames);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn an_oversized_length_is_an_error_before_its_bytes_arrive() {
        let mut d = FrameDecoder::new();
        d.push(&((MAX_FRAME_LEN as u32 + 1).to_be_bytes()));
        assert_eq!(
            d.next_frame(),
            Err(FramingError::TooLong(MAX_FRAME_LEN as u32 + 1))
        );
        let mut ok = FrameDecoder::new();
        ok.push(&framed(&vec![7u8; MAX_FRAME_LEN]));
        assert_eq!(
            ok.next_frame().unwrap().map(<[u8]>::len),
            Some(MAX_FRAME_LEN)
        );
    }

    #[test]
    fn partial_reads_on_the_socket_give_whole_frames() {
        let (s, mut peer) = pair();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let wire = framed(&[1, 2, 3, 4, 5]);
        peer.write_all(&wire[..3]).unwrap();
        assert_eq!(s.recv(&mut buf).unwrap(), None, "half a length");
        peer.write_all(&wire[3..6]).unwrap();
        assert_eq!(s.recv(&mut buf).unwrap(), None, "half a frame");
        peer.write_all(&wire[6..]).unwrap();
        assert_eq!(s.recv(&mut buf).unwrap(), Some(5));
        assert_eq!(&buf[..5], &[1, 2, 3, 4, 5]);
        assert_eq!(s.recv(&mut buf).unwrap(), None);
    }

    #[test]
    fn an_oversized_frame_drops_the_connection() {
        let (s, mut peer) = pair();
        peer.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let e = s.recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        assert!(s.send(&[0u8; 60]).is_err(), "a dead stream refuses frames");
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "our side shut the connection down");
    }

    #[test]
    fn eof_ends_receiving_even_mid_frame() {
        let (s, mut peer) = pair();
        let wire = framed(&[9u8; 100]);
        peer.write_all(&wire[..50]).unwrap();
        drop(peer);
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let e = s.recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("middle of a frame"), "{e}");
    }

    #[test]
    fn sent_frames_get_lengths_and_a_full_socket_queues_then_refuses() {
        let (s, mut peer) = pair();
        s.send(&[0xab; 60]).unwrap();
        let mut got = [0u8; 64];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[..4], &60u32.to_be_bytes());
        assert_eq!(&got[4..], &[0xab; 60]);
        // Nobody reads: the socket buffer fills, then the queue, then
        // frames are refused, never half-sent.
        let frame = vec![0x5a; 1500];
        let mut sent = 0usize;
        let refused = loop {
            match s.send(&frame) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 100_000, "the queue is bounded");
        };
        assert_eq!(refused.kind(), std::io::ErrorKind::WouldBlock);
        assert!(s.wants_write());
        // The peer reads everything while we flush: whole frames arrive.
        let reader = std::thread::spawn(move || {
            let mut count = 0;
            let mut len = [0u8; 4];
            while peer.read_exact(&mut len).is_ok() {
                let n = u32::from_be_bytes(len) as usize;
                let mut f = vec![0u8; n];
                peer.read_exact(&mut f).unwrap();
                assert_eq!(f, vec![0x5a; 1500]);
                count += 1;
            }
            count
        });
        while s.wants_write() {
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: shutdown(2) takes no pointers.
        unsafe { libc::shutdown(s.poll_fd(), libc::SHUT_WR) };
        assert_eq!(reader.join().unwrap(), sent);
    }
}
