//! The API's HTTP/2 server: every session connection the
//! [`SessionAcceptor`](crate::session::SessionAcceptor) yields is served by
//! hyper's HTTP/2 server with tonic's routes, configured as tonic's
//! `transport::Server` configures hyper (HTTP/2 only, the given windows,
//! frame size and keepalive, no limit on concurrent streams or reset
//! streams), and every request carries its session's [`SessionConnection`]
//! in its extensions as tonic's `Connected` would put it there.
//!
//! Why not `tonic::transport::Server`: hyper runs one task per HTTP/2 stream,
//! and that task holds the service's future inline for the stream's whole
//! life, although only the response body is left once the future is done.
//! Behind tonic's server that future is a tower `Oneshot` sized to hold the
//! whole request (about 280 bytes), so every open Stream's task was a
//! 512-byte allocation; here the future is one box (freed when the response
//! is ready) and the task 256 bytes — 100 000 idle connections are 100 000
//! open Streams (e2e/BENCHMARKS.md, "Round 7: 100 000 idle connections").
//!
//! The Stream RPC (one per connected socket) does not pass tonic's routes
//! at all: [`StreamRoute`] serves it from hyper's request, and its
//! response body ([`DownBody`], one pointer) is held inline in hyper's
//! task through [`ApiBody`] — no box around it.
//!
//! Not carried over from tonic's server, because tcpd never used them:
//! server-side `grpc-timeout` enforcement, load shedding and concurrency
//! limits, TLS, HTTP/1, and graceful shutdown (the daemon drops the server
//! on SIGTERM and resets every connection itself).

use crate::session::{SessionConnection, SessionStream};
use crate::socket_service::{DownBody, StreamRoute};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::transport::server::Connected;
use tower::{Service, ServiceExt};

/// HTTP/2 settings of every session connection.
#[derive(Clone, Copy, Debug)]
pub struct Http2Settings {
    pub initial_stream_window: u32,
    pub initial_connection_window: u32,
    pub max_frame_size: u32,
    /// RFC 9113 §6.7 PING interval (`None`: no keepalive).
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
}

/// What [`serve`] routes the unary calls to: tonic's routes (or any
/// service of their shape) that can be cloned into each connection's task.
pub trait Routes:
    Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Routes for S where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Serves `routes` (and Streams on `stream`, if given) on each connection
/// of `incoming` until it ends; each connection runs in a task of its own.
pub async fn serve<S: Routes>(
    incoming: impl Stream<Item = io::Result<SessionStream>>,
    routes: S,
    stream: Option<StreamRoute>,
    settings: Http2Settings,
) {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(settings.initial_stream_window)
        .initial_connection_window_size(settings.initial_connection_window)
        .max_frame_size(settings.max_frame_size)
        .keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(settings.keepalive_timeout)
        .adaptive_window(false)
        // As tonic's server: a session opens as many Streams as its quotas
        // allow (hyper's own default would be 200).
        .max_concurrent_streams(None)
        .max_local_error_reset_streams(None)
        .max_pending_accept_reset_streams(None);
    let mut incoming = std::pin::pin!(incoming);
    while let Some(io) = incoming.next().await {
        let io = match io {
            Ok(io) => io,
            Err(e) => {
                tracing::trace!(error = %e, "accepting an API connection failed");
                continue;
            }
        };
        let service = SessionRoutes {
            routes: routes.clone(),
            stream: stream.clone(),
            connection: io.connect_info(),
        };
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "serving an API connection failed");
            }
        });
    }
}

/// The routes as one session's hyper service.
#[derive(Clone)]
struct SessionRoutes<S> {
    routes: S,
    /// The Stream RPC's own route (`None`: tonic's routes serve it).
    stream: Option<StreamRoute>,
    connection: SessionConnection,
}

/// A response body: tonic's (boxed) for the routes, a Stream's inline.
pub enum ApiBody {
    Routes(tonic::body::Body),
    Stream(DownBody),
}

impl Default for ApiBody {
    fn default() -> Self {
        ApiBody::Routes(tonic::body::Body::empty())
    }
}

impl http_body::Body for ApiBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        match self.get_mut() {
            ApiBody::Routes(body) => Pin::new(body).poll_frame(cx),
            ApiBody::Stream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ApiBody::Routes(body) => body.is_end_stream(),
            ApiBody::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ApiBody::Routes(body) => body.size_hint(),
            ApiBody::Stream(body) => body.size_hint(),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S: Routes> hyper::service::Service<http::Request<Incoming>> for SessionRoutes<S> {
    type Response = http::Response<ApiBody>;
    type Error = Infallible;
    /// Boxed: see the module docs.
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        if let Some(stream) = &self.stream
            && request.uri().path() == StreamRoute::PATH
        {
            let (stream, connection) = (stream.clone(), self.connection.clone());
            return Box::pin(async move {
                Ok(match stream.serve(request, connection).await {
                    Ok(body) => {
                        let mut response = http::Response::new(ApiBody::Stream(body));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/grpc"),
                        );
                        response
                    }
                    // A trailers-only response, as tonic sends a failed call.
                    Err(status) => status.into_http(),
                })
            });
        }
        let mut request = request.map(tonic::body::Body::new);
        request.extensions_mut().insert(self.connection.clone());
        let routes = self.routes.clone();
        Box::pin(async move {
            let response = routes.oneshot(request).await?;
            Ok(response.map(ApiBody::Routes))
        })
    }
}
