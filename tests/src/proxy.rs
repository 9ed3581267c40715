//! A small pausable TCP proxy for fault injection: put it between one worker and the master and
//! cut that worker off the network without touching either process.
//!
//! While running it forwards every connection to the upstream address. [`Proxy::pause`] drops
//! every live connection (the peers see their streams end) and then treats new connections
//! according to the [`PauseMode`]: refused (accepted and closed at once) or blackholed (accepted
//! and held without a byte forwarded, like a network partition, until [`Proxy::resume`] closes
//! them). The upstream may go away and come back on the same address (a restarted master):
//! every new connection dials it afresh.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// What a paused proxy does with connections that arrive while it is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseMode {
    /// Accept and close at once: the client sees the connection reset or closed.
    Refuse,
    /// Accept and hold without forwarding anything until the proxy resumes (then close): the
    /// client's calls hang, as behind a partition.
    Blackhole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Paused(PauseMode),
}

struct Shared {
    state: watch::Sender<State>,
    live: Mutex<Vec<AbortHandle>>,
    accepted: AtomicU64,
    cut: AtomicU64,
}

/// A running proxy; it stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

impl Proxy {
    /// Binds `127.0.0.1:0` and forwards to `upstream`. Must be called inside a tokio runtime.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel(State::Running);
        let shared = Arc::new(Shared {
            state,
            live: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            cut: AtomicU64::new(0),
        });
        let acceptor = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Ok(Proxy {
            addr,
            shared,
            acceptor,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for a gRPC client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every live connection and treats new ones according to `mode` until resumed.
    pub fn pause(&self, mode: PauseMode) {
        // State first, so a connection accepted concurrently is not forwarded.
        self.shared.state.send_replace(State::Paused(mode));
        let live: Vec<AbortHandle> = std::mem::take(&mut *self.shared.live.lock().unwrap());
        for handle in live {
            if !handle.is_finished() {
                self.shared.cut.fetch_add(1, Ordering::Relaxed);
            }
            handle.abort();
        }
    }

    /// Forwards again; connections held by a blackhole are closed.
    pub fn resume(&self) {
        self.shared.state.send_replace(State::Running);
    }

    /// Whether the proxy is paused.
    pub fn is_paused(&self) -> bool {
        matches!(*self.shared.state.borrow(), State::Paused(_))
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Live connections dropped by [`Proxy::pause`] so far.
    pub fn cut_connections(&self) -> u64 {
        self.shared.cut.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        for handle in self.shared.live.lock().unwrap().drain(..) {
            handle.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let state = *shared.state.borrow();
        match state {
            State::Paused(PauseMode::Refuse) => drop(inbound),
            State::Paused(PauseMode::Blackhole) => {
                let mut rx = shared.state.subscribe();
                tokio::spawn(async move {
                    // Hold the socket, reading nothing, until the proxy resumes.
                    let _ = rx.wait_for(|s| *s == State::Running).await;
                    drop(inbound);
                });
            }
            State::Running => {
                let task = tokio::spawn(forward(inbound, upstream));
                let mut live = shared.live.lock().unwrap();
                live.retain(|h| !h.is_finished());
                live.push(task.abort_handle());
                // A pause that raced with this accept has already taken the list: re-check.
                if *shared.state.borrow() != State::Running {
                    task.abort();
                }
            }
        }
    }
}

async fn forward(mut inbound: TcpStream, upstream: SocketAddr) {
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        // Upstream down: the client sees its connection closed, as with no proxy.
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
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

    async fn round_trip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn pause_cuts_live_connections_and_resume_restores_forwarding() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        assert_eq!(round_trip(proxy.addr()).await.unwrap(), b"ping");

        // A live connection is cut by a pause: its next read ends.
        let mut live = TcpStream::connect(proxy.addr()).await.unwrap();
        live.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        live.read_exact(&mut buf).await.unwrap();
        proxy.pause(PauseMode::Refuse);
        assert!(proxy.is_paused());
        let n = tokio::time::timeout(Duration::from_secs(5), live.read(&mut buf))
            .await
            .expect("a cut connection ends")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(proxy.cut_connections(), 1);
        assert!(round_trip(proxy.addr()).await.is_err(), "refused");

        proxy.pause(PauseMode::Blackhole);
        let err = round_trip(proxy.addr()).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "blackholed");

        proxy.resume();
        assert_eq!(round_trip(proxy.addr()).await.unwrap(), b"ping");
        assert!(proxy.accepted() >= 5);
    }
}
