//! Graceful shutdown. On SIGTERM Pingora stops accepting and then sleeps its whole grace period
//! before stopping; portcullis counts requests in flight and exits as soon as they have all
//! finished, so a pod stops in the time its slowest request needs, never more than
//! `server.drain_timeout` (Pingora's grace period is the upper bound).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use crate::telemetry::export::TracePipeline;

/// How often the drain watcher looks at the in-flight count; exit latency after the last
/// request is at most this.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Requests currently being handled.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// Held by a request's context; the count drops when the context does.
pub struct InFlightGuard(Arc<AtomicUsize>);

impl InFlight {
    pub fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// SIGTERM: graceful (drain, then exit 0). SIGINT: fast. SIGQUIT (Pingora's socket hand-over
/// upgrade) is not used by portcullis and is treated like SIGTERM.
pub struct DrainOnTerm {
    pub in_flight: InFlight,
    /// Span export, whose queue the exit below must send first: `process::exit` runs no
    /// destructors.
    pub traces: Option<Arc<TracePipeline>>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnTerm {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = term.recv() => self.drain(),
            _ = quit.recv() => self.drain(),
        }
    }
}

impl DrainOnTerm {
    fn drain(&self) -> ShutdownSignal {
        tracing::info!(
            in_flight = self.in_flight.count(),
            "SIGTERM: no longer accepting; draining requests in flight"
        );
        let in_flight = self.in_flight.clone();
        let traces = self.traces.clone();
        std::thread::spawn(move || {
            // Pingora closes the listeners right after this signal is returned.
            while in_flight.count() > 0 {
                std::thread::sleep(DRAIN_POLL_INTERVAL);
            }
            tracing::info!("drained; exiting");
            if let Some(traces) = traces {
                traces.shutdown();
            }
            std::process::exit(0);
        });
        ShutdownSignal::GracefulTerminate
    }
}
