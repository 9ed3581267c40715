//! A client channel over several master addresses that follows whichever one answers.
//!
//! A worker may be given every master of a cluster (an active one and standbys). Each call goes
//! to the current address; when it fails with a transport error (the master is dead or
//! unreachable) or the master answers `UNAVAILABLE` (a standby, or one still starting), the next
//! address becomes current. The call's own error still reaches the caller, whose retry loop (it
//! retries while the master is unreachable) then reaches the next master. With one address the
//! channel behaves exactly as a plain [`Channel`].

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{http, BoxFuture, Service};
use tonic::transport::Channel;
use tracing::info;

/// Channels to one or more master addresses; calls go to the current one (see the module doc).
/// Clones share the current address.
pub struct MasterChannel<S = Channel> {
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    /// `(url, channel)` per address, in the order given.
    endpoints: Vec<(String, S)>,
    /// Index into `endpoints` of the address calls go to.
    current: AtomicUsize,
}

impl<S> Clone for MasterChannel<S> {
    fn clone(&self) -> Self {
        MasterChannel {
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for MasterChannel<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterChannel")
            .field(
                "masters",
                &self
                    .shared
                    .endpoints
                    .iter()
                    .map(|(u, _)| u)
                    .collect::<Vec<_>>(),
            )
            .field("current", &self.current_url())
            .finish()
    }
}

impl<S> MasterChannel<S> {
    /// A channel over `endpoints` (`(url, channel)`, at least one) that starts at index `start`.
    pub fn new(endpoints: Vec<(String, S)>, start: usize) -> Self {
        assert!(!endpoints.is_empty(), "a master channel needs an address");
        let current = AtomicUsize::new(start % endpoints.len());
        MasterChannel {
            shared: Arc::new(Shared { endpoints, current }),
        }
    }

    /// The URL calls go to now (empty for a channel made from a bare [`Channel`]).
    pub fn current_url(&self) -> &str {
        let shared = &self.shared;
        &shared.endpoints[shared.current.load(Ordering::SeqCst)].0
    }

    /// A call to the address at `used` failed in a way that [`switches`]: make the next address
    /// current, unless another call already moved on from `used` (calls failing together on
    /// one dead master move one step, not one step each).
    fn switch_from(&self, used: usize, reason: &'static str) {
        let endpoints = &self.shared.endpoints;
        let next = (used + 1) % endpoints.len();
        if next != used
            && self
                .shared
                .current
                .compare_exchange(used, next, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            info!(
                master = %endpoints[next].0,
                previous = %endpoints[used].0,
                reason,
                "switching master"
            );
        }
    }
}

impl From<Channel> for MasterChannel {
    /// One address: calls always go to `channel`.
    fn from(channel: Channel) -> Self {
        MasterChannel::new(vec![(String::new(), channel)], 0)
    }
}

/// The gRPC status code a response's headers carry: set only on a trailers-only response,
/// which is how a server answers a call with an error before any message (a successful call's
/// status comes later, in the trailers).
pub fn header_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    value.trim().parse::<i32>().ok().map(tonic::Code::from_i32)
}

/// Whether a call's outcome means the master at that address is not the one to talk to: a
/// transport error (dead, unreachable, reset) or an `UNAVAILABLE` answer (a standby). Any other
/// answer, errors such as `NOT_FOUND`, `INVALID_ARGUMENT` or `PERMISSION_DENIED` included,
/// came from a serving master and keeps the address. Returns why, for the log.
pub fn switches<B, E>(outcome: &Result<http::Response<B>, E>) -> Option<&'static str> {
    match outcome {
        Err(_) => Some("unreachable"),
        Ok(response) if header_code(response.headers()) == Some(tonic::Code::Unavailable) => {
            Some("answered UNAVAILABLE")
        }
        Ok(_) => None,
    }
}

impl<S, B, RB> Service<http::Request<B>> for MasterChannel<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    /// Always ready: the call waits for the chosen address's channel to be ready.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let this = self.clone();
        let used = this.shared.current.load(Ordering::SeqCst);
        let mut channel = this.shared.endpoints[used].1.clone();
        Box::pin(async move {
            let outcome = match std::future::poll_fn(|cx| channel.poll_ready(cx)).await {
                Ok(()) => channel.call(request).await,
                Err(e) => Err(e),
            };
            if let Some(reason) = switches(&outcome) {
                this.switch_from(used, reason);
            }
            outcome
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;

    /// A status code as a trailers-only answer carries it (what `tonic::Status::into_http`
    /// writes, i.e. what a tonic server sends for a handler's error).
    fn answer(code: tonic::Code) -> http::Response<()> {
        tonic::Status::new(code, "x").into_http::<()>()
    }

    #[test]
    fn a_transport_error_or_unavailable_switches_and_nothing_else_does() {
        let dead: Result<http::Response<()>, &str> = Err("connection refused");
        assert_eq!(switches(&dead), Some("unreachable"));
        let standby: Result<_, ()> = Ok(answer(tonic::Code::Unavailable));
        assert_eq!(switches(&standby), Some("answered UNAVAILABLE"));
        for code in [
            tonic::Code::Ok,
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
            tonic::Code::PermissionDenied,
            tonic::Code::Unauthenticated,
            tonic::Code::FailedPrecondition,
            tonic::Code::ResourceExhausted,
            tonic::Code::Internal,
            tonic::Code::Unknown,
            tonic::Code::Cancelled,
        ] {
            let served: Result<_, ()> = Ok(answer(code));
            assert_eq!(switches(&served), None, "{code:?} must keep the master");
        }
        // A successful call's status travels in the trailers: no code in the headers.
        let streaming: Result<_, ()> = Ok(http::Response::new(()));
        assert_eq!(switches(&streaming), None);
    }

    #[test]
    fn the_status_code_is_read_from_the_headers() {
        assert_eq!(
            header_code(answer(tonic::Code::Unavailable).headers()),
            Some(tonic::Code::Unavailable)
        );
        assert_eq!(
            header_code(answer(tonic::Code::NotFound).headers()),
            Some(tonic::Code::NotFound)
        );
        assert_eq!(header_code(&http::HeaderMap::new()), None);
        let mut garbled = http::HeaderMap::new();
        garbled.insert("grpc-status", http::HeaderValue::from_static("fourteen"));
        assert_eq!(header_code(&garbled), None);
    }

    /// One address of the channel under test: answers every call with its `answer` (a status
    /// code, or `None` for a transport error) and counts the calls it got.
    #[derive(Clone)]
    struct Address {
        answer: Option<tonic::Code>,
        calls: Arc<Mutex<u32>>,
    }

    impl Address {
        fn new(answer: Option<tonic::Code>) -> Self {
            Address {
                answer,
                calls: Arc::default(),
            }
        }

        fn calls(&self) -> u32 {
            *self.calls.lock().unwrap()
        }
    }

    impl Service<http::Request<()>> for Address {
        type Response = http::Response<()>;
        type Error = &'static str;
        type Future =
            Pin<Box<dyn Future<Output = Result<http::Response<()>, &'static str>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: http::Request<()>) -> Self::Future {
            *self.calls.lock().unwrap() += 1;
            let answer = self.answer;
            Box::pin(async move { answer.map(self::answer).ok_or("connection refused") })
        }
    }

    async fn call(channel: &mut MasterChannel<Address>) -> Result<Option<tonic::Code>, ()> {
        channel
            .call(http::Request::new(()))
            .await
            .map(|r| header_code(r.headers()))
            .map_err(|_| ())
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn calls_move_past_a_dead_master_and_a_standby_to_the_active_one_and_stay() {
        let dead = Address::new(None);
        let standby = Address::new(Some(tonic::Code::Unavailable));
        // The active master answers a call it refuses with NOT_FOUND: that is no reason to leave.
        let active = Address::new(Some(tonic::Code::NotFound));
        let mut channel = MasterChannel::new(
            vec![
                ("http://dead".into(), dead.clone()),
                ("http://standby".into(), standby.clone()),
                ("http://active".into(), active.clone()),
            ],
            0,
        );
        block_on(async {
            // Each failing call still fails (the caller's retry loop retries it)...
            assert_eq!(call(&mut channel).await, Err(()));
            assert_eq!(channel.current_url(), "http://standby");
            assert_eq!(call(&mut channel).await, Ok(Some(tonic::Code::Unavailable)));
            assert_eq!(channel.current_url(), "http://active");
            // ...and the retry reaches the active master, which keeps the calls.
            for _ in 0..3 {
                assert_eq!(call(&mut channel).await, Ok(Some(tonic::Code::NotFound)));
            }
            assert_eq!(channel.current_url(), "http://active");
        });
        assert_eq!((dead.calls(), standby.calls(), active.calls()), (1, 1, 3));
    }

    #[test]
    fn calls_failing_together_on_one_master_move_one_step() {
        let dead = Address::new(None);
        let active = Address::new(Some(tonic::Code::Ok));
        let third = Address::new(Some(tonic::Code::Ok));
        let channel = MasterChannel::new(
            vec![
                ("http://dead".into(), dead.clone()),
                ("http://active".into(), active),
                ("http://third".into(), third),
            ],
            0,
        );
        block_on(async {
            // Both calls are sent to the dead master before either fails.
            let first = channel.clone().call(http::Request::new(()));
            let second = channel.clone().call(http::Request::new(()));
            assert!(first.await.is_err() && second.await.is_err());
        });
        assert_eq!(dead.calls(), 2);
        assert_eq!(channel.current_url(), "http://active");
    }

    #[test]
    fn one_address_is_kept_whatever_happens() {
        let only = Address::new(None);
        let mut channel = MasterChannel::new(vec![("http://only".into(), only.clone())], 0);
        block_on(async {
            for _ in 0..3 {
                assert_eq!(call(&mut channel).await, Err(()));
            }
        });
        assert_eq!(only.calls(), 3);
        assert_eq!(channel.current_url(), "http://only");
    }

    #[test]
    fn the_list_wraps_around() {
        let first = Address::new(Some(tonic::Code::Ok));
        let last = Address::new(Some(tonic::Code::Unavailable));
        let mut channel = MasterChannel::new(
            vec![
                ("http://first".into(), first.clone()),
                ("http://last".into(), last),
            ],
            1,
        );
        block_on(async {
            assert_eq!(call(&mut channel).await, Ok(Some(tonic::Code::Unavailable)));
            assert_eq!(call(&mut channel).await, Ok(Some(tonic::Code::Ok)));
        });
        assert_eq!(channel.current_url(), "http://first");
        assert_eq!(first.calls(), 1);
    }
}
