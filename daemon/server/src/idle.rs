//! Idle API connections: what "in use" means for a session, and the layer
//! that tracks it.
//!
//! A session is in use while it has an RPC in flight (a streaming RPC such
//! as Watch or Stream counts until its response stream ends) or owns a
//! socket. One that has been neither for `--idle-timeout-ms` is dropped by
//! its [`crate::session::SessionStream`], which frees its admission slot
//! (`api_idle_drops`). Dropping it loses nothing: it has no sockets, and
//! the client libraries reconnect on their next call.
//!
//! [`InFlightLayer`] wraps the gRPC services: every request of a session
//! holds a guard on its [`Activity`] until the response body is finished
//! or dropped. Invariant: `Activity::in_flight` counts exactly the live
//! guards; `last_active` is when the count last dropped to zero (or the
//! session started).

use crate::session::{SessionId, SessionInfo};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

/// One session's use of the API.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last_active: Mutex<Instant>,
    /// The session's budget for large request messages ([`crate::intake`]).
    pub intake: crate::intake::Budget,
}

impl Activity {
    fn new(intake_bytes: usize) -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            last_active: Mutex::new(Instant::now()),
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

    /// Marks the session active now (e.g. it was found to own sockets).
    pub fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

/// Held by a request until its response ends.
#[derive(Debug)]
struct InFlightGuard(Arc<Activity>);

impl InFlightGuard {
    fn new(activity: Arc<Activity>) -> InFlightGuard {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(activity)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The sessions' activities, by id (registered at accept, removed at end).
#[derive(Debug, Clone)]
pub struct ActivityRegistry {
    sessions: Arc<Mutex<HashMap<SessionId, Arc<Activity>>>>,
    /// Each new session's intake budget, in bytes.
    intake_bytes: usize,
}

impl Default for ActivityRegistry {
    fn default() -> Self {
        ActivityRegistry::with_intake(crate::intake::SESSION_INTAKE)
    }
}

impl ActivityRegistry {
    /// A registry whose sessions get an intake budget of `intake_bytes`.
    pub fn with_intake(intake_bytes: usize) -> Self {
        ActivityRegistry {
            sessions: Arc::default(),
            intake_bytes,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<Activity>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session's activity record.
    pub fn register(&self, id: SessionId) -> Arc<Activity> {
        let activity = Arc::new(Activity::new(self.intake_bytes));
        self.map().insert(id, activity.clone());
        activity
    }

    pub fn unregister(&self, id: SessionId) {
        self.map().remove(&id);
    }

    pub(crate) fn get(&self, id: SessionId) -> Option<Arc<Activity>> {
        self.map().get(&id).cloned()
    }
}

/// The tower layer that counts each session's RPCs in flight.
#[derive(Debug, Clone)]
pub struct InFlightLayer {
    registry: ActivityRegistry,
}

impl InFlightLayer {
    pub fn new(registry: ActivityRegistry) -> Self {
        InFlightLayer { registry }
    }
}

impl<S> tower::Layer<S> for InFlightLayer {
    type Service = InFlight<S>;

    fn layer(&self, inner: S) -> InFlight<S> {
        InFlight {
            inner,
            registry: self.registry.clone(),
        }
    }
}

/// See [`InFlightLayer`].
#[derive(Debug, Clone)]
pub struct InFlight<S> {
    inner: S,
    registry: ActivityRegistry,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for InFlight<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = request
            .extensions()
            .get::<SessionInfo>()
            .and_then(|info| self.registry.get(info.id))
            .map(InFlightGuard::new);
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
        let registry = ActivityRegistry::default();
        let activity = registry.register(SessionId(7));
        let before = activity.last_active();
        let g1 = InFlightGuard::new(registry.get(SessionId(7)).expect("registered"));
        let g2 = InFlightGuard::new(activity.clone());
        assert_eq!(activity.in_flight(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(activity.in_flight(), 0);
        assert!(activity.last_active() >= before);
        registry.unregister(SessionId(7));
        assert!(registry.get(SessionId(7)).is_none());
    }
}
