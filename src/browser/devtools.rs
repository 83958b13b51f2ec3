//! DevTools over a pipe, bridged in-process to the WebSocket chromiumoxide speaks.
//!
//! Chromium runs with `--remote-debugging-pipe`: it reads CDP from fd 3 and writes to fd 4, each
//! message a JSON text followed by a NUL byte, and opens no TCP port. A DevTools port on
//! loopback would let any local user take over every linked account (docs/ARCHITECTURE.md,
//! "Security"). chromiumoxide only connects to a `ws://` URL, so [`bridge`] serves one: a
//! listener on `127.0.0.1:0` whose only path is 256 random bits, without `/json` discovery,
//! that accepts exactly one WebSocket and then closes the listener. A connection with any
//! other path gets a 404 and does not use up the one connection. Each WebSocket text message
//! goes to the pipe with a NUL; each NUL-terminated message from the pipe becomes one text
//! message. When either side closes, the other is closed: the browser exits when its pipe
//! closes.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::StatusCode;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::net::TcpListener;

/// How long the bridge waits for chromiumoxide to connect before it gives up.
const ACCEPT_WITHIN: Duration = Duration::from_secs(30);
/// A client must finish its WebSocket handshake this fast (a silent one cannot hold the door).
const HANDSHAKE_WITHIN: Duration = Duration::from_secs(2);
/// File descriptors Chromium reads and writes CDP on with `--remote-debugging-pipe`.
const CHILD_READ_FD: i32 = 3;
const CHILD_WRITE_FD: i32 = 4;

/// The daemon's ends of the two pipes.
pub struct CdpPipe {
    to_browser: OwnedFd,
    from_browser: OwnedFd,
}

/// The browser's ends, placed on fds 3 and 4 of the child by [`ChildEnds::install`].
pub struct ChildEnds {
    read: OwnedFd,
    write: OwnedFd,
}

/// Two pipes: daemon → browser (fd 3) and browser → daemon (fd 4). All four ends are
/// close-on-exec; [`ChildEnds::install`] puts clear copies on 3 and 4 in the child only.
pub fn pipes() -> std::io::Result<(CdpPipe, ChildEnds)> {
    let (child_read, to_browser) = pipe_pair()?;
    let (from_browser, child_write) = pipe_pair()?;
    Ok((
        CdpPipe {
            to_browser,
            from_browser,
        },
        ChildEnds {
            read: child_read,
            write: child_write,
        },
    ))
}

fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success; we own them from then on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl ChildEnds {
    /// For `pre_exec`: makes fd 3 the read end and fd 4 the write end, without close-on-exec.
    /// Copies both above 4 first, so neither original can be overwritten by the other's `dup2`.
    /// Only async-signal-safe calls.
    pub fn install(&self) -> std::io::Result<()> {
        let check = |r: i32| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(r)
            }
        };
        // SAFETY: fcntl/dup2 on descriptors this value owns; nothing else runs in the child.
        unsafe {
            let read = check(libc::fcntl(
                self.read.as_raw_fd(),
                libc::F_DUPFD_CLOEXEC,
                10,
            ))?;
            let write = check(libc::fcntl(
                self.write.as_raw_fd(),
                libc::F_DUPFD_CLOEXEC,
                10,
            ))?;
            check(libc::dup2(read, CHILD_READ_FD))?;
            check(libc::dup2(write, CHILD_WRITE_FD))?;
        }
        Ok(())
    }
}

/// Serves the pipe as a one-time WebSocket on loopback; returns its URL. The bridge runs until
/// either side closes.
pub async fn bridge(pipe: CdpPipe, log_key: String) -> std::io::Result<String> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let path = format!("/devtools/browser/{}", secret_path());
    let url = format!("ws://{}{path}", listener.local_addr()?);
    let to_browser = pipe::Sender::from_owned_fd(pipe.to_browser)?;
    let from_browser = pipe::Receiver::from_owned_fd(pipe.from_browser)?;
    tokio::spawn(async move {
        let ws = match tokio::time::timeout(ACCEPT_WITHIN, accept_one(&listener, &path)).await {
            Ok(Some(ws)) => ws,
            Ok(None) => return,
            Err(_) => {
                log::warn!("{log_key} nobody connected to the DevTools bridge; closing it");
                return;
            }
        };
        drop(listener); // nothing listens from here on
        pump(ws, to_browser, from_browser, &log_key).await;
    });
    Ok(url)
}

/// 32 random bytes, URL-safe base64.
fn secret_path() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

type Ws = async_tungstenite::WebSocketStream<
    async_tungstenite::tokio::TokioAdapter<tokio::net::TcpStream>,
>;

/// Accepts connections until one completes the handshake on `path`; refuses the others.
async fn accept_one(listener: &TcpListener, path: &str) -> Option<Ws> {
    loop {
        let (stream, peer) = listener.accept().await.ok()?;
        // Each CDP message is a small write answered by the next command: without NODELAY,
        // Nagle's algorithm and the peer's delayed ACK hold each reply up to 40 ms.
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("DevTools bridge: TCP_NODELAY: {e}");
        }
        let config = WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        // The callback's signature is tungstenite's; its error type is an HTTP response.
        #[allow(clippy::result_large_err)]
        let check = |req: &Request, res: Response| -> Result<Response, ErrorResponse> {
            if req.uri().path() == path {
                Ok(res)
            } else {
                let mut refused = ErrorResponse::new(None);
                *refused.status_mut() = StatusCode::NOT_FOUND;
                Err(refused)
            }
        };
        let handshake =
            async_tungstenite::tokio::accept_hdr_async_with_config(stream, check, Some(config));
        match tokio::time::timeout(HANDSHAKE_WITHIN, handshake).await {
            Ok(Ok(ws)) => return Some(ws),
            Ok(Err(e)) => log::warn!("DevTools bridge refused a connection from {peer}: {e}"),
            Err(_) => log::warn!("DevTools bridge: {peer} did not finish its handshake"),
        }
    }
}

async fn pump(ws: Ws, mut to_browser: pipe::Sender, mut from_browser: pipe::Receiver, key: &str) {
    let (mut ws_out, mut ws_in) = ws.split();
    let inbound = async {
        while let Some(Ok(msg)) = ws_in.next().await {
            let bytes = match msg {
                Message::Text(text) => text.as_bytes().to_vec(),
                Message::Binary(bytes) => bytes.to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            if to_browser.write_all(&bytes).await.is_err()
                || to_browser.write_all(b"\0").await.is_err()
            {
                break;
            }
        }
    };
    let outbound = async {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match from_browser.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Some(end) = buf.iter().position(|b| *b == 0) {
                let message: Vec<u8> = buf.drain(..=end).take(end).collect();
                let text = String::from_utf8(message)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                if ws_out.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
        }
        let _ = ws_out.close(None).await;
    };
    // Whichever side ends first ends the bridge; dropping the pipe ends makes the browser exit.
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
    }
    log::debug!("{key} DevTools bridge closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe whose "browser" is this test: it echoes every message back.
    fn echo_browser() -> CdpPipe {
        let (pipe, child) = pipes().unwrap();
        let ChildEnds { read, write } = child;
        let mut rx = pipe::Receiver::from_owned_fd(read).unwrap();
        let mut tx = pipe::Sender::from_owned_fd(write).unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = rx.read(&mut buf).await {
                if n == 0 || tx.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        pipe
    }

    #[tokio::test]
    async fn a_wrong_path_is_refused_and_the_right_one_still_works_once() {
        let url = bridge(echo_browser(), "t:1".into()).await.unwrap();
        let (addr, path) = url.strip_prefix("ws://").unwrap().split_once('/').unwrap();
        assert!(path.len() >= "devtools/browser/".len() + 43, "{path}");

        // No discovery, no other path.
        for wrong in [
            "/json/list",
            "/json/version",
            "/devtools/browser/guess",
            "/",
        ] {
            let err = async_tungstenite::tokio::connect_async(format!("ws://{addr}{wrong}"))
                .await
                .unwrap_err();
            assert!(err.to_string().contains("404"), "{wrong}: {err}");
        }

        let (mut ws, _) = async_tungstenite::tokio::connect_async(&url).await.unwrap();
        ws.send(Message::text(r#"{"id":1}"#)).await.unwrap();
        ws.send(Message::text(r#"{"id":2}"#)).await.unwrap();
        for want in [r#"{"id":1}"#, r#"{"id":2}"#] {
            let got = ws.next().await.unwrap().unwrap();
            assert_eq!(got.to_text().unwrap(), want);
        }
        // One connection only: the listener is gone.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
