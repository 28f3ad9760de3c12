//! A core's listener with a bound on the connections open at once, shared by
//! the client and the peer ports: strangers (or too many clients) cannot take
//! every file descriptor of the process. A connection beyond the bound is
//! closed at once and counted; a failing accept (out of descriptors, say) is
//! logged when it begins and tried again every 100 ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};

use crate::node::metrics::{CoreMetrics, GaugeHold};

/// How long a failing accept waits before it is tried again.
const ACCEPT_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Which connections a listener takes and how many of them.
pub struct Bound {
    /// What they are, for the logs ("client", "peer").
    pub what: &'static str,
    pub open_max: usize,
    /// The core's gauge of such connections open now.
    pub open: fn(&CoreMetrics) -> &AtomicU64,
    /// The core's count of such connections closed at once for the bound.
    pub refused: fn(&CoreMetrics) -> &AtomicU64,
}

pub struct BoundedListener {
    listener: TcpListener,
    bound: Bound,
    metrics: Arc<CoreMetrics>,
    failing: bool,
    refusing: bool,
}

impl BoundedListener {
    pub fn new(listener: TcpListener, bound: Bound, metrics: Arc<CoreMetrics>) -> BoundedListener {
        BoundedListener { listener, bound, metrics, failing: false, refusing: false }
    }

    /// The next connection under the bound, with the hold that counts it
    /// open: keep it as long as the connection.
    pub async fn accept(&mut self) -> (TcpStream, GaugeHold) {
        let Bound { what, open_max, open, refused } = self.bound;
        loop {
            let stream = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    if !std::mem::replace(&mut self.failing, true) {
                        tracing::warn!("accepting a {what} connection: {e}; trying again every {ACCEPT_RETRY_AFTER:?}");
                    }
                    glommio::timer::sleep(ACCEPT_RETRY_AFTER).await;
                    continue;
                }
            };
            self.failing = false;
            // Only this core's tasks change the gauge, so it is exact here.
            if open(&self.metrics).load(Ordering::Relaxed) as usize >= open_max {
                refused(&self.metrics).fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut self.refusing, true) {
                    tracing::warn!("{open_max} {what} connections open on this core: closing new ones until some close");
                }
                continue; // Dropped: closed at once.
            }
            self.refusing = false;
            return (stream, GaugeHold::new(&self.metrics, open));
        }
    }
}
