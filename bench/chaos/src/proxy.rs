//! A userspace TCP proxy that delays and "loses" traffic (this kernel has no `tc netem`).
//! The harness places it on a path with destination NAT (see `nft::redirect`): the host's
//! new connections to the target go to the proxy, which forwards them after `delay` (plus
//! up to `jitter`). Loss cannot drop bytes inside a TCP stream, so it is emulated as what
//! loss does to TCP: with probability `loss` a chunk waits for a retransmission timeout
//! (200-600 ms) and everything behind it waits too; and 1 in 50 stalled chunks resets the
//! connection. Order is kept in each direction.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

/// How the proxy impairs traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    pub delay: Duration,
    pub jitter: Duration,
    /// Probability (0..1) that a chunk stalls as if a segment was lost.
    pub loss: f64,
}

pub struct Proxy {
    pub listen: SocketAddr,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    /// Listen on `bind` (port 0: any free port) and forward to `upstream`.
    pub async fn start(
        bind: SocketAddr,
        upstream: SocketAddr,
        impair: Impairment,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(bind).await?;
        let listen = listener.local_addr()?;
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::new(Mutex::new(Vec::new()));
        let tracked = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let task = tokio::spawn(serve(inbound, upstream, impair));
                if let Ok(mut c) = tracked.lock() {
                    c.push(task.abort_handle());
                }
            }
        });
        Ok(Proxy {
            listen,
            accept,
            conns,
        })
    }

    /// Stop accepting and close every proxied connection (both ends see them end).
    pub fn shutdown(&self) {
        self.accept.abort();
        if let Ok(c) = self.conns.lock() {
            for h in c.iter() {
                h.abort();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(inbound: TcpStream, upstream: SocketAddr, impair: Impairment) {
    let Ok(Ok(outbound)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream)).await
    else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (ri, wi) = inbound.into_split();
    let (ro, wo) = outbound.into_split();
    // Either direction ending (or resetting) ends the connection; both run inside this
    // task, so aborting it closes both sockets.
    tokio::select! {
        _ = pump(ri, wo, impair) => {},
        _ = pump(ro, wi, impair) => {},
    }
}

/// Copy `from` to `to`, each chunk delivered no earlier than its due time.
async fn pump<R, W>(mut from: R, mut to: W, impair: Impairment)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut last_due = Instant::now();
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let (due, reset) = due_time(impair, last_due);
            if reset {
                break;
            }
            last_due = due;
            if tx.send((due, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    tokio::join!(reader, writer);
}

/// When a chunk read now may be delivered (never before the previous one), and whether the
/// connection should be reset instead.
fn due_time(impair: Impairment, last_due: Instant) -> (Instant, bool) {
    let mut rng = rand::rng();
    let mut extra = impair.delay;
    if !impair.jitter.is_zero() {
        extra += impair.jitter.mul_f64(rng.random::<f64>());
    }
    if impair.loss > 0.0 && rng.random::<f64>() < impair.loss {
        if rng.random::<f64>() < 0.02 {
            return (last_due, true);
        }
        extra += Duration::from_millis(rng.random_range(200..600));
    }
    ((Instant::now() + extra).max(last_due), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr) -> Duration {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let start = std::time::Instant::now();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        start.elapsed()
    }

    #[tokio::test]
    async fn delay_is_added_in_each_direction_and_bytes_arrive_intact() {
        let echo = echo_server().await;
        let impair = Impairment {
            delay: Duration::from_millis(150),
            ..Default::default()
        };
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), echo, impair)
            .await
            .unwrap();
        let rtt = round_trip(proxy.listen).await;
        assert!(rtt >= Duration::from_millis(300), "round trip {rtt:?}");
        assert!(rtt < Duration::from_secs(2), "round trip {rtt:?}");
    }

    #[tokio::test]
    async fn loss_stalls_chunks_but_keeps_the_stream_in_order() {
        let echo = echo_server().await;
        let impair = Impairment {
            loss: 1.0,
            ..Default::default()
        };
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), echo, impair)
            .await
            .unwrap();
        // Every chunk stalls 200-600 ms each way (or the connection is reset: 2%).
        let mut s = TcpStream::connect(proxy.listen).await.unwrap();
        let start = std::time::Instant::now();
        let mut got = Vec::new();
        for i in 0..3u8 {
            if s.write_all(&[i]).await.is_err() {
                break;
            }
            let mut b = [0u8; 1];
            match s.read(&mut b).await {
                Ok(1) => got.push(b[0]),
                _ => break,
            }
        }
        assert!(
            got.iter().enumerate().all(|(i, b)| *b == i as u8),
            "{got:?}"
        );
        if got.len() == 3 {
            assert!(
                start.elapsed() >= Duration::from_millis(1200),
                "{:?}",
                start.elapsed()
            );
        }
    }

    #[tokio::test]
    async fn shutdown_closes_proxied_connections() {
        let echo = echo_server().await;
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), echo, Impairment::default())
            .await
            .unwrap();
        let mut s = TcpStream::connect(proxy.listen).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        proxy.shutdown();
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b))
            .await
            .expect("the proxied connection was not closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
}
