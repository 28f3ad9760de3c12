//! Requests that reach a core which does not own their group travel once to
//! the owning core of the same node and their replies travel back, over a
//! mesh of bounded cross-executor channels (one per ordered pair of cores).
//! Shard-aware clients connect to the owning core and never use it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use glommio::{GlommioError, ResourceType};
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};

use super::group::Responder;
use crate::client::proto::{Reply, Request};

/// Messages waiting in one direction between two cores.
pub const FORWARD_CHANNEL_CAPACITY: usize = 16_384;

pub enum Forward {
    Request { token: u64, req: Request },
    Reply { token: u64, reply: Reply },
}

/// One core's ends of the mesh before its executor connects them.
pub struct MeshEnds {
    /// To core `k` (none to itself).
    pub to: Vec<Option<SharedSender<Forward>>>,
    /// From core `k`.
    pub from: Vec<Option<SharedReceiver<Forward>>>,
}

/// The ends of a full mesh between `cores` cores, by core.
pub fn mesh(cores: u32) -> Vec<MeshEnds> {
    let n = cores as usize;
    let mut ends: Vec<MeshEnds> = (0..n).map(|_| MeshEnds { to: (0..n).map(|_| None).collect(), from: (0..n).map(|_| None).collect() }).collect();
    for a in 0..n {
        for b in (0..n).filter(|&b| b != a) {
            let (tx, rx) = shared_channel::new_bounded(FORWARD_CHANNEL_CAPACITY);
            ends[a].to[b] = Some(tx);
            ends[b].from[a] = Some(rx);
        }
    }
    ends
}

/// A core's connected senders and the replies it waits for.
pub struct Forwarder {
    to: Vec<Option<Rc<ConnectedSender<Forward>>>>,
    waiting: RefCell<HashMap<u64, Responder>>,
    next_token: Cell<u64>,
}

impl Forwarder {
    /// Connects this core's ends; returns the forwarder and its receivers.
    pub async fn connect(ends: MeshEnds) -> (Forwarder, Vec<(usize, ConnectedReceiver<Forward>)>) {
        // Each end waits for its peer, which another executor connects in
        // its own order: connect all at once.
        let senders: Vec<_> = ends.to.into_iter().map(|tx| tx.map(|tx| glommio::spawn_local(tx.connect()))).collect();
        let receivers: Vec<_> = ends.from.into_iter().enumerate().filter_map(|(core, rx)| rx.map(|rx| (core, glommio::spawn_local(rx.connect())))).collect();
        let mut to = Vec::new();
        for tx in senders {
            to.push(match tx {
                Some(task) => Some(Rc::new(task.await)),
                None => None,
            });
        }
        let mut from = Vec::new();
        for (core, task) in receivers {
            from.push((core, task.await));
        }
        (Forwarder { to, waiting: RefCell::new(HashMap::new()), next_token: Cell::new(1) }, from)
    }

    /// Sends `req` to `core`; `respond` gets the owning core's reply (or
    /// `Busy` when the channel is full, `UnknownGroup` without a channel).
    pub fn forward(&self, core: u32, req: Request, respond: Responder) {
        let Some(Some(tx)) = self.to.get(core as usize) else {
            return respond(Reply::UnknownGroup);
        };
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        if tx.try_send(Forward::Request { token, req }).is_err() {
            return respond(Reply::Busy);
        }
        self.waiting.borrow_mut().insert(token, respond);
    }

    /// The owning core answered a forwarded request.
    pub fn complete(&self, token: u64, reply: Reply) {
        if let Some(respond) = self.waiting.borrow_mut().remove(&token) {
            respond(reply);
        }
    }

    /// A responder that sends the reply back to core `core`.
    pub fn reply_to(&self, core: usize, token: u64) -> Responder {
        let tx = self.to[core].clone().expect("replies go to another core");
        Box::new(move |reply| {
            if let Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) = tx.try_send(Forward::Reply { token, reply }) {
                // Full: wait for room rather than lose the answer.
                glommio::spawn_local(async move {
                    let _ = tx.send(msg).await;
                })
                .detach();
            }
        })
    }

    /// Fails every forwarded request still waiting (the core is stopping).
    pub fn abandon(&self) {
        for (_, respond) in self.waiting.borrow_mut().drain() {
            respond(Reply::Unknown);
        }
    }
}
