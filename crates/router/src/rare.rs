//! A future that is rarely ready (the router's stop, a leader change), polled by a task that
//! is woken often for other reasons (every message a relay forwards). Polling a `watch`
//! receiver's `changed()` again costs its notification machinery each time; [`Rare`] polls
//! the inner future only when the inner future itself woke the task (or the task's waker
//! changed), and answers Pending at the cost of one atomic load otherwise.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// The waker the inner future is given: it marks itself woken and wakes the task.
#[derive(Default)]
struct Flag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

pub(crate) struct Rare<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// The flag as a waker, made once.
    waker: Waker,
    /// The task's waker the flag wakes (None until the first poll).
    task: Option<Waker>,
}

impl<F: Future> Rare<F> {
    pub(crate) fn new(inner: F) -> Self {
        let flag = Arc::new(Flag::default());
        Rare {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }
}

impl<F: Future> Future for Rare<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let same_task = this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker()));
        if same_task && !this.flag.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        if !same_task {
            let task = cx.waker().clone();
            *this.flag.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.clone());
            this.task = Some(task);
        }
        // Cleared before the inner poll: a wake during or after it is seen next time.
        this.flag.woken.store(false, Ordering::Release);
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its polls; ready once `open` is set (and it was woken for it).
    struct Gate {
        polls: Arc<AtomicUsize>,
        open: tokio::sync::watch::Receiver<bool>,
        changed: Pin<Box<dyn Future<Output = ()> + Send>>,
    }

    fn gate(open: tokio::sync::watch::Receiver<bool>, polls: Arc<AtomicUsize>) -> Gate {
        let mut rx = open.clone();
        Gate {
            polls,
            open,
            changed: Box::pin(async move {
                let _ = rx.wait_for(|o| *o).await;
            }),
        }
    }

    impl Future for Gate {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if *self.open.borrow() {
                return Poll::Ready(());
            }
            self.changed.as_mut().poll(cx)
        }
    }

    #[tokio::test]
    async fn the_inner_future_is_polled_only_when_it_woke_the_task() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        // In a task of its own, as a relay runs (a task's waker is recognised as the same
        // from one poll to the next; the test's own `block_on` waker may not be).
        let task = tokio::spawn(async move {
            let mut rare = Rare::new(gate(rx, counted.clone()));
            // Many turns of a task woken by something else: one poll of the inner future.
            for _ in 0..100 {
                let turn = futures_poll_once(&mut rare).await;
                assert!(turn.is_pending());
                tokio::task::yield_now().await;
            }
            assert_eq!(counted.load(Ordering::Relaxed), 1);
            Some(rare)
        });
        let mut rare = task.await.expect("task").expect("the future");
        // Its own wake-up: polled again, and ready.
        tx.send(true).expect("send");
        tokio::time::timeout(std::time::Duration::from_secs(5), &mut rare)
            .await
            .expect("the stop is seen");
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_new_task_waker_polls_the_inner_future_again() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let polls = Arc::new(AtomicUsize::new(0));
        let mut rare = Rare::new(gate(rx, polls.clone()));
        assert!(futures_poll_once(&mut rare).await.is_pending());
        // Moved to another task: registered with its waker, which the wake-up reaches.
        // It says when it has polled once (pending, registered), not a sleep that hopes so.
        let (polled, registered) = tokio::sync::oneshot::channel();
        let moved = tokio::spawn(async move {
            let first = futures_poll_once(&mut rare).await;
            let _ = polled.send(first.is_pending());
            tokio::time::timeout(std::time::Duration::from_secs(5), &mut rare)
                .await
                .is_ok()
        });
        assert!(
            registered.await.expect("first poll"),
            "pending before the send"
        );
        assert_eq!(
            polls.load(Ordering::Relaxed),
            2,
            "the new task's poll reached it"
        );
        tx.send(true).expect("send");
        assert!(moved.await.expect("task"), "the other task was woken");
    }

    /// Poll `f` once with the current task's waker.
    async fn futures_poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
    }
}
