//! The shutdown signal every background task and listener watches.

use std::{future::Future, time::Duration};

use tokio::sync::watch;

/// Tells background tasks (and listeners) that the daemon is shutting down. Cheap to clone;
/// every clone sees the one signal.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

/// Sends the [`Stop`] signal; dropping it sends it too.
#[derive(Debug)]
pub struct StopHandle(watch::Sender<bool>);

impl Stop {
    /// A signal and the handle that sends it.
    pub fn new() -> (StopHandle, Stop) {
        let (tx, rx) = watch::channel(false);
        (StopHandle(tx), Stop(rx))
    }

    /// Completes once the signal was sent (at once if it already was).
    pub async fn stopped(mut self) {
        // An error means the handle is gone: that is a stop as well.
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }

    /// Runs `step` every `period` (the first at once) until the signal comes. A step in
    /// progress is not cut short: the signal is seen between steps.
    pub async fn every<F, Fut>(self, period: Duration, mut step: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut tick = tokio::time::interval(period);
        let stopped = self.stopped();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tick.tick() => {}
            }
            step().await;
        }
    }
}

impl StopHandle {
    /// Tells every [`Stop`] to stop.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}
