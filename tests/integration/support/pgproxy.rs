//! A TCP proxy on loopback in front of PostgreSQL that a test can cut, to cut one daemon off from
//! the database as a dropped network would: after [`PgProxy::cut`] nothing is forwarded either way,
//! but no socket is closed, so the daemon gets silence (timeouts), not a fast connection error.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy. Stops, closing every connection, when dropped.
pub struct PgProxy {
    port: u16,
    /// `true` while cut; every connection task watches it.
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

/// Listens on 127.0.0.1:0 and forwards each connection to `target`.
pub async fn start(target: SocketAddr) -> PgProxy {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("pgproxy: bind 127.0.0.1:0");
    let port = listener.local_addr().unwrap().port();
    let (cut, watch) = watch::channel(false);
    let accept = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(forward(client, target, watch.clone()));
        }
    });
    PgProxy { port, cut, accept }
}

impl PgProxy {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Partition: from now on no byte is forwarded on any connection, and new connections are
    /// accepted but held silent. Sockets stay open.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// New connections are forwarded again; the connections held during the cut are closed.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        // Dropping `cut` ends every connection task (their `wait_for` fails).
        self.accept.abort();
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    if !*cut.borrow_and_update() {
        let Ok(mut server) = TcpStream::connect(target).await else {
            return;
        };
        tokio::select! {
            // Checked first on every wake-up, so nothing is forwarded once cut.
            biased;
            r = cut.wait_for(|c| *c) => {
                if r.is_err() {
                    return;
                }
            }
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        }
    }
    // Cut: hold the sockets open and silent until healed (or the proxy is dropped).
    let _ = cut.wait_for(|c| !*c).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// Writes `msg` and waits up to 500 ms for it to come back.
    async fn echoes(s: &mut TcpStream, msg: &[u8]) -> bool {
        s.write_all(msg).await.unwrap();
        let mut buf = vec![0; msg.len()];
        match tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => buf == msg,
            _ => false,
        }
    }

    #[tokio::test]
    async fn cut_silences_and_heal_restores() {
        let proxy = start(echo_server().await).await;
        let connect = || TcpStream::connect(("127.0.0.1", proxy.port()));

        let mut before = connect().await.unwrap();
        assert!(echoes(&mut before, b"ping").await);

        proxy.cut();
        assert!(!echoes(&mut before, b"lost").await, "forwarded after cut");
        let mut during = connect().await.expect("accepted while cut");
        assert!(
            !echoes(&mut during, b"held").await,
            "new connection forwarded while cut"
        );

        proxy.heal();
        let mut after = connect().await.unwrap();
        assert!(echoes(&mut after, b"back").await);
    }
}
