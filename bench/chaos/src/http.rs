//! A minimal HTTP/1.1 client for the agents' REST API (`POST /switchover`): one request per
//! connection (`Connection: close`), the answer read to its end. The API runs without
//! authentication in the chaos cluster's configuration.

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// POST `body` (JSON) to `path` on `addr`; the status code and the response body.
pub async fn post_json(
    addr: SocketAddrV4,
    path: &str,
    body: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let work = async {
        let mut s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        parse_response(&raw)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow!("POST {path} to {addr}: no answer within {timeout:?}"))?
}

/// Status code and body of a whole HTTP/1.1 response (chunked or not).
pub fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP response: {text:?}"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body.trim().to_string()))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_chunked_answers_are_read() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 34\r\n\r\nSuccessfully switched over to \"n2\"\n";
        assert_eq!(
            parse_response(raw).unwrap(),
            (200, "Successfully switched over to \"n2\"".to_string())
        );
        let raw = b"HTTP/1.1 412 Precondition Failed\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(raw).unwrap(),
            (412, "hello world".to_string())
        );
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }

    #[tokio::test]
    async fn a_request_reaches_a_server_on_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains("{\"leader\":\"n1\"}") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy")
                .await
                .unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        let (status, body) = post_json(
            addr,
            "/switchover",
            "{\"leader\":\"n1\"}",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!((status, body.as_str()), (503, "busy"));
        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /switchover HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("Content-Length: 15\r\n"), "{request}");
    }
}
