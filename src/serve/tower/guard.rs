//! Connection hygiene for the tower runtime: what an unauthenticated client may hold.
//!
//! Every accepted connection holds one of `server.max_connections` permits until it closes. A
//! connection is watched for activity: the bytes it moves and the requests it has in flight.
//! One with no request in flight and no bytes moving for `server.idle_timeout_secs` is closed
//! (a silent socket, an idle keep-alive). When every permit is taken, the accept loop stops
//! accepting (new clients wait in the kernel's backlog, the loop never spins) and asks the
//! connections to make room: those with nothing in flight and no bytes for [`PRESSURE_QUIET`] close
//! at once, and it asks again every [`PRESSURE_QUIET`] until one does; from the second round on,
//! the held polls are answered at once (`authorization_pending`, [`crate::Engine::reclaim_held_polls`]),
//! so that their connections become quiet too. Slow headers are hyper's (`header_read_timeout`), slow bodies the adapter's
//! (`limits.body_read_timeout_secs`).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

pub(super) use crate::conn_limit::{Activity, Counted, PRESSURE_QUIET};

/// A connection's I/O, recording when bytes move.
pub(super) struct Watched<IO> {
    pub(super) io: IO,
    pub(super) activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

pin_project_lite::pin_project! {
    /// A request body that must arrive in full by a deadline (`limits.body_read_timeout_secs`):
    /// a pass-through body trickled byte by byte would otherwise hold a connection to the
    /// provider for as long as the client likes.
    pub(super) struct DeadlineBody<B> {
        #[pin]
        body: B,
        #[pin]
        deadline: tokio::time::Sleep,
    }
}

impl<B> DeadlineBody<B> {
    pub(super) fn new(body: B, deadline: Instant) -> Self {
        Self {
            body,
            deadline: tokio::time::sleep_until(deadline),
        }
    }
}

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Some(Err("the request body did not arrive in time".into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
