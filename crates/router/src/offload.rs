//! Kernel forwarding (`forwarding: kernel`, the default where the kernel allows it): after
//! the startup, a session's two sockets are put in a BPF socket map whose program sends
//! whatever arrives on one straight out of the other, inside the kernel. The router's
//! threads are then not woken for any message of the session: no reads, no writes, no event
//! loop turns. This is what a proxy on a small machine shared with PostgreSQL and its
//! clients needs, where every microsecond the proxy spends is taken from them.
//!
//! The router still owns both sockets: it watches them (an epoll set of its own that only
//! reports a peer closing, never data) to end the session when either side closes (once
//! the kernel's TCP counters show that everything received was delivered), and closes them
//! itself when the session must end (the server stopped being the leader, the router
//! stops). The bytes moved are read from the same counters.
//!
//! Needs Linux 5.13 or later and CAP_BPF + CAP_NET_ADMIN (root). Where the map or program
//! cannot be created, `forwarding: auto` falls back to the user-space relay (`pump`) with
//! one log line; a session whose map entries cannot be made uses the relay too.

mod bpf;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::Instrument;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

/// Sockets each map can hold (two per session); a session beyond this uses the relay.
const MAX_SOCKETS: u32 = 65_536;

/// The socket map with its program, and the watch on the sessions' sockets.
pub(crate) struct Offload {
    /// Every forwarded socket under its own cookie. The program is attached to this map, so
    /// it runs on what arrives on these sockets; a socket leaving it drops what the kernel
    /// still had on its way to it, so it leaves last (when the pair is dropped).
    members: OwnedFd,
    /// Where the program looks up where to send: a socket's cookie → its partner. Taking a
    /// key out (`Pair::hold_client`) leaves that socket's data on the socket itself.
    map: OwnedFd,
    _program: OwnedFd,
    /// epoll set of every forwarded socket, reporting only hang-ups and errors.
    closes: AsyncFd<OwnedFd>,
    /// Session token → who waits for its end.
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_token: AtomicU64,
}

impl Offload {
    /// Create the map and load the program (inside a tokio runtime); `watch` then runs the
    /// task that reports closed sessions.
    pub(crate) fn open() -> io::Result<Arc<Offload>> {
        let map = bpf::sockhash(MAX_SOCKETS)
            .map_err(|e| io::Error::new(e.kind(), format!("creating the socket map: {e}")))?;
        let members = bpf::sockhash(MAX_SOCKETS)
            .map_err(|e| io::Error::new(e.kind(), format!("creating the socket map: {e}")))?;
        let program = bpf::attach_program(&members, &map)?;
        // SAFETY: plain system call; the descriptor is checked and owned below.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just created here.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        // SAFETY: an OwnedFd keeps its one descriptor open for the AsyncFd's lifetime.
        let closes = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let offload = Arc::new(Offload {
            members,
            map,
            _program: program,
            closes,
            waiting: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
        });
        Ok(offload)
    }

    /// Report closed sessions until `stop`.
    pub(crate) fn watch_closes(
        self: &Arc<Self>,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(report_closes(self.clone(), stop).in_current_span())
    }

    /// Hand the session's sockets to the kernel. Call it before the client has been sent
    /// its ReadyForQuery: until then neither side sends anything, so no byte can arrive
    /// while only one of them is in the map. Errors leave both sockets as they were.
    /// `held` is how many bytes the caller will still write to the client itself (the
    /// server's startup answers up to ReadyForQuery).
    pub(crate) fn attach(
        self: &Arc<Self>,
        client: &TcpStream,
        server: &TcpStream,
        held: usize,
    ) -> io::Result<Pair> {
        let (client_fd, server_fd) = (client.as_raw_fd(), server.as_raw_fd());
        if pending(client_fd)? > 0 || pending(server_fd)? > 0 {
            return Err(io::Error::other(
                "bytes already waiting on the session (a client that did not wait for ReadyForQuery)",
            ));
        }
        let client_cookie = bpf::cookie(client_fd)?;
        let server_cookie = bpf::cookie(server_fd)?;
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, tx);
        let (Some(client_start), Some(server_start)) = (tcp_bytes(client_fd), tcp_bytes(server_fd))
        else {
            return Err(io::Error::other("TCP_INFO unavailable"));
        };
        let mut pair = Pair {
            offload: self.clone(),
            token,
            client_fd,
            server_fd,
            client_start,
            server_start,
            held: held as u64,
            keys: Vec::with_capacity(2),
            members: Vec::with_capacity(2),
            watched: Vec::with_capacity(2),
            ended: rx,
        };
        // Data arriving on the server is looked up under the server's cookie and sent to
        // the client, and the other way round. The partners first: once a socket is a
        // member, the program runs on what arrives on it, and its partner must be there to
        // receive it (data the program finds no partner for stays on the socket, where the
        // router does not look during a hand-over).
        bpf::insert(&self.map, server_cookie, client_fd)?;
        pair.keys.push(server_cookie);
        bpf::insert(&self.map, client_cookie, server_fd)?;
        pair.keys.push(client_cookie);
        bpf::insert(&self.members, server_cookie, server_fd)?;
        pair.members.push(server_cookie);
        bpf::insert(&self.members, client_cookie, client_fd)?;
        pair.members.push(client_cookie);
        for fd in [client_fd, server_fd] {
            self.watch(fd, token)?;
            pair.watched.push(fd);
        }
        // A byte that came in between the check above and the insert would wait for the
        // next one; a client that sends before ReadyForQuery is the only one that could.
        if pending(client_fd)? > 0 {
            return Err(io::Error::other(
                "client bytes arrived during the hand-over",
            ));
        }
        Ok(pair)
    }

    fn watch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; `event` is a valid epoll_event.
        let r = unsafe {
            libc::epoll_ctl(
                self.closes.get_ref().as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd,
                &mut event,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Bytes queued for reading on a socket.
fn pending(fd: RawFd) -> io::Result<libc::c_int> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// The bytes a socket has received and its peer has acknowledged (TCP_INFO).
fn tcp_bytes(socket: RawFd) -> Option<Counters> {
    // SAFETY: tcp_info is plain old data; zeroes are a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info/len describe a tcp_info the kernel fills (partly, for older kernels).
    let r = unsafe {
        libc::getsockopt(
            socket,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(Counters {
        received: info.tcpi_bytes_received,
        acked: info.tcpi_bytes_acked,
        closed: info.tcpi_state == TCP_CLOSE,
        // The peer's FIN takes one sequence number, counted in `received`.
        fin: u64::from(info.tcpi_state == TCP_CLOSE_WAIT),
    })
}

/// A forwarded session's byte counters since the take-over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flow {
    /// Received from the client (forwarded to the server, or held for the router).
    pub from_client: u64,
    /// Received from the server, and the startup answers the router wrote to the client.
    pub from_server: u64,
    /// Sent to the server and acknowledged by it.
    pub acked_by_server: u64,
    /// Sent to the client and acknowledged by it.
    pub acked_by_client: u64,
    /// A side reset or fully closed.
    pub closed: bool,
    /// The server closed its end (its FIN arrived).
    pub server_finished: bool,
}

/// A socket's TCP byte counters.
#[derive(Debug, Clone, Copy)]
struct Counters {
    received: u64,
    acked: u64,
    /// Reset or fully closed: nothing more can be delivered through it.
    closed: bool,
    /// 1 once the peer's FIN arrived (it counts in `received` but is not data).
    fin: u64,
}

/// `tcpi_state` values (include/net/tcp_states.h).
const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;

/// Wake the session of every socket whose peer closed (or that failed).
async fn report_closes(offload: Arc<Offload>, mut stop: watch::Receiver<bool>) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
        let mut ready = tokio::select! {
            ready = offload.closes.readable() => match ready {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::error!(error = %e, "kernel forwarding: cannot watch sessions");
                    return;
                }
            },
            _ = crate::stop::stopped(&mut stop) => return,
        };
        // SAFETY: `events` has room for its length; timeout 0 never blocks.
        let n = unsafe {
            libc::epoll_wait(
                offload.closes.get_ref().as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "kernel forwarding: cannot watch sessions");
                return;
            }
            continue;
        }
        if (n as usize) < events.len() {
            ready.clear_ready();
        }
        let mut waiting = offload.waiting.lock().unwrap_or_else(|p| p.into_inner());
        for event in &events[..n as usize] {
            let token = event.u64;
            if let Some(tx) = waiting.remove(&token) {
                let _ = tx.send(());
            }
        }
    }
}

/// A session forwarded by the kernel; dropping it takes its sockets out of the map (they
/// are then closed by their owner).
pub(crate) struct Pair {
    offload: Arc<Offload>,
    token: u64,
    client_fd: RawFd,
    server_fd: RawFd,
    /// Counters when the kernel took over.
    client_start: Counters,
    server_start: Counters,
    /// Bytes the router wrote to the client after the take-over.
    held: u64,
    keys: Vec<u64>,
    /// Keys in `Offload::members`, removed last.
    members: Vec<u64>,
    watched: Vec<RawFd>,
    ended: oneshot::Receiver<()>,
}

impl Pair {
    /// Bytes forwarded since the take-over: (to the server, to the client), counting the
    /// held startup answers. None when the counters cannot be read.
    pub(crate) fn moved(&self) -> Option<(u64, u64)> {
        self.flow().map(|f| (f.from_client, f.from_server))
    }

    /// Whether every byte received on either socket has been delivered (acknowledged by
    /// the other side's peer): nothing is left in the kernel's queues between them.
    pub(crate) fn drained(&self) -> bool {
        self.flow().is_none_or(|f| {
            f.closed || (f.acked_by_server >= f.from_client && f.acked_by_client >= f.from_server)
        })
    }

    /// Stop sending the client's data to the server: from now on it stays on the client's
    /// socket for the router to read; the server's data still goes to the client, and what
    /// was already on its way to the server is still delivered.
    pub(crate) fn hold_client(&mut self) -> io::Result<()> {
        self.take_key(bpf::cookie(self.client_fd)?)
    }

    /// Stop sending the server's data to the client (after `hold_client`): both directions
    /// then stay on their sockets; dropping the pair takes the sockets out of the map.
    pub(crate) fn hold_server(&mut self) -> io::Result<()> {
        self.take_key(bpf::cookie(self.server_fd)?)
    }

    fn take_key(&mut self, key: u64) -> io::Result<()> {
        bpf::remove(&self.offload.map, key)?;
        self.keys.retain(|k| *k != key);
        Ok(())
    }

    /// The bytes of each direction since the take-over: what arrived, and what the other
    /// side's peer acknowledged. None when the counters cannot be read.
    pub(crate) fn flow(&self) -> Option<Flow> {
        let client = tcp_bytes(self.client_fd)?;
        let server = tcp_bytes(self.server_fd)?;
        Some(Flow {
            from_client: (client.received - client.fin).saturating_sub(self.client_start.received),
            from_server: self.held
                + (server.received - server.fin).saturating_sub(self.server_start.received),
            acked_by_server: server.acked.saturating_sub(self.server_start.acked),
            acked_by_client: client.acked.saturating_sub(self.client_start.acked),
            closed: client.closed || server.closed,
            server_finished: server.fin == 1,
        })
    }

    /// Resolves when either side closed its end or failed.
    pub(crate) async fn ended(&mut self) {
        if (&mut self.ended).await.is_err() {
            // The watcher is gone (the router is stopping): the stop signal ends the session.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for key in self.keys.drain(..) {
            if let Err(e) = bpf::remove(&self.offload.map, key) {
                tracing::debug!(error = %e, "kernel forwarding: removing a socket from the map");
            }
        }
        for key in self.members.drain(..) {
            if let Err(e) = bpf::remove(&self.offload.members, key) {
                tracing::debug!(error = %e, "kernel forwarding: removing a socket from the map");
            }
        }
        for fd in self.watched.drain(..) {
            // SAFETY: the epoll set and `fd` are open (the session still owns its sockets).
            unsafe {
                libc::epoll_ctl(
                    self.offload.closes.get_ref().as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                );
            }
        }
        self.offload
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
    }
}
