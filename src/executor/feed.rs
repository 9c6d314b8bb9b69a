//! [`JobStream`]: jobs pulled from a stream with backpressure.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::FuturesUnordered;
use pin_project::pin_project;

use super::{Executor, JobHandle, SubmitError, Workload};
use crate::executor::report::JobReport;

/// The stream returned by [`Executor::run_stream`]: each job's report (or why
/// it was refused), as jobs finish.
///
/// It pulls the next job from its source only while fewer than the
/// executor's job concurrency of its own jobs are unfinished.
///
/// # Cancel safety
///
/// Dropping it stops pulling jobs; the jobs already submitted run on.
///
/// # Examples
///
/// See [`Executor::run_stream`].
#[pin_project]
#[must_use = "streams do nothing unless polled"]
pub struct JobStream<W: Workload, S> {
    executor: Executor<W>,
    #[pin]
    source: S,
    source_done: bool,
    limit: usize,
    running: FuturesUnordered<JobHandle<W::Output, W::Error>>,
}

impl<W: Workload, S> fmt::Debug for JobStream<W, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobStream")
            .field("running", &self.running.len())
            .field("source_done", &self.source_done)
            .finish_non_exhaustive()
    }
}

impl<W: Workload, S> JobStream<W, S> {
    pub(crate) fn new(executor: Executor<W>, source: S, limit: usize) -> Self {
        JobStream {
            executor,
            source,
            source_done: false,
            limit,
            running: FuturesUnordered::new(),
        }
    }
}

impl<W, S> Stream for JobStream<W, S>
where
    W: Workload,
    S: Stream<Item = W::Job>,
{
    type Item = Result<JobReport<W::Output, W::Error>, SubmitError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        while !*this.source_done && this.running.len() < *this.limit {
            match this.source.as_mut().poll_next(cx) {
                Poll::Ready(Some(job)) => match this.executor.submit(job) {
                    Ok(handle) => this.running.push(handle),
                    Err(err) => return Poll::Ready(Some(Err(err))),
                },
                Poll::Ready(None) => *this.source_done = true,
                Poll::Pending => break,
            }
        }
        match Pin::new(&mut *this.running).poll_next(cx) {
            Poll::Ready(Some(report)) => Poll::Ready(Some(Ok(report))),
            Poll::Ready(None) if *this.source_done => Poll::Ready(None),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}
