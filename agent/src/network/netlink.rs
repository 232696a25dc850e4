//! The one rtnetlink request berth makes itself: deleting a link by name (the bridge of
//! a removed network, which the CNI bridge plugin never deletes). Everything else on
//! links is done by the CNI plugins. The message is encoded and its acknowledgement
//! decoded by pure functions; [`delete_link`] only moves bytes over the socket.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

const RTM_DELLINK: u16 = 17;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const ENODEV: i32 = 19;
/// The kernel answers at once; the timeout only guards against a wedged socket.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// `RTM_DELLINK` for the link named `name` (index 0: the kernel looks the name up).
pub fn encode_dellink(name: &str, seq: u32) -> Vec<u8> {
    let attr_len = 4 + name.len() + 1;
    let total = NLMSG_HDRLEN + IFINFOMSG_LEN + align4(attr_len);
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&RTM_DELLINK.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifinfomsg, all zero: family AF_UNSPEC, type, index, flags, change.
    m.extend_from_slice(&[0u8; IFINFOMSG_LEN]);
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
    m.extend_from_slice(name.as_bytes());
    m.resize(total, 0);
    m
}

/// Decodes the kernel's answer to request `seq`: `Ok(true)` deleted, `Ok(false)` no
/// such link, else the errno.
pub fn decode_ack(buf: &[u8], seq: u32) -> io::Result<bool> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"));
    let u32_at = |o: usize| -> io::Result<u32> {
        buf.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
            .ok_or_else(|| bad("short message"))
    };
    let kind = buf
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
        .ok_or_else(|| bad("short message"))?;
    if kind != NLMSG_ERROR {
        return Err(bad(&format!("unexpected message type {kind}")));
    }
    if u32_at(8)? != seq {
        return Err(bad("answer to another request"));
    }
    let errno = u32_at(NLMSG_HDRLEN)? as i32;
    match -errno {
        0 => Ok(true),
        ENODEV => Ok(false),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Deletes the link `name` in the caller's network namespace.
pub fn delete_link(name: &str) -> io::Result<bool> {
    if name.is_empty() || name.len() > 15 || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid link name",
        ));
    }
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::new(RECV_TIMEOUT.as_secs() as _, 0),
    )?;
    let kernel = NetlinkAddr::new(0, 0);
    bind(fd.as_raw_fd(), &kernel)?;
    let seq = 1;
    sendto(
        fd.as_raw_fd(),
        &encode_dellink(name, seq),
        &kernel,
        MsgFlags::empty(),
    )?;
    let mut buf = [0u8; 4096];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    decode_ack(&buf[..n], seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dellink_message_layout() {
        let m = encode_dellink("bth0123456789ab", 7);
        // 16 header + 16 ifinfomsg + align4(4 + 15 + 1) = 52.
        assert_eq!(m.len(), 52);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 52);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_DELLINK);
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().unwrap()), 5);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(u16::from_ne_bytes(m[32..34].try_into().unwrap()), 20);
        assert_eq!(
            u16::from_ne_bytes(m[34..36].try_into().unwrap()),
            IFLA_IFNAME
        );
        assert_eq!(&m[36..51], b"bth0123456789ab");
        assert_eq!(m[51], 0);
        // Padding to four bytes.
        assert_eq!(encode_dellink("br0", 1).len(), 16 + 16 + 8);
    }

    fn ack(errno: i32, seq: u32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&errno.to_ne_bytes());
        m.extend_from_slice(&[0u8; 16]);
        m
    }

    #[test]
    fn decodes_acks_and_errors() {
        assert!(decode_ack(&ack(0, 3), 3).unwrap());
        assert!(!decode_ack(&ack(-19, 3), 3).unwrap());
        let e = decode_ack(&ack(-1, 3), 3).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(1));
        assert!(decode_ack(&ack(0, 4), 3).is_err());
        assert!(decode_ack(&[0u8; 6], 3).is_err());
    }
}
