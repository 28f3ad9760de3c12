//! The history file of `lin-kv` (format in shared/BENCH.md): one JSON event
//! per line. Events are stamped and written under one lock, so the order of
//! the lines is the order in which the events happened: an invoke is written
//! before its request leaves, a completion after its reply arrived.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};

/// `type` of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Invoke,
    /// It took effect (a read: it saw this value).
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Unknown whether it took effect; the process is retired.
    Info,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Invoke => "invoke",
            Kind::Ok => "ok",
            Kind::Fail => "fail",
            Kind::Info => "info",
        }
    }
}

/// `f` of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F {
    Read,
    Write,
    Cas,
}

impl F {
    pub fn name(self) -> &'static str {
        match self {
            F::Read => "read",
            F::Write => "write",
            F::Cas => "cas",
        }
    }
}

/// `value` of an event: `null` (a read's invoke, a missing key), an integer
/// (a write, a read's result) or `[expected, new]` (a cas).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventValue {
    Null,
    Int(u64),
    Pair(u64, u64),
}

impl EventValue {
    fn json(self) -> Value {
        match self {
            EventValue::Null => Value::Null,
            EventValue::Int(v) => v.into(),
            EventValue::Pair(a, b) => json!([a, b]),
        }
    }
}

pub struct History {
    inner: Mutex<Inner>,
}

struct Inner {
    out: BufWriter<File>,
    started: Instant,
    events: u64,
    /// The first write error; the history is incomplete after it.
    failed: Option<std::io::Error>,
}

impl History {
    pub fn create(path: &Path) -> anyhow::Result<History> {
        let file = File::create(path)
            .with_context(|| format!("cannot create the history file {}", path.display()))?;
        let inner = Inner {
            out: BufWriter::new(file),
            started: Instant::now(),
            events: 0,
            failed: None,
        };
        Ok(History {
            inner: Mutex::new(inner),
        })
    }

    /// Appends one event stamped now; returns its `time_ns`.
    pub fn record(&self, process: u64, kind: Kind, f: F, key: &str, value: EventValue) -> u64 {
        let mut inner = self.inner.lock().expect("history lock is never poisoned");
        let time_ns = inner.started.elapsed().as_nanos() as u64;
        let event = json!({"process": process, "type": kind.name(), "f": f.name(), "key": key, "value": value.json(), "time_ns": time_ns});
        let mut line = serde_json::to_vec(&event).expect("an event serializes");
        line.push(b'\n');
        if inner.failed.is_none() {
            if let Err(e) = inner.out.write_all(&line) {
                inner.failed = Some(e);
            }
        }
        inner.events += 1;
        time_ns
    }

    /// Flushes the file; returns the number of events written.
    pub fn close(self, path: &Path) -> anyhow::Result<u64> {
        let mut inner = self
            .inner
            .into_inner()
            .expect("history lock is never poisoned");
        if let Some(e) = inner.failed.take() {
            return Err(e).with_context(|| format!("writing the history file {}", path.display()));
        }
        inner
            .out
            .flush()
            .with_context(|| format!("writing the history file {}", path.display()))?;
        inner
            .out
            .get_ref()
            .sync_all()
            .with_context(|| format!("syncing the history file {}", path.display()))?;
        Ok(inner.events)
    }
}
