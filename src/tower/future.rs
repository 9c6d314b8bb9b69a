//! [`ResponseFuture`]: acquire, then call the inner service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use tower_service::Service;

use super::error::RateLimitError;
use crate::error::AcquireError;
use crate::limiter::Grant;

/// An acquire from any limiter, owning its handle.
pub(crate) type BoxAcquire<R> = Pin<Box<dyn Future<Output = Result<Grant, R>> + Send>>;

/// The response future of [`RateLimit`](super::RateLimit) and
/// [`KeyedRateLimit`](super::KeyedRateLimit): it waits for the grant, then
/// calls the inner service (made ready by `poll_ready`) and resolves to its
/// response.
///
/// # Cancel safety
///
/// Dropping it before the grant leaves the limiter's queue and leaks nothing
/// (the next waiter is granted at once if it can be); the request is dropped
/// uncalled and so is the ready inner service, which releases what its
/// readiness held. The grant and the inner call happen in the same poll, so
/// a grant is never taken for a call that is not made. Once the inner call
/// is made, dropping the future drops the inner service's future.
///
/// # Panics
///
/// Polling it again after it has completed panics.
///
/// # Examples
///
/// See [`RateLimitLayer`](super::RateLimitLayer).
#[pin_project]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ResponseFuture<S, Req, R = AcquireError>
where
    S: Service<Req>,
{
    #[pin]
    state: State<S, Req, S::Future, R>,
}

#[pin_project(project = StateProj)]
enum State<S, Req, F, R> {
    Acquiring {
        acquire: BoxAcquire<R>,
        call: Option<(S, Req)>,
    },
    Calling {
        #[pin]
        future: F,
    },
    Done,
}

impl<S, Req, R> ResponseFuture<S, Req, R>
where
    S: Service<Req>,
{
    pub(crate) fn new(acquire: BoxAcquire<R>, service: S, request: Req) -> Self {
        ResponseFuture {
            state: State::Acquiring {
                acquire,
                call: Some((service, request)),
            },
        }
    }
}

impl<S, Req, R> fmt::Debug for ResponseFuture<S, Req, R>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Acquiring { .. } => "acquiring",
            State::Calling { .. } => "calling",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, Req, R> Future for ResponseFuture<S, Req, R>
where
    S: Service<Req>,
{
    type Output = Result<S::Response, RateLimitError<S::Error, R>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Acquiring { acquire, call } => {
                    let granted = ready!(acquire.as_mut().poll(cx));
                    let (mut service, request) =
                        call.take().expect("the request is there until the grant");
                    match granted {
                        Ok(_) => {
                            let future = service.call(request);
                            this.state.set(State::Calling { future });
                        }
                        Err(err) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(RateLimitError::Limited(err)));
                        }
                    }
                }
                StateProj::Calling { future } => {
                    let output = ready!(future.poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(output.map_err(RateLimitError::Inner));
                }
                StateProj::Done => panic!("`ResponseFuture` polled after completion"),
            }
        }
    }
}
