//! [`JobStream`]: jobs pulled from a stream with backpressure.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::FuturesUnordered;
use pin_project::pin_project;
use tokio::sync::futures::OwnedNotified;

use super::{Executor, JobHandle, SubmitError, Workload};
use crate::executor::report::JobReport;

/// The stream returned by [`Executor::run_stream`]: each job's report (or why
/// it was refused), as jobs finish.
///
/// It pulls the next job from its source only when a job slot is free: when
/// fewer jobs are running or waiting in the executor than its job
/// concurrency. Once the executor shuts down it pulls no more (the jobs stay
/// in the source) and ends when its submitted jobs have.
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
    running: FuturesUnordered<JobHandle<W::Output, W::Error>>,
    /// Armed while waiting for a job slot to free.
    #[pin]
    slot_freed: Option<OwnedNotified>,
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
    pub(crate) fn new(executor: Executor<W>, source: S) -> Self {
        JobStream {
            executor,
            source,
            source_done: false,
            running: FuturesUnordered::new(),
            slot_freed: None,
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
        while !*this.source_done {
            // Armed before looking, so that a slot freed in between wakes us.
            if this.slot_freed.is_none() {
                let notified = this.executor.inner.changed.clone().notified_owned();
                this.slot_freed.set(Some(notified));
            }
            if let Some(notified) = this.slot_freed.as_mut().as_pin_mut() {
                notified.enable();
            }
            let (free, open) = this.executor.inner.has_free_job_slot();
            if !open {
                *this.source_done = true;
                break;
            }
            if !free {
                let freed = this
                    .slot_freed
                    .as_mut()
                    .as_pin_mut()
                    .is_some_and(|notified| notified.poll(cx).is_ready());
                if freed {
                    this.slot_freed.set(None);
                    continue;
                }
                break;
            }
            match this.source.as_mut().poll_next(cx) {
                Poll::Ready(Some(job)) => match this.executor.submit(job) {
                    Ok(handle) => this.running.push(handle),
                    Err(SubmitError::ShuttingDown) => *this.source_done = true,
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
