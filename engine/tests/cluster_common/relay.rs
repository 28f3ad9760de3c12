//! TCP relays between the nodes of a test cluster, so that a test can
//! partition a node from its peers and heal it again, on loopback only.
//!
//! Every node reaches each peer through a relay of its own (one per
//! direction, one listening port per core), which forwards bytes both ways
//! until the test breaks it:
//! - `Break::Cut` closes every relayed connection and closes new ones at
//!   once, as a crashed or rebooted host would: both ends learn of it.
//! - `Break::BlackHole` forwards nothing, in either direction, but closes
//!   nothing, as a dead switch or a firewall dropping packets would: no end
//!   learns of it except by the silence. New connections are accepted and
//!   held, unanswered.
//!
//! `mend` makes a relay forward again; what a black hole held back is then
//! delivered, late. Threads poll their flags every few milliseconds, so
//! every thread ends once the relay is dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a relay thread sleeps between two looks at its flags.
const POLL: Duration = Duration::from_millis(5);
/// Bytes one relay thread moves at a time.
const CHUNK_BYTES: usize = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Break {
    Cut = 1,
    BlackHole = 2,
}

/// Forwards `listen[k]` to `to[k]` for every core `k`.
pub struct Relay {
    shared: Arc<Shared>,
    accepters: Vec<JoinHandle<()>>,
}

struct Shared {
    /// 0: forwarding; otherwise a `Break`.
    broken: AtomicU8,
    stopping: AtomicBool,
    /// Both sockets of every relayed connection, to close them on a cut.
    open: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn broken(&self) -> Option<Break> {
        match self.broken.load(Ordering::SeqCst) {
            1 => Some(Break::Cut),
            2 => Some(Break::BlackHole),
            _ => None,
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Waits while a black hole holds the traffic; false once the relay
    /// stops or is cut.
    fn wait_while_held(&self) -> bool {
        loop {
            if self.stopping() {
                return false;
            }
            match self.broken() {
                None => return true,
                Some(Break::Cut) => return false,
                Some(Break::BlackHole) => std::thread::sleep(POLL),
            }
        }
    }

    fn close_all(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Relay {
    pub fn start(listeners: Vec<TcpListener>, to: Vec<SocketAddr>) -> Relay {
        assert_eq!(listeners.len(), to.len());
        let shared = Arc::new(Shared { broken: AtomicU8::new(0), stopping: AtomicBool::new(false), open: Mutex::new(Vec::new()) });
        let accepters = listeners
            .into_iter()
            .zip(to)
            .map(|(listener, target)| {
                let shared = shared.clone();
                std::thread::spawn(move || accept_loop(listener, target, &shared))
            })
            .collect();
        Relay { shared, accepters }
    }

    pub fn break_with(&self, how: Break) {
        self.shared.broken.store(how as u8, Ordering::SeqCst);
        if how == Break::Cut {
            self.shared.close_all();
        }
    }

    pub fn mend(&self) {
        self.shared.broken.store(0, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.close_all();
        for t in self.accepters.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    listener.set_nonblocking(true).unwrap();
    while !shared.stopping() {
        match listener.accept() {
            Ok((inbound, _)) => {
                if shared.broken() == Some(Break::Cut) {
                    continue; // Dropped: closed at once.
                }
                let shared = shared.clone();
                std::thread::spawn(move || relay_connection(inbound, target, &shared));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => panic!("relay accept: {e}"),
        }
    }
}

/// Connects to the target once traffic may flow, then pumps both ways.
fn relay_connection(inbound: TcpStream, target: SocketAddr, shared: &Arc<Shared>) {
    inbound.set_nonblocking(false).unwrap();
    if !shared.wait_while_held() {
        return;
    }
    let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else { return };
    {
        let mut open = shared.open.lock().unwrap();
        if shared.broken() == Some(Break::Cut) || shared.stopping() {
            return;
        }
        open.push(inbound.try_clone().unwrap());
        open.push(outbound.try_clone().unwrap());
    }
    let back = (outbound.try_clone().unwrap(), inbound.try_clone().unwrap());
    let shared_back = shared.clone();
    let t = std::thread::spawn(move || pump(back.0, back.1, &shared_back));
    pump(inbound, outbound, shared);
    let _ = t.join();
}

/// Copies `from` to `to` until either ends or the relay is cut or stopped;
/// then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    // Reads wake up now and then to see whether a black hole began.
    from.set_read_timeout(Some(POLL * 4)).unwrap();
    let mut buf = vec![0u8; CHUNK_BYTES];
    while shared.wait_while_held() {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // A black hole that began during the read keeps these bytes
                // back too.
                if !shared.wait_while_held() || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
