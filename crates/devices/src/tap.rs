//! A Linux TAP interface: the host end of a virtual Ethernet link
//! (the kernel's `Documentation/networking/tuntap.rst`).
//!
//! Opening `/dev/net/tun` and issuing `TUNSETIFF` with `IFF_TAP` attaches
//! the file descriptor to a TAP interface (creating it if no interface of
//! that name exists; a name ending in `%d` lets the kernel pick a free
//! number). Every `read` then returns one Ethernet frame the host sent
//! into the interface, every `write` sends one. With `IFF_NO_PI` there is
//! no packet-information prefix; with `IFF_VNET_HDR` and
//! `TUNSETVNETHDRSZ = 12` every frame is preceded by the 12-byte
//! `virtio_net_hdr_v1` (virtio 1.2 §5.1.6), exactly what a virtio-net
//! driver puts in front of its frames.
//!
//! The interface lives as long as the descriptor when this module created
//! it (it is not made persistent). [`Tap::set_ipv4`] gives the host end an
//! address and brings it up through the classic `SIOCSIF*` ioctls on an
//! `AF_INET` socket (netdevice(7)), so the library never runs `ip`.
//!
//! Creating an interface and setting its address need `CAP_NET_ADMIN`;
//! attaching to a persistent TAP that was created for the current user
//! (`ip tuntap add NAME mode tap user USER`) does not.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Length of `struct virtio_net_hdr_v1`, what precedes every frame on the
/// TAP and in the virtqueues.
pub const VNET_HDR_LEN: usize = 12;

/// Why a TAP interface could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name is empty, too long or holds a NUL.
    #[error("bad interface name {0:?}: give 1 to 15 bytes without NUL")]
    BadName(String),
    /// `/dev/net/tun` could not be opened (missing: the tun module is
    /// not loaded; permission denied: the node is not `0666`).
    #[error("cannot open /dev/net/tun: {0}")]
    Open(std::io::Error),
    /// An ioctl failed (`EPERM`: creating an interface or setting its
    /// address needs `CAP_NET_ADMIN`; attaching to a persistent tap owned
    /// by the user does not).
    #[error("{what} on {name}: {source}")]
    Ioctl {
        /// The operation.
        what: &'static str,
        /// The interface.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// An open TAP interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the TAP interface `name` (created if it does not
    /// exist; `alcazar%d` lets the kernel number it), with the 12-byte
    /// virtio header in front of every frame and non-blocking I/O.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let mut req = ifreq(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::Open)?;
        let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        req.ifr_ifru.ifru_flags = flags as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req`
        // is, for the duration of the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        check(rc, "TUNSETIFF", name)?;
        let name = name_of(&req);
        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        check(rc, "TUNSETVNETHDRSZ", &name)?;
        Ok(Tap { file, name })
    }

    /// The interface name the kernel gave (with `%d` resolved).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives the host end `addr`/`prefix_len` and brings the interface
    /// up (`SIOCSIFADDR`, `SIOCSIFNETMASK`, `SIOCSIFFLAGS`).
    pub fn set_ipv4(&self, addr: Ipv4Addr, prefix_len: u8) -> Result<(), TapError> {
        let sock = inet_socket(&self.name)?;
        let mut req = ifreq(&self.name)?;
        req.ifr_ifru.ifru_addr = sockaddr_in(addr);
        // SAFETY: SIOCSIFADDR reads a `struct ifreq`.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR, &req) };
        check(rc, "SIOCSIFADDR", &self.name)?;
        req.ifr_ifru.ifru_netmask = sockaddr_in(netmask(prefix_len));
        // SAFETY: SIOCSIFNETMASK reads a `struct ifreq`.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFNETMASK, &req) };
        check(rc, "SIOCSIFNETMASK", &self.name)?;
        self.set_up_with(&sock)
    }

    /// Makes the interface outlive this descriptor (`TUNSETPERSIST` 1), or
    /// go away with the last one (0). A persistent tap can be attached to
    /// later by name ([`Tap::open`]).
    pub fn set_persistent(&self, persistent: bool) -> Result<(), TapError> {
        let value = libc::c_ulong::from(persistent);
        // SAFETY: TUNSETPERSIST takes its argument by value, no pointer.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETPERSIST, value) };
        check(rc, "TUNSETPERSIST", &self.name)
    }

    /// Brings the interface up (`IFF_UP`), keeping its other flags.
    pub fn set_up(&self) -> Result<(), TapError> {
        let sock = inet_socket(&self.name)?;
        self.set_up_with(&sock)
    }

    fn set_up_with(&self, sock: &OwnedFd) -> Result<(), TapError> {
        let mut req = ifreq(&self.name)?;
        // SAFETY: SIOCGIFFLAGS fills the flags of a `struct ifreq`.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
        check(rc, "SIOCGIFFLAGS", &self.name)?;
        // SAFETY: the kernel just wrote the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads a `struct ifreq`.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
        check(rc, "SIOCSIFFLAGS", &self.name)
    }

    /// The descriptor, for a [`crate::virtio::net::VirtioNet`]: each read
    /// or write is one header-prefixed frame.
    pub fn into_fd(self) -> OwnedFd {
        OwnedFd::from(self.file)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// The netmask of a prefix length (clamped to 32).
pub fn netmask(prefix_len: u8) -> Ipv4Addr {
    let bits = u32::from(prefix_len.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - bits).unwrap_or(0))
}

fn ifreq(name: &str) -> Result<libc::ifreq, TapError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(TapError::BadName(name.to_string()));
    }
    // SAFETY: `ifreq` is plain data (arrays, integers, a union of those
    // and a pointer); all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &b) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = b as libc::c_char;
    }
    Ok(req)
}

fn name_of(req: &libc::ifreq) -> String {
    // SAFETY: the kernel writes a NUL-terminated name of at most
    // IFNAMSIZ - 1 bytes, and `ifreq` zeroed the array first, so it holds
    // a NUL within its bounds.
    let name = unsafe { CStr::from_ptr(req.ifr_name.as_ptr()) };
    name.to_string_lossy().into_owned()
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `sockaddr_in` and `sockaddr` have the same size (16 bytes)
    // and both are plain data; the kernel reads the former's layout.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn inet_socket(name: &str) -> Result<OwnedFd, TapError> {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(fd, "socket(AF_INET)", name)?;
    // SAFETY: `fd` is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(rc: libc::c_int, what: &'static str, name: &str) -> Result<(), TapError> {
    if rc >= 0 {
        return Ok(());
    }
    Err(TapError::Ioctl {
        what,
        name: name.to_string(),
        source: std::io::Error::last_os_error(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_of_prefix_lengths() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(netmask(40), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(netmask(9), Ipv4Addr::new(255, 128, 0, 0));
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(matches!(ifreq(""), Err(TapError::BadName(_))));
        assert!(matches!(
            ifreq("a234567890123456"),
            Err(TapError::BadName(_))
        ));
        assert!(matches!(ifreq("a\0b"), Err(TapError::BadName(_))));
        let req = ifreq("tap0").unwrap();
        assert_eq!(name_of(&req), "tap0");
    }

    #[test]
    fn sockaddr_in_is_network_order() {
        let sa = sockaddr_in(Ipv4Addr::new(10, 0, 2, 1));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        // sin_port (2 bytes) then the address, most significant byte first.
        assert_eq!(&sa.sa_data[2..6], &[10, 0, 2, 1]);
    }

    /// Needs root and /dev/net/tun; skipped (with a message) elsewhere.
    #[test]
    fn creates_a_tap_with_an_address_when_allowed() {
        let tap = match Tap::open("alcut%d") {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        assert!(tap.name().starts_with("alcut"), "{}", tap.name());
        tap.set_ipv4(Ipv4Addr::new(10, 254, 77, 1), 24).unwrap();
        let addrs = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
        assert!(addrs.contains("10.254.77.1"), "the host address is set");
        let sys = format!("/sys/class/net/{}", tap.name());
        assert!(std::path::Path::new(&sys).exists());
        drop(tap);
        assert!(
            !std::path::Path::new(&sys).exists(),
            "gone with its descriptor"
        );
    }

    #[test]
    fn a_persistent_tap_outlives_its_descriptor_when_allowed() {
        let tap = match Tap::open("alcup%d") {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        let name = tap.name().to_string();
        tap.set_persistent(true).unwrap();
        drop(tap);
        let sys = format!("/sys/class/net/{name}");
        assert!(std::path::Path::new(&sys).exists(), "still there");
        let again = Tap::open(&name).unwrap();
        again.set_persistent(false).unwrap();
        drop(again);
        assert!(!std::path::Path::new(&sys).exists(), "removed");
    }
}
