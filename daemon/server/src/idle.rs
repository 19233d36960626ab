//! Idle API connections: what "in use" means for a session, and the one
//! tower layer every RPC passes through.
//!
//! A session is in use while it has an RPC in flight (a streaming RPC such
//! as Watch or Stream counts until its response stream ends) or owns a
//! socket. One that has been neither for `--idle-timeout-ms` is dropped by
//! its [`crate::session::SessionStream`], which frees its admission slot
//! (`api_idle_drops`). Dropping it loses nothing: it has no sockets, and
//! the client libraries reconnect on their next call.
//!
//! [`SessionLayer`] wraps the gRPC services. Each request finds its
//! session's [`SessionConnection`] in its extensions (tonic copies the
//! connection's connect info into every request: no lookup in a shared
//! table), and the layer, in one place:
//! - puts the session's [`SessionInfo`] where the handlers read it;
//! - holds a guard on the session's [`Activity`] until the response body
//!   is finished or dropped;
//! - charges the request body's large messages to the session's intake
//!   budget ([`crate::intake`]).
//!
//! The Stream RPC, served below tonic's routes
//! ([`crate::socket_service::StreamRoute`]), passes no layer: its Stream
//! holds the [`InFlightGuard`] itself from the request's arrival to the
//! response's end, and its up side charges large messages to the same
//! budget (one Stream per connected socket: no per-request wrappers).
//!
//! Invariant: `Activity::in_flight` counts exactly the live guards;
//! `last_active` is when the count last dropped to zero (or the session
//! started).

use crate::session::{SessionConnection, SessionInfo};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

/// One session's use of the API.
#[derive(Debug)]
pub struct Activity {
    /// Whose session it is (a Stream keeps only this record).
    pub info: SessionInfo,
    in_flight: AtomicUsize,
    last_active: Mutex<Instant>,
    /// Set when the session's connection is dropped, before the driver is
    /// told ([`Activity::end`]).
    ended: AtomicBool,
    /// The session's budget for large request messages ([`crate::intake`]).
    pub intake: crate::intake::Budget,
}

impl Activity {
    pub fn new(info: SessionInfo, intake_bytes: usize) -> Activity {
        Activity {
            info,
            in_flight: AtomicUsize::new(0),
            last_active: Mutex::new(Instant::now()),
            ended: AtomicBool::new(false),
            intake: crate::intake::Budget::new(intake_bytes),
        }
    }

    /// RPCs in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// When the session last had an RPC end (or started).
    pub fn last_active(&self) -> Instant {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session's connection is gone: its socket reached its end or
    /// failed, or it is being dropped. Always followed by the session's
    /// `SessionEvent::Ended` (sent when the connection is dropped), on
    /// which the driver closes the session's sockets.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
    }

    /// Whether [`Activity::end`] was called: the driver closes every socket
    /// of the session by itself (`Sockets::session_ended`).
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Marks the session active now (e.g. it was found to own sockets).
    pub fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

/// Held by a request until its response ends.
#[derive(Debug)]
pub struct InFlightGuard(Arc<Activity>);

impl InFlightGuard {
    pub fn new(activity: Arc<Activity>) -> InFlightGuard {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(activity)
    }
}

impl std::ops::Deref for InFlightGuard {
    type Target = Activity;

    fn deref(&self) -> &Activity {
        &self.0
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The tower layer; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionLayer;

impl<S> tower::Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> SessionService<S> {
        SessionService { inner }
    }
}

/// See [`SessionLayer`].
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for SessionService<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        let guard = match request.extensions().get::<SessionConnection>() {
            Some(connection) => {
                let info: SessionInfo = connection.info;
                let activity = connection.activity.clone();
                request.extensions_mut().insert(info);
                let budget = activity.intake.clone();
                request = crate::intake::charge(request, budget);
                Some(InFlightGuard::new(activity))
            }
            None => None,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match guard {
                Some(guard) => response.map(|body| {
                    tonic::body::Body::new(GuardedBody {
                        inner: body,
                        _guard: guard,
                    })
                }),
                None => response,
            })
        })
    }
}

/// A response body that keeps its request counted until it is done.
struct GuardedBody {
    inner: tonic::body::Body,
    _guard: InFlightGuard,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_requests_and_touch_on_end() {
        let info = crate::ops::DriverHandle::no_session();
        let activity = Arc::new(Activity::new(info, crate::intake::SESSION_INTAKE));
        let before = activity.last_active();
        let g1 = InFlightGuard::new(activity.clone());
        let g2 = InFlightGuard::new(activity.clone());
        assert_eq!(activity.in_flight(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(activity.in_flight(), 0);
        assert!(activity.last_active() >= before);
    }
}
