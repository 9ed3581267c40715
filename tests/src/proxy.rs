//! A small pausable TCP proxy for fault injection: put it between one worker and the master and
//! cut that worker off the network without touching either process.
//!
//! While running it forwards every connection to the upstream address. [`Proxy::pause`] cuts the
//! network according to the [`PauseMode`]:
//!
//! - `Refuse` and `Blackhole` drop every live connection (the peers see their streams end at
//!   once) and then refuse new connections (accepted and closed) or blackhole them (accepted and
//!   held without a byte forwarded until [`Proxy::resume`] closes them);
//! - `Silent` closes nothing: from the pause on, every byte that reaches the proxy on a live or
//!   new connection is read and thrown away and nothing is ever sent back, like packets lost in a
//!   partition or a middlebox that forgot the connection. The client can only notice by its own
//!   means (HTTP/2 keepalive pings, call deadlines) and close the connection itself; a silenced
//!   connection stays silent after [`Proxy::resume`], which forwards new connections only.
//!
//! The upstream may go away and come back on the same address (a restarted master): every new
//! connection dials it afresh.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Close nothing; swallow every byte of live and new connections and answer none, for good
    /// (see the module documentation).
    Silent,
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
    /// Connections silenced so far, and how long each silenced connection lived on until its
    /// client closed it (`None` while still open).
    silenced: Mutex<Vec<Option<Duration>>>,
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
            silenced: Mutex::new(Vec::new()),
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

    /// Cuts the network according to `mode` until resumed: drops every live connection, or, in
    /// `Silent` mode, silences them.
    pub fn pause(&self, mode: PauseMode) {
        // State first, so a connection accepted concurrently is not forwarded.
        self.shared.state.send_replace(State::Paused(mode));
        if mode == PauseMode::Silent {
            // Every forwarding task watches the state and goes silent by itself.
            return;
        }
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

    /// For every connection silenced so far, how long it lived on after going silent until its
    /// client closed it, or `None` while it is still open.
    pub fn silenced(&self) -> Vec<Option<Duration>> {
        self.shared.silenced.lock().unwrap().clone()
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
            State::Paused(PauseMode::Silent) => {
                let task = tokio::spawn(swallow(inbound, shared.clone()));
                shared.live.lock().unwrap().push(task.abort_handle());
            }
            State::Paused(PauseMode::Blackhole) => {
                let mut rx = shared.state.subscribe();
                tokio::spawn(async move {
                    // Hold the socket, reading nothing, until the proxy resumes.
                    let _ = rx.wait_for(|s| *s == State::Running).await;
                    drop(inbound);
                });
            }
            State::Running => {
                let task = tokio::spawn(forward(inbound, upstream, shared.clone()));
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

async fn forward(mut inbound: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut state = shared.state.subscribe();
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        // Upstream down: the client sees its connection closed, as with no proxy.
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
        _ = state.wait_for(|s| *s == State::Paused(PauseMode::Silent)) => {}
    }
    // Silenced: the upstream half is forgotten, the client's half swallows for good.
    drop(outbound);
    swallow(inbound, shared).await;
}

/// Reads and throws away everything the client sends, answers nothing, and records when the
/// client closes the connection.
async fn swallow(mut inbound: TcpStream, shared: Arc<Shared>) {
    use tokio::io::AsyncReadExt;
    let since = Instant::now();
    let index = {
        let mut silenced = shared.silenced.lock().unwrap();
        silenced.push(None);
        silenced.len() - 1
    };
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = inbound.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    shared.silenced.lock().unwrap()[index] = Some(since.elapsed());
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

    #[tokio::test]
    async fn silent_pause_swallows_without_closing_and_sees_the_client_leave() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut live = TcpStream::connect(proxy.addr()).await.unwrap();
        live.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        live.read_exact(&mut buf).await.unwrap();

        proxy.pause(PauseMode::Silent);
        // Neither an answer nor an end: the read just hangs.
        live.write_all(b"ping").await.unwrap();
        let read = tokio::time::timeout(Duration::from_millis(500), live.read(&mut buf)).await;
        assert!(
            read.is_err(),
            "a silenced connection neither answers nor ends: {read:?}"
        );
        // New connections are swallowed too.
        let err = round_trip(proxy.addr()).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "silenced");
        assert_eq!(
            proxy.cut_connections(),
            0,
            "nothing was closed by the proxy"
        );

        proxy.resume();
        assert_eq!(round_trip(proxy.addr()).await.unwrap(), b"ping");
        // The old connection stays silent after the resume until its client leaves.
        live.write_all(b"ping").await.unwrap();
        let read = tokio::time::timeout(Duration::from_millis(300), live.read(&mut buf)).await;
        assert!(read.is_err(), "still silent after resume");
        drop(live);
        let deadline = Instant::now() + Duration::from_secs(5);
        while proxy.silenced().iter().filter(|c| c.is_some()).count() < 2 {
            assert!(Instant::now() < deadline, "{:?}", proxy.silenced());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(proxy.silenced().len(), 2);
    }
}
