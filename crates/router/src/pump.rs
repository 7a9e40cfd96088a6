//! Byte forwarding between a client and its server after the startup, cheap in memory and
//! in system calls: an idle session holds no buffer at all, and a message costs one read and
//! one write.
//!
//! Each direction reads into a scratch buffer shared by every session on the thread (64 KiB,
//! borrowed only between a read and the write that follows it, never across an await) and
//! writes it on at once without waiting. Only when the receiving socket is full is the unsent
//! rest copied into a buffer of the session's own, which is freed once it has been written;
//! reading that direction pauses meanwhile, so a slow reader holds back a fast writer the way
//! TCP would. A read shorter than the scratch buffer means the socket was drained, so the
//! direction goes back to the event loop without the read that would only return
//! `WouldBlock` (the readiness is cleared by tokio under its own tick check, so data that
//! arrives meanwhile still wakes the task). At end of stream from one side, the other side's
//! write half is shut down (as `tokio::io::copy_bidirectional` does) and forwarding ends
//! when both directions have ended.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// The largest read: big enough that bulk results move in few system calls.
pub(crate) const SCRATCH: usize = 64 * 1024;

thread_local! {
    /// One read buffer per runtime thread (zeroed pages are only touched when used).
    static SCRATCH_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Bytes moved so far in each direction, readable even when forwarding is cut short.
#[derive(Debug, Default)]
pub(crate) struct Moved {
    /// Written to the server (what the client sent).
    pub to_server: AtomicU64,
    /// Written to the client (what the server sent).
    pub to_client: AtomicU64,
}

/// Forwards bytes both ways until both sides have ended their stream or one fails.
pub(crate) async fn both_ways(
    client: &mut TcpStream,
    server: &mut TcpStream,
    moved: &Moved,
) -> io::Result<()> {
    let (client_in, client_out) = client.split();
    let (server_in, server_out) = server.split();
    tokio::try_join!(
        one_way(client_in, server_out, &moved.to_server),
        one_way(server_in, client_out, &moved.to_client),
    )?;
    Ok(())
}

/// What one read-and-pass step did.
enum Step {
    /// The sender ended its stream.
    End,
    /// Nothing to read after all (the readiness was stale).
    Nothing,
    /// `n` bytes were read and all written on; `drained` when the read emptied the socket.
    Passed { n: usize, drained: bool },
    /// Bytes were read but the receiver took only the first `written`: the rest, to write
    /// once it has room.
    Held { written: usize, rest: Vec<u8> },
}

async fn one_way(from: ReadHalf<'_>, mut to: WriteHalf<'_>, moved: &AtomicU64) -> io::Result<()> {
    loop {
        from.readable().await?;
        match read_and_pass(from.as_ref(), to.as_ref())? {
            Step::End => {
                to.shutdown().await?;
                return Ok(());
            }
            Step::Nothing => {}
            Step::Passed { n, drained } => {
                moved.fetch_add(n as u64, Ordering::Relaxed);
                if !drained {
                    // More is waiting: let other sessions on this thread run first.
                    tokio::task::consume_budget().await;
                }
            }
            Step::Held { written, rest } => {
                moved.fetch_add(written as u64, Ordering::Relaxed);
                to.write_all(&rest).await?;
                moved.fetch_add(rest.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

/// One read from `from` into the thread's scratch buffer and one write of it to `to`, both
/// without waiting. Only called once `from` has been reported readable.
fn read_and_pass(from: &TcpStream, to: &TcpStream) -> io::Result<Step> {
    let outcome = read_scratch(from, |data, drained| {
        let n = data.len();
        if n == 0 {
            return Ok(Step::End);
        }
        match to.try_write(data) {
            Ok(written) if written == n => Ok(Step::Passed { n, drained }),
            Ok(written) => Ok(Step::Held {
                written,
                rest: data[written..].to_vec(),
            }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Step::Held {
                written: 0,
                rest: data.to_vec(),
            }),
            Err(e) => Err(e),
        }
    });
    match outcome {
        Ok(step) => step,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Step::Nothing),
        Err(e) => Err(e),
    }
}

/// One read from `from` (reported readable) into the thread's scratch buffer, handed to
/// `use_bytes` with whether the read drained the socket (an empty slice: end of stream).
/// A read shorter than the buffer clears the socket's readiness, so the next wait goes to
/// the event loop without a read that would only return `WouldBlock`; data arriving
/// meanwhile still wakes the task (tokio keeps a readiness newer than the read). The
/// buffer is borrowed only for the call, never across an await. `Err(WouldBlock)`: nothing
/// to read after all (the readiness was stale; it is cleared).
pub(crate) fn read_scratch<R>(
    from: &TcpStream,
    use_bytes: impl FnOnce(&[u8], bool) -> R,
) -> io::Result<R> {
    SCRATCH_BUFFER.with_borrow_mut(|buffer| {
        let mut read: Option<usize> = None;
        // The read runs inside `try_io` so that a short read can clear the readiness that
        // was current before the read (a `WouldBlock` result clears it; a wake-up newer
        // than the read is kept).
        let outcome = from.try_io(Interest::READABLE, || {
            let n = from.try_read(buffer)?;
            read = Some(n);
            if n > 0 && n < buffer.len() {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match (outcome, read) {
            (_, Some(n)) => Ok(use_bytes(&buffer[..n], n < buffer.len())),
            (Err(e), None) => Err(e),
            (Ok(()), None) => Err(io::ErrorKind::WouldBlock.into()),
        }
    })
}

/// Wait until `from` is readable and read it once as `read_scratch` does, appending the
/// bytes to `buf` (which therefore holds only what its owner has not consumed yet, and
/// nothing while idle). Ready(Ok(0)): end of stream.
pub(crate) fn poll_read_append(
    from: &TcpStream,
    cx: &mut std::task::Context<'_>,
    buf: &mut bytes::BytesMut,
) -> std::task::Poll<io::Result<usize>> {
    loop {
        std::task::ready!(from.poll_read_ready(cx))?;
        match read_scratch(from, |data, _| {
            crate::spare::append(buf, data);
            data.len()
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            outcome => return std::task::Poll::Ready(outcome),
        }
    }
}

/// `poll_read_append` for any reader (TLS): one `poll_read` into the scratch buffer.
pub(crate) fn poll_read_append_any<R: tokio::io::AsyncRead + Unpin>(
    from: &mut R,
    cx: &mut std::task::Context<'_>,
    buf: &mut bytes::BytesMut,
) -> std::task::Poll<io::Result<usize>> {
    SCRATCH_BUFFER.with_borrow_mut(|scratch| {
        let mut read = tokio::io::ReadBuf::new(scratch);
        std::task::ready!(std::pin::Pin::new(from).poll_read(cx, &mut read))?;
        crate::spare::append(buf, read.filled());
        std::task::Poll::Ready(Ok(read.filled().len()))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("local address");
        let (connected, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        (connected.expect("connect"), accepted.expect("accept").0)
    }

    /// client <-> (near, far) <-> server, with `both_ways` between near and far.
    struct Rig {
        client: TcpStream,
        server: TcpStream,
        pump: tokio::task::JoinHandle<(io::Result<()>, Moved)>,
    }

    async fn rig() -> Rig {
        let (client, mut near) = pair().await;
        let (mut far, server) = pair().await;
        let pump = tokio::spawn(async move {
            let moved = Moved::default();
            let result = both_ways(&mut near, &mut far, &moved).await;
            (result, moved)
        });
        Rig {
            client,
            server,
            pump,
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Reads everything until end of stream in small reads, yielding between them, so the
    /// reader is slower than the pump and the pump has to hold unsent bytes.
    async fn slow_read_all(stream: &mut tokio::net::tcp::ReadHalf<'_>) -> Vec<u8> {
        let mut all = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.expect("read");
            if n == 0 {
                return all;
            }
            all.extend_from_slice(&chunk[..n]);
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_session_holds_no_buffer() {
        // What a session costs while idle is its future: it must not embed a read buffer
        // (the old relay held 2 x 64 KiB per session; a 4 KiB array would show here too).
        let (mut near, _client) = pair().await;
        let (mut far, _server) = pair().await;
        let moved = Moved::default();
        let forwarding = both_ways(&mut near, &mut far, &moved);
        let size = std::mem::size_of_val(&forwarding);
        assert!(size < 1024, "the forwarding future takes {size} bytes");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn bulk_data_both_ways_arrives_intact_past_slow_readers() {
        let Rig {
            mut client,
            mut server,
            pump,
        } = rig().await;
        let up = pattern(8 << 20, 1);
        let down = pattern(6 << 20, 7);
        let (mut client_in, mut client_out) = client.split();
        let (mut server_in, mut server_out) = server.split();
        let exchange = async {
            tokio::join!(
                async {
                    client_out.write_all(&up).await.expect("client write");
                    client_out.shutdown().await.expect("client shutdown");
                },
                async {
                    server_out.write_all(&down).await.expect("server write");
                    server_out.shutdown().await.expect("server shutdown");
                },
                slow_read_all(&mut server_in),
                slow_read_all(&mut client_in),
            )
        };
        let (_, _, at_server, at_client) = tokio::time::timeout(Duration::from_secs(60), exchange)
            .await
            .expect("the exchange finished within 60 s");
        assert!(
            at_server == up,
            "the server got the client's bytes in order"
        );
        assert!(
            at_client == down,
            "the client got the server's bytes in order"
        );
        let (result, moved) = pump.await.expect("pump task");
        result.expect("forwarding ended cleanly");
        assert_eq!(moved.to_server.load(Ordering::Relaxed), up.len() as u64);
        assert_eq!(moved.to_client.load(Ordering::Relaxed), down.len() as u64);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn many_small_round_trips_never_stall() {
        let Rig {
            mut client,
            mut server,
            pump,
        } = rig().await;
        let rounds = 20_000u32;
        let echo = async {
            let mut message = [0u8; 64];
            for _ in 0..rounds {
                server.read_exact(&mut message).await.expect("server read");
                message[0] ^= 0xff;
                server.write_all(&message).await.expect("server write");
            }
            server
        };
        let talk = async {
            for round in 0..rounds {
                let mut message = [0u8; 64];
                message[..4].copy_from_slice(&round.to_be_bytes());
                client.write_all(&message).await.expect("client write");
                let mut answer = [0u8; 64];
                client.read_exact(&mut answer).await.expect("client read");
                assert_eq!(answer[0], message[0] ^ 0xff);
                assert_eq!(answer[1..4], message[1..4]);
            }
        };
        let (server, ()) =
            tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(echo, talk) })
                .await
                .expect("every round trip completed within 60 s");
        drop(client);
        drop(server);
        let (_, moved) = tokio::time::timeout(Duration::from_secs(10), pump)
            .await
            .expect("forwarding ended once both sides closed")
            .expect("pump task");
        assert_eq!(
            moved.to_server.load(Ordering::Relaxed),
            u64::from(rounds) * 64
        );
        assert_eq!(
            moved.to_client.load(Ordering::Relaxed),
            u64::from(rounds) * 64
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn end_of_stream_is_passed_on_and_the_other_way_keeps_working() {
        let Rig {
            mut client,
            mut server,
            pump,
        } = rig().await;
        client.write_all(b"last words").await.expect("client write");
        client.shutdown().await.expect("client shutdown");
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), server.read_to_end(&mut received))
            .await
            .expect("the server saw end of stream within 10 s")
            .expect("server read");
        assert_eq!(received, b"last words");
        server.write_all(b"goodbye").await.expect("server write");
        drop(server);
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
            .await
            .expect("the client saw end of stream within 10 s")
            .expect("client read");
        assert_eq!(answer, b"goodbye");
        let (result, moved) = tokio::time::timeout(Duration::from_secs(10), pump)
            .await
            .expect("forwarding ended within 10 s")
            .expect("pump task");
        result.expect("forwarding ended cleanly");
        assert_eq!(moved.to_server.load(Ordering::Relaxed), 10);
        assert_eq!(moved.to_client.load(Ordering::Relaxed), 7);
    }
}
