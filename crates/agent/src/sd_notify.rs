//! systemd's notification protocol (`Type=notify`, `WatchdogSec=`), spoken directly: one
//! datagram per message to the socket `NOTIFY_SOCKET` names. Nothing happens when the
//! process was not started by systemd.

use std::os::unix::net::UnixDatagram;

/// A handle on systemd's notification socket (inert without `NOTIFY_SOCKET`).
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    ready_sent: bool,
    last_status: String,
}

impl Notifier {
    /// From this process's environment.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = address(&path)?;
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        Notifier {
            socket,
            ready_sent: false,
            last_status: String::new(),
        }
    }

    fn send(&self, message: &str) {
        if let Some((sock, addr)) = &self.socket {
            if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
                tracing::debug!(error = %e, "systemd notification not sent");
            }
        }
    }

    /// `READY=1` the first time `ready` holds; `WATCHDOG=1` on every call (the service's
    /// `WatchdogSec` restarts a process whose loop stops); `STATUS=` when it changed.
    pub fn cycle(&mut self, ready: bool, status: &str) {
        if self.socket.is_none() {
            return;
        }
        let mut message = String::from("WATCHDOG=1\n");
        if ready && !self.ready_sent {
            self.ready_sent = true;
            message.push_str("READY=1\n");
        }
        if status != self.last_status {
            self.last_status = status.to_string();
            message.push_str(&format!("STATUS={}\n", status.replace('\n', " ")));
        }
        self.send(&message);
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send("STOPPING=1\n");
    }
}

/// A path, or `@name` for an abstract socket.
fn address(path: &str) -> Option<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    match path.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok(),
        None => std::os::unix::net::SocketAddr::from_pathname(path).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_watchdog_always_status_on_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).expect("bind");
        let mut n = Notifier {
            socket: Some((
                UnixDatagram::unbound().expect("socket"),
                address(path.to_str().expect("utf-8")).expect("address"),
            )),
            ready_sent: false,
            last_status: String::new(),
        };
        let mut buf = [0u8; 512];
        let mut next = || {
            let len = server.recv(&mut buf).expect("recv");
            String::from_utf8_lossy(&buf[..len]).into_owned()
        };
        n.cycle(false, "starting");
        assert_eq!(next(), "WATCHDOG=1\nSTATUS=starting\n");
        n.cycle(true, "replica streaming");
        assert_eq!(next(), "WATCHDOG=1\nREADY=1\nSTATUS=replica streaming\n");
        n.cycle(true, "replica streaming");
        assert_eq!(next(), "WATCHDOG=1\n");
        n.stopping();
        assert_eq!(next(), "STOPPING=1\n");
    }

    #[test]
    fn without_notify_socket_nothing_happens() {
        let mut n = Notifier {
            socket: None,
            ready_sent: false,
            last_status: String::new(),
        };
        n.cycle(true, "x");
        assert!(!n.ready_sent);
    }
}
