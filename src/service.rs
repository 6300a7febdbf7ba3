//! Telling the service manager that tgtd is ready (systemd's notify protocol, `Type=notify`).
//!
//! tgt's unit, and ours (`packaging/systemd/curve-tgt.service`), run tgtadm and tgt-admin as
//! soon as tgtd is "started"; with `Type=notify` that is when tgtd says `READY=1`, after its
//! management socket is bound and its portals listen, so the start sequence never races
//! the daemon. Without `NOTIFY_SOCKET` (not under systemd) this does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `READY=1` to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket); errors
/// are ignored, as sd_notify(3)'s callers do.
pub fn notify_ready() {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        let _ = send(&path.to_string_lossy(), b"READY=1");
    }
}

fn send(path: &str, msg: &[u8]) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(msg, &addr)?;
        }
        None => {
            sock.send_to(msg, path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ready_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        super::send(p.to_str().unwrap(), b"READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
